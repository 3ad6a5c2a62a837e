"""``summary.json`` and ``plot.png``: what a run measured, at a glance."""

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
    when the run has at least twice as many frames.
    """

    def __init__(self, warmup: int = 0) -> None:
        self.warmup = warmup
        self.processed = 0
        self.dropped = 0
        self.last_frame = -1
        self.status = Counter()
        self.series: dict[str, list[Any]] = {k: [] for k in (
            "frame", "t_s", "status", "area_px", "area_mm2", "flattening_ratio", "circularity",
            "displacement_mm", "displacement_px", "csa_change_pct")}
        self.latency: list[float] = []
        self.stages: dict[str, list[float]] = {s: [] for s in STAGES}

    def add(self, r: FrameRecord) -> None:
        self.processed += 1
        self.dropped += r.dropped_before
        self.last_frame = max(self.last_frame, r.frame)
        self.status[r.status] += 1
        for key in self.series:
            if key in ("frame", "t_s", "status"):
                self.series[key].append(getattr(r, key))
            else:
                self.series[key].append(r.values.get(key))
        self.latency.append(r.latency_ms)
        for s in STAGES:
            self.stages[s].append(r.timings_ms.get(s, math.nan))

    def to_dict(self, **meta: Any) -> dict[str, Any]:
        s = self.series
        # leave the warm-up frames out of the timing statistics, unless the run is too short for that
        skip = self.warmup if self.processed >= 2 * self.warmup else 0
        measured = [i for i, st in enumerate(s["status"]) if st in MEASURED_STATUSES]
        pick = lambda key: [s[key][i] for i in measured]  # noqa: E731
        calibrated = any(v is not None for v in pick("area_mm2"))
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
    calibrated = any(v is not None for v in s["area_mm2"])
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
