"""``--roi auto``: find the B-mode image area in a grab of the whole scanner screen.

A frame grabber on a scanner's video output sees the whole screen: the B-mode image and, around
it, the scanner's UI (text, icons, a grey or colour bar, the depth scale, thumbnails). Only the image
may go to the network. :func:`find_image_area` finds it in one frame, in two steps:

1. **Where the speckle is** (coarse): pixels whose 5 x 5 neighbourhood varies (local standard
   deviation above :data:`TEXTURE_STD`) and that are not coloured; their density in a window of
   about 1/32 of the frame, thresholded; a morphological opening with a square of about 1/16 of the
   frame removes what is thinner than that (text lines, tick marks, bars, icons), a closing bridges
   the image's dark (anechoic) parts; the largest region left is the image, roughly.
2. **Its edges** (exact): from the middle of that region outwards, rows and columns are followed
   while they hold pixels that differ from the screen's background (the median of the frame's
   border) by more than :data:`CONTENT_DIFF` grey levels in more than :data:`EDGE_FILL` of their
   length; the first empty row or column on each side is the image's edge. The UI is separated
   from the image by background, so it stays out.

What it cannot see: on a black screen, rows at the bottom of the image that are themselves black
(deep shadow) are indistinguishable from the background and are left out (nothing is measured
there). The result is logged and kept in the source's description (summary.json ``source_info``);
check it once, or give the area by hand with ``--roi x,y,w,h``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from train.errors import UserError

log = logging.getLogger(__name__)

TEXTURE_STD = 6.0
"""Local standard deviation (grey levels, 5 x 5) above which a pixel is speckle-like."""
CONTENT_DIFF = 12.0
"""Grey levels by which a pixel must differ from the background to count as content."""
COLOUR_SPREAD = 30
"""max(R, G, B) - min(R, G, B) above which a pixel is coloured (UI, colour bars), not B-mode grey."""
EDGE_FILL = 0.02
"""Fraction of a row / column that must be content for it to be inside the image."""
MIN_AREA_FRACTION = 0.03
"""The smallest image area accepted, as a fraction of the frame."""


class ImageAreaError(UserError):
    """No B-mode image area in the frame (the message says to give ``--roi x,y,w,h``): exit code 2."""


@dataclass(frozen=True)
class ImageArea:
    """What :func:`find_image_area` found: ``roi`` ``(x, y, w, h)`` in the frame of ``frame_size``
    ``(W, H)``, the ``background`` grey level, and ``fill`` (the fraction of the area that is content)."""

    roi: tuple[int, int, int, int]
    frame_size: tuple[int, int]
    background: float
    fill: float

    def describe(self) -> dict[str, Any]:
        return {"roi": list(self.roi), "frame_size": list(self.frame_size), "background": round(self.background, 1),
                "fill": round(self.fill, 3)}

    def text(self) -> str:
        x, y, w, h = self.roi
        return f"{x},{y},{w},{h} ({w}x{h} of the {self.frame_size[0]}x{self.frame_size[1]} frame)"


def _odd(n: float) -> int:
    n = max(3, int(round(n)))
    return n if n % 2 else n + 1


def _grey_and_colour(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-bit grey and a mask of the coloured pixels (BGR or BGRA; grey frames have none)."""
    import cv2

    img = image
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return img, np.zeros(img.shape, bool)
    bgr = img[:, :, :3]
    spread = bgr.max(axis=2).astype(np.int16) - bgr.min(axis=2).astype(np.int16)
    return cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2GRAY), spread > COLOUR_SPREAD


def _grow(frac: np.ndarray, start: int) -> tuple[int, int]:
    """From ``start`` outwards, the run of entries above :data:`EDGE_FILL`: ``(first, last + 1)``."""
    lo = start
    while lo > 0 and frac[lo - 1] > EDGE_FILL:
        lo -= 1
    hi = start + 1
    while hi < len(frac) and frac[hi] > EDGE_FILL:
        hi += 1
    return lo, hi


def find_image_area(image: np.ndarray) -> ImageArea:
    """The B-mode image area of a scanner-screen frame (see the module docstring).

    Raises:
        ImageAreaError: no speckled area of at least :data:`MIN_AREA_FRACTION` of the frame (a blank or
            uniform frame, a frame of text only); the message says to give ``--roi x,y,w,h``.
    """
    import cv2

    grey, coloured = _grey_and_colour(np.asarray(image))
    h, w = grey.shape
    how = f"give the image area by hand with --roi x,y,w,h (in pixels of the {w}x{h} frame)"
    if h < 16 or w < 16:
        raise ImageAreaError(f"--roi auto: the {w}x{h} frame is too small to hold a scanner image; {how}")
    ring = np.concatenate([grey[:2].ravel(), grey[-2:].ravel(), grey[:, :2].ravel(), grey[:, -2:].ravel()])
    background = float(np.median(ring))
    g = grey.astype(np.float32)
    mean = cv2.blur(g, (5, 5))
    var = cv2.blur(g * g, (5, 5)) - mean * mean
    texture = (np.sqrt(np.maximum(var, 0)) > TEXTURE_STD) & ~cv2.dilate(coloured.astype(np.uint8),
                                                                         np.ones((5, 5), np.uint8)).astype(bool)
    side = min(h, w)
    k = _odd(max(9, side / 32))
    dense = (cv2.blur(texture.astype(np.float32), (k, k)) > 0.4).astype(np.uint8)
    m = _odd(max(15, side / 16))
    dense = cv2.morphologyEx(dense, cv2.MORPH_OPEN, np.ones((m, m), np.uint8))
    dense = cv2.morphologyEx(dense, cv2.MORPH_CLOSE, np.ones((m, m), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dense, connectivity=8)
    if n <= 1:
        raise ImageAreaError(f"--roi auto: no ultrasound image found in the {w}x{h} frame (no speckled area); {how}")
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < MIN_AREA_FRACTION * h * w:
        raise ImageAreaError(f"--roi auto: the largest speckled area of the {w}x{h} frame is only "
                       f"{stats[best, cv2.CC_STAT_AREA]} px, too small for a B-mode image; {how}")
    bx, by, bw, bh = (int(stats[best, c]) for c in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                    cv2.CC_STAT_HEIGHT))
    content = (np.abs(g - background) > CONTENT_DIFF) & ~coloured
    # the middle of the coarse region: a row and a column through its mass
    ys, xs = np.nonzero(labels[by:by + bh, bx:bx + bw] == best)
    cy, cx = by + int(np.median(ys)), bx + int(np.median(xs))
    x0, x1 = _grow(content[by:by + bh].mean(axis=0), cx)
    y0, y1 = _grow(content[:, x0:x1].mean(axis=1), cy)
    x0, x1 = _grow(content[y0:y1].mean(axis=0), cx)  # once more over the exact rows
    roi = (x0, y0, x1 - x0, y1 - y0)
    if roi[2] * roi[3] < MIN_AREA_FRACTION * h * w:
        raise ImageAreaError(f"--roi auto: the image area found ({roi[2]}x{roi[3]} at {roi[0]},{roi[1]}) is too small "
                       f"for a B-mode image; {how}")
    fill = float(content[y0:y1, x0:x1].mean())
    return ImageArea(roi, (w, h), background, fill)
