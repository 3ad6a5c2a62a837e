"""Pixel spacing from --mm-per-px / --depth-mm, and the errors that say how to fix a bad value."""

from __future__ import annotations

import pytest

from realtime.calibration import (
    UNCALIBRATED,
    Calibration,
    calibration_text,
    describe_calibration,
    parse_calibration,
    parse_mm_per_px,
)
from train.errors import UserError


def test_scalar_spacing_is_square() -> None:
    cal = parse_calibration("0.08", None, None)
    assert cal is not None
    assert (cal.sx, cal.sy) == (0.08, 0.08)
    assert cal.isotropic
    assert cal.pixel_area_mm2 == pytest.approx(0.0064)
    assert cal.source == "--mm-per-px 0.08"
    assert cal.text() == "0.0800 x 0.0800 mm/px (from --mm-per-px 0.08)"


def test_pair_is_x_then_y() -> None:
    cal = parse_calibration("0.08,0.1", None, 480)
    assert cal is not None
    assert (cal.sx, cal.sy) == (0.08, 0.1)
    assert not cal.isotropic
    assert parse_mm_per_px(" 0.05 , 0.06 ") == (0.05, 0.06)
    assert parse_mm_per_px(0.07) == (0.07, 0.07)


def test_depth_over_image_height() -> None:
    cal = parse_calibration(None, 37.44, 468)
    assert cal is not None
    assert cal.sx == cal.sy == pytest.approx(0.08)
    assert cal.text() == "0.0800 x 0.0800 mm/px (from --depth-mm 37.44 over 468 px)"
    assert parse_calibration(None, "40", 500).sx == pytest.approx(0.08)  # type: ignore[union-attr]


def test_uncalibrated_says_so() -> None:
    assert parse_calibration(None, None, 468) is None
    d = describe_calibration(None)
    assert d == {"calibrated": False, "mm_per_px_x": None, "mm_per_px_y": None, "source": None,
                 "text": UNCALIBRATED}
    assert calibration_text(None) == "uncalibrated"


def test_describe_calibrated() -> None:
    cal = Calibration(0.08, 0.09, "--mm-per-px 0.08,0.09")
    d = describe_calibration(cal)
    assert d["calibrated"] is True
    assert (d["mm_per_px_x"], d["mm_per_px_y"]) == (0.08, 0.09)
    assert d["text"] == str(cal) == calibration_text(cal) == "0.0800 x 0.0900 mm/px (from --mm-per-px 0.08,0.09)"


@pytest.mark.parametrize("text", ["0", "-0.1", "abc", "", "0.1,0.2,0.3", "nan", "inf", "0.1,", ",0.1", "0.1,-2"])
def test_bad_mm_per_px(text: str) -> None:
    with pytest.raises(UserError, match="--mm-per-px") as err:
        parse_calibration(text, None, 468)
    assert "e.g." in str(err.value) or "FX,FY" in str(err.value)


def test_both_flags_is_an_error() -> None:
    with pytest.raises(UserError, match="either --mm-per-px or --depth-mm, not both"):
        parse_calibration("0.08", 40.0, 468)


def test_depth_needs_a_height() -> None:
    with pytest.raises(UserError, match="image height.*--mm-per-px"):
        parse_calibration(None, 40.0, None)
    with pytest.raises(UserError, match="positive number of pixels"):
        parse_calibration(None, 40.0, 0)


@pytest.mark.parametrize("depth", [0.0, -5.0, "deep", float("nan"), True])
def test_bad_depth(depth: object) -> None:
    with pytest.raises(UserError, match="--depth-mm"):
        parse_calibration(None, depth, 468)  # type: ignore[arg-type]


@pytest.mark.parametrize("sx,sy", [(0.0, 0.1), (0.1, -1.0), (float("inf"), 0.1), ("0.1", 0.1)])
def test_calibration_validates(sx: object, sy: object) -> None:
    with pytest.raises(UserError):
        Calibration(sx, sy, "test")  # type: ignore[arg-type]
