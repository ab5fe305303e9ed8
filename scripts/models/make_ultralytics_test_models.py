"""Export tiny random-weight models with Ultralytics itself, and record what Ultralytics predicts.

    python scripts/models/make_ultralytics_test_models.py   # -> tests/data/ultralytics/*.onnx,
                                                            #    tests/data/ultralytics/expected.json

Needs `ultralytics` (8.4), `torch`, `onnx` and `onnxruntime` in the Python that runs it (not
runtime or test dependencies of this project). The test models of make_test_models.py are written
by this project's own code; these come from Ultralytics' own exporter, as a user makes them, so
they carry the layouts, metadata and graph details (dynamic axes, NMS inside, end-to-end heads,
pose and segment heads) that Ultralytics really writes.

Provenance: each model is built from the architecture yaml that ships in the `ultralytics` package
(``cfg/models/...``), shrunk to a tiny width (scale ``[0.33, 0.0625, 128]``), a few classes, one
box bin (``reg_max: 1``, as YOLO26; YOLOv8's 16 bins are decoded inside the graph and do not change
its outputs), 5 pose key points and 8 mask coefficients so the files stay small (about 1 MB
in all), with RANDOM weights (no trained weights are used or downloaded). Random
features collapse to zero through BatchNorm, so BatchNorm statistics are first set from the test
images (``tests/data/*.jpg``, one training-mode forward pass) and the class-score convolutions are
scaled (x ``SCORE_GAIN``, bias ``SCORE_BIAS``) so that some anchors score above 0.25. The boxes mean
nothing; they are what the exported graph outputs, which is all a layout test needs.

``expected.json`` holds, per model and per test image, what ``YOLO(file).predict(image,
imgsz=<the export's imgsz>, conf=0.25, iou=0.45, max_det=100)`` returns on that exported ONNX file
(Ultralytics' AutoBackend on ONNX Runtime; the defaults of this project's decoder): boxes
normalised to the original image, scores, class ids; for the classifier the top-5 probabilities.
tests/model/test_ultralytics_exports.py runs ``edge-runtime infer`` on each file and compares.

The models (what each one proves):

- ``yolov8_dynamic.onnx``: YOLOv8 detect, ``dynamic=True`` (every output dimension dynamic, so only
  the metadata tells the layout), imgsz 128: the stride rectangle Ultralytics letterboxes to.
- ``yolo26_end2end_dynamic.onnx``: YOLO26 detect with its end-to-end head (``nms=False``),
  rows ``(x1, y1, x2, y2, score, class)``, ``dynamic=True`` with a non-square imgsz [192, 256]; the
  head ends in a TopK over all grid cells, which fails on a rectangle with fewer cells than k.
- ``yolov8_pose.onnx``: YOLOv8 pose, 1 class and 5 key points: ``[1, 4+1+15, N]``, the class
  count from ``names`` (not 16 classes).
- ``yolov8_seg_nms.onnx``: YOLOv8 segment, ``nms=True`` (NMS inside the graph), 8 mask
  coefficients: ``[1,300,6+8]`` plus a second output of mask prototypes.
- ``yolov8_cls.onnx``: YOLOv8 classify, imgsz 64: centre crop as Ultralytics' classify_transforms.
- ``yolov8_obb.onnx``: YOLOv8 oriented boxes: refused with a message naming the task.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
OUT = DATA / "ultralytics"
IMAGES = ("astronaut", "chelsea", "coffee", "rocket")
SCALE = [0.33, 0.0625, 128]  # depth, width, max channels: a few thousand parameters per layer
SCORE_GAIN, SCORE_BIAS = 1.5, -2.5
KEYPOINTS = [5, 3]  # pose: 5 key points (x, y, visibility)
MASKS = 8  # segment: mask coefficients (Ultralytics' default 32)
CONF, IOU, MAX_DET = 0.25, 0.45, 100

# name: (architecture yaml in ultralytics/cfg/models, nc, export arguments)
MODELS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "yolov8_dynamic": ("v8/yolov8.yaml", 3, {"imgsz": 128, "dynamic": True}),
    "yolo26_end2end_dynamic": ("26/yolo26.yaml", 3, {"imgsz": [192, 256], "dynamic": True, "nms": False}),
    "yolov8_pose": ("v8/yolov8-pose.yaml", 1, {"imgsz": 128}),
    "yolov8_seg_nms": ("v8/yolov8-seg.yaml", 3, {"imgsz": 128, "nms": True}),
    "yolov8_cls": ("v8/yolov8-cls.yaml", 5, {"imgsz": 64}),
    "yolov8_obb": ("v8/yolov8-obb.yaml", 3, {"imgsz": 128}),
}


def tiny_yaml(arch: str, nc: int, folder: Path) -> Path:
    """The package's architecture yaml with one tiny scale and ``nc`` classes."""
    import ultralytics
    import yaml

    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "models" / arch).read_text())
    cfg["nc"] = nc
    cfg["scales"] = {"n": SCALE}
    cfg["reg_max"] = 1  # one box bin (YOLO26's choice): YOLOv8's 16-bin box head is most of its size
    if "kpt_shape" in cfg:
        cfg["kpt_shape"] = KEYPOINTS
    head = cfg["head"][-1]
    if head[2] == "Segment":
        head[3] = [head[3][0], MASKS, *head[3][2:]]
    path = folder / (Path(arch).stem.replace("yolov8", "yolov8n").replace("yolo26", "yolo26n") + ".yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def letterboxed_images(size: int) -> Any:
    import torch

    arrays = []
    for name in IMAGES:
        rgb = cv2.imread(str(DATA / f"{name}.jpg"))[:, :, ::-1]
        arrays += [cv2.resize(rgb, (size, size)), cv2.resize(rgb[::-1], (size, size))]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def prepare(model: Any, size: int) -> None:
    """BatchNorm statistics from the test images; class scores spread over 0..1."""
    import torch

    net = model.model
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batch
    net.train()
    with torch.no_grad():
        net(letterboxed_images(size))
    net.eval()
    head = net.model[-1]
    for attr in ("cv3", "one2one_cv3"):
        for branch in getattr(head, attr, None) or []:
            last = branch[-1] if isinstance(branch, torch.nn.Sequential) else branch
            if isinstance(last, torch.nn.Conv2d) and last.bias is not None:
                last.weight.data *= SCORE_GAIN
                last.bias.data.fill_(SCORE_BIAS)
    linear = getattr(head, "linear", None)  # classify: logits spread enough for a clear top 5
    if isinstance(linear, torch.nn.Linear):
        linear.weight.data *= 20.0


def predict(file: Path, task: str, imgsz: Any) -> dict[str, Any]:
    from ultralytics import YOLO

    model = YOLO(str(file), task=task)
    found: dict[str, Any] = {}
    for name in IMAGES:
        frame = cv2.imread(str(DATA / f"{name}.jpg"))
        h, w = frame.shape[:2]
        r = model.predict(frame, imgsz=imgsz, conf=CONF, iou=IOU, max_det=MAX_DET, verbose=False)[0]
        if r.probs is not None:
            p = r.probs.data.cpu().numpy()
            found[name] = [{"class_id": int(i), "score": round(float(p[i]), 6)} for i in np.argsort(-p)[:5]]
            continue
        boxes = r.boxes.xyxy.cpu().numpy() / np.array([w, h, w, h])
        found[name] = [
            {"class_id": int(c), "score": round(float(s), 6), "box": [round(float(v), 6) for v in b]}
            for b, s, c in zip(boxes, r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy(), strict=True)
        ]
    return found


def main() -> int:
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (arch, nc, args) in MODELS.items():
            torch.manual_seed(0)
            model = YOLO(str(tiny_yaml(arch, nc, Path(tmp))))
            size = args["imgsz"] if isinstance(args["imgsz"], int) else max(args["imgsz"])
            prepare(model, size)
            exported = Path(model.export(format="onnx", opset=17, simplify=False, **args))
            file = OUT / f"{name}.onnx"
            shutil.move(exported, file)
            meta = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
            custom = meta.get_modelmeta().custom_metadata_map
            task, imgsz = custom["task"], ast.literal_eval(custom["imgsz"])
            entry: dict[str, Any] = {"task": task, "export": args, "architecture": arch, "nc": nc}
            if task != "obb":
                entry["predictions"] = predict(file, task, imgsz)
            expected[name] = entry
            print(f"{file.relative_to(ROOT)}: {file.stat().st_size} bytes, task {task}", file=sys.stderr)
    import ultralytics

    doc = {"ultralytics": ultralytics.__version__, "conf": CONF, "iou": IOU, "max_det": MAX_DET}
    doc["models"] = expected
    (OUT / "expected.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
