"""The 4-tensor output of TFLite's ``TFLite_Detection_PostProcess`` op (Coral / TF model zoo).

The op has done anchor decoding and NMS already. Its outputs are ``boxes [1,N,4]`` as
``(ymin, xmin, ymax, xmax)`` normalised to the input, ``classes [1,N]`` (float ids),
``scores [1,N]`` and ``count [1]``. Converters do not keep their order stable (TF2 exports often
come out as scores, boxes, count, classes), so we identify them by name, then by shape and values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import ModelError
from edge_runtime.postprocess.detection import RawDetections

Arr = npt.NDArray[np.float32]

_NAME_SUFFIX = {"": "boxes", ":0": "boxes", ":1": "classes", ":2": "scores", ":3": "count"}


def _by_name(names: Sequence[str]) -> dict[str, int] | None:
    roles: dict[str, int] = {}
    for i, name in enumerate(names):
        if "TFLite_Detection_PostProcess" not in name:
            return None
        suffix = name.split("TFLite_Detection_PostProcess", 1)[1]
        if suffix not in _NAME_SUFFIX:
            return None
        roles[_NAME_SUFFIX[suffix]] = i
    return roles if len(roles) == 4 else None


def _by_content(outputs: Sequence[Arr]) -> dict[str, int]:
    roles: dict[str, int] = {}
    pair: list[int] = []
    for i, out in enumerate(outputs):
        if out.ndim == 3 and out.shape[-1] == 4:
            roles["boxes"] = i
        elif out.size == 1:
            roles["count"] = i
        else:
            pair.append(i)
    if len(pair) != 2 or len(roles) != 2:
        raise ModelError(
            "outputs do not look like TFLite_Detection_PostProcess (boxes, classes, scores, count)"
        )
    a, b = (outputs[i].reshape(-1) for i in pair)
    # class ids are whole numbers; scores are fractions in [0, 1] (and sorted descending)
    a_int = bool(np.all(a == np.round(a)))
    b_int = bool(np.all(b == np.round(b)))
    classes_first = (a_int and not b_int) or (a_int == b_int and a.max(initial=0) > b.max(initial=0))
    roles["classes"], roles["scores"] = (pair[0], pair[1]) if classes_first else (pair[1], pair[0])
    return roles


def decode_postprocessed(
    outputs: Sequence[Arr], names: Sequence[str], *, label_offset: int = 0
) -> RawDetections:
    """Detections from the op's four outputs; boxes become xyxy."""
    if len(outputs) != 4:
        raise ModelError(f"TFLite_Detection_PostProcess has 4 outputs, this model has {len(outputs)}")
    roles = _by_name(names) or _by_content(outputs)
    count = int(np.asarray(outputs[roles["count"]]).reshape(-1)[0])
    boxes = outputs[roles["boxes"]].reshape(-1, 4)[:count]
    scores = outputs[roles["scores"]].reshape(-1)[:count].astype(np.float32)
    classes = outputs[roles["classes"]].reshape(-1)[:count]
    xyxy = np.clip(boxes[:, [1, 0, 3, 2]], 0.0, 1.0).astype(np.float32)
    class_ids = np.rint(classes).astype(np.intp) - label_offset
    return RawDetections(xyxy, scores, class_ids)
