"""The contenders of ``scripts/bench/benchmark.py`` that run as plain loops, one per child process.

    python scripts/bench/bench_workers.py KIND SPEC.json

Each KIND runs its loop for ``warmup_s`` and then measures ``seconds``, and prints one line
``RESULT {json}``. Nothing here imports edge_runtime: a bare loop, the serial loop a tutorial
would write and the peers get only what they themselves need, so their CPU and memory numbers are
theirs alone. The input recipe (resize mode, mean/std, layout, quantisation, decoder settings) is
read by the benchmark from the model bundle and handed over in SPEC.

Kinds: ``bare`` (session/interpreter on preprocessed frames, with the daemon's session options),
``bare-default`` (the same with only the thread count set, as most examples write it),
``serial`` (decode -> preprocess -> run -> decode results, one thread), ``naive`` (``serial``
plus a paho publish at QoS 1 waited for per result), ``nudenet`` (nudenet's own
``NudeDetector.detect``), ``opencv-dnn`` (the original SSDLite TF graph in ``cv2.dnn``) and
``ultralytics`` (``YOLO(model).predict(stream=True)``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

Spec = dict[str, Any]
_INT_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}


# -- measuring ---------------------------------------------------------------------------------


def status_bytes(pid: int | str = "self", *fields: str) -> dict[str, int | None]:
    """Memory fields of ``/proc/<pid>/status`` (``VmHWM``, ``RssAnon``, ``RssFile``...) in bytes."""
    found: dict[str, int | None] = dict.fromkeys(fields)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def rss_peak_bytes(pid: int | str = "self") -> int | None:
    """Peak resident set size (VmHWM) of a process."""
    return status_bytes(pid, "VmHWM")["VmHWM"]


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class Window:
    """Skips ``warmup_s`` after the first result, then records ``seconds`` of results."""

    def __init__(self, warmup_s: float, seconds: float) -> None:
        self.warmup_s, self.seconds = warmup_s, seconds
        self.first_result: float | None = None
        self.start: float | None = None
        self.end: float | None = None
        self.count = 0
        self.latencies_ms: list[float] = []
        self.cpu0 = self.cpu1 = 0.0

    def add(self, latency_ms: float) -> bool:
        """Record one result; False once the window is over."""
        now = time.time()
        if self.first_result is None:
            self.first_result = now
        if self.start is None:
            if now - self.first_result < self.warmup_s:
                return True
            self.start, self.cpu0 = now, _cpu_s()
            return True
        self.count += 1
        self.latencies_ms.append(latency_ms)
        if now - self.start >= self.seconds:
            self.end, self.cpu1 = now, _cpu_s()
            return False
        return True

    def result(self, **extra: Any) -> dict[str, Any]:
        """The measurement as JSON-able values."""
        assert self.start is not None and self.end is not None and self.first_result is not None
        wall = self.end - self.start
        import psutil

        created = psutil.Process().create_time()
        return {
            "results": self.count,
            "window_s": round(wall, 3),
            "window": [self.start, self.end],
            "fps": self.count / wall,
            "latency_ms": self.latencies_ms,
            "cpu_percent": 100.0 * (self.cpu1 - self.cpu0) / wall,
            "peak_rss_bytes": rss_peak_bytes(),
            "first_result_s": round(self.first_result - created, 3),
            **extra,
        }


# -- frames and the tutorial's preprocessing ---------------------------------------------------


def frames(video: str) -> Iterator[tuple[np.ndarray, float, float]]:
    """Endless ``(BGR frame, capture wall time, decode ms)``; the file is reopened at its end."""
    while True:
        cap = cv2.VideoCapture(video)
        if not cap.isOpened():
            raise SystemExit(f"{video}: cannot open")
        read_any = False
        while True:
            t0 = time.perf_counter()
            ok, image = cap.read()
            if not ok:
                break
            read_any = True
            yield image, time.time(), (time.perf_counter() - t0) * 1e3
        cap.release()
        if not read_any:
            raise SystemExit(f"{video}: no frames")


def preprocess(bgr: np.ndarray, r: Spec) -> tuple[np.ndarray, tuple[float, ...]]:
    """Image -> input tensor, as a tutorial writes it; and (scale_x, scale_y, off_x, off_y, w, h).

    The geometry maps input pixels back to the original: ``orig = inp / scale + off``.
    """
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if r["color"] == "rgb" else bgr
    h, w = image.shape[:2]
    dh, dw = r["size"]
    if r["resize"] == "center_crop":
        side = min(w / dw, h / dh) * r["crop_fraction"]
        cw, ch = round(dw * side), round(dh * side)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        image = cv2.resize(image[y0 : y0 + ch, x0 : x0 + cw], (dw, dh))
        geometry = (dw / cw, dh / ch, float(x0), float(y0), w, h)
    elif r["resize"] == "letterbox":
        scale = min(dw / w, dh / h)
        nw, nh = round(w * scale), round(h * scale)
        if r.get("rect_stride"):  # a dynamic-shape model: the smallest stride-aligned rectangle
            dh, dw = nh + (dh - nh) % r["rect_stride"], nw + (dw - nw) % r["rect_stride"]
        left, top = (dw - nw) // 2, (dh - nh) // 2
        image = cv2.copyMakeBorder(
            cv2.resize(image, (nw, nh)),
            top,
            dh - nh - top,
            left,
            dw - nw - left,
            cv2.BORDER_CONSTANT,
            value=(r["pad_value"],) * 3,
        )
        geometry = (scale, scale, -left / scale, -top / scale, w, h)
    else:
        image = cv2.resize(image, (dw, dh))
        geometry = (dw / w, dh / h, 0.0, 0.0, w, h)
    x = (image.astype(np.float32) - np.float32(r["mean"])) / np.float32(r["std"])
    if r["quant"]:
        lo, hi = _INT_RANGE[r["dtype"]]
        x = np.clip(np.rint(x / r["quant"][0]) + r["quant"][1], lo, hi)
    x = x.astype(r["dtype"])
    if r["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None]), geometry


# -- the tutorial's result decoding --------------------------------------------------------------


def _dequantize(outputs: list[np.ndarray], quants: list[Any]) -> list[np.ndarray]:
    return [
        (o.astype(np.float32) - q[1]) * q[0] if q else o.astype(np.float32)
        for o, q in zip(outputs, quants, strict=True)
    ]


def classify(out: np.ndarray, r: Spec) -> dict[str, Any]:
    """Top-k classes with softmax scores."""
    x = out.reshape(-1)
    if x.min() < 0 or x.max() > 1 or abs(float(x.sum()) - 1) > 1e-3:
        e = np.exp(x - x.max())
        x = e / e.sum()
    top = np.argsort(-x)[: r["top_k"]]
    labels = r["labels"]
    return {
        "classes": [
            {"class_id": int(i), "label": labels[i] if labels else str(i), "score": round(float(x[i]), 4)}
            for i in top
        ]
    }


def _nms(boxes_xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, r: Spec) -> list[int]:
    xywh = np.concatenate([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], 1)
    keep: list[int] = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        picked = cv2.dnn.NMSBoxes(xywh[idx].tolist(), scores[idx].tolist(), r["score"], r["iou"])
        keep.extend(int(idx[i]) for i in np.asarray(picked).reshape(-1))
    keep.sort(key=lambda i: -scores[i])
    return keep[: r["max_det"]]


def _detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, r: Spec) -> dict[str, Any]:
    labels = r["labels"]
    return {
        "detections": [
            {
                "class_id": int(classes[i]),
                "label": labels[classes[i]] if labels else str(classes[i]),
                "score": round(float(scores[i]), 4),
                "box": [round(float(v), 4) for v in np.clip(boxes[i], 0, 1)],
            }
            for i in _nms(boxes, scores, classes, r)
        ]
    }


def detect_ssd(outputs: list[np.ndarray], r: Spec) -> dict[str, Any]:
    """SSD: anchors + box encodings -> boxes, per-class NMS (stretched input: no geometry)."""
    enc = next(o for o in outputs if o.shape[-1] == 4).reshape(-1, 4)
    cls = next(o for o in outputs if o.shape[-1] != 4).reshape(enc.shape[0], -1)[:, r["label_offset"] :]
    best = cls.argmax(1)
    score = cls[np.arange(len(best)), best]
    idx = np.flatnonzero(score > r["score"])
    a = np.asarray(r["anchors"], np.float32)[idx]
    t = enc[idx] / np.float32(r["box_scale"])
    yc, xc = t[:, 0] * a[:, 2] + a[:, 0], t[:, 1] * a[:, 3] + a[:, 1]
    h, w = np.exp(t[:, 2]) * a[:, 2], np.exp(t[:, 3]) * a[:, 3]
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 1)
    return _detections(boxes, score[idx], best[idx], r)


def detect_yolo(out: np.ndarray, geometry: tuple[float, ...], r: Spec) -> dict[str, Any]:
    """YOLOv8: [1, 4 + classes, N] (cx, cy, w, h in input pixels) -> boxes in the original image."""
    rows = out[0].T
    best = rows[:, 4:].argmax(1)
    score = rows[np.arange(len(best)), 4 + best]
    idx = np.flatnonzero(score > r["score"])
    cx, cy, bw, bh = rows[idx, :4].T
    sx, sy, ox, oy, w, h = geometry
    boxes = np.stack(
        [
            ((cx - bw / 2) / sx + ox) / w,
            ((cy - bh / 2) / sy + oy) / h,
            ((cx + bw / 2) / sx + ox) / w,
            ((cy + bh / 2) / sy + oy) / h,
        ],
        1,
    )
    return _detections(boxes, score[idx], best[idx], r)


def decode(outputs: list[np.ndarray], geometry: tuple[float, ...], r: Spec) -> dict[str, Any]:
    """Raw outputs -> the task's result, by model family."""
    real = _dequantize(outputs, r["output_quant"])
    if r["family"] == "ssd":
        return detect_ssd(real, r)
    if r["family"] == "yolov8":
        return detect_yolo(real[0], geometry, r)
    return classify(real[0], r)


