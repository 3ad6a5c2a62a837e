"""How steady a measurement is over time: frame-to-frame changes of a series (pure functions).

A segmentation that treats each frame as the first makes the nerve's area jump from frame to frame
even when the nerve barely moves; a user reads that noise as motion. :func:`jitter` summarises the
frame-to-frame change of a series (area, flattening ratio) or of a position (the centroid), next to
the same summary of the truth when it is known (``mn-segment --truth``, the phantom, animated
stills), so that "as steady as the nerve" can be checked: the raw area's median change should stay
within about 1.5x the truth's.

Consecutive entries are consecutive *processed* frames; a frame with no value (no measurement)
breaks the chain: the change across it is not counted.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from realtime.distribution import Distribution


def _summary(changes: list[float]) -> dict[str, float | int | None]:
    if not changes:
        return {"n": 0, "median": None, "p95": None, "max": None}
    a = np.asarray(changes, dtype=np.float64)
    return {"n": int(a.size), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def relative_changes(values: Sequence[float | None]) -> list[float]:
    """``|v[t] - v[t-1]| / v[t-1]`` for consecutive entries that both have a positive value."""
    out = []
    for prev, cur in zip(values[:-1], values[1:]):
        if prev is not None and cur is not None and prev > 0 and math.isfinite(prev) and math.isfinite(cur):
            out.append(abs(cur - prev) / prev)
    return out


def absolute_changes(values: Sequence[float | None]) -> list[float]:
    """``|v[t] - v[t-1]|`` for consecutive entries that both have a value."""
    return [abs(cur - prev) for prev, cur in zip(values[:-1], values[1:])
            if prev is not None and cur is not None and math.isfinite(prev) and math.isfinite(cur)]


def position_changes(points: Sequence[tuple[float, float] | None]) -> list[float]:
    """Euclidean step ``|p[t] - p[t-1]|`` for consecutive entries that both have a point."""
    return [math.hypot(cur[0] - prev[0], cur[1] - prev[1]) for prev, cur in zip(points[:-1], points[1:])
            if prev is not None and cur is not None]


def jitter(area: Sequence[float | None], flattening: Sequence[float | None] | None = None,
           centroid: Sequence[tuple[float, float] | None] | None = None) -> dict[str, dict]:
    """``{"area_rel": ..., "flattening_abs": ..., "centroid_px": ...}``: ``{n, median, p95, max}`` of
    the frame-to-frame relative change of the area, absolute change of the flattening ratio and
    step of the centroid (px)."""
    out = {"area_rel": _summary(relative_changes(area))}
    if flattening is not None:
        out["flattening_abs"] = _summary(absolute_changes(flattening))
    if centroid is not None:
        out["centroid_px"] = _summary(position_changes(centroid))
    return out


class RunningJitter:
    """:func:`jitter` of a series fed one frame at a time, in bounded memory (each change goes into a
    :class:`~realtime.distribution.Distribution`; only the previous frame's values are kept).
    ``add(area, flattening, centroid)`` per processed frame (``None`` where not measured: the chain
    breaks there); :meth:`to_dict` gives what :func:`jitter` gives for the whole series."""

    def __init__(self) -> None:
        self.area_rel, self.flattening_abs, self.centroid_px = Distribution(), Distribution(), Distribution()
        self._prev: tuple[float | None, float | None, tuple[float, float] | None] = (None, None, None)

    def add(self, area: float | None, flattening: float | None = None,
            centroid: tuple[float, float] | None = None) -> None:
        prev_area, prev_fr, prev_c = self._prev
        self.area_rel.extend(relative_changes([prev_area, area]))
        self.flattening_abs.extend(absolute_changes([prev_fr, flattening]))
        self.centroid_px.extend(position_changes([prev_c, centroid]))
        self._prev = (area, flattening, centroid)

    def to_dict(self) -> dict[str, dict]:
        return {"area_rel": self.area_rel.median_p95_max(), "flattening_abs": self.flattening_abs.median_p95_max(),
                "centroid_px": self.centroid_px.median_p95_max()}
