"""``FrameRecord``: everything known about one processed frame, typed; and the one place that turns it
into the per-frame CSV's columns and cells.

The per-frame CSV is a contract other tools read; its columns are :data:`CSV_COLUMNS`, in this
order, followed by the per-stage timings :data:`STAGE_COLUMNS` (milliseconds), then the tracker's
other fields (:func:`extra_columns`). Empty cells mean "not available": mm columns without
calibration, measurements on frames with no detection. Sinks read the record's typed fields; only
:func:`csv_values` flattens it (the CSV sink and the benchmark's rows are its callers).

:class:`timed` is the stage timer (in the manner of ultralytics' ``Profile``): ``with timed(record
.timings_ms, "render"): ...`` adds the block's ``perf_counter_ns`` time to a stage.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from realtime.morphometry import Measurement
    from realtime.tracker import TrackedMeasurement

CSV_COLUMNS = [
    "frame", "t_s", "status", "area_px", "area_mm2", "perimeter_px", "perimeter_mm", "flattening_ratio",
    "circularity", "centroid_x_px", "centroid_y_px", "centroid_x_mm", "centroid_y_mm", "n_components",
    "confidence", "csa_change_pct", "displacement_mm", "latency_ms", "dropped_before", "paused_before", "paused_s",
    "wall_time_utc",
    "source_time_s", "window", "fused",
]

#: Pipeline stages timed per frame (perf_counter_ns), in the order a frame meets them. ``render``:
#: drawing the overlay; ``write``: handing the frame's pixels to the outputs that store or show them
#: (overlay video, window, mask files).
STAGES = ["capture_wait", "preprocess", "infer", "postprocess", "track", "render", "write"]
STAGE_COLUMNS = [f"{s}_ms" for s in STAGES]

#: What each column means and its unit (written as comments at the top of the CSV).
COLUMN_UNITS = {
    "frame": "source frame index (0-based; gaps are frames the live policy dropped)",
    "t_s": "stream time of the frame, s",
    "status": "ok | no_detection | lost | reacquired",
    "area_px": "nerve cross-sectional area, pixels at native resolution",
    "area_mm2": "cross-sectional area, mm^2 (empty when uncalibrated)",
    "perimeter_px": "outer contour length, px", "perimeter_mm": "outer contour length, mm",
    "flattening_ratio": "major / minor axis of the equivalent ellipse (second moments)",
    "circularity": "4*pi*area/perimeter^2 (1 for a disc)",
    "centroid_x_px": "px from the left edge of the (cropped) image", "centroid_y_px": "px from the top",
    "centroid_x_mm": "mm", "centroid_y_mm": "mm",
    "n_components": "regions counted as the nerve (2 for a bifid nerve)",
    "confidence": "mean network probability inside the nerve mask",
    "csa_change_pct": "change of area from the baseline, %",
    "displacement_mm": "centroid distance from the baseline centroid, mm (px when uncalibrated: "
                       "see displacement_px)",
    "latency_ms": "capture to measurement, ms",
    "dropped_before": "frames dropped by the live policy just before this one",
    "paused_before": "frames the source produced while the run was paused just before this one (skipped, not "
                     "dropped; 0 on every row but the first after a pause)",
    "paused_s": "seconds the run was paused just before this frame (the window's space key); 0 on every row but "
                "the first after a pause, which marks the gap",
    "wall_time_utc": "wall-clock time of the frame's capture, UTC, ISO 8601 with ms (to synchronise with other "
                     "instruments)",
    "source_time_s": "the source's own timestamp of the frame, s, as the source counts it (OpenIGTLink: the IMAGE "
                     "message's header timestamp; DICOM: acquisition time + frame offset, s since 1970); empty when "
                     "the source has none",
    "window": "what placed the cascade's window: tracked (the tracked nerve, --window tracked) or localiser; "
              "empty for a model without a window",
    "presence_score": "the presence gate's appearance score of the selected region, 0-1 (the appearance model's "
                      "probability that it is a median nerve; measured only at or above the model's threshold); "
                      "empty where no appearance check ran",
    "fused": "1 when the mask was cut from the frame's probabilities fused with the previous frames' (--fusion), "
             "0 when from the frame's own; empty with fusion off",
}


class timed:  # noqa: N801 - used like a function: ``with timed(timings, "infer"):``
    """Adds the time the ``with`` block takes to ``timings[stage]`` (milliseconds, ``perf_counter_ns``)."""

    __slots__ = ("timings", "stage", "_t0")

    def __init__(self, timings: dict[str, float], stage: str) -> None:
        self.timings = timings
        self.stage = stage

    def __enter__(self) -> "timed":
        self._t0 = time.perf_counter_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + (time.perf_counter_ns() - self._t0) / 1e6


@dataclass(eq=False)
class FrameRecord:
    """One processed frame.

    ``tracked``: the tracker's result (status, the nerve's :class:`~realtime.morphometry.Measurement`,
    change from baseline, smoothing). ``calibrated``: whether the run has a pixel spacing (so the mm
    fields are set; nothing downstream guesses it from them). ``contours``: the outer contours of the
    nerve's components at native resolution (OpenCV's int32 ``[n, 1, 2]``, from post-processing;
    empty when not measured). ``timings_ms``: per-stage times (:data:`STAGES`); the sinks that draw
    and store the frame add their ``render`` and ``write`` times, so the sinks after them (the CSV,
    the summary) see every stage. ``image`` (the native frame), ``mask`` (the nerve's mask, uint8
    0/1) and ``truth`` (a known true mask) are released once every sink has had the record.
    ``t_wall``: the wall-clock time of the capture (UTC seconds since the epoch); ``t_source``: the
    source's own timestamp of the frame (:class:`~realtime.frame.Frame`), ``None`` when it has none.
    ``paused_s`` / ``paused_before``: on the first record after a pause, how long it was and how many
    frames the source produced meanwhile (skipped; ``dropped_before`` counts only the live policy's).
    ``window``: what placed a cascade's window (``"tracked"``, ``"confirmed"`` or ``"localiser"``,
    :mod:`realtime.window_policy`); ``None`` for a model without a window. ``fused``: whether the mask
    came from probabilities fused with the previous frames' (:mod:`realtime.fusion`); ``None`` with
    fusion off.
    """

    frame: int
    t_s: float
    tracked: TrackedMeasurement
    calibrated: bool = False
    latency_ms: float = math.nan
    dropped_before: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    contours: tuple[np.ndarray, ...] = field(default=(), repr=False)
    image: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    truth: np.ndarray | None = field(default=None, repr=False)
    t_wall: float | None = None
    t_source: float | None = None
    paused_before: int = 0
    paused_s: float = 0.0
    window: str | None = None
    fused: bool | None = None

    @property
    def status(self) -> str:
        """``ok``, ``no_detection``, ``lost`` or ``reacquired``."""
        return self.tracked.status.value

    @property
    def measured(self) -> bool:
        return self.tracked.measured

    @property
    def measurement(self) -> Measurement | None:
        """The nerve's morphometry (raw, unsmoothed), ``None`` when not measured."""
        return self.tracked.measurement

    @property
    def area(self) -> float | None:
        """The nerve's area in the run's unit: mm² when calibrated, else px."""
        m = self.tracked.measurement
        if m is None:
            return None
        return m.area_mm2 if self.calibrated else float(m.area_px)

    def release(self) -> None:
        """Drop the frame's pixels (called once every sink has had the record)."""
        self.image = self.mask = self.truth = None


