"""``mn-bench --soak MINUTES``: a long live run, watched for what grows: memory, latency, dropped frames.

The run is mn-live's: the phantom (or any source) paced at its frame rate with the newest-frame
policy, the engine, the tracker with mn-live's defaults, and every output mn-live writes (CSV,
overlay video, summary.json kept current, plot) into a folder (``--soak-out``, else a temporary
one removed at the end). A watcher sink sees every record and, every ``window_s`` seconds, closes a
window: frames processed and dropped in it, end-to-end latency p50/p95/p99/max (capture ->
measurement), and the process's resident memory (RSS, ``/proc/self/statm``); RSS is also sampled
every ``rss_every_s`` seconds.

The checks are the issue's targets: RSS within 5 MB of its value after the first minute, the p95 of
every 5-minute window within 10 % of the first one's, no frame dropped. Written: a JSON (default
``benchmarks/results/soak-MODEL-HOST-DATE.json``) and a PNG beside it (RSS, latency per window, drops).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.figures import save_figure
from realtime.distribution import Distribution
from realtime.record import FrameRecord
from realtime.sinks.base import RunInfo, Sink

log = logging.getLogger(__name__)

RSS_TARGET_MB = 5.0          # growth allowed after the first minute
P95_TARGET = 0.10            # relative change of a 5-minute window's p95 from the first window's
CHECK_WINDOW_S = 300.0       # the windows the p95 target is about


def rss_mb() -> float | None:
    """The process's resident memory in MB (``/proc/self/statm``), ``None`` where there is no /proc."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def rss_parts_mb() -> dict[str, float | None]:
    """Resident memory split into anonymous (the heap: what a leak grows) and file-backed pages (code and
    mapped files, which grow as new code paths first run and are bounded by the libraries' size), in MB,
    from ``/proc/self/status``; ``None`` values where there is no /proc."""
    keys = {"RssAnon:": "rss_anon_mb", "RssFile:": "rss_file_mb"}
    out: dict[str, float | None] = dict.fromkeys(keys.values())
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] in keys:
                    out[keys[parts[0]]] = int(parts[1]) * 1024 / 1e6  # kB
    except (OSError, ValueError, IndexError):
        pass
    return out


@dataclass
class _Window:
    start_s: float
    latency: Distribution = field(default_factory=lambda: Distribution(exact=20_000))
    frames: int = 0
    dropped: int = 0

    def row(self, end_s: float) -> dict[str, Any]:
        stats = self.latency.stats()
        return {"start_s": round(self.start_s, 1), "end_s": round(end_s, 1), "frames": self.frames,
                "dropped": self.dropped, "fps": self.frames / max(end_s - self.start_s, 1e-9),
                **{f"e2e_{k}_ms": stats[k] for k in ("p50", "p95", "p99", "max")}, "rss_mb": rss_mb()}


