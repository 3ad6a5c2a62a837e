"""Tests for train.preprocess: the one preprocessing shared by training and inference."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.errors import UserError
from train.preprocess import (
    DEFAULT_SIZE,
    PREPROCESSING_ID,
    parse_size,
    preprocess_batch,
    preprocess_image,
    preprocess_mask,
    preprocessing_config,
    to_grey,
)

SIZE = (32, 24)  # (W, H): small, and not an integer ratio of the inputs below


def _random_bgr(height: int = 47, width: int = 61, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _square_mask(height: int = 47, width: int = 61) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[10:30, 15:40] = 255
    return mask


# --- sizes -----------------------------------------------------------------------------


def test_default_size_is_width_by_height() -> None:
    assert DEFAULT_SIZE == (384, 288)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("384x288", (384, 288)), (" 96 X 128 ", (96, 128)), ("64\u00d748", (64, 48))],
)
def test_parse_size(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["384", "0x288", "384x0", "-3x4", "a x b", "", "384x288x3", "3.5x4"])
def test_parse_size_rejects_bad_text(text: str) -> None:
    with pytest.raises(UserError, match="WIDTHxHEIGHT|positive"):
        parse_size(text)


# --- grey conversion -------------------------------------------------------------------


def test_to_grey_bgr_matches_cvtcolor_and_opencv_greyscale_read(tmp_path: Path) -> None:
    bgr = _random_bgr()
    grey = to_grey(bgr)
    assert grey.dtype == np.uint8 and grey.shape == bgr.shape[:2]
    np.testing.assert_array_equal(grey, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    # The authors read BMP files with IMREAD_GRAYSCALE. On an ultrasound-like frame
    # (grey, with a few coloured markers) it agrees exactly on grey pixels and within
    # one level on coloured ones (OpenCV's decoder rounds its own way).
    frame = np.repeat(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None], 3, axis=2)
    frame[:5, :5] = bgr[:5, :5]
    path = tmp_path / "frame.bmp"
    assert cv2.imwrite(str(path), frame)
    read = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(int)
    ours = to_grey(frame).astype(int)
    np.testing.assert_array_equal(ours[5:], read[5:])
    assert np.abs(ours - read).max() <= 1


def test_to_grey_accepts_grey_single_channel_and_bgra() -> None:
    bgr = _random_bgr()
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert to_grey(grey) is grey
    np.testing.assert_array_equal(to_grey(grey[:, :, None]), grey)
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 7, dtype=np.uint8)])
    np.testing.assert_array_equal(to_grey(bgra), grey)


def test_to_grey_keeps_16_bit_and_float() -> None:
    bgr16 = _random_bgr().astype(np.uint16) * 257
    grey16 = to_grey(bgr16)
    assert grey16.dtype == np.uint16 and grey16.ndim == 2
    bgr64 = _random_bgr().astype(np.float64) / 255.0
    grey64 = to_grey(bgr64)
    assert grey64.dtype == np.float64
    expected = cv2.cvtColor(bgr64.astype(np.float32), cv2.COLOR_BGR2GRAY)
    np.testing.assert_allclose(grey64, expected, atol=1e-6)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((5, 6, 2), np.uint8),
        np.zeros((5, 6, 5), np.uint8),
        np.zeros(7, np.uint8),
        np.zeros((2, 5, 6, 3), np.uint8),
        np.zeros((5, 6), np.int32),
        np.zeros((0, 6), np.uint8),
    ],
)
def test_to_grey_rejects_other_shapes_and_dtypes(array: np.ndarray) -> None:
    with pytest.raises(UserError):
        to_grey(array)


# --- image preprocessing ---------------------------------------------------------------


def test_preprocess_image_zero_mean_unit_std_and_shape() -> None:
    out = preprocess_image(_random_bgr(90, 120), DEFAULT_SIZE)
    assert out.shape == (288, 384) and out.dtype == np.float32
    assert abs(float(out.mean(dtype=np.float64))) < 1e-5
    assert abs(float(out.std(dtype=np.float64)) - 1.0) < 1e-5


def test_preprocess_image_matches_hand_computation() -> None:
    bgr = _random_bgr()
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    resized = cv2.resize(grey, SIZE, interpolation=cv2.INTER_LINEAR).astype(np.float64)
    expected = ((resized - resized.mean()) / resized.std()).astype(np.float32)
    np.testing.assert_array_equal(preprocess_image(bgr, SIZE), expected)
    np.testing.assert_array_equal(preprocess_image(grey, SIZE), expected)


def test_preprocess_image_16_bit_close_to_8_bit() -> None:
    grey = cv2.cvtColor(_random_bgr(), cv2.COLOR_BGR2GRAY)
    out8 = preprocess_image(grey, SIZE)
    out16 = preprocess_image(grey.astype(np.uint16) * 257, SIZE)
    assert out16.dtype == np.float32
    np.testing.assert_allclose(out16, out8, atol=0.03)  # only the resize's rounding differs


def test_preprocess_image_constant_gives_zeros_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = preprocess_image(np.full((30, 40), 77, dtype=np.uint8), SIZE)
        out_f = preprocess_image(np.full((30, 40), 0.1, dtype=np.float64), SIZE)
    assert out.shape == (24, 32) and not out.any()
    assert not out_f.any()


def test_preprocess_image_same_size_skips_nothing() -> None:
    grey = cv2.cvtColor(_random_bgr(24, 32), cv2.COLOR_BGR2GRAY).astype(np.float64)
    np.testing.assert_allclose(preprocess_image(grey, SIZE), (grey - grey.mean()) / grey.std(), rtol=1e-6)


def test_preprocess_image_rejects_nan_and_bad_size() -> None:
    image = np.zeros((10, 10), np.float32)
    image[3, 3] = np.nan
    with pytest.raises(UserError, match="NaN"):
        preprocess_image(image, SIZE)
    with pytest.raises(UserError):
        preprocess_image(np.zeros((10, 10), np.uint8), (0, 10))


def test_preprocess_batch() -> None:
    frames = [_random_bgr(seed=s) for s in range(3)]
    batch = preprocess_batch(frames, SIZE)
    assert batch.shape == (3, 1, 24, 32) and batch.dtype == np.float32
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(batch[i, 0], preprocess_image(frame, SIZE))
    assert preprocess_batch([], SIZE).shape == (0, 1, 24, 32)


# --- mask preprocessing ----------------------------------------------------------------


def test_preprocess_mask_soft_edges_and_division_by_255() -> None:
    mask = _square_mask()
    out = preprocess_mask(mask, SIZE)
    assert out.shape == (24, 32) and out.dtype == np.float32
    expected = (cv2.resize(mask, SIZE, interpolation=cv2.INTER_LINEAR).astype(np.float64) / 255).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.any((out > 0) & (out < 1)), "bilinear resizing must leave soft edges"


def test_preprocess_mask_bool_and_colour() -> None:
    mask = _square_mask()
    np.testing.assert_array_equal(preprocess_mask(mask > 0, SIZE), preprocess_mask(mask, SIZE))
    np.testing.assert_array_equal(preprocess_mask(np.dstack([mask] * 3), SIZE), preprocess_mask(mask, SIZE))
    with pytest.raises(UserError, match="uint8"):
        preprocess_mask(mask.astype(np.float32), SIZE)


def test_preprocessing_config_is_json_and_names_the_pipeline() -> None:
    config = preprocessing_config((96, 64))
    assert json.loads(json.dumps(config)) == config
    assert config["id"] == PREPROCESSING_ID
    assert config["size"] == [96, 64]
    assert "INTER_LINEAR" in config["interpolation"]
    assert "z-score" in config["normalisation"]
