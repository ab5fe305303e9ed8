"""Golden answers of the bundled int8 models on real photos, through both runtimes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.inference import BackendOptions
from edge_runtime.model import InferenceResult, LoadedModel, Runner, load_model
from edge_runtime.model.golden import golden_inputs
from edge_runtime.postprocess.nms import iou_matrix

from ..conftest import CLASSIFIER, DETECTOR, MODELS, image

BACKENDS = ["onnx", "tflite"]
IMAGES = ["astronaut", "chelsea", "coffee", "rocket"]
CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # tabby, tiger cat, Persian, Siamese, Egyptian cat, ...
ESPRESSO = 967
VIBRATION = MODELS / "vibration_anomaly"


def _run(bundle: Path, backend: str, names: list[str]) -> dict[str, InferenceResult]:
    model: LoadedModel = load_model(bundle, backend, BackendOptions(threads=2))
    try:
        runner = Runner(model)
        return {n: runner.predict(cv2.imread(str(image(n)))) for n in names}
    finally:
        model.close()


@pytest.fixture(scope="module", params=BACKENDS)
def classified(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, InferenceResult]]]:
    yield request.param, _run(CLASSIFIER, request.param, IMAGES)


@pytest.fixture(scope="module", params=BACKENDS)
def detected(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, InferenceResult]]]:
    yield request.param, _run(DETECTOR, request.param, IMAGES)


def test_cat_photo_has_a_cat_class_in_the_top_3(classified: tuple[str, dict[str, InferenceResult]]) -> None:
    _, results = classified
    top3 = {c.class_id for c in results["chelsea"].classes[:3]}
    assert top3 & CAT_CLASSES, results["chelsea"].classes


def test_coffee_photo_is_espresso(classified: tuple[str, dict[str, InferenceResult]]) -> None:
    _, results = classified
    best = results["coffee"].classes[0]
    assert (best.class_id, best.label) == (ESPRESSO, "espresso")
    assert best.score > 0.5


def test_classification_scores_are_probabilities(classified: tuple[str, dict[str, InferenceResult]]) -> None:
    _, results = classified
    for result in results.values():
        scores = [c.score for c in result.classes]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def test_person_detector_finds_the_astronaut_and_nothing_in_the_coffee(
    detected: tuple[str, dict[str, InferenceResult]],
) -> None:
    _, results = detected
    people = results["astronaut"].detections
    assert len(people) == 1 and people[0].label == "person" and people[0].score >= 0.5
    # the astronaut occupies the left/centre of the photo, head near the top
    box = people[0].box
    assert box.x1 < 0.25 and box.x2 > 0.5 and box.y1 < 0.15 and box.y2 > 0.9
    assert results["coffee"].detections == ()
    assert results["chelsea"].detections == ()


def test_onnx_and_tflite_agree_on_classes() -> None:
    """The same top-1, at least four of the same top-5, scores of shared classes within 0.02.

    Both files hold one quantisation (scripts/models/qdq_to_tflite.py writes the ONNX file's
    numbers as the ``.tflite``), so they differ only where the two runtimes round a
    requantisation differently. On chelsea float has Egyptian cat 0.381 and tiger cat 0.371;
    both int8 files put tiger cat first (0.370 / 0.352).
    """
    onnx, tflite = (_run(CLASSIFIER, b, IMAGES) for b in BACKENDS)
    for name in IMAGES:
        a, b = onnx[name].classes, tflite[name].classes
        assert a[0].class_id == b[0].class_id, (name, a[0], b[0])
        scores = {c.class_id: c.score for c in b}
        assert len(scores.keys() & {c.class_id for c in a}) >= 4, name
        for x in a:
            if x.class_id in scores:
                assert abs(x.score - scores[x.class_id]) <= 0.02, (name, x, scores[x.class_id])


def test_onnx_and_tflite_agree_on_boxes() -> None:
    onnx, tflite = (_run(DETECTOR, b, IMAGES) for b in BACKENDS)
    for name in IMAGES:
        a, b = onnx[name].detections, tflite[name].detections
        assert len(a) == len(b), name
        if a:
            ious = iou_matrix(
                np.array([d.box.as_list(6) for d in a]), np.array([d.box.as_list(6) for d in b])
            )
            assert (ious.max(axis=1) >= 0.9).all(), (name, ious)


def test_person_boxes_agree_with_the_original_graph_in_opencv_dnn(
    detected: tuple[str, dict[str, InferenceResult]],
) -> None:
    """The reference: the original TF graph run by cv2.dnn when the bundle was made (recorded)."""
    report = json.loads((DETECTOR / "quantization_report.json").read_text())
    _, results = detected
    for name in IMAGES:
        reference = report["images"][name]["reference_cv2"]["detections"]
        ours = results[name].detections
        assert len(ours) == len(reference), name
        if ours:
            ious = iou_matrix(
                np.array([d.box.as_list(6) for d in ours]), np.array([r["box"] for r in reference])
            )
            assert (ious.max(axis=1) >= 0.9).all(), (name, ious)


@pytest.mark.parametrize(
    "bundle", [CLASSIFIER, DETECTOR, VIBRATION], ids=["classifier", "detector", "vibration"]
)
def test_onnx_int8_default_session_computes_what_the_exact_path_does(bundle: Path) -> None:
    """On x86 CPUs without VNNI (AVX2, AVX-512F), ONNX Runtime's default uint8 x int8 kernels add
    pairs of products in 16 bits, which saturates once weights use all 8 bits, and silently changes
    the answers (the classifier's espresso fell from 0.95 to 0.59). The backend therefore turns on
    ORT's exact uint8 x uint8 path on those CPUs by default (``exact_int8`` unset), and the bundles'
    answers must be exactly what that path gives, whatever the CPU. On VNNI and ARM CPUs both
    settings run the same kernels."""
    ort = pytest.importorskip("onnxruntime")
    from edge_runtime.inference.onnx import OnnxBackend

    model = load_model(bundle, "onnx", BackendOptions(threads=1))
    try:
        if bundle == VIBRATION:  # windows of normalised samples: seeded standard normal inputs
            feeds = golden_inputs(model, [])
        else:
            feeds = [Runner(model).prepare(cv2.imread(str(image(n))))[0] for n in IMAGES]
    finally:
        model.close()
    (path,) = bundle.glob("*.onnx")
    backend = OnnxBackend(path, BackendOptions(threads=1))
    try:
        ours = [backend.infer(feed) for feed in feeds]
    finally:
        backend.close()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    exact = [session.run(None, {name: feed[0]}) for feed in feeds]
    for fast, exact_ in zip(ours, exact, strict=True):
        for a, b in zip(fast, exact_, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())))


def test_exact_int8_gives_exact_products_where_the_default_kernels_may_saturate(tmp_path: Path) -> None:
    """``saturating_int8.onnx`` (scripts/models/make_test_models.py): for an input of ones every output is
    exactly 64, but each pair of uint8 x int8 products is 64,770, which ORT's default kernels on x86
    CPUs without VNNI saturate at 32,767 (they return about 32 there). The model key
    ``exact_int8: true`` must reach the session and give 64 on every CPU; unset, the backend picks
    the exact path where the CPU needs it, so it gives 64 too; ``false`` may saturate."""
    from edge_runtime.config.loader import load_config
    from edge_runtime.inference.onnx import OnnxBackend
    from edge_runtime.model import backend_options

    model = Path(__file__).parents[1] / "data" / "saturating_int8.onnx"
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"models:\n  m:\n    path: {model}\n    exact_int8: true\n"
        "pipelines:\n  - {name: p, model: m, source: {type: synthetic}}\n"
    )
    configured = backend_options(load_config(config).models["m"], tmp_path)
    assert configured.exact_int8 is True
    for options in (configured, BackendOptions(threads=1), BackendOptions(threads=1, exact_int8=False)):
        exact = options.exact_int8 is not False
        backend = OnnxBackend(model, options)
        try:
            (out,) = backend.infer([np.ones((1, 64), np.float32)])
        finally:
            backend.close()
        if exact:
            np.testing.assert_allclose(out, 64.0, rtol=1e-5)
        else:  # exact on VNNI and ARM CPUs, about half of it on AVX2 and AVX-512F without VNNI
            assert np.allclose(out, 64.0, rtol=1e-5) or np.allclose(out, 32.4, rtol=0.01), out
