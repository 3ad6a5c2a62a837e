"""The unit that flows from a source into the pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One frame as it came from its source.

    ``index``: position in the source's stream (0-based; frames the source skipped still count, so
    ``index`` can jump by ``dropped_before + 1``). ``t_capture``: ``time.monotonic()`` seconds when
    the frame was grabbed or decoded. ``pts``: stream time in seconds (file timestamp, or
    ``index / fps`` for generated sources). ``image``: native size, as delivered (BGR uint8,
    grey, or 16-bit), after the ROI crop if one is set. ``dropped_before``: frames the source
    discarded since the previous frame it delivered (a live source keeps only the newest).
    ``truth``: the ground-truth mask (uint8 0/255, same size as ``image``) when the source knows it
    (synthetic phantom, animated still), else ``None``. ``t_wall``: the wall-clock time of the
    capture (``time.time()`` seconds since the Unix epoch, UTC); when a source does not give it, it is
    derived from ``t_capture`` when the frame is made. ``t_source``: the source's own timestamp of the
    frame in seconds, as the source counts it (an OpenIGTLink message's header timestamp, a DICOM
    object's acquisition time plus the frame's offset), ``None`` when the source has none.
    """

    index: int
    t_capture: float
    pts: float
    image: np.ndarray
    dropped_before: int = 0
    truth: np.ndarray | None = field(default=None, repr=False)
    t_wall: float | None = None
    t_source: float | None = None

    def __post_init__(self) -> None:
        if self.t_wall is None:
            self.t_wall = wall_time(self.t_capture)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def wall_time(t_monotonic: float) -> float:
    """The wall-clock time (``time.time()``, UTC seconds since the epoch) of a ``time.monotonic()`` instant."""
    return time.time() - (time.monotonic() - t_monotonic)