def extra_columns(tracker_columns: Iterable[str]) -> list[str]:
    """The tracker's fields that are not contract columns, in its order (bounding box, displacement_px,
    baseline, smoothed values, the presence gate's ``rejected``...)."""
    return [c for c in tracker_columns if c not in CSV_COLUMNS]


def csv_columns(extra: Iterable[str] = ()) -> list[str]:
    """Every column of a CSV: the contract, the stage timings, then ``extra``."""
    return CSV_COLUMNS + STAGE_COLUMNS + list(extra)


def csv_values(record: FrameRecord) -> dict[str, Any]:
    """The record as ``{column: value}``: the tracker's fields, the frame's, and the stage times."""
    values = record.tracked.to_row()
    values.update(frame=record.frame, t_s=record.t_s, status=record.status, latency_ms=record.latency_ms,
                  dropped_before=record.dropped_before, paused_before=record.paused_before,
                  paused_s=record.paused_s, wall_time_utc=utc_iso(record.t_wall),
                  source_time_s=record.t_source, window=record.window,
                  fused=None if record.fused is None else int(record.fused))
    values.update({f"{s}_ms": record.timings_ms.get(s) for s in STAGES})
    return values


def utc_iso(t: float | None) -> str | None:
    """``time.time()`` seconds -> ``2024-05-06T07:08:09.123Z`` (UTC, ISO 8601, milliseconds); ``None`` stays
    ``None``."""
    if t is None or not math.isfinite(t):
        return None
    stamp = dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def csv_row(record: FrameRecord, columns: Iterable[str]) -> list[str]:
    """The CSV cells of ``record`` for ``columns`` (:func:`format_cell`)."""
    values = csv_values(record)
    return [format_cell(values.get(c)) for c in columns]


def format_cell(value: Any) -> str:
    """CSV cell text: empty for None/NaN, 4 significant decimals for floats."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return ""
        text = f"{float(value):.4f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text  # -0.00001 rounds to zero: "0", not "-0"
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    return str(value)
