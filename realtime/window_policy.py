"""Where the cascade looks next: the tracked nerve's position, or the localiser (``--window``).

A cascade (:class:`engines.cascade.CascadeEngine`) refines a window that its localiser places on
each frame as if it were the first. In video the previous frames already know where the nerve is:
with ``--window tracked`` (the default) the window of the next frame is centred on the tracked
nerve's centroid, and the localiser is skipped (faster, and the window cannot jump to another
structure for one frame). The rules, deterministic given the frames (so ``mn-segment`` on a
recording and ``mn-live`` on the same frames agree):

1. The tracked position is used only while tracking is confident: the last ``min_ok`` processed
   frames were all measured (``ok`` / ``reacquired``, i.e. past the presence gate) and the last one's
   confidence is at least ``min_confidence``.
2. Every ``relocalise_every``-th processed frame since the localiser last placed or checked the window,
   the localiser checks the tracked window: it is kept (``confirmed``) when the localiser's own window
   is within the refiner's training jitter of it, or, further away, when the two windows' refined
   outlines are the same structure (they overlap by at least half of the smaller,
   :func:`engines.cascade.outlines_agree`); the localiser's is taken otherwise. A track that
   drifted onto another structure is so corrected within that many frames (0.5 s at 24 fps by default),
   while a localiser window a little off the nerve (20-30 px, where the refiner's outline changes) no
   longer moves the outline for one frame and back. ``verify=False`` hands such frames to the localiser
   outright, as before. Any frame that is not measured hands the next window back to the localiser at once.

Each frame's window source is recorded (the CSV's ``window`` column: ``tracked``, ``confirmed`` or
``localiser``; empty for a model without a window) and the counts go into the summary. ``--window
localiser`` places every window with the localiser, as before. Counting is by processed frames, not
frame indices, so frames a live source dropped change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.errors import UserError

if TYPE_CHECKING:  # annotations only: the command line's --help imports this module
    from realtime.tracker import TrackedMeasurement

WINDOW_MODES = ("tracked", "localiser")
"""``--window``: ``tracked`` (the tracked nerve's position while tracking is confident) or ``localiser``."""

WINDOW_SOURCES = ("tracked", "confirmed", "localiser")
"""What placed a frame's window: the tracked nerve, the tracked nerve checked by the localiser, the localiser."""


@dataclass
class WindowPolicy:
    """The next frame's window centre (see the module docstring); one per run."""

    relocalise_every: int = 12
    min_ok: int = 2
    min_confidence: float = 0.8
    verify: bool = True
    _ok_run: int = field(default=0, init=False)
    _since_localised: int = field(default=0, init=False)
    _centre: tuple[float, float] | None = field(default=None, init=False)
    _confidence: float | None = field(default=None, init=False)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WINDOW_SOURCES, 0), init=False)

    def __post_init__(self) -> None:
        if self.relocalise_every < 1 or self.min_ok < 1:
            raise UserError("the window policy needs relocalise_every >= 1 and min_ok >= 1")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UserError(f"the window policy's min_confidence must be in [0, 1], got {self.min_confidence}")

    def next_window(self, native_wh: tuple[int, int], net_wh: tuple[int, int]
                    ) -> tuple[tuple[float, float] | None, bool]:
        """The next frame's window centre in network-input pixels (None: the localiser places it) and
        whether the localiser is to check it (rule 2)."""
        if (self._centre is None or self._ok_run < self.min_ok
                or self._confidence is None or self._confidence < self.min_confidence):
            return None, False
        due = self._since_localised >= self.relocalise_every
        if due and not self.verify:
            return None, False
        return scale_point(self._centre, native_wh, net_wh), due

    def observe(self, tracked: TrackedMeasurement, source: str | None) -> None:
        """Take the frame's tracking result and the window source its probabilities came from."""
        if source in self.counts:
            self.counts[source] += 1
        self._since_localised = 0 if source != "tracked" else self._since_localised + 1
        m = tracked.measurement
        if tracked.measured and m is not None and m.centroid_x_px is not None and m.centroid_y_px is not None:
            self._ok_run += 1
            self._centre = (float(m.centroid_x_px), float(m.centroid_y_px))
            self._confidence = m.confidence
        else:
            self._ok_run, self._centre, self._confidence = 0, None, None

    def describe(self) -> dict[str, Any]:
        """Settings and how many windows each source placed (for the summary)."""
        return {"mode": "tracked", "relocalise_every": self.relocalise_every, "min_ok": self.min_ok,
                "min_confidence": self.min_confidence, "verify": self.verify, "windows": dict(self.counts)}


def scale_point(point: tuple[float, float], from_wh: tuple[int, int], to_wh: tuple[int, int]) -> tuple[float, float]:
    """``point`` (x, y) in an image of ``from_wh`` pixels, in the same image resized to ``to_wh``: pixel centres
    map onto pixel centres, as ``cv2.resize`` does (a native frame -> the engine's input, its probabilities)."""
    (x, y), (w, h), (tw, th) = point, from_wh, to_wh
    return (x + 0.5) * tw / w - 0.5, (y + 0.5) * th / h - 0.5


def make_window_policy(mode: str) -> WindowPolicy | None:
    """The policy for ``--window tracked|localiser`` (``localiser``: None, every window from the localiser)."""
    if mode not in WINDOW_MODES:
        raise UserError(f"--window must be one of {', '.join(WINDOW_MODES)}, got {mode!r}")
    return WindowPolicy() if mode == "tracked" else None
