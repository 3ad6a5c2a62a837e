"""Pixel spacing: how many millimetres one native pixel spans, and where that number came from.

A measurement in pixels only becomes a cross-sectional area in mm² once the pixel spacing is
known. Two ways to give it (command-line flags of ``mn-live`` / ``mn-segment``):

``--mm-per-px F`` or ``--mm-per-px FX,FY``
    The spacing itself: one number for square pixels, or a horizontal and a vertical spacing
    (mm per pixel along x = columns, y = rows) when the frame grabber stretches the image.
``--depth-mm D``
    The imaging depth shown on the scanner: the image height spans ``D`` mm, so
    ``mm/px = D / H`` where ``H`` is the image height in pixels. B-mode pixels are normally
    square, so the same spacing is used for both axes. ``H`` must be the height of the image
    that the depth spans: when the frame is cropped to a region of interest, pass the height of
    the scanner's image area, not the height of the crop.

Without either flag the tool runs *uncalibrated*: the mm columns stay empty and every output
says ``uncalibrated`` (:func:`describe_calibration`, :func:`calibration_text`). Nothing here
guesses a spacing.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from train.errors import UserError

log = logging.getLogger(__name__)

UNCALIBRATED = "uncalibrated"
"""The word every output uses when no pixel spacing was given."""

_HOW_TO = (
    "give the pixel spacing as --mm-per-px F (square pixels, e.g. 0.08) or --mm-per-px FX,FY "
    "(x = horizontal, y = vertical, e.g. 0.08,0.085), or the imaging depth as --depth-mm D "
    "(the depth shown on the scanner, e.g. 40)"
)


@dataclass(frozen=True)
class Calibration:
    """Pixel spacing of the native frame, in mm per pixel.

    ``sx``: mm per pixel along x (columns, horizontal); ``sy``: along y (rows, vertical).
    ``source``: where the numbers came from, as the person typed it (``"--mm-per-px 0.08"``,
    ``"--depth-mm 37.4"``), shown in every output beside the numbers.
    """

    sx: float
    sy: float
    source: str = "given"

    def __post_init__(self) -> None:
        for name in ("sx", "sy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise UserError(f"pixel spacing {name} must be a number, got {value!r}; {_HOW_TO}")
            if not math.isfinite(value) or value <= 0:
                raise UserError(f"pixel spacing {name} must be a positive number of mm per pixel, got {value!r}; "
                                f"{_HOW_TO}")
            object.__setattr__(self, name, float(value))

    @property
    def isotropic(self) -> bool:
        """True when the pixels are square (``sx == sy``)."""
        return self.sx == self.sy

    @property
    def pixel_area_mm2(self) -> float:
        """Area of one pixel in mm² (``sx * sy``)."""
        return self.sx * self.sy

    def text(self) -> str:
        """One line for logs, summaries and overlays, e.g. ``0.0800 x 0.0800 mm/px (from --depth-mm 37.4)``."""
        return f"{self.sx:.4f} x {self.sy:.4f} mm/px (from {self.source})"

    def describe(self) -> dict[str, Any]:
        """JSON-able description (see :func:`describe_calibration`)."""
        return {
            "calibrated": True,
            "mm_per_px_x": self.sx,
            "mm_per_px_y": self.sy,
            "source": self.source,
            "text": self.text(),
        }

    def __str__(self) -> str:
        return self.text()


def describe_calibration(calibration: Calibration | None) -> dict[str, Any]:
    """JSON-able description of a spacing, or of its absence.

    Calibrated: ``{"calibrated": True, "mm_per_px_x", "mm_per_px_y", "source", "text"}``.
    Uncalibrated: the same keys with ``calibrated`` False, ``None`` numbers and source, and
    ``text`` ``"uncalibrated"``.
    """
    if calibration is None:
        return {"calibrated": False, "mm_per_px_x": None, "mm_per_px_y": None, "source": None,
                "text": UNCALIBRATED}
    return calibration.describe()


def calibration_text(calibration: Calibration | None) -> str:
    """``"uncalibrated"`` or e.g. ``"0.0800 x 0.0800 mm/px (from --depth-mm 37.4)"``."""
    return UNCALIBRATED if calibration is None else calibration.text()


def _positive_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f"{what}: {text!r} is not a number; {_HOW_TO}") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{what}: {text!r} must be a positive, finite number; {_HOW_TO}")
    return value


def parse_mm_per_px(text: str | float) -> tuple[float, float]:
    """Parse the value of ``--mm-per-px``: ``"0.08"`` -> ``(0.08, 0.08)``, ``"0.08,0.085"`` -> ``(0.08, 0.085)``.

    A pair is ``FX,FY``: horizontal (x, columns) first, then vertical (y, rows). A number is
    taken as is. Usable as an argparse ``type=`` so a bad value fails before any work starts
    (it raises :class:`UserError`, which :func:`train.errors.run_cli` reports as one line).

    Raises:
        UserError: not one or two comma-separated positive finite numbers.
    """
    if isinstance(text, numbers.Real) and not isinstance(text, bool):
        value = _positive_number(str(text), "--mm-per-px")
        return value, value
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"--mm-per-px: expected a number or a pair FX,FY, got {text!r}; {_HOW_TO}")
    parts = [p.strip() for p in re.split(r"[,;]", text.strip())]
    if len(parts) == 1:
        value = _positive_number(parts[0], "--mm-per-px")
        return value, value
    if len(parts) == 2:
        return _positive_number(parts[0], "--mm-per-px (x)"), _positive_number(parts[1], "--mm-per-px (y)")
    raise UserError(f"--mm-per-px: expected one number or two (FX,FY), got {len(parts)} in {text!r}; {_HOW_TO}")


def parse_calibration(mm_per_px: str | float | None, depth_mm: float | str | None,
                      image_height: int | None) -> Calibration | None:
    """Turn the command-line flags into a :class:`Calibration`, or ``None`` (uncalibrated).

    Args:
        mm_per_px: the text of ``--mm-per-px`` (``"F"`` or ``"FX,FY"``), or ``None``.
        depth_mm: ``--depth-mm``: the imaging depth in mm spanned by the image height, or ``None``.
        image_height: height in pixels of the image the depth spans (native frame); needed only
            with ``depth_mm``. ``mm/px = depth_mm / image_height`` for both axes (square pixels).

    Returns:
        The spacing, or ``None`` when neither flag was given (the caller then says "uncalibrated").

    Raises:
        UserError: both flags given; a value that is not a positive finite number; a depth when
            the image height is not known (or not a positive integer). The message says how to fix it.
    """
    if mm_per_px is not None and depth_mm is not None:
        raise UserError("give either --mm-per-px or --depth-mm, not both: --mm-per-px sets the spacing "
                        "directly, --depth-mm derives it from the image height")
    if mm_per_px is not None:
        sx, sy = parse_mm_per_px(mm_per_px)
        source = f"--mm-per-px {mm_per_px}".strip() if isinstance(mm_per_px, str) else f"--mm-per-px {sx:g}"
        cal = Calibration(sx, sy, source)
        log.info("pixel spacing %s", cal.text())
        return cal
    if depth_mm is not None:
        if isinstance(depth_mm, bool):
            raise UserError(f"--depth-mm: {depth_mm!r} is not a number; {_HOW_TO}")
        depth = _positive_number(str(depth_mm), "--depth-mm")
        if image_height is None:
            raise UserError("--depth-mm needs the image height in pixels, which is not known yet: open the "
                            "source first, or give the spacing directly with --mm-per-px F")
        if isinstance(image_height, bool) or not isinstance(image_height, numbers.Integral) or image_height <= 0:
            raise UserError(f"--depth-mm: the image height must be a positive number of pixels, got "
                            f"{image_height!r}; give the spacing directly with --mm-per-px F instead")
        spacing = depth / image_height
        cal = Calibration(spacing, spacing, f"--depth-mm {depth:g} over {int(image_height)} px")
        log.info("pixel spacing %s", cal.text())
        return cal
    log.info("no pixel spacing given: measurements stay in pixels (%s)", UNCALIBRATED)
    return None
