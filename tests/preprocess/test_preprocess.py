"""Pre-processing: geometry transforms map boxes back exactly; (de)quantisation round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.preprocess import geometry
from edge_runtime.preprocess.tensor import InputEncoder, dequantize, normalise, quantize, to_input
from edge_runtime.types import Quantization, TensorSpec


def _image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_letterbox_pads_evenly_and_maps_boxes_back_to_the_original() -> None:
    img = _image(300, 600)
    out, t = geometry.letterbox(img, (320, 320), pad_value=114)
    assert out.shape == (320, 320, 3)
    assert (out[:79] == 114).all() and (out[-79:] == 114).all()  # 160 rows of image, centred
    # the full image area inside the letterbox maps back to the full original image
    inner = np.array([[0, 80 / 320, 1, 240 / 320]], np.float32)
    np.testing.assert_allclose(t.to_original(inner), [[0, 0, 1, 1]], atol=1e-6)
    # a point in the middle stays in the middle
    mid = np.array([[0.25, 0.5, 0.75, 0.5]], np.float32)
    np.testing.assert_allclose(t.to_original(mid), [[0.25, 0.5, 0.75, 0.5]], atol=1e-6)


def test_center_crop_keeps_the_middle_and_maps_back() -> None:
    img = _image(400, 800)
    out, t = geometry.center_crop(img, (200, 200), fraction=1.0)
    assert out.shape == (200, 200, 3)
    # the whole crop is the central 400x400 square: x from 200 to 600 of 800
    np.testing.assert_allclose(t.to_original(np.array([[0, 0, 1, 1]])), [[0.25, 0, 0.75, 1]], atol=1e-6)
    _, t2 = geometry.center_crop(img, (200, 200), fraction=0.5)
    np.testing.assert_allclose(
        t2.to_original(np.array([[0, 0, 1, 1]])), [[0.375, 0.25, 0.625, 0.75]], atol=1e-6
    )


def test_stretch_maps_unit_box_to_unit_box() -> None:
    _, t = geometry.stretch(_image(123, 457), (300, 300))
    np.testing.assert_allclose(t.to_original(np.array([[0, 0, 1, 1]])), [[0, 0, 1, 1]], atol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "scale", "zp"),
    [(np.uint8, 1 / 255, 0), (np.int8, 0.0078, 0), (np.int8, 0.02, -10), (np.uint8, 0.05, 128)],
)
def test_quantize_dequantize_round_trip_within_half_a_step(dtype: type, scale: float, zp: int) -> None:
    q = Quantization(scale, zp)
    info = np.iinfo(dtype)
    lo, hi = (info.min - zp) * scale, (info.max - zp) * scale
    x = np.linspace(lo, hi, 1001, dtype=np.float32)
    back = dequantize(quantize(x, q, np.dtype(dtype)), q)
    assert np.abs(back - x).max() <= scale / 2 + 1e-6


def test_quantize_saturates_instead_of_wrapping() -> None:
    q = Quantization(0.01, 0)
    assert quantize(np.array([10.0, -10.0]), q, np.dtype(np.int8)).tolist() == [127, -128]


def test_to_input_builds_nchw_float_and_nhwc_int8_batches() -> None:
    img = _image(4, 5)
    mean, std = (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)
    f = to_input(img, TensorSpec("x", (1, 3, 4, 5), np.dtype(np.float32), "NCHW"), mean, std)
    assert f.shape == (1, 3, 4, 5) and f.dtype == np.float32
    np.testing.assert_allclose(f[0, :, 1, 2], (img[1, 2] - 127.0) / 128.0, rtol=1e-6)
    spec = TensorSpec("x", (1, 4, 5, 3), np.dtype(np.int8), "NHWC", Quantization(1 / 128, 0))
    q = to_input(img, spec, mean, std)
    assert q.shape == (1, 4, 5, 3) and q.dtype == np.int8
    np.testing.assert_array_equal(q[0], np.clip(img.astype(int) - 127, -128, 127))
    h = to_input(img, TensorSpec("x", (1, 4, 5, 3), np.dtype(np.float16), "NHWC"), mean, std)
    assert h.dtype == np.float16


def test_normalise_uses_per_channel_mean_and_std() -> None:
    img = np.full((1, 1, 3), 100, np.uint8)
    np.testing.assert_allclose(normalise(img, (0, 50, 100), (1, 2, 4))[0, 0], [100, 25, 0])


@pytest.mark.parametrize(
    ("dtype", "layout", "quant"),
    [
        (np.float32, "NCHW", None),
        (np.float32, "NHWC", None),
        (np.int8, "NHWC", Quantization(0.0078125, 0)),
        (np.uint8, "NHWC", Quantization(0.0078125, 128)),
        (np.uint8, "NCHW", None),
        (np.float16, "NCHW", None),
    ],
)
def test_input_encoder_is_bit_identical_to_the_arithmetic(
    dtype: type, layout: str, quant: Quantization | None
) -> None:
    """The table lookup gives exactly the tensor that normalising (and quantising) gives."""
    image = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    shape = (1, 3, 37, 53) if layout == "NCHW" else (1, 37, 53, 3)
    spec = TensorSpec("in", shape, np.dtype(dtype), layout, quant)  # type: ignore[arg-type]
    mean, std = (123.7, 116.3, 103.5), (58.4, 57.1, 57.4)
    expected = to_input(image, spec, mean, std)
    got = InputEncoder(spec, mean, std)(image)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)
    # a BGR image in, an RGB tensor out: the same as converting first
    rgb = to_input(np.ascontiguousarray(image[:, :, ::-1]), spec, mean, std)
    assert np.array_equal(InputEncoder(spec, mean, std)(image, swap_rb=True), rgb)


@pytest.mark.parametrize(
    ("hw", "size", "expected"),
    [
        ((480, 640), (320, 320), (256, 320)),  # Ultralytics: 4:3 at imgsz 320 -> 320x256
        ((720, 1280), (640, 640), (384, 640)),  # 16:9 at 640 -> 640x384
        ((512, 512), (320, 320), (320, 320)),  # square stays square
        ((1000, 300), (320, 320), (320, 96)),  # portrait: the width shrinks
    ],
)
def test_stride_rectangle_is_ultralytics_minimal_rectangle(
    hw: tuple[int, int], size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert geometry.stride_rectangle(hw, size, 32) == expected


def test_letterbox_into_the_stride_rectangle_maps_boxes_back_exactly() -> None:
    img = _image(480, 640)
    size = geometry.stride_rectangle(img.shape[:2], (320, 320), 32)
    out, t = geometry.letterbox(img, size)
    assert out.shape == (256, 320, 3) and (t.pad_x, t.pad_y) == (0, 8)
    inner = np.array([[0, 8 / 256, 1, 248 / 256]], np.float32)  # the image inside the padding
    np.testing.assert_allclose(t.to_original(inner), [[0, 0, 1, 1]], atol=1e-6)


def test_antialias_resize_is_pillows_bilinear() -> None:
    """Values Pillow 12's ``Image.resize(size, BILINEAR)`` gives for these arrays (a filter as wide
    as the downscale factor, unlike OpenCV's linear, which samples 2 pixels)."""
    row = np.array([[0, 0, 255, 255, 10, 200, 30]], np.uint8).repeat(3, 0)[..., None].repeat(3, 2)
    out, _ = geometry.stretch(row, (3, 3), interpolation="antialias")
    assert out[0, :, 0].tolist() == [55, 179, 99]
    ramp = (np.arange(64).reshape(8, 8) * 4 % 256).astype(np.uint8)[..., None].repeat(3, 2)
    out, _ = geometry.stretch(ramp, (5, 3), interpolation="antialias")
    assert out[:, :, 0].tolist() == [
        [17, 27, 37],
        [66, 76, 86],
        [116, 126, 136],
        [166, 176, 186],
        [215, 225, 235],
    ]
    assert (geometry.stretch(_image(5, 5), (10, 10), interpolation="antialias")[0] >= 0).all()


def test_antialias_center_crop_resizes_the_shorter_side_then_crops_as_torchvision() -> None:
    """Resize(64) of 600x400 gives 96x64 (int(64 * 600 / 400)); CenterCrop(64) keeps x 16..80."""
    img = _image(400, 600)
    out, t = geometry.center_crop(img, (64, 64), interpolation="antialias")
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(t.to_original(np.array([[0, 0, 1, 1]])), [[16 / 96, 0, 80 / 96, 1]], atol=1e-6)
    full, _ = geometry.stretch(img, (64, 96), interpolation="antialias")
    np.testing.assert_array_equal(out, full[:, 16:80])  # the crop of the resized image, edges and all
