"""``model.yaml``: what a model bundle says about its task, family, pre- and post-processing.

Image models (the default ``input: {kind: image}``) use ``preprocess:``; sensor-window models
declare ``input: {kind: window, channels, window, ...}`` and one of the window tasks (anomaly,
regression, classification).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Task = Literal["classification", "detection", "anomaly", "regression"]
Family = Literal[
    "classification",
    "ssd",
    "tflite_detection_postprocess",
    "yolov5",
    "yolov8",
    "yolo_end2end",
    "yolox",
    "rtdetr",
    "mediapipe_ssd",
    "anomaly_score",
    "reconstruction",
    "regression",
]

DETECTION_FAMILIES: frozenset[str] = frozenset(
    {
        "ssd",
        "tflite_detection_postprocess",
        "yolov5",
        "yolov8",
        "yolo_end2end",
        "yolox",
        "rtdetr",
        "mediapipe_ssd",
    }
)
TASK_FAMILIES: dict[str, frozenset[str]] = {
    "classification": frozenset({"classification"}),
    "detection": DETECTION_FAMILIES,
    "anomaly": frozenset({"anomaly_score", "reconstruction"}),
    "regression": frozenset({"regression"}),
}
WINDOW_TASKS: frozenset[str] = frozenset({"anomaly", "regression", "classification"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelFiles(_Strict):
    """Model files of the bundle, relative to the bundle folder."""

    onnx: str | None = Field(None, description="ONNX model file")
    tflite: str | None = Field(None, description="TFLite (LiteRT) model file")

    @model_validator(mode="after")
    def _at_least_one(self) -> ModelFiles:
        if self.onnx is None and self.tflite is None:
            raise ValueError("name at least one model file (onnx: or tflite:)")
        return self


class PreprocessSpec(_Strict):
    """How an image becomes the model's input tensor."""

    resize: Literal["stretch", "center_crop", "letterbox"] = Field(
        "stretch", description="stretch to the input size, centre-crop then resize, or letterbox"
    )
    crop_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="center_crop: fraction of the shorter side kept"
    )
    color: Literal["rgb", "bgr"] = Field("rgb", description="channel order the model expects")
    mean: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="subtracted from 0..255 pixels, in the model's channel order"
    )
    std: tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="pixels are divided by this after the mean is subtracted"
    )
    pad_value: int = Field(114, ge=0, le=255, description="letterbox: border pixel value")
    pad: Literal["centre", "bottom_right"] = Field(
        "centre", description="letterbox: image in the centre, or top-left with the padding after it (YOLOX)"
    )
    interpolation: Literal["linear", "area", "nearest", "cubic", "antialias"] = Field(
        "linear",
        description="resizing: OpenCV's linear, area, nearest, cubic; antialias: Pillow's bilinear "
        "(a filter widened when shrinking; torchvision and Ultralytics' classifiers)",
    )
    input_size: tuple[int, int] | None = Field(
        None, description="[height, width] for models whose input size is dynamic"
    )
    stride: int = Field(
        32,
        ge=0,
        description="letterbox on a model with dynamic height/width: pad only to the next multiple "
        "of this around the image, not to the full input_size (0: always the full input_size)",
    )

    @field_validator("std")
    @classmethod
    def _std_nonzero(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v


class AnchorSpec(_Strict):
    """TF Object Detection API ``ssd_anchor_generator`` parameters (normalised anchors)."""

    generator: Literal["ssd"] = Field("ssd", description="anchor generator (ssd_anchor_generator)")
    min_scale: float = Field(0.2, gt=0, description="anchor scale of the first feature map")
    max_scale: float = Field(0.95, gt=0, description="anchor scale of the last feature map (linear between)")
    aspect_ratios: tuple[float, ...] = Field(
        (1.0, 2.0, 0.5, 3.0, 0.3333), description="width/height ratios of the anchors at each cell"
    )
    feature_map_sizes: tuple[int, ...] = Field(
        ..., min_length=1, description="grid size of each feature map, in the model's output order"
    )
    reduce_boxes_in_lowest_layer: bool = Field(
        True, description="first feature map: 3 anchors only (scale 0.1 at 1:1, min_scale at 2:1 and 1:2)"
    )
    interpolated_scale_aspect_ratio: float = Field(
        1.0, description="ratio of one more anchor per cell, sized between this and the next map (0: none)"
    )


class MediapipeAnchorSpec(_Strict):
    """MediaPipe ``SsdAnchorsCalculator`` options (fixed-size anchors: only the centres matter)."""

    generator: Literal["mediapipe"] = Field(..., description="anchor generator (MediaPipe's)")
    strides: tuple[int, ...] = Field(
        ..., min_length=1, description="stride of each layer; layers of equal stride share one grid"
    )
    aspect_ratios: int = Field(1, ge=1, description="number of aspect ratios per layer (anchors per cell)")
    interpolated_scale_aspect_ratio: float = Field(
        1.0, description="1.0: one more anchor per cell and layer, as MediaPipe's face detectors (0: none)"
    )
    anchor_offset: float = Field(0.5, description="anchor centre within its cell (x and y)")


class PostprocessSpec(_Strict):
    """Decoder settings. Detection defaults suit most detectors; classification uses top_k."""

    top_k: int = Field(5, ge=1, description="classification: classes reported")
    softmax: Literal["auto"] | bool = Field(
        "auto", description="classification: apply softmax (auto: when outputs are not probabilities)"
    )
    score_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="minimum score (default 0.25 detection, 0 classification)"
    )
    iou_threshold: float = Field(0.45, gt=0.0, le=1.0, description="NMS IoU threshold")
    max_detections: int = Field(100, ge=1, description="detections kept after NMS")
    class_agnostic_nms: bool = Field(False, description="one NMS over all classes")
    score_activation: Literal["auto", "none", "sigmoid", "softmax"] = Field(
        "auto",
        description="activation applied to raw class outputs (auto: sigmoid for mediapipe_ssd, else none)",
    )
    label_offset: int = Field(0, ge=0, description="leading non-object columns (background)")
    num_classes: int | None = Field(
        None,
        ge=1,
        description="yolov8: class score rows after the 4 box rows; rows past them (key points, mask "
        "coefficients of pose and segment heads) are read past (default: all rows after the box)",
    )
    box_scale: tuple[float, float, float, float] = Field(
        (10.0, 10.0, 5.0, 5.0), description="ssd: y, x, h, w box-encoding scale factors"
    )
    anchors: AnchorSpec | MediapipeAnchorSpec | None = Field(
        None,
        description="ssd: ssd_anchor_generator parameters; mediapipe_ssd: {generator: mediapipe, strides: "
        "[...]} (default: the face detectors' options whose anchor count fits the outputs)",
    )


