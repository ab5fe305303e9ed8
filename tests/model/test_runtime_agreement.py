"""One answer on both runtimes: the classifier's ONNX and TFLite int8 files on variants of the test
photos a camera could produce (crops, mirror, rotation, light, blur, JPEG, low resolution).

scripts/bench/int8_agreement.py measures the same on every photo the installed packages ship
(models/README.md); this is the regression guard on what the repository has.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from edge_runtime.inference import BackendOptions
from edge_runtime.model import Runner, load_model

from ..conftest import CLASSIFIER, image


def _variants(bgr: np.ndarray) -> Iterator[np.ndarray]:
    h, w = bgr.shape[:2]
    yield bgr
    yield np.ascontiguousarray(bgr[:, ::-1])
    yield bgr[h // 10 : h - h // 10, w // 10 : w - w // 10]
    s = int(min(h, w) * 0.7)
    yield bgr[:s, :s]
    yield bgr[h - s :, w - s :]
    for angle in (-10, 10):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.1)
        yield cv2.warpAffine(bgr, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    for beta in (-40, 40):
        yield cv2.convertScaleAbs(bgr, alpha=1.0, beta=beta)
    yield cv2.GaussianBlur(bgr, (5, 5), 1.5)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok
    yield cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def test_classifier_files_agree_on_variants_of_the_test_photos() -> None:
    """One quantisation written for both runtimes (scripts/models/qdq_to_tflite.py): top-1 the
    same on nearly all inputs (all 44 when this was written; 99.6 % on the 504 inputs of
    int8_agreement.py); where they differ, each one's top-1 is in the other's top-5; top-1 scores
    within 0.05 where they agree (the two runtimes only round a requantisation differently)."""
    inputs = [
        v for n in ("astronaut", "chelsea", "coffee", "rocket") for v in _variants(cv2.imread(str(image(n))))
    ]
    answers = {}
    for backend in ("onnx", "tflite"):
        runner = Runner(load_model(CLASSIFIER, backend, BackendOptions(threads=1)))
        try:
            answers[backend] = [runner.predict(np.ascontiguousarray(x)).classes for x in inputs]
        finally:
            runner.close()
    same = [a[0].class_id == b[0].class_id for a, b in zip(answers["onnx"], answers["tflite"], strict=True)]
    assert np.mean(same) >= 0.97, np.mean(same)
    for a, b in zip(answers["onnx"], answers["tflite"], strict=True):
        assert a[0].class_id in {c.class_id for c in b} and b[0].class_id in {c.class_id for c in a}
        if a[0].class_id == b[0].class_id:
            assert abs(a[0].score - b[0].score) <= 0.05, (a[0], b[0])
