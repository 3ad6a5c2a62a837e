"""Which components are the nerve, and how its measurements change over time.

:class:`Tracker` takes each frame's :class:`~realtime.postprocess.PostprocessResult`, picks the
nerve's component(s), measures them with :func:`~realtime.morphometry.measure_mask`, and adds a
status, the change from a baseline, the displacement, and (optionally) smoothed values. It is
pure: no I/O, no clocks, no randomness; the same frames give the same results.

Component selection
    **Bifid nerve**: a component whose gap to another -- centroid distance minus both equivalent
    radii ``sqrt(area / pi)``, in mm when calibrated -- is at most ``bifid_gap`` times that other
    component's equivalent diameter is a *partner* of it: part of the same nerve (nearest first,
    up to ``max_parts`` components in all). The nerve is measured as one mask: area and
    perimeter summed, FR and centroid from the union.
    *Acquiring* (no track yet, or the track was lost): every component with its partners is a
    candidate group; the group with the largest probability mass, ``sum(area_px * mean
    probability inside)``, wins (the largest, weighted by the network's confidence; a bifid
    nerve counts as the sum of its parts). Ties: larger area, then lower label.
    *Tracking*: the component whose centroid is nearest to the nerve's last measured centroid,
    if that distance is within the gate (``gate_mm`` when calibrated, distances measured in mm
    with ``(sx, sy)``; ``gate_px`` in pixels otherwise), plus its partners. Components farther
    away are ignored.

State machine (``K`` = ``lost_after_frames``; "miss" = a frame where no component is accepted;
gaps in ``frame_index``, frames the source dropped, count as misses)::

    state      event                                   -> state      frame status
    SEARCHING  nerve accepted (no gate), confirmed     -> TRACKING   ok
    SEARCHING  nerve accepted, not yet confirmed       -> SEARCHING  no_detection   (see Confirmation)
    SEARCHING  nothing above the minimum area          -> SEARCHING  no_detection
    TRACKING   a component within the gate             -> TRACKING   ok
    TRACKING   ... but its area a step (see Area step)  -> TRACKING   no_detection   (a miss)
    TRACKING   ... held too long on the hold threshold  -> TRACKING   no_detection   (a miss; see Refresh)
    TRACKING   miss, <= K frames since the last ok     -> TRACKING   no_detection   (gate kept)
    TRACKING   miss, >  K frames since the last ok     -> LOST       lost
    LOST       nerve accepted (no gate), confirmed     -> TRACKING   reacquired
    LOST       nerve accepted, not yet confirmed       -> LOST       lost           (see Confirmation)
    LOST       nothing above the minimum area          -> LOST       lost

Confirmation (``confirm_frames``, ``C``; 1 = off, the default here; the commands default to
:data:`DEFAULT_CONFIRM_FRAMES` for video and 1 for a single image): a new track starts only when an
accepted nerve is found in ``C`` processed frames in a row, each within the gate of the one before.
Until then (SEARCHING or LOST) each such frame is *unconfirmed*: not measured, its status is the one
of a frame without a nerve (``no_detection`` / ``lost``), and the ``rejected`` column says
``unconfirmed: k of C frames``. A detection in one frame only, as other anatomy gives now and then
when no nerve is in view, so never becomes a measurement; a nerve in view is measured from its
``C``-th frame on (one frame, 42 ms at 24 fps, later with ``C`` = 2). While TRACKING nothing
changes: a track holds through misses as in the table above.

Presence gate (``presence``, :class:`realtime.presence.PresenceGate`, on by default in the
commands): the selected nerve is measured, then checked for plausibility as a median nerve (area
relative to the frame and in mm² when calibrated, flattening, circularity, confidence). A
rejected detection counts as *no* detection in the table above (a miss), its reason goes to the
``rejected`` column and the measurement columns stay empty. While TRACKING, the nerve the gate selected is
judged by the appearance model's hold threshold (hysteresis, when the model has one): lower than the one a
nerve must pass to be taken up in SEARCHING or LOST. With an appearance model, the selected detection's score
(the model's probability that it is a median nerve) goes to the ``presence_score`` column, measured or not, so
a user can see how far above the threshold a measured frame was (empty where no appearance check ran: nothing
selected, or a size or shape bound already failed).

Area step (``area_step``, ``S``; None = off, the default here; the commands default to
:data:`DEFAULT_AREA_STEP`): while TRACKING, a nerve whose area differs by more than ``S`` (relative) from
the median of the last :data:`AREA_STEP_HISTORY` measured areas (once there are
:data:`AREA_STEP_MIN_HISTORY`) is not measured: a median nerve cannot swell or shrink by a quarter in one
frame (42 ms at 24 fps; a compression by the probe changes it by a few percent a frame), so such an
outline is half the nerve, or the nerve with its neighbour. The frame counts as a miss (``rejected``:
``area step -47% in one frame (recent median 2250 px)``), and neither the track's position nor the
cascade's window follows it. When :data:`AREA_STEP_ACCEPT` frames in a row are rejected so, each within
``S`` of the one before, the new size is real (the nerve changed, or an earlier size was wrong): that frame
is measured and the history starts again from it.

Refresh (``refresh_frames``, ``R``; None = off, the default): with an appearance model of two thresholds, a
tracked nerve that passes only the lower hold threshold is measured as long as a measured frame among the last
``R`` (this one included) passed the entry threshold; otherwise the frame is a miss (``rejected``: ``appearance
0.30 < 0.43: held 24 frames without one at the entry threshold``), and more than ``K`` such frames lose the track,
which a nerve then takes up again only at the entry threshold. The hold threshold lets a nerve look less typical
for a while (compressed, tilted); the refresh bounds that while, so that a structure taken up by chance cannot be
held on the hold threshold alone for the rest of a recording.

So ``no_detection`` means "no nerve measured on this frame" while the track still holds (the
frame had no component above the minimum area, or, while tracking, none inside the gate: see
``n_detections``); ``lost`` is the first frame after more than ``K`` missed frames and every
frame after it until a nerve is accepted again, which is reported as ``reacquired`` (that frame
is measured like an ``ok`` one) and followed by ``ok`` frames. Losing the track also resets the
smoothing filters.

Baseline (the reference for ``csa_change_pct`` and the displacement)
    The per-quantity median (area, centroid x and y, px and mm) of the measured frames
    (``ok`` / ``reacquired``) in a window of frame indices:

    * automatic (default): ``N = round(baseline_s * fps)`` frames (24 at 24 fps) starting at the
      first measured frame, i.e. one second of stream time; with every frame measured, the median
      of the first ``N`` ok frames;
    * explicit: ``baseline_range=(START, END)`` (``--baseline START:END``, END exclusive), the
      measured frames with ``START <= frame_index < END``;
    * :meth:`Tracker.set_baseline_now` (the live 'b' key): the old baseline is dropped at once and a
      new automatic window starts at the next measured frame.

    The baseline is set when the window's last frame index has been processed (that frame
    already gets the change); frames before have empty change fields. A window with no measured
    frame leaves the baseline unset (logged as a warning).
    ``csa_change_pct = 100 * (area - baseline area) / baseline area``; displacement = distance of
    the centroid from the baseline centroid, in px (always) and mm (when calibrated), with its
    signed x / y components.

Smoothing (``smoothing="ema"`` or ``"median"``, window ``smoothing_window``)
    Causal filters fed only measured frames, one per quantity in :data:`SMOOTHED_FIELDS`:
    ``median`` is the median of the last ``window`` values; ``ema`` is an exponential moving
    average with ``alpha = 2 / (window + 1)``, starting at the first value. Results go to *extra*
    fields (``<name>_smooth``); the raw values are never changed.
"""