class SoakWatcher(Sink):
    """Per-window latency and drops, and RSS over time (the module docstring); bounded memory itself."""

    name = "soak watcher"

    def __init__(self, window_s: float = 60.0, rss_every_s: float = 10.0, clock=time.monotonic) -> None:
        self.window_s = window_s
        self.rss_every_s = rss_every_s
        self.clock = clock
        self.windows: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []      # the 5-minute windows of the p95 target
        self.rss: list[dict[str, Any]] = []
        self.frames = 0
        self.dropped = 0
        self._t0 = 0.0
        self._next_rss = 0.0
        self._window = self._check = _Window(0.0)

    def open(self, run: RunInfo) -> None:
        self._t0 = self.clock()
        self._window, self._check = _Window(0.0), _Window(0.0)
        self._sample_rss(0.0)

    def elapsed(self) -> float:
        return self.clock() - self._t0

    def write(self, record: FrameRecord) -> None:
        t = self.elapsed()
        if t - self._window.start_s >= self.window_s:
            self._close_window(t)
        if t - self._check.start_s >= CHECK_WINDOW_S:
            self.checks.append(self._check.row(t))
            self._check = _Window(t)
        self.frames += 1
        self.dropped += record.dropped_before
        for w in (self._window, self._check):
            w.frames += 1
            w.dropped += record.dropped_before
            w.latency.add(record.latency_ms)
        if t >= self._next_rss:
            self._sample_rss(t)

    def _sample_rss(self, t: float, closing: bool = False) -> None:
        self.rss.append({"t_s": round(t, 1), "rss_mb": rss_mb(), **rss_parts_mb(), "frames": self.frames,
                         "dropped": self.dropped, **({"closing": True} if closing else {})})
        self._next_rss = t + self.rss_every_s

    def _close_window(self, t: float) -> None:
        row = self._window.row(t)
        self.windows.append(row)
        log.info("soak %5.1f min: %d frames, %d dropped, e2e p50 %.1f / p95 %.1f ms, RSS %.1f MB", t / 60,
                 row["frames"], row["dropped"], row["e2e_p50_ms"] or math.nan, row["e2e_p95_ms"] or math.nan,
                 row["rss_mb"] or math.nan)
        self._window = _Window(t)

    def close(self) -> None:
        t = self.elapsed()
        if self._window.frames:
            self._close_window(t)
        if self._check.frames and t - self._check.start_s >= CHECK_WINDOW_S / 2:  # a last window half full or more
            self.checks.append(self._check.row(t))
        self._sample_rss(t, closing=True)  # outputs already closed (the video encoder freed): not in the verdict

    def verdict(self) -> dict[str, Any]:
        """The issue's targets against what was measured (``None`` where the run was too short to tell)."""
        pts = [(r["t_s"], r["rss_mb"]) for r in self.rss
               if r["t_s"] >= 60.0 and r["rss_mb"] is not None and not r.get("closing")]
        after_1min = pts[0][1] if pts else None
        growth = (max(m for _, m in pts) - after_1min) if pts else None
        slope = None
        if len(pts) >= 3:
            t, m = np.array(pts).T
            slope = float(np.polyfit(t / 3600.0, m, 1)[0])
        def part_growth(key: str) -> float | None:
            vals = [r[key] for r in self.rss if r["t_s"] >= 60.0 and r.get(key) is not None and not r.get("closing")]
            return max(vals) - vals[0] if vals else None

        p95 = [c["e2e_p95_ms"] for c in self.checks if c["e2e_p95_ms"] is not None]
        p95_change = [(p - p95[0]) / p95[0] for p in p95[1:]] if len(p95) > 1 else []
        return {
            "rss_after_first_minute_mb": after_1min,
            "rss_growth_after_first_minute_mb": growth,
            "rss_slope_mb_per_hour": slope,
            "rss_within_target": None if growth is None else growth <= RSS_TARGET_MB,
            # where the growth is (diagnostic; the target is on RSS): the heap (a leak) or code and mapped files
            "rss_anon_growth_after_first_minute_mb": part_growth("rss_anon_mb"),
            "rss_file_growth_after_first_minute_mb": part_growth("rss_file_mb"),
            "p95_5min_windows_ms": p95,
            "p95_max_change_vs_first": max((abs(c) for c in p95_change), default=None),
            # the signed change of the slowest later window: growth shows here; a negative value means every later
            # window was faster than the first (which the target, on the absolute change, may still fail)
            "p95_max_rise_vs_first": max(p95_change, default=None),
            "p95_within_target": all(abs(c) <= P95_TARGET for c in p95_change) if p95_change else None,
            "frames_processed": self.frames,
            "frames_dropped": self.dropped,
            "no_drops": self.dropped == 0,
            "targets": f"RSS within {RSS_TARGET_MB:g} MB of its value after the first minute; p95 of every "
                       f"{CHECK_WINDOW_S / 60:g}-minute window within {100 * P95_TARGET:g} % of the first; 0 dropped",
        }


def run_soak(minutes: float, model: str, *, size: tuple[int, int] | None = None, source: str = "synthetic",
             fps: float | None = None, window_s: float = 60.0, threads: int | None = None, cache_dir: str | None = None,
             out: str | None = None, command: str = "") -> dict[str, Any]:
    """A live run of ``minutes`` (the module docstring); returns the results (JSON-able). ``size``: the input
    size of an architecture name (random weights)."""
    from benchmarks.bench import Combo, Settings, bench_system, load_bench_engine
    from realtime.cli_common import csv_metadata, make_tracker, run_metadata
    from realtime.live_cli import build_parser as live_parser
    from realtime.outputs import Outputs, output_sinks
    from realtime.pipeline import Pipeline, PipelineConfig
    from realtime.sources import open_source
    from realtime.fusion import make_fusion
    from realtime.window_policy import make_window_policy

    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="mn-soak-"))
    live_args = live_parser().parse_args(["--source", source])  # mn-live's defaults (tracker, presence)
    engine = load_bench_engine(Combo(model, "auto", None, size, "realtime"),
                               Settings(source=source, threads=threads, cache_dir=cache_dir))
    src = open_source(source, realtime=True, fps=fps)
    watcher = SoakWatcher(window_s=window_s)
    try:
        with engine, src:
            rate = src.fps or fps or 24.0
            meta = run_metadata(engine, None, source, mode="live (soak)")
            sinks = output_sinks(Outputs(csv=folder / "measurements.csv", video=folder / "overlay.mp4",
                                         summary=folder / "summary.json", plot=folder / "plot.png"),
                                 csv_header=csv_metadata(meta), warmup=5, extra=[watcher])
            pipe = Pipeline(engine, make_tracker(live_args, None, rate), sinks,
                            PipelineConfig(duration_s=minutes * 60.0, fps_hint=rate, metadata=meta,
                                           window=make_window_policy(live_args.window),  # mn-live's --window
                                           fusion=make_fusion(live_args.fusion, motion=live_args.fusion_motion)))
            from realtime.cli_common import stop_on_signals

            log.info("soak: %g min of %s at %g fps through %s; outputs in %s", minutes, source, rate, engine, folder)
            with stop_on_signals(pipe.request_stop):
                result = pipe.run(src)
            engine_info = engine.describe()
    finally:
        if not out:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "benchmark": "soak",
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "what": "a live mn-live run (newest-frame policy, every output written) watched for growth: RSS "
                "(/proc/self/statm), end-to-end latency (capture -> measurement) per window, dropped frames",
        "settings": {"minutes": minutes, "model": model, "source": source, "fps": rate, "window_s": window_s,
                     "threads": threads, "outputs_kept_in": out},
        "system": bench_system(threads),
        "engine": engine_info,
        "ended_because": result.reason,
        "exit_code": result.exit_code,
        "checks": watcher.verdict(),
        "windows": watcher.windows,
        "windows_5min": watcher.checks,
        "rss": watcher.rss,
        "summary": {k: result.summary.get(k) for k in ("frames_processed", "frames_dropped", "latency_ms",
                                                       "stage_ms", "status_counts")},
    }