# -- runtimes ------------------------------------------------------------------------------------


def runtime(spec: Spec) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The runtime's own API, as its documentation shows it, with the thread count set.

    ``spec["plain"]`` false: the ONNX session also gets the daemon's ``inter_op_num_threads = 1``
    (measured: up to 17% faster than the default on these machines), so a ratio to it measures the
    pipeline and not a session setting.
    """
    if spec["backend"] == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = spec["threads"]
        if not spec.get("plain"):
            so.inter_op_num_threads = 1
        session = ort.InferenceSession(spec["model_file"], so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=spec["model_file"], num_threads=spec["threads"])
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = [d["index"] for d in it.get_output_details()]

    def run(x: np.ndarray) -> list[np.ndarray]:
        it.set_tensor(inp, x)
        it.invoke()
        return [it.get_tensor(o) for o in outs]

    return run


# -- the loops -----------------------------------------------------------------------------------


def bare(spec: Spec) -> dict[str, Any]:
    """The limit: only the inference call, on frames decoded and preprocessed beforehand.

    Every frame of one pass of the video, in order, as the daemon sees them: the run time of these
    int8 models depends on the content (measured: 16 frames spread over the video run ~10% slower
    than one frame repeated), so fewer or repeated frames would not be the same work.
    """
    cap = cv2.VideoCapture(spec["video"])
    tensors = []
    while (image := cap.read()[1]) is not None:
        tensors.append(preprocess(image, spec["recipe"])[0])
    cap.release()
    run = runtime(spec)
    window, i = Window(spec["warmup_s"], spec["seconds"]), 0
    while True:
        t0 = time.perf_counter()
        run(tensors[i % len(tensors)])
        i += 1
        if not window.add((time.perf_counter() - t0) * 1e3):
            mb = sum(t.nbytes for t in tensors) / 2**20
            return window.result(
                note=f"bare: {len(tensors)} preprocessed frames ({mb:.0f} MB) held in memory"
            )


class _Publisher:
    """paho at QoS 1, waiting for every PUBACK: the tutorial's way of being sure."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic, self.seq = topic, 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(
        self, frame_ts: float, result: dict[str, Any], size: tuple[int, int], latency: dict[str, float]
    ) -> None:
        self.seq += 1
        payload = {
            "id": uuid.uuid4().hex,
            "seq": self.seq,
            "ts": round(time.time(), 3),
            "frame": {"index": self.seq - 1, "ts": round(frame_ts, 3), "width": size[0], "height": size[1]},
            **result,
            "latency_ms": latency,
        }
        self.client.publish(self.topic, json.dumps(payload), qos=1).wait_for_publish(5)