from __future__ import annotations

import enum
import logging
import math
import numbers
import re
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from realtime.calibration import Calibration, calibration_text
from realtime.morphometry import Measurement, measure_mask
from realtime.postprocess import Component, PostprocessResult
from realtime.presence import PresenceGate
from train.errors import UserError

log = logging.getLogger(__name__)

MeasureFn = Callable[[np.ndarray, "Calibration | None", "np.ndarray | None"], Measurement]

SMOOTHED_FIELDS: tuple[str, ...] = (
    "area_px", "area_mm2", "perimeter_px", "perimeter_mm", "flattening_ratio", "circularity",
    "centroid_x_px", "centroid_y_px", "centroid_x_mm", "centroid_y_mm",
    "csa_change_pct", "displacement_px", "displacement_mm",
)
"""Quantities that get a ``<name>_smooth`` column when smoothing is on."""

SMOOTHING_METHODS: tuple[str, ...] = ("none", "ema", "median")

DEFAULT_GATE_MM = 8.0
DEFAULT_GATE_PX = 60.0
DEFAULT_LOST_AFTER_S = 0.5
DEFAULT_BASELINE_S = 1.0
DEFAULT_BIFID_GAP = 0.5
DEFAULT_MAX_PARTS = 2
DEFAULT_SMOOTHING_WINDOW = 5
DEFAULT_CONFIRM_FRAMES = 2
"""The commands' ``--confirm`` for video: a new track needs the nerve in two frames in a row."""
DEFAULT_AREA_STEP = 0.25
"""The commands' ``--area-step``: the largest relative change of the nerve's area in one frame."""
AREA_STEP_HISTORY = 5
"""Measured frames whose median area the next one is compared with."""
AREA_STEP_MIN_HISTORY = 3
"""Measured frames needed before the area step is checked."""
AREA_STEP_ACCEPT = 3
"""Frames in a row at a new size (each within the step of the one before) that make it real."""