def plot_soak(path: str | os.PathLike, result: dict[str, Any]) -> Path:
    """RSS over time, latency percentiles per window, dropped frames per window; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rss = [r for r in result["rss"] if r["rss_mb"] is not None]
    win = result["windows"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot([r["t_s"] / 60 for r in rss], [r["rss_mb"] for r in rss], color="#3182bd")
    axes[0].set_ylabel("RSS (MB)")
    mid = [(w["start_s"] + w["end_s"]) / 120 for w in win]
    for key, colour in (("p50", "#74c476"), ("p95", "#fd8d3c"), ("p99", "#de2d26")):
        axes[1].plot(mid, [w[f"e2e_{key}_ms"] for w in win], marker="o", ms=3, color=colour, label=key)
    axes[1].set_ylabel("e2e latency (ms)")
    axes[1].legend(fontsize=8)
    axes[2].bar(mid, [w["dropped"] for w in win], width=0.8 * (result["settings"]["window_s"] / 60), color="#636363")
    axes[2].set_ylabel("dropped / window")
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
    c = result["checks"]
    axes[0].set_title(f"soak {result['settings']['model']} {result['settings']['minutes']:g} min: RSS growth after "
                      f"1 min {_fmt(c['rss_growth_after_first_minute_mb'])} MB, dropped {c['frames_dropped']}",
                      fontsize=10)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def report(result: dict[str, Any]) -> str:
    """The lines printed after a soak."""
    c = result["checks"]
    lines = [f"soak: {result['settings']['minutes']:g} min, {c['frames_processed']} frames, {c['frames_dropped']} "
             f"dropped; ended: {result['ended_because']}",
             f"RSS after the first minute {_fmt(c['rss_after_first_minute_mb'])} MB, growth since "
             f"{_fmt(c['rss_growth_after_first_minute_mb'])} MB (slope {_fmt(c['rss_slope_mb_per_hour'])} MB/h)"]
    for w in result["windows"]:
        lines.append(f"  {w['start_s'] / 60:5.1f}-{w['end_s'] / 60:5.1f} min: {w['frames']:6d} frames "
                     f"{w['dropped']:4d} dropped  e2e p50 {_fmt(w['e2e_p50_ms'])} p95 {_fmt(w['e2e_p95_ms'])} "
                     f"p99 {_fmt(w['e2e_p99_ms'])} ms  RSS {_fmt(w['rss_mb'])} MB")
    rise = c.get("p95_max_rise_vs_first")
    p95_detail = "" if rise is None else (f" (largest change {100 * c['p95_max_change_vs_first']:.1f} %, largest rise "
                                          f"{100 * rise:+.1f} %)")
    lines.append(f"targets ({c['targets']}): RSS {_ok(c['rss_within_target'])}, p95 {_ok(c['p95_within_target'])}"
                 f"{p95_detail}, drops {_ok(c['no_drops'])}")
    return "\n".join(lines)


def _ok(flag: bool | None) -> str:
    return "run too short to tell" if flag is None else ("met" if flag else "NOT met")


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def add_soak_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--soak", type=float, default=None, metavar="MINUTES",
                   help="soak mode: one live run of this many minutes (the first --models, the phantom or --source, "
                        "every mn-live output) recording RSS, latency percentiles per window and dropped frames; "
                        "JSON (default benchmarks/results/soak-MODEL-HOST-DATE.json) and a PNG beside it")
    p.add_argument("--window-s", type=float, default=60.0, help="soak mode: seconds per latency / drop window")
    p.add_argument("--soak-out", default=None, metavar="DIR",
                   help="soak mode: keep the run's outputs (CSV, video, summary) here (default: a temporary folder, "
                        "removed at the end)")