def serial(spec: Spec) -> dict[str, Any]:
    """decode -> preprocess -> run -> decode results in one thread; ``naive`` also publishes.

    ``naive`` runs until it is terminated: the benchmark's subscriber measures it like the daemon.
    """
    r = spec["recipe"]
    run = runtime(spec)
    publisher = _Publisher(spec["mqtt_port"], spec["topic"]) if spec.get("publish") else None
    window = Window(spec["warmup_s"], spec["seconds"])
    for image, ts, _ in frames(spec["video"]):
        x, geometry = preprocess(image, r)
        t0 = time.perf_counter()
        outputs = run(x)
        inference_ms = (time.perf_counter() - t0) * 1e3
        result = decode(outputs, geometry, r)
        if publisher is not None:
            publisher.send(
                ts, result, (image.shape[1], image.shape[0]), {"inference": round(inference_ms, 3)}
            )
        elif not window.add((time.time() - ts) * 1e3):
            return window.result()
    raise AssertionError("unreachable")


def nudenet_loop(spec: Spec) -> dict[str, Any]:
    """nudenet's own detector (its pre- and post-processing) on every frame of the video."""
    import nudenet
    import onnxruntime as ort

    detector = nudenet.NudeDetector()
    # same model file, same providers; only the thread count is set, as for every contender
    so = ort.SessionOptions()
    so.intra_op_num_threads = spec["threads"]
    detector.onnx_session = ort.InferenceSession(spec["model_file"], so, providers=["CPUExecutionProvider"])
    window = Window(spec["warmup_s"], spec["seconds"])
    for image, ts, _ in frames(spec["video"]):
        detector.detect(image)
        if not window.add((time.time() - ts) * 1e3):
            return window.result(note="nudenet.NudeDetector.detect; session re-created with the thread count")
    raise AssertionError("unreachable")