class TrackStatus(str, enum.Enum):
    """Per-frame status (see the module docstring for the state machine)."""

    OK = "ok"
    NO_DETECTION = "no_detection"
    LOST = "lost"
    REACQUIRED = "reacquired"

    @property
    def measured(self) -> bool:
        """True when the nerve was measured on the frame (``ok`` or ``reacquired``)."""
        return self in (TrackStatus.OK, TrackStatus.REACQUIRED)

    def __str__(self) -> str:
        return self.value


class TrackState(str, enum.Enum):
    """The tracker's internal state between frames."""

    SEARCHING = "searching"
    TRACKING = "tracking"
    LOST = "lost"


@dataclass(frozen=True)
class Baseline:
    """The reference values: per-quantity medians over the baseline window's measured frames.

    ``first_frame`` / ``last_frame``: indices of the first and last frame used; ``n_frames``:
    how many; ``source``: how the window was chosen (``"auto: first 1.0 s"``,
    ``"--baseline 100:148"``, ``"set at frame 230"``).
    """

    area_px: float
    area_mm2: float | None
    centroid_x_px: float
    centroid_y_px: float
    centroid_x_mm: float | None
    centroid_y_mm: float | None
    n_frames: int
    first_frame: int
    last_frame: int
    source: str


@dataclass(eq=False)
class TrackedMeasurement:
    """Everything the tracker knows about one frame.

    ``measurement``: the nerve's morphometry (raw, unsmoothed), ``None`` when not measured.
    ``n_detections``: components above the minimum area in the frame (nerve or not).
    ``nerve_labels``: labels (in the frame's :class:`PostprocessResult`) of the nerve's components.
    ``frames_since_seen``: frames since the last measured frame (0 when measured; ``None`` before
    the first). ``csa_change_pct``, ``displacement_*``: relative to ``baseline`` (``None`` until a
    baseline exists or when not measured; ``*_mm`` ``None`` when uncalibrated).
    ``smooth``: ``{name: value}`` for :data:`SMOOTHED_FIELDS`, empty when smoothing is off.
    ``nerve_mask``: uint8 0/1 native-size mask of the nerve (for overlays), ``None`` when not measured.
    ``rejected``: why a selected detection was not measured (the presence gate's reason, or
    ``unconfirmed: ...``); ``presence_checked``: whether the tracker can reject one (a presence gate or
    confirmation), so the row has a ``rejected`` column. ``presence_score``: the presence gate's appearance
    score of the selected detection, measured or not (the appearance model's probability that it is a median
    nerve; ``None`` where no appearance check ran); ``presence_scored``: whether the gate has an appearance
    model, so the row has a ``presence_score`` column.
    """

    frame_index: int
    t_s: float
    status: TrackStatus
    measurement: Measurement | None
    n_detections: int
    nerve_labels: tuple[int, ...]
    frames_since_seen: int | None
    csa_change_pct: float | None = None
    displacement_px: float | None = None
    displacement_mm: float | None = None
    displacement_dx_px: float | None = None
    displacement_dy_px: float | None = None
    displacement_dx_mm: float | None = None
    displacement_dy_mm: float | None = None
    baseline: Baseline | None = None
    smooth: dict[str, float | None] = field(default_factory=dict)
    nerve_mask: np.ndarray | None = field(default=None, repr=False)
    rejected: str | None = None
    presence_checked: bool = False
    presence_score: float | None = None
    presence_scored: bool = False

    @property
    def measured(self) -> bool:
        return self.status.measured

    def value(self, name: str) -> float | None:
        """A raw quantity by name: a :class:`Measurement` field or one of this record's own fields."""
        if name in _MEASUREMENT_FIELDS:
            return None if self.measurement is None else getattr(self.measurement, name)
        return getattr(self, name)

    def to_row(self) -> dict[str, Any]:
        """The measured fields, flat (the CSV's cells: :func:`realtime.record.csv_values` adds the frame's own
        ``frame``, ``t_s``, ``status`` and timings); keys as :meth:`Tracker.columns` (smooth columns only when
        smoothing is on, ``rejected`` only when the tracker can reject a detection)."""
        row: dict[str, Any] = {
            "n_detections": self.n_detections,
            "frames_since_seen": self.frames_since_seen,
        }
        if self.measurement is not None:
            row.update(self.measurement.to_dict())
        else:
            row.update({name: None for name in Measurement.columns()})
        for name in _OWN_FIELDS:
            row[name] = getattr(self, name)
        row["baseline_area_px"] = None if self.baseline is None else self.baseline.area_px
        row["baseline_area_mm2"] = None if self.baseline is None else self.baseline.area_mm2
        for name, value in self.smooth.items():
            row[f"{name}_smooth"] = value
        if self.presence_scored:
            row["presence_score"] = self.presence_score
        if self.presence_checked:
            row["rejected"] = self.rejected
        return row


_MEASUREMENT_FIELDS = frozenset(f.name for f in fields(Measurement))

