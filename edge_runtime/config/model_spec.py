"""``model.yaml``: what a model bundle says about its task, family, pre- and post-processing."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Task = Literal["classification", "detection"]
Family = Literal["classification", "ssd", "tflite_detection_postprocess", "yolov5", "yolov8"]

DETECTION_FAMILIES: frozenset[str] = frozenset({"ssd", "tflite_detection_postprocess", "yolov5", "yolov8"})


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
    interpolation: Literal["linear", "area", "nearest", "cubic"] = Field(
        "linear", description="OpenCV interpolation used for resizing"
    )
    input_size: tuple[int, int] | None = Field(
        None, description="[height, width] for models whose input size is dynamic"
    )

    @field_validator("std")
    @classmethod
    def _std_nonzero(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v


class AnchorSpec(_Strict):
    """TF Object Detection API ``ssd_anchor_generator`` parameters (normalised anchors)."""

    generator: Literal["ssd"] = "ssd"
    min_scale: float = Field(0.2, gt=0)
    max_scale: float = Field(0.95, gt=0)
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    feature_map_sizes: tuple[int, ...] = Field(..., min_length=1)
    reduce_boxes_in_lowest_layer: bool = True
    interpolated_scale_aspect_ratio: float = 1.0


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
    score_activation: Literal["none", "sigmoid", "softmax"] = Field(
        "none", description="activation applied to raw class outputs"
    )
    label_offset: int = Field(0, ge=0, description="leading non-object columns (background)")
    box_scale: tuple[float, float, float, float] = Field(
        (10.0, 10.0, 5.0, 5.0), description="ssd: y, x, h, w box-encoding scale factors"
    )
    anchors: AnchorSpec | None = Field(None, description="ssd: anchor generator")


class ModelSpec(_Strict):
    """A model bundle's ``model.yaml``."""

    name: str = Field(..., min_length=1)
    version: str = Field("1", min_length=1)
    task: Task
    family: Family
    description: str = ""
    license: str | None = None
    files: ModelFiles
    labels: str | None = Field(None, description="labels file: one label per line, line i = id i")
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    postprocess: PostprocessSpec = Field(default_factory=PostprocessSpec)
    sha256: dict[str, str] = Field(default_factory=dict, description="file name -> sha256 hex")
    provenance: dict[str, Any] | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, (int, float)) else v

    @model_validator(mode="after")
    def _family_fits_task(self) -> ModelSpec:
        is_detector = self.family in DETECTION_FAMILIES
        if is_detector != (self.task == "detection"):
            raise ValueError(f"family {self.family!r} does not fit task {self.task!r}")
        if self.family == "ssd" and self.postprocess.anchors is None:
            raise ValueError("family 'ssd' needs postprocess.anchors")
        return self