def opencv_dnn(spec: Spec) -> dict[str, Any]:
    """The original SSDLite TF graph (float) in cv2.dnn, with OpenCV's own SSD decoding and NMS."""
    if not hasattr(cv2.dnn, "readNetFromTensorflow"):
        raise RuntimeError(
            f"OpenCV {cv2.__version__} has no TensorFlow importer (dropped in 5.1): "
            "install 'opencv-python-headless<5.1' in --peer-python"
        )
    engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
    args = [spec["graph_pb"], spec["graph_pbtxt"]] + ([engine] if engine is not None else [])
    cv2.setNumThreads(spec["threads"])
    net = cv2.dnn.readNetFromTensorflow(*args)
    window = Window(spec["warmup_s"], spec["seconds"])
    for image, ts, _ in frames(spec["video"]):
        net.setInput(cv2.dnn.blobFromImage(image, 1.0, (300, 300), (0, 0, 0), swapRB=True, crop=False))
        out = net.forward("detection_out").reshape(-1, 7)
        _ = out[out[:, 2] > 0.5]
        if not window.add((time.time() - ts) * 1e3):
            return window.result(note=f"cv2 {cv2.__version__}, classic engine, float graph")
    raise AssertionError("unreachable")


def ultralytics_loop(spec: Spec) -> dict[str, Any]:
    """``YOLO(model.onnx).predict(source=video, stream=True)``; restarted when the video ends."""
    import onnxruntime as ort
    from ultralytics import YOLO

    base, threads = ort.InferenceSession, spec["threads"]

    class _Session(base):  # type: ignore[misc,valid-type]
        """Ultralytics passes no session options: give it the thread count every contender gets."""

        def __init__(self, path: Any, sess_options: Any = None, *args: Any, **kwargs: Any) -> None:
            options = sess_options or ort.SessionOptions()
            options.intra_op_num_threads = threads
            super().__init__(path, options, *args, **kwargs)

    ort.InferenceSession = _Session
    model = YOLO(spec["model_file"], task="detect")
    window = Window(spec["warmup_s"], spec["seconds"])
    stages: list[dict[str, float]] = []  # Ultralytics' own per-frame preprocess/inference/postprocess ms
    last = time.time()
    while True:
        predictions = model.predict(source=spec["video"], stream=True, imgsz=320, device="cpu", verbose=False)
        for result in predictions:
            now = time.time()
            if window.start is not None:
                stages.append(result.speed)
            # frame timestamps are not exposed; the time between results is the per-frame cost
            if not window.add((now - last) * 1e3):
                import torch
                import ultralytics

                # Ultralytics sets torch to one thread less than the CPUs and OpenCV to none
                # (serial) itself; say what the measured loop ran with
                return window.result(
                    note=f"ultralytics {ultralytics.__version__} (torch {torch.__version__}); session "
                    f"created with the thread count; torch threads {torch.get_num_threads()}, OpenCV "
                    f"threads {cv2.getNumThreads()}",
                    own_stage_p50_ms=speeds(stages),
                )
            last = now


def speeds(stages: list[dict[str, float]]) -> dict[str, float]:
    """Median of each of Ultralytics' per-frame timings (``Results.speed``, ms)."""
    keys = stages[0] if stages else {}
    return {k: float(np.median([s[k] for s in stages if k in s])) for k in keys}


WORKERS: dict[str, Callable[[Spec], dict[str, Any]]] = {
    "bare": bare,
    "bare-default": bare,
    "serial": serial,
    "naive": serial,
    "nudenet": nudenet_loop,
    "opencv-dnn": opencv_dnn,
    "ultralytics": ultralytics_loop,
}


def main() -> None:
    """Run one worker and print its result line."""
    kind, spec_file = sys.argv[1], Path(sys.argv[2])
    result = WORKERS[kind](json.loads(spec_file.read_text()))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