class ImageInput(_Strict):
    """An image model (the default): ``preprocess:`` says how images become its input."""

    kind: Literal["image"] = Field("image", description="an image model")


class WindowInput(_Strict):
    """A sensor-window model: input ``[1, window, channels]`` (NWC) or ``[1, channels, window]`` (NCW).

    ``mean``/``std`` (per channel, in channel order) standardise the window before inference, as
    in training; the source's own ``normalize:`` (calibration) is applied before that.
    """

    kind: Literal["window"] = Field(..., description="a sensor-window model")
    channels: tuple[str, ...] = Field(..., min_length=1, description="channel names, in tensor order")
    window: int = Field(..., ge=1, description="samples per window")
    rate_hz: float | None = Field(None, gt=0, description="sample rate the model was trained at")
    layout: Literal["NWC", "NCW"] = Field("NWC", description="[1, window, channels] or [1, channels, window]")
    mean: tuple[float, ...] | None = Field(None, description="per channel, subtracted")
    std: tuple[float, ...] | None = Field(None, description="per channel, divides after the mean")

    @model_validator(mode="after")
    def _per_channel(self) -> WindowInput:
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) != len(self.channels):
                raise ValueError(f"{key} has {len(values)} values for {len(self.channels)} channels")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("std values must be non-zero")
        return self


class AnomalySpec(_Strict):
    """How an anomaly score becomes a flag: ``flag = score >= threshold``.

    The score is the model's single output (family ``anomaly_score``) or, for an autoencoder
    (family ``reconstruction``), the mean squared error between the standardised input window
    and the model's output.
    """

    threshold: float = Field(..., description="scores at or above it are flagged")
    score: str = Field("", description="what the score means (documentation)")


class ModelSpec(_Strict):
    """A model bundle's ``model.yaml``."""

    name: str = Field(..., min_length=1, description="model name (updates replace a model of this name)")
    version: str = Field("1", min_length=1, description="numeric version (3, 1.4.2); updates only go up")
    task: Task = Field(..., description="what the model answers")
    family: Family = Field(..., description="output layout, which selects the decoder; must fit the task")
    description: str = Field("", description="free text for people")
    license: str | None = Field(None, description="the model's licence (shown by edge-runtime models)")
    files: ModelFiles = Field(..., description="the model file per runtime")
    input: ImageInput | WindowInput = Field(
        default_factory=ImageInput, discriminator="kind", description="what the model takes"
    )
    labels: str | None = Field(None, description="labels file: one label per line, line i = id i")
    preprocess: PreprocessSpec = Field(
        default_factory=PreprocessSpec, description="image models: how an image becomes the input"
    )
    postprocess: PostprocessSpec = Field(
        default_factory=PostprocessSpec, description="decoder settings for the family"
    )
    anomaly: AnomalySpec | None = Field(None, description="task anomaly: the score threshold")
    sha256: dict[str, str] = Field(default_factory=dict, description="file name -> sha256 hex")
    provenance: dict[str, Any] | None = Field(
        None, description="where the model came from and how it was made (documentation)"
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, (int, float)) else v

    @model_validator(mode="after")
    def _family_fits_task(self) -> ModelSpec:
        if self.family not in TASK_FAMILIES[self.task]:
            raise ValueError(f"family {self.family!r} does not fit task {self.task!r}")
        anchors = self.postprocess.anchors
        if self.family == "ssd" and not isinstance(anchors, AnchorSpec):
            raise ValueError("family 'ssd' needs postprocess.anchors: {feature_map_sizes: [...]}")
        mediapipe = anchors is None or isinstance(anchors, MediapipeAnchorSpec)
        if self.postprocess.num_classes is not None and self.family != "yolov8":
            raise ValueError("postprocess.num_classes goes with family 'yolov8'")
        if self.family == "mediapipe_ssd" and not mediapipe:
            raise ValueError("family 'mediapipe_ssd' takes postprocess.anchors: {generator: mediapipe, ...}")
        return self

    @model_validator(mode="after")
    def _input_fits_task(self) -> ModelSpec:
        if self.input.kind == "window" and self.task not in WINDOW_TASKS:
            raise ValueError(f"task {self.task!r} does not take sensor windows")
        if self.input.kind == "image" and self.task in ("anomaly", "regression"):
            raise ValueError(f"task {self.task!r} needs input: {{kind: window, ...}}")
        if (self.task == "anomaly") != (self.anomaly is not None):
            raise ValueError("anomaly: {threshold: ...} goes with task anomaly, and only with it")
        return self