_OWN_FIELDS: tuple[str, ...] = (
    "csa_change_pct", "displacement_px", "displacement_mm",
    "displacement_dx_px", "displacement_dy_px", "displacement_dx_mm", "displacement_dy_mm",
)


class _Smoother:
    """Causal filter of one quantity: EMA or running median; ``None`` values pass through untouched."""

    def __init__(self, method: str, window: int) -> None:
        self.method = method
        self.window = window
        self.alpha = 2.0 / (window + 1.0)
        self._state: float | None = None
        self._buf: deque[float] = deque(maxlen=window)

    def reset(self) -> None:
        self._state = None
        self._buf.clear()

    def update(self, x: float | None) -> float | None:
        if x is None or not math.isfinite(x):
            return None
        if self.method == "ema":
            self._state = x if self._state is None else self.alpha * x + (1.0 - self.alpha) * self._state
            return self._state
        self._buf.append(float(x))
        return _median(self._buf)


@dataclass
class _BaselineWindow:
    """Frame-index window being collected: ``[start, end)``; ``start is None`` until the first measured frame."""

    length: int | None
    source: str
    start: int | None = None
    end: int | None = None
    samples: list[tuple[int, Measurement]] = field(default_factory=list)

    def offer(self, frame_index: int, m: Measurement | None) -> None:
        if self.start is None:
            if m is None:
                return
            self.start = frame_index
            self.end = frame_index + int(self.length or 1)
        if m is not None and self.start <= frame_index < (self.end or frame_index + 1):
            self.samples.append((frame_index, m))

    def closed(self, frame_index: int) -> bool:
        return self.end is not None and frame_index >= self.end - 1


