"""Probability map at model resolution -> binary mask and components at the native resolution.

The network sees the frame resized (anisotropically: 606x468 -> 384x288 stretches x and y by
different factors), so nothing is measured at model resolution. :func:`postprocess` brings the
probability back to the native frame and segments it there:

1. **upsample**: ``cv2.resize(prob, (W, H), interpolation=cv2.INTER_LINEAR)`` -- OpenCV's size
   order is ``(width, height)``; arrays are ``[H, W]``. OpenCV maps pixel *centres* (half-pixel
   convention) in both directions, so a mask resized down with ``INTER_LINEAR`` (as the model's
   input resize does) and its probability resized back land on the same place, without a
   half-pixel shift. Skipped when the map already has the native size.
2. **threshold**: foreground where ``prob >= threshold`` (default 0.5; a pixel at exactly the
   threshold is foreground).
3. **connected components** (8-connectivity) **with their holes filled**: the outer boundary of
   every 8-connected component (``cv2.findContours``, ``RETR_EXTERNAL``), filled
   (``cv2.drawContours(..., FILLED)``). A hole is background not 4-connected to the outside; by
   4/8 duality each hole is enclosed by one component, so this equals filling each component's
   holes on its own (and equals a flood fill of the background from the border followed by
   ``cv2.connectedComponentsWithStats``; a test pins that). A small component inside another
   one's hole becomes part of it. Working from the contours is several times faster than
   ``connectedComponentsWithStats`` on a 606x468 frame.
4. **drop small components**: components with fewer than ``min_area_px`` pixels (counted at native
   resolution, holes filled) are removed.

The result keeps the upsampled probability so confidence (mean probability inside a mask) can be
computed for the whole mask or for any selection of components.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
"""Foreground where the upsampled probability is ``>=`` this."""

DEFAULT_MIN_AREA_PX = 100
"""Components smaller than this many native pixels are dropped."""


@dataclass(frozen=True)
class Component:
    """One connected region of the post-processed mask (native pixels, holes filled).

    ``label``: 1-based index in :attr:`PostprocessResult.components` and its value in
    :attr:`PostprocessResult.labels`; components are ordered by decreasing area (ties: top to
    bottom, then left to right). ``area_px``: pixel count. ``bbox``: ``(x, y, w, h)`` of its
    pixels. ``centroid_px``: ``(x, y)`` mean of its pixel-centre coordinates (x = column, y = row).
    ``contour``: its outer boundary (int32 ``[n, 1, 2]``, OpenCV's layout, chain-compressed).
    """

    label: int
    area_px: int
    bbox: tuple[int, int, int, int]
    centroid_px: tuple[float, float]
    contour: np.ndarray = field(repr=False, compare=False)


@dataclass(eq=False)
class PostprocessResult:
    """What :func:`postprocess` found in one frame, at native resolution ``[H, W]``.

    ``mask``: uint8 0/1, every kept component (holes filled, small ones dropped).
    ``components``: the kept components (label ``i`` is ``components[i - 1]``).
    ``prob``: float32 probability upsampled to native size (what was thresholded).
    ``threshold``, ``min_area_px``: the settings used. ``n_dropped``: components removed for being
    smaller than ``min_area_px``. :attr:`labels` (an int32 label image) is computed on first use.
    """

    mask: np.ndarray = field(repr=False)
    components: tuple[Component, ...]
    prob: np.ndarray = field(repr=False)
    threshold: float = DEFAULT_THRESHOLD
    min_area_px: int = DEFAULT_MIN_AREA_PX
    n_dropped: int = 0
    _labels: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the native frame."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def labels(self) -> np.ndarray:
        """int32 ``[H, W]``: 0 = background, ``i`` = component ``i`` (computed once, on first use)."""
        if self._labels is None:
            labels = np.zeros(self.shape, np.int32)
            for comp in self.components:
                cv2.drawContours(labels, [comp.contour], -1, comp.label, cv2.FILLED)
            self._labels = labels
        return self._labels

    def component(self, label: int) -> Component:
        """The component with this label (1-based)."""
        if not 1 <= label <= len(self.components):
            raise KeyError(f"no component {label}: labels are 1..{len(self.components)}")
        return self.components[label - 1]

    def component_mask(self, labels: Iterable[int]) -> np.ndarray:
        """uint8 0/1 mask of the given component labels (all of them -> :attr:`mask` itself, not a copy)."""
        wanted = sorted({int(v) for v in labels})
        if len(wanted) == len(self.components) and wanted == list(range(1, len(self.components) + 1)):
            return self.mask
        out = np.zeros(self.shape, np.uint8)
        if wanted:
            cv2.drawContours(out, [self.component(v).contour for v in wanted], -1, 1, cv2.FILLED)
        return out

    def confidence(self, mask: np.ndarray | None = None) -> float | None:
        """Mean upsampled probability inside ``mask`` (default: the whole kept mask); ``None`` when empty."""
        return mean_inside(self.prob, self.mask if mask is None else mask)

    def component_confidence(self, label: int) -> float | None:
        """Mean probability inside one component, computed on its bounding box only."""
        comp = self.component(label)
        x, y, w, h = comp.bbox
        return mean_inside(self.prob[y:y + h, x:x + w], _draw_local(comp.contour, comp.bbox))


def _draw_local(contour: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 0/1 canvas of the bounding box with the contour filled."""
    x, y, w, h = bbox
    canvas = np.zeros((h, w), np.uint8)
    cv2.drawContours(canvas, [contour], -1, 1, cv2.FILLED, offset=(-x, -y))
    return canvas


def mean_inside(prob: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of ``prob`` over the non-zero pixels of ``mask`` (same shape); ``None`` when the mask is empty."""
    if prob.shape != mask.shape:
        raise ValueError(f"probability {prob.shape} and mask {mask.shape} differ in shape")
    m = _as_u8(mask)
    if cv2.countNonZero(m) == 0:
        return None
    p = prob if prob.dtype in (np.float32, np.float64, np.uint8) else prob.astype(np.float32)
    return float(cv2.mean(p, mask=m)[0])


def _as_u8(mask: np.ndarray) -> np.ndarray:
    """A uint8 view or copy of ``mask`` where non-zero is foreground (no copy for uint8 / bool)."""
    if mask.dtype == np.uint8:
        return mask
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    return (mask != 0).view(np.uint8)


def _as_2d(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob)
    while p.ndim > 2 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 2:
        raise ValueError(f"expected a 2-D probability map [h, w] (leading axes of size 1 allowed), got shape {p.shape}")
    if p.dtype != np.float32:
        p = p.astype(np.float32)
    return p


def upsample(prob: np.ndarray, native_size: Sequence[int]) -> np.ndarray:
    """Resize a probability map to the native ``(width, height)`` with bilinear interpolation.

    ``native_size`` is in OpenCV's order, ``(W, H)``; the result is float32 ``[H, W]``. A map that
    already has that size is returned as is (float32, C-contiguous).
    """
    width, height = int(native_size[0]), int(native_size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"native size must be positive (width, height), got {tuple(native_size)}")
    p = _as_2d(prob)
    if p.shape == (height, width):
        return np.ascontiguousarray(p)
    return cv2.resize(np.ascontiguousarray(p), (width, height), interpolation=cv2.INTER_LINEAR)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every hole of a binary mask (background not 4-connected to the image border); new uint8 0/1 mask."""
    contours, _ = cv2.findContours(_as_u8(mask), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(out, contours, -1, 1, cv2.FILLED)
    return out


def postprocess(prob: np.ndarray, native_size: Sequence[int], threshold: float = DEFAULT_THRESHOLD,
                min_area_px: int = DEFAULT_MIN_AREA_PX) -> PostprocessResult:
    """Probability map at model resolution -> mask and components at native size.

    Args:
        prob: float probabilities ``[h, w]`` at model resolution (leading axes of size 1, as in
            ``[1, 1, h, w]``, are dropped).
        native_size: ``(W, H)`` of the native frame, OpenCV's order (``(frame.width, frame.height)``).
        threshold: foreground where ``prob >= threshold`` (after upsampling).
        min_area_px: components with fewer native pixels than this (holes filled) are dropped.

    Returns:
        :class:`PostprocessResult`; see the module docstring for each step.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if min_area_px < 0:
        raise ValueError(f"min_area_px must be >= 0, got {min_area_px}")
    p = upsample(prob, native_size)
    binary = (p >= np.float32(threshold)).view(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found: list[tuple[int, float, float, tuple[int, int, int, int], np.ndarray]] = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if w * h < min_area_px:  # the area is at most the box's: too small, no need to count
            continue
        mom = cv2.moments(_draw_local(contour, (x, y, w, h)), binaryImage=True)
        area = int(round(mom["m00"]))
        if area < min_area_px:
            continue
        found.append((area, mom["m10"] / mom["m00"] + x, mom["m01"] / mom["m00"] + y, (x, y, w, h), contour))
    found.sort(key=lambda f: (-f[0], f[3][1], f[3][0]))
    components = tuple(
        Component(label=i + 1, area_px=area, bbox=box, centroid_px=(float(cx), float(cy)), contour=contour)
        for i, (area, cx, cy, box, contour) in enumerate(found)
    )
    mask = np.zeros(binary.shape, np.uint8)
    if components:
        cv2.drawContours(mask, [c.contour for c in components], -1, 1, cv2.FILLED)
    return PostprocessResult(mask=mask, components=components, prob=p, threshold=float(threshold),
                             min_area_px=int(min_area_px), n_dropped=len(contours) - len(components))
