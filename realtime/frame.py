"""The unit that flows from a source into the pipeline."""

from __future__ import annotations

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
    (synthetic phantom, animated still), else ``None``.
    """

    index: int
    t_capture: float
    pts: float
    image: np.ndarray
    dropped_before: int = 0
    truth: np.ndarray | None = field(default=None, repr=False)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
