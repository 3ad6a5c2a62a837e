"""``summary.json`` and ``plot.png``: what a run measured, at a glance (:class:`SummarySink`: the
numbers accumulated by :class:`SummaryBuilder`, written when the run ends)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from realtime.record import STAGES, FrameRecord
from realtime.sinks.base import RunInfo, Sink

log = logging.getLogger(__name__)

MEASURED_STATUSES = ("ok", "reacquired")
PERCENTILES = (50, 90, 95, 99)


def latency_stats(values_ms: list[float] | np.ndarray) -> dict[str, float | None]:
    """p50/p90/p95/p99/max/mean/std of a list of milliseconds (NaNs ignored; None when empty)."""
    v = np.asarray(values_ms, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {**{f"p{p}": None for p in PERCENTILES}, "max": None, "mean": None, "std": None, "n": 0}
    out = {f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES}
    out.update(max=float(v.max()), mean=float(v.mean()), std=float(v.std()), n=int(v.size))
    return out


def _stats(values: list[float]) -> dict[str, float | None]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"min": None, "median": None, "max": None}
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


class SummaryBuilder:
    """Accumulates records (the numbers only, not the images) into the run summary.

    ``warmup``: the first frames left out of the latency statistics (engine and cache warm-up),
    when the run has at least twice as many frames. ``calibrated``: the unit of areas and
    displacements (mm when calibrated); ``None`` takes it from the records.
    """

    SERIES = ("frame", "t_s", "status", "area_px", "area_mm2", "flattening_ratio", "circularity",
              "displacement_mm", "displacement_px", "csa_change_pct")

    def __init__(self, warmup: int = 0, calibrated: bool | None = None) -> None:
        self.warmup = warmup
        self.calibrated = calibrated
        self.processed = 0
        self.dropped = 0
        self.last_frame = -1
        self.status = Counter()
        self.series: dict[str, list[Any]] = {k: [] for k in self.SERIES}
        self.latency: list[float] = []
        self.stages: dict[str, list[float]] = {s: [] for s in STAGES}

    def add(self, r: FrameRecord) -> None:
        if self.calibrated is None:
            self.calibrated = r.calibrated
        self.processed += 1
        self.dropped += r.dropped_before
        self.last_frame = max(self.last_frame, r.frame)
        self.status[r.status] += 1
        m, t = r.measurement, r.tracked
        s = self.series
        s["frame"].append(r.frame)
        s["t_s"].append(r.t_s)
        s["status"].append(r.status)
        s["area_px"].append(None if m is None else m.area_px)
        s["area_mm2"].append(None if m is None else m.area_mm2)
        s["flattening_ratio"].append(None if m is None else m.flattening_ratio)
        s["circularity"].append(None if m is None else m.circularity)
        s["displacement_mm"].append(t.displacement_mm)
        s["displacement_px"].append(t.displacement_px)
        s["csa_change_pct"].append(t.csa_change_pct)
        self.latency.append(r.latency_ms)
        for stage in STAGES:
            self.stages[stage].append(r.timings_ms.get(stage, math.nan))

    def to_dict(self, **meta: Any) -> dict[str, Any]:
        s = self.series
        # leave the warm-up frames out of the timing statistics, unless the run is too short for that
        skip = self.warmup if self.processed >= 2 * self.warmup else 0
        measured = [i for i, st in enumerate(s["status"]) if st in MEASURED_STATUSES]
        pick = lambda key: [s[key][i] for i in measured]  # noqa: E731
        calibrated = bool(self.calibrated)
        area_key = "area_mm2" if calibrated else "area_px"
        areas = [a for a in pick(area_key) if a is not None]
        frs = [f for f in pick("flattening_ratio") if f is not None]
        disp_key = "displacement_mm" if calibrated else "displacement_px"
        disps = [d for d in pick(disp_key) if d is not None and math.isfinite(d)]
        out: dict[str, Any] = {
            "frames_seen": self.processed + self.dropped,
            "frames_processed": self.processed,
            "frames_dropped": self.dropped,
            "status_counts": dict(self.status),
            "units": {"area": "mm2" if calibrated else "px", "displacement": "mm" if calibrated else "px"},
            "csa": _stats(areas),
            "csa_px": _stats(pick("area_px")),
            "flattening_ratio": _stats(frs),
            "circularity": _stats(pick("circularity")),
            "max_displacement": max(disps) if disps else None,
            "deformation": {
                "csa_max_over_min": (max(areas) / min(areas)) if areas and min(areas) > 0 else None,
                "fr_range": (max(frs) - min(frs)) if frs else None,
            },
            "latency_ms": latency_stats(self.latency[skip:]),
            "stage_ms": {k: latency_stats(v[skip:]) for k, v in self.stages.items()
                         if any(math.isfinite(x) for x in v[skip:])},
            "latency_warmup_frames_excluded": skip,
        }
        out.update(meta)
        return out


#: The order of the output files in the summary's ``outputs``.
OUTPUT_ORDER = ("csv", "video", "summary", "plot", "masks")


class SummarySink(Sink):
    """The run summary: accumulates every record and, when the run ends, puts the summary into
    ``run.summary`` (what the command prints) and writes it to ``path`` (atomically) and the plot to
    ``plot`` (either may be ``None``). The summary holds the run's metadata, how it ended, the source,
    engine and tracker descriptions, the output files and the sections earlier sinks left in
    ``run.extras`` (the truth score): list it last."""

    def __init__(self, path: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
                 warmup: int = 0) -> None:
        self.path = Path(path) if path is not None else None
        self.plot = Path(plot) if plot is not None else None
        self.paths = {k: v for k, v in (("summary", self.path), ("plot", self.plot)) if v is not None}
        self.name = f"summary {self.path}" if self.path else "summary"
        self.builder = SummaryBuilder(warmup=warmup)
        self._run: RunInfo | None = None

    def open(self, run: RunInfo) -> None:
        self._run = run
        self.builder.calibrated = run.calibrated

    def write(self, record: FrameRecord) -> None:
        self.builder.add(record)

    def close(self) -> None:
        run = self._run
        if run is None:
            return
        meta: dict[str, Any] = dict(run.metadata)
        meta.update(
            exit_code=run.exit_code,
            ended_because=run.reason,
            wall_time_s=round(run.wall_s, 3),
            processing_fps=(self.builder.processed / run.wall_s) if run.wall_s > 0 else None,
            source_info=_describe(run.source),
            source_error=getattr(run.source, "error", None),
            engine=run.engine.describe(),
            tracker=run.tracker.describe(),
            outputs={k: str(run.outputs[k]) for k in sorted(run.outputs, key=_output_rank)},
        )
        meta.update(run.extras)
        run.summary = self.builder.to_dict(**meta)
        if self.path:
            write_json(self.path, run.summary)
        if self.plot and self.builder.processed:
            plot_series(self.plot, self.builder, title=str(run.metadata.get("source", "")))


def _output_rank(kind: str) -> tuple[int, str]:
    return (OUTPUT_ORDER.index(kind) if kind in OUTPUT_ORDER else len(OUTPUT_ORDER), kind)


def _describe(source: Any) -> dict[str, Any] | None:
    try:
        return source.describe()
    except Exception:  # a source without describe() (tests, plain iterables)
        return None


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Atomic JSON write (a stop mid-write never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def plot_series(path: str | os.PathLike, summary: SummaryBuilder, title: str = "") -> None:
    """CSA, flattening ratio and circularity over time, with status bands behind them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary.series
    t = np.asarray(s["t_s"], dtype=np.float64)
    calibrated = bool(summary.calibrated)
    area = s["area_mm2"] if calibrated else s["area_px"]
    panels = [(area, "CSA (mm²)" if calibrated else "CSA (px, uncalibrated)"),
              (s["flattening_ratio"], "flattening ratio"), (s["circularity"], "circularity")]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    band = {"no_detection": "0.85", "lost": "#f4b6b6", "reacquired": "#f7e3a1"}
    for ax, (vals, label) in zip(axes, panels):
        y = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
        ax.plot(t, y, lw=1.2, color="#1f77b4")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for i, st in enumerate(s["status"]):
            if st in band:
                t0 = t[i]
                t1 = t[i + 1] if i + 1 < len(t) else t0 + (t[1] - t[0] if len(t) > 1 else 0.04)
                ax.axvspan(t0, t1, color=band[st], lw=0, alpha=0.6)
    axes[-1].set_xlabel("time (s)")
    from matplotlib.patches import Patch

    axes[0].legend(handles=[Patch(color=c, label=k) for k, c in band.items()], loc="upper right", fontsize=8)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