def parse_baseline_range(text: str) -> tuple[int, int]:
    """Parse ``--baseline START:END`` (frame indices, END exclusive, as a Python slice) into ``(START, END)``.

    Raises:
        UserError: not two integers ``0 <= START < END`` separated by ``:``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text) if isinstance(text, str) else None
    if match is None:
        raise UserError(f"--baseline: expected START:END frame indices (END exclusive), e.g. 0:24, got {text!r}")
    start, end = int(match.group(1)), int(match.group(2))
    if end <= start:
        raise UserError(f"--baseline {text}: END must be greater than START (END is exclusive, e.g. 0:24 "
                        f"is the first 24 frames)")
    return start, end


def _median(values: Iterable[float]) -> float:
    """Median (mean of the two middle values for an even count)."""
    v = sorted(float(x) for x in values)
    n = len(v)
    mid = n // 2
    return v[mid] if n % 2 else 0.5 * (v[mid - 1] + v[mid])


class Tracker:
    """Follows the nerve from frame to frame (see the module docstring for every rule).

    Args:
        calibration: pixel spacing, or ``None`` (uncalibrated: gate in px, mm fields empty).
        fps: frame rate of the stream (frames per second); sets the automatic baseline length
            and the default ``lost_after_frames``.
        gate_mm: gate radius in mm (calibrated), default 8 mm.
        gate_px: gate radius in px (uncalibrated), default 60 px.
        lost_after_frames: ``K``: more than ``K`` missed frames after the last measured one makes
            the track ``lost``; default ``round(0.5 s * fps)`` (at least 1).
        baseline_s: length of the automatic baseline window in seconds (default 1 s).
        baseline_range: explicit ``(START, END)`` frame window (END exclusive) instead of the
            automatic one (:func:`parse_baseline_range` parses ``--baseline``).
        bifid_gap: keep another component as part of the nerve when its gap to the chosen one is at
            most this fraction of the chosen component's equivalent diameter (default 0.5).
        max_parts: at most this many components make the nerve (default 2: a bifid nerve).
        smoothing: ``"none"`` (default), ``"ema"`` or ``"median"``.
        smoothing_window: median window / EMA span in measured frames (default 5).
        measure: the morphometry function (default :func:`measure_mask`).
        presence: the plausibility gate of a detection (:class:`realtime.presence.PresenceGate`);
            ``None`` measures every selected detection.
        confirm_frames: ``C``: a new track (from SEARCHING or LOST) starts only after ``C`` frames in a
            row with an accepted nerve, each within the gate of the one before (default 1: at once).
        area_step: ``S``: while tracking, the largest relative change of the nerve's area from the median of
            the last measured frames (see *Area step*); None (default) checks nothing.
        refresh_frames: ``R``: while tracking, a nerve that passes only the presence gate's hold threshold is
            measured only if a measured frame of the last ``R`` (this one included) passed the entry threshold
            (see *Refresh*); None (default) holds it as long as it passes the hold threshold.
    """

    def __init__(self, calibration: Calibration | None, fps: float, *, gate_mm: float = DEFAULT_GATE_MM,
                 gate_px: float = DEFAULT_GATE_PX, lost_after_frames: int | None = None,
                 baseline_s: float = DEFAULT_BASELINE_S, baseline_range: tuple[int, int] | None = None,
                 bifid_gap: float = DEFAULT_BIFID_GAP, max_parts: int = DEFAULT_MAX_PARTS,
                 smoothing: str = "none", smoothing_window: int = DEFAULT_SMOOTHING_WINDOW,
                 measure: MeasureFn = measure_mask, presence: PresenceGate | None = None,
                 confirm_frames: int = 1, area_step: float | None = None,
                 refresh_frames: int | None = None) -> None:
        if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
            raise UserError(f"the frame rate must be a positive number of frames per second, got {fps!r}")
        for name, value in (("gate_mm", gate_mm), ("gate_px", gate_px), ("baseline_s", baseline_s)):
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"tracker {name} must be a positive number, got {value!r}")
        if not (math.isfinite(bifid_gap) and bifid_gap >= 0):
            raise UserError(f"tracker bifid_gap must be >= 0, got {bifid_gap!r}")
        if max_parts < 1:
            raise UserError(f"tracker max_parts must be >= 1, got {max_parts!r}")
        if smoothing not in SMOOTHING_METHODS:
            raise UserError(f"unknown smoothing {smoothing!r}; choose one of: {', '.join(SMOOTHING_METHODS)}")
        if smoothing_window < 1:
            raise UserError(f"the smoothing window must be at least 1 frame, got {smoothing_window!r}")
        if isinstance(confirm_frames, bool) or not isinstance(confirm_frames, numbers.Integral) or confirm_frames < 1:
            raise UserError(f"confirm_frames must be a whole number of frames >= 1, got {confirm_frames!r}")
        if area_step is not None and (isinstance(area_step, bool) or not isinstance(area_step, numbers.Real)
                                      or not math.isfinite(area_step) or area_step <= 0):
            raise UserError(f"the area step must be a positive fraction (0.25 = 25 %), got {area_step!r}")
        if refresh_frames is not None and (isinstance(refresh_frames, bool)
                                           or not isinstance(refresh_frames, numbers.Integral) or refresh_frames < 1):
            raise UserError(f"refresh_frames must be a whole number of frames >= 1 or None, got {refresh_frames!r}")
        if lost_after_frames is not None and lost_after_frames < 0:
            raise UserError(f"lost_after_frames must be >= 0, got {lost_after_frames!r}")
        if baseline_range is not None:
            start, end = int(baseline_range[0]), int(baseline_range[1])
            if not 0 <= start < end:
                raise UserError(f"baseline range {start}:{end}: need 0 <= START < END (END exclusive)")
            baseline_range = (start, end)

        self.calibration = calibration
        self.fps = float(fps)
        self.gate_mm = float(gate_mm)
        self.gate_px = float(gate_px)
        self.lost_after_frames = (max(1, round(DEFAULT_LOST_AFTER_S * self.fps)) if lost_after_frames is None
                                  else int(lost_after_frames))
        self.baseline_s = float(baseline_s)
        self.baseline_frames = max(1, round(self.baseline_s * self.fps))
        self.baseline_range = baseline_range
        self.bifid_gap = float(bifid_gap)
        self.max_parts = int(max_parts)
        self.smoothing = smoothing
        self.smoothing_window = int(smoothing_window)
        self._measure = measure
        self.presence = presence
        self.confirm_frames = int(confirm_frames)
        self.area_step = None if area_step is None else float(area_step)
        self.refresh_frames = None if refresh_frames is None else int(refresh_frames)
        self.reset()

    # ----------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget everything: back to SEARCHING, no baseline, a fresh baseline window, empty filters."""
        self._state = TrackState.SEARCHING
        self._last_index: int | None = None
        self._last_seen_index: int | None = None
        self._last_centroid_px: tuple[float, float] | None = None
        self._unconfirmed: tuple[int, tuple[float, float]] | None = None  # (frames in a row, last centroid)
        self._recent_areas: deque[float] = deque(maxlen=AREA_STEP_HISTORY)
        self._step_run: tuple[int, float] | None = None  # (frames in a row rejected at a new size, last area)
        self._last_entry_index: int | None = None  # the last measured frame at the entry threshold (Refresh)
        self._baseline: Baseline | None = None
        if self.baseline_range is not None:
            start, end = self.baseline_range
            self._window: _BaselineWindow | None = _BaselineWindow(None, f"--baseline {start}:{end}", start, end)
        else:
            self._window = _BaselineWindow(self.baseline_frames, f"auto: first {self.baseline_s:g} s")
        self._smoothers = ({name: _Smoother(self.smoothing, self.smoothing_window) for name in SMOOTHED_FIELDS}
                           if self.smoothing != "none" else {})

    @property
    def state(self) -> TrackState:
        return self._state

    @property
    def baseline(self) -> Baseline | None:
        return self._baseline

    @property
    def gate(self) -> float:
        """The gate radius in use: mm when calibrated, px otherwise."""
        return self.gate_mm if self.calibration is not None else self.gate_px

    @property
    def gate_unit(self) -> str:
        return "mm" if self.calibration is not None else "px"

    def set_baseline_now(self) -> None:
        """Drop the current baseline and take a new one from the next ``baseline_s`` of measured frames."""
        where = "start" if self._last_index is None else f"frame {self._last_index}"
        self._baseline = None
        self._window = _BaselineWindow(self.baseline_frames, f"set at {where}")
        log.info("new baseline requested at %s: collecting the next %d frames", where, self.baseline_frames)

    def describe(self) -> dict[str, Any]:
        """JSON-able settings for summaries and logs."""
        return {
            "calibration": calibration_text(self.calibration),
            "fps": self.fps,
            "gate": self.gate,
            "gate_unit": self.gate_unit,
            "lost_after_frames": self.lost_after_frames,
            "baseline": (f"frames {self.baseline_range[0]}:{self.baseline_range[1]}" if self.baseline_range
                         else f"auto: first {self.baseline_s:g} s ({self.baseline_frames} frames)"),
            "bifid_gap": self.bifid_gap,
            "max_parts": self.max_parts,
            "smoothing": self.smoothing,
            "smoothing_window": self.smoothing_window if self.smoothing != "none" else None,
            "presence_gate": self.presence.describe() if self.presence is not None else None,
            "confirm_frames": self.confirm_frames,
            "area_step": self.area_step,
            "refresh_frames": self.refresh_frames,
        }

    def columns(self) -> list[str]:
        """The keys of :meth:`TrackedMeasurement.to_row` for this tracker's settings, in order."""
        cols = ["n_detections", "frames_since_seen"]
        cols += Measurement.columns()
        cols += list(_OWN_FIELDS) + ["baseline_area_px", "baseline_area_mm2"]
        if self._smoothers:
            cols += [f"{name}_smooth" for name in SMOOTHED_FIELDS]
        if self.scores:
            cols.append("presence_score")
        if self.rejects:
            cols.append("rejected")
        return cols

    @property
    def rejects(self) -> bool:
        """Whether a selected detection can go unmeasured (a presence gate, confirmation or the area step):
        the rows then have a ``rejected`` column."""
        return self.presence is not None or self.confirm_frames > 1 or self.area_step is not None

    @property
    def scores(self) -> bool:
        """Whether the presence gate scores a detection's appearance: the rows then have a ``presence_score``
        column."""
        return self.presence is not None and self.presence.appearance is not None

    # ------------------------------------------------------------- selection

    def _scale(self) -> tuple[float, float]:
        cal = self.calibration
        return (cal.sx, cal.sy) if cal is not None else (1.0, 1.0)

    def _distance(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        sx, sy = self._scale()
        return math.hypot((a[0] - b[0]) * sx, (a[1] - b[1]) * sy)

    def _radius(self, comp: Component) -> float:
        sx, sy = self._scale()
        return math.sqrt(comp.area_px * sx * sy / math.pi)

    def _select(self, post: PostprocessResult) -> list[Component]:
        """The nerve's components for this frame (primary first), or ``[]``."""
        comps = post.components
        if not comps:
            return []
        if self._state is TrackState.TRACKING and self._last_centroid_px is not None:
            ref = self._last_centroid_px
            best = min(comps, key=lambda c: (self._distance(c.centroid_px, ref), c.label))
            if self._distance(best.centroid_px, ref) > self.gate:
                return []
            return [best] + self._partners(comps, best)
        if len(comps) == 1:
            return [comps[0]]
        # acquiring: the group (component + its bifid partners) with the largest probability mass
        mass = {}
        for c in comps:
            conf = post.component_confidence(c.label)
            mass[c.label] = c.area_px * (conf if conf is not None else 0.0)
        best_group: list[Component] = []
        best_key: tuple[float, int, int] | None = None
        for c in comps:
            group = [c] + self._partners(comps, c)
            key = (sum(mass[g.label] for g in group), sum(g.area_px for g in group), -c.label)
            if best_key is None or key > best_key:
                best_key, best_group = key, group
        return best_group

    def _partners(self, comps: Sequence[Component], primary: Component) -> list[Component]:
        """Components close enough to ``primary`` to be parts of the same (bifid) nerve, nearest first."""
        if self.max_parts <= 1 or len(comps) < 2:
            return []
        r_p = self._radius(primary)
        limit = self.bifid_gap * 2.0 * r_p
        candidates = []
        for c in comps:
            if c.label == primary.label:
                continue
            gap = self._distance(c.centroid_px, primary.centroid_px) - r_p - self._radius(c)
            if gap <= limit:
                candidates.append((gap, c.label, c))
        candidates.sort(key=lambda t: (t[0], t[1]))
        return [c for _, _, c in candidates[: self.max_parts - 1]]

    # ---------------------------------------------------------------- update

    def update(self, post: PostprocessResult, frame_index: int, t_s: float,
               image: np.ndarray | None = None) -> TrackedMeasurement:
        """Process one frame: select the nerve, measure it, update the state, baseline and filters.

        Args:
            post: the frame's post-processing result (native resolution).
            frame_index: the frame's index in the stream; must increase from call to call (gaps
                are frames the source dropped and count as misses).
            t_s: the frame's time in seconds (stream time), copied to the result.
            image: the frame itself (native resolution, grey or BGR), for the presence gate's
                echo and appearance checks; without it only size and shape are checked.
        """
        frame_index = int(frame_index)
        if self._last_index is not None and frame_index <= self._last_index:
            raise ValueError(f"frame indices must increase: got {frame_index} after {self._last_index}")
        self._last_index = frame_index

        parts = self._select(post)
        measurement: Measurement | None = None
        nerve_mask: np.ndarray | None = None
        labels: tuple[int, ...] = ()
        if parts:
            labels = tuple(sorted(c.label for c in parts))
            nerve_mask = post.component_mask(labels)
            measurement = self._measure(nerve_mask, self.calibration, post.prob)
            if measurement.area_px == 0:  # a custom measure function may reject the mask
                measurement, nerve_mask, labels = None, None, ()
        rejected: str | None = None
        score: float | None = None
        if measurement is not None and self.presence is not None:
            h, w = post.shape
            rejected, score = self.presence.assess(measurement, (w, h), self.calibration, image=image,
                                                   mask=nerve_mask, prob=post.prob,
                                                   tracking=self._state is TrackState.TRACKING)
            if rejected is not None:
                log.debug("frame %d: detection rejected (%s)", frame_index, rejected)
                measurement, nerve_mask, labels = None, None, ()
        if measurement is not None and score is not None and self._state is TrackState.TRACKING:
            stale = self._stale(frame_index, score)
            if stale is not None:
                rejected = stale
                log.debug("frame %d: detection rejected (%s)", frame_index, rejected)
                measurement, nerve_mask, labels = None, None, ()
        if measurement is not None and self._state is TrackState.TRACKING and self.area_step is not None:
            step = self._area_step(float(measurement.area_px))
            if step is not None:
                rejected = step
                log.debug("frame %d: detection rejected (%s)", frame_index, rejected)
                measurement, nerve_mask, labels = None, None, ()
        if measurement is not None and self._state is not TrackState.TRACKING and self.confirm_frames > 1:
            in_a_row = self._confirm(measurement)
            if in_a_row < self.confirm_frames:
                rejected = f"unconfirmed: {in_a_row} of {self.confirm_frames} frames"
                log.debug("frame %d: detection %s", frame_index, rejected)
                measurement, nerve_mask, labels = None, None, ()
            else:
                self._unconfirmed = None
        else:
            self._unconfirmed = None

        status = self._advance(frame_index, measurement)
        if not status.measured:
            measurement, nerve_mask, labels = None, None, ()
        else:
            entry = self._entry_threshold()
            if score is not None and entry is not None and score >= entry:
                self._last_entry_index = frame_index
        frames_since_seen = (None if self._last_seen_index is None else frame_index - self._last_seen_index)

        if self._window is not None:
            self._window.offer(frame_index, measurement)
            if self._window.closed(frame_index):
                self._finish_baseline()

        result = TrackedMeasurement(frame_index=frame_index, t_s=float(t_s), status=status, measurement=measurement,
                                    n_detections=post.n_components, nerve_labels=labels,
                                    frames_since_seen=frames_since_seen, baseline=self._baseline,
                                    nerve_mask=nerve_mask, rejected=rejected,
                                    presence_checked=self.rejects, presence_score=score,
                                    presence_scored=self.scores)
        if measurement is not None and self._baseline is not None:
            self._relate_to_baseline(result, measurement, self._baseline)
        if self._smoothers:
            result.smooth = self._smooth(result)
        return result

    def _entry_threshold(self) -> float | None:
        """The presence gate's entry threshold when it has a lower hold threshold (else nothing to refresh)."""
        model = self.presence.appearance if self.presence is not None else None
        if model is None or model.hold_threshold is None:
            return None
        return model.threshold

    def _stale(self, frame_index: int, score: float) -> str | None:
        """Why a tracked nerve that scored ``score`` is no longer held (see *Refresh*), or None."""
        entry = self._entry_threshold()
        if self.refresh_frames is None or entry is None or score >= entry:
            return None
        if self._last_entry_index is not None and frame_index - self._last_entry_index < self.refresh_frames:
            return None
        return (f"appearance {score:.2f} < {entry:.2f}: held {self.refresh_frames} frames without one at the "
                f"entry threshold")

    def _area_step(self, area: float) -> str | None:
        """Why ``area`` is an implausible step from the recent measured areas, or None (see *Area step*)."""
        if len(self._recent_areas) < AREA_STEP_MIN_HISTORY:
            return None
        ref = _median(self._recent_areas)
        change = area / ref - 1.0
        if abs(change) <= self.area_step:
            self._step_run = None
            return None
        prev = self._step_run
        run = prev[0] + 1 if prev is not None and abs(area / prev[1] - 1.0) <= self.area_step else 1
        self._step_run = (run, area)
        if run >= AREA_STEP_ACCEPT:  # the new size held: a real change, measured from now on
            self._recent_areas.clear()
            self._step_run = None
            return None
        return f"area step {100 * change:+.0f}% in one frame (recent median {ref:.0f} px)"

    def _confirm(self, m: Measurement) -> int:
        """How many processed frames in a row (this one included) have had an accepted nerve, each within
        the gate of the one before (the count starts again at 1 after a jump)."""
        centroid = (float(m.centroid_x_px), float(m.centroid_y_px))
        prev = self._unconfirmed
        in_a_row = prev[0] + 1 if prev is not None and self._distance(centroid, prev[1]) <= self.gate else 1
        self._unconfirmed = (in_a_row, centroid)
        return in_a_row

    def _advance(self, frame_index: int, measurement: Measurement | None) -> TrackStatus:
        """Apply the state machine; return the frame's status."""
        if measurement is not None:
            status = TrackStatus.REACQUIRED if self._state is TrackState.LOST else TrackStatus.OK
            if status is TrackStatus.REACQUIRED:
                log.info("frame %d: nerve reacquired", frame_index)
            self._state = TrackState.TRACKING
            self._last_seen_index = frame_index
            self._last_centroid_px = (float(measurement.centroid_x_px), float(measurement.centroid_y_px))
            self._recent_areas.append(float(measurement.area_px))
            return status
        if self._state is TrackState.TRACKING:
            missed = frame_index - (self._last_seen_index if self._last_seen_index is not None else frame_index)
            if missed > self.lost_after_frames:
                log.info("frame %d: nerve lost (no nerve for %d frames)", frame_index, missed)
                self._state = TrackState.LOST
                self._last_centroid_px = None
                self._recent_areas.clear()
                self._step_run = None
                self._last_entry_index = None
                for s in self._smoothers.values():
                    s.reset()
                return TrackStatus.LOST
            return TrackStatus.NO_DETECTION
        if self._state is TrackState.LOST:
            return TrackStatus.LOST
        return TrackStatus.NO_DETECTION

    def _finish_baseline(self) -> None:
        window = self._window
        self._window = None
        if window is None:
            return
        if not window.samples:
            log.warning("baseline window %s had no frame with a measured nerve: change from baseline stays empty",
                        window.source)
            return
        ms = [m for _, m in window.samples]
        cal = self.calibration
        self._baseline = Baseline(
            area_px=_median([m.area_px for m in ms]),
            area_mm2=_median([m.area_mm2 for m in ms]) if cal is not None else None,  # type: ignore[misc]
            centroid_x_px=_median([m.centroid_x_px for m in ms]),  # type: ignore[misc]
            centroid_y_px=_median([m.centroid_y_px for m in ms]),  # type: ignore[misc]
            centroid_x_mm=_median([m.centroid_x_mm for m in ms]) if cal is not None else None,  # type: ignore[misc]
            centroid_y_mm=_median([m.centroid_y_mm for m in ms]) if cal is not None else None,  # type: ignore[misc]
            n_frames=len(ms),
            first_frame=window.samples[0][0],
            last_frame=window.samples[-1][0],
            source=window.source,
        )
        b = self._baseline
        log.info("baseline (%s): %d frames %d..%d, area %.1f px%s", b.source, b.n_frames, b.first_frame, b.last_frame,
                 b.area_px, "" if b.area_mm2 is None else f" = {b.area_mm2:.2f} mm2")

    def _relate_to_baseline(self, r: TrackedMeasurement, m: Measurement, b: Baseline) -> None:
        r.csa_change_pct = 100.0 * (m.area_px - b.area_px) / b.area_px if b.area_px > 0 else None
        dx = float(m.centroid_x_px) - b.centroid_x_px  # type: ignore[arg-type]
        dy = float(m.centroid_y_px) - b.centroid_y_px  # type: ignore[arg-type]
        r.displacement_dx_px, r.displacement_dy_px = dx, dy
        r.displacement_px = math.hypot(dx, dy)
        if (m.centroid_x_mm is not None and m.centroid_y_mm is not None and b.centroid_x_mm is not None
                and b.centroid_y_mm is not None):
            dx_mm, dy_mm = m.centroid_x_mm - b.centroid_x_mm, m.centroid_y_mm - b.centroid_y_mm
            r.displacement_dx_mm, r.displacement_dy_mm = dx_mm, dy_mm
            r.displacement_mm = math.hypot(dx_mm, dy_mm)

    def _smooth(self, r: TrackedMeasurement) -> dict[str, float | None]:
        if not r.measured:
            return {name: None for name in SMOOTHED_FIELDS}
        return {name: self._smoothers[name].update(r.value(name)) for name in SMOOTHED_FIELDS}
