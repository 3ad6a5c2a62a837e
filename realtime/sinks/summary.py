"""``summary.json`` and ``plot.png``: what a run measured, at a glance (:class:`SummarySink`: the
numbers accumulated by :class:`SummaryBuilder`, written when the run ends, and a partial summary kept
current while it runs).

Memory stays flat however long the run: the builder keeps running statistics
(:class:`~realtime.distribution.Distribution`) and a decimated series for the plot
(:class:`~realtime.distribution.DecimatedSeries`), not every frame's numbers.

Paused time is not data: the frames a source produced while the run was paused are counted apart
(``frames_paused``, not ``frames_dropped``), ``processing_fps`` leaves the paused seconds
(``paused_s``) out, and the plot leaves a gap. ``events`` lists what happened to the run, in frame
order: ``pause`` (frame, seconds, frames skipped, the frame it resumed at), ``baseline_requested``
(the b key), ``baseline_set`` (frame, how, the frames it is the median of, its area), ``snapshot``
(frame, file), ``roi_requested``; ``baseline`` is the baseline in effect at the end. The plot marks
them."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import EXIT_OK, EXIT_OUTPUT_FAILED
from common.figures import save_figure
from realtime.distribution import PERCENTILES, DecimatedSeries, Distribution, latency_stats
from realtime.record import STAGES, FrameRecord
from realtime.sinks.base import RunInfo, Sink

log = logging.getLogger(__name__)

__all__ = ["MEASURED_STATUSES", "PERCENTILES", "SummaryBuilder", "SummarySink", "latency_stats", "plot_series",
           "write_json"]

MEASURED_STATUSES = ("ok", "reacquired")
#: Status codes of the plot series (its status column holds the index).
STATUS_CODES = ("ok", "no_detection", "lost", "reacquired")


class SummaryBuilder:
    """Accumulates records (the numbers only, not the images) into the run summary, in bounded memory.

    ``warmup``: the first frames left out of the latency statistics (engine and cache warm-up),
    when the run has at least twice as many frames. ``calibrated``: the unit of areas and
    displacements (mm when calibrated); ``None`` takes it from the records. ``exact``: values per
    statistic kept exactly before percentiles come from a histogram (within 0.5 %); ``plot_points``:
    the most points the plot's series keeps.
    """

    SERIES = ("t_s", "status", "area_px", "area_mm2", "flattening_ratio", "circularity")

    def __init__(self, warmup: int = 0, calibrated: bool | None = None, exact: int = 4096,
                 plot_points: int = 4096) -> None:
        self.warmup = warmup
        self.calibrated = calibrated
        self.processed = 0
        self.dropped = 0
        self.status = Counter()
        self.series = DecimatedSeries(self.SERIES, capacity=plot_points)
        dist = lambda: Distribution(exact=exact)  # noqa: E731
        self.latency = dist()
        self.stages = {s: dist() for s in STAGES}
        self._warm: list[tuple[float, dict[str, float]]] = []  # the warm-up frames' latency and stage times
        self.measured = {k: dist() for k in ("area_px", "area_mm2", "flattening_ratio", "circularity")}
        self.max_displacement = {"mm": -math.inf, "px": -math.inf}
        self.paused = 0  # frames the source produced while the run was paused
        self.paused_s = 0.0
        self.gaps: list[tuple[float, float]] = []  # (t_s before, t_s after) of each pause, for the plot
        self.events: list[dict[str, Any]] = []  # baseline_set (the others come from the run's control)
        self._baseline: Any = None
        self._last_t: float | None = None

    def add(self, r: FrameRecord) -> None:
        if self.calibrated is None:
            self.calibrated = r.calibrated
        self.processed += 1
        self.dropped += r.dropped_before
        self.paused += r.paused_before
        if r.paused_s or r.paused_before:
            self.paused_s += r.paused_s
            self.gaps.append((r.t_s if self._last_t is None else self._last_t, r.t_s))
        self._last_t = r.t_s
        b = r.tracked.baseline
        if b is not None and b is not self._baseline:
            self.events.append({"event": "baseline_set", "frame": r.frame, "t_s": r.t_s, "how": b.source,
                                "frames": [b.first_frame, b.last_frame], "n_frames": b.n_frames,
                                "area_px": b.area_px, "area_mm2": b.area_mm2})
        self._baseline = b
        self.status[r.status] += 1
        m, t = r.measurement, r.tracked
        self.series.add(r.t_s, STATUS_CODES.index(r.status) if r.status in STATUS_CODES else None,
                        None if m is None else m.area_px, None if m is None else m.area_mm2,
                        None if m is None else m.flattening_ratio, None if m is None else m.circularity)
        if r.status in MEASURED_STATUSES and m is not None:
            self.measured["area_px"].add(m.area_px)
            self.measured["area_mm2"].add(m.area_mm2)
            self.measured["flattening_ratio"].add(m.flattening_ratio)
            self.measured["circularity"].add(m.circularity)
            for unit, d in (("mm", t.displacement_mm), ("px", t.displacement_px)):
                if d is not None and math.isfinite(d):
                    self.max_displacement[unit] = max(self.max_displacement[unit], d)
        if self.processed <= self.warmup:
            self._warm.append((r.latency_ms, dict(r.timings_ms)))
            return
        self.latency.add(r.latency_ms)
        for stage in STAGES:
            self.stages[stage].add(r.timings_ms.get(stage))

    def _timing(self, skip: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Latency and stage statistics, the warm-up frames left out when ``skip``."""
        if skip or not self._warm:
            lat, stages = self.latency.stats(), {k: d.stats() for k, d in self.stages.items() if d.n}
            return lat, stages
        # a run too short to leave its warm-up out: every value is still kept (fewer than 2 x warmup)
        lat = latency_stats([w[0] for w in self._warm] + list(self.latency.values()))
        stages = {}
        for k, d in self.stages.items():
            v = [w[1].get(k, math.nan) for w in self._warm] + list(d.values())
            if any(math.isfinite(x) for x in v):
                stages[k] = latency_stats(v)
        return lat, stages

    def to_dict(self, **meta: Any) -> dict[str, Any]:
        # leave the warm-up frames out of the timing statistics, unless the run is too short for that
        skip = self.warmup if self.processed >= 2 * self.warmup else 0
        calibrated = bool(self.calibrated)
        areas = self.measured["area_mm2" if calibrated else "area_px"]
        frs = self.measured["flattening_ratio"]
        disp = self.max_displacement["mm" if calibrated else "px"]
        latency, stages = self._timing(skip)
        out: dict[str, Any] = {
            "frames_seen": self.processed + self.dropped + self.paused,
            "frames_processed": self.processed,
            "frames_dropped": self.dropped,
            "frames_paused": self.paused,
            "paused_s": round(self.paused_s, 3),
            "status_counts": dict(self.status),
            "units": {"area": "mm2" if calibrated else "px", "displacement": "mm" if calibrated else "px"},
            "csa": areas.min_median_max(),
            "csa_px": self.measured["area_px"].min_median_max(),
            "flattening_ratio": frs.min_median_max(),
            "circularity": self.measured["circularity"].min_median_max(),
            "max_displacement": disp if math.isfinite(disp) else None,
            "deformation": {
                "csa_max_over_min": (areas.max / areas.min) if areas.n and areas.min > 0 else None,
                "fr_range": (frs.max - frs.min) if frs.n else None,
            },
            "latency_ms": latency,
            "stage_ms": stages,
            "latency_warmup_frames_excluded": skip,
        }
        if not all(d.is_exact for d in (self.latency, *self.measured.values())):
            out["percentiles"] = (f"exact over the first {self.latency.exact} values of each statistic, then from a "
                                  f"histogram within {100 * self.latency.relative_accuracy:g} %")
        out.update(meta)
        return out


#: The order of the output files in the summary's ``outputs``.
OUTPUT_ORDER = ("csv", "video", "summary", "plot", "masks")


class SummarySink(Sink):
    """The run summary: accumulates every record and, when the run ends, puts the summary into
    ``run.summary`` (what the command prints) and writes it to ``path`` and the plot to ``plot``
    (either may be ``None``). The summary holds the run's metadata, how it ended (``exit_code``,
    ``ended_because``: the process's own), the source, engine and tracker descriptions, the output
    files and the sections earlier sinks left in ``run.extras`` (the truth score): list it last.

    While the run goes on, ``path`` holds a partial summary (``"partial": true``, the frames so far;
    no truth section), written when the run opens and every ``partial_every_s`` seconds, so a run that
    is killed leaves numbers behind. Every write is atomic (:func:`write_json`).
    """

    def __init__(self, path: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
                 warmup: int = 0, partial_every_s: float = 10.0) -> None:
        self.path = Path(path) if path is not None else None
        self.plot = Path(plot) if plot is not None else None
        self.paths = {k: v for k, v in (("summary", self.path), ("plot", self.plot)) if v is not None}
        self.name = f"summary {self.path}" if self.path else "summary"
        self.builder = SummaryBuilder(warmup=warmup)
        self.partial_every_s = partial_every_s
        self._run: RunInfo | None = None
        self._t_open = 0.0
        self._next_partial = math.inf
        self._reserve: int | None = None

    def open(self, run: RunInfo) -> None:
        self._run = run
        self.builder.calibrated = run.calibrated
        self._t_open = time.monotonic()
        folder = self.path.parent if self.path else self.plot.parent if self.plot else None
        self._reserve = reserve_space(folder, RESERVE_BYTES) if folder is not None else None
        if self.path:
            self._write_partial()

    def write(self, record: FrameRecord) -> None:
        self.builder.add(record)
        if time.monotonic() >= self._next_partial:
            self._write_partial()

    def _write_partial(self) -> None:
        run = self._run
        elapsed = time.monotonic() - self._t_open
        meta: dict[str, Any] = dict(run.metadata)
        paused = run.control.paused_s
        meta.update(partial=True, exit_code=None,
                    ended_because=f"still running after {elapsed:.0f} s (a partial summary, rewritten every "
                                  f"{self.partial_every_s:g} s; the run is going on, or was killed)",
                    wall_time_s=round(elapsed, 3),
                    processing_fps=(self.builder.processed / (elapsed - paused)) if elapsed > paused else None,
                    outputs=self._outputs())
        meta.update(self._events(run))
        write_json(self.path, self.builder.to_dict(**meta), sync=False)
        self._next_partial = time.monotonic() + self.partial_every_s

    def _outputs(self) -> dict[str, str]:
        outputs = self._run.outputs
        return {k: str(outputs[k]) for k in sorted(outputs, key=_output_rank)}

    def close(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        if self._reserve is not None:  # the space kept for this moment, should the disk have filled up
            os.close(self._reserve)
            self._reserve = None
        self._next_partial = math.inf
        meta: dict[str, Any] = dict(run.metadata)
        active_s = run.wall_s - run.control.paused_s  # paused time is not the run's
        meta.update(
            partial=False,
            exit_code=run.exit_code,
            ended_because=run.reason,
            wall_time_s=round(run.wall_s, 3),
            processing_fps=(self.builder.processed / active_s) if active_s > 0 else None,
            source_info=_describe(run.source),
            source_error=getattr(run.source, "error", None),
            engine=_describe(run.engine),
            tracker=_describe(run.tracker),
            outputs={k: str(run.outputs[k]) for k in sorted(run.outputs, key=_output_rank)},
        )
        meta.update(self._events(run))
        if meta["tracker"] and any(e["event"] == "baseline_requested" for e in meta["events"]):
            meta["tracker"]["baseline"] = f"{meta['tracker'].get('baseline')}; then set again with the b key " \
                                          "(see baseline and events)"
        meta.update(run.extras)
        run.summary = self.builder.to_dict(**meta)
        plot_error: Exception | None = None
        if self.plot and self.builder.processed:  # before the JSON: a plot that fails is in the summary's exit code
            title = str(run.metadata.get("source", ""))
            if "random weights" in str(run.metadata.get("engine_notes") or ""):
                title += "  (RANDOM WEIGHTS: speed only, the masks are meaningless)"
            try:
                plot_series(self.plot, self.builder, title=title, events=run.summary["events"])
            except Exception as exc:
                plot_error = exc
                if run.exit_code == EXIT_OK:
                    run.exit_code, run.reason = EXIT_OUTPUT_FAILED, f"output failed: plot {self.plot}: {exc}"
                    run.summary.update(exit_code=run.exit_code, ended_because=run.reason)
        if self.path:
            write_json(self.path, run.summary)
        if plot_error is not None:
            raise plot_error

    def _events(self, run: RunInfo) -> dict[str, Any]:
        """``events`` (the run's control's and the baselines set, in frame order), ``baseline`` (the one in
        effect at the end), ``paused_s`` (every pause, one that ended the run too)."""
        events = sorted([dict(e) for e in run.control.events] + [dict(e) for e in self.builder.events],
                        key=lambda e: (math.inf if e.get("frame") is None else e["frame"],
                                       e["event"] == "baseline_set"))
        baseline = None
        if self.builder._baseline is not None:
            baseline = next(e for e in reversed(events) if e["event"] == "baseline_set")
            baseline = {k: v for k, v in baseline.items() if k != "event"}
        return {"events": events, "baseline": baseline, "paused_s": round(run.control.paused_s, 3)}


#: Disk space held from the start of a run for its final summary and plot (:func:`reserve_space`).
RESERVE_BYTES = 512 * 1024


def reserve_space(folder: str | os.PathLike, size: int) -> int | None:
    """Hold ``size`` bytes of ``folder``'s disk: an anonymous file (created, unlinked at once, its blocks
    allocated) whose descriptor is returned; closing it gives the space back. So when an output fills
    the disk, the summary and the plot can still be written; a killed process leaves nothing behind
    (the kernel frees the blocks). ``None`` when the space cannot be held (logged; the run goes on)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".mn-seg-reserve-", dir=folder)
    except OSError as exc:
        log.debug("no space reserved in %s: %s", folder, exc)
        return None
    os.unlink(name)
    try:
        os.posix_fallocate(fd, 0, size)
    except (OSError, AttributeError) as exc:
        log.warning("could not keep %d kB free in %s for the final summary (%s)", size // 1024, folder, exc)
        os.close(fd)
        return None
    return fd


def _output_rank(kind: str) -> tuple[int, str]:
    return (OUTPUT_ORDER.index(kind) if kind in OUTPUT_ORDER else len(OUTPUT_ORDER), kind)


def _describe(part: Any) -> dict[str, Any] | None:
    try:
        return part.describe()
    except Exception:  # a part without describe() (tests, plain iterables)
        return None


def write_json(path: str | os.PathLike, data: dict, sync: bool = True) -> None:
    """Atomic JSON write: the text goes to a temporary file in the same folder, which then replaces
    ``path`` (``os.replace``), so ``path`` always holds a whole file, the old one or the new one, however
    the process ends. ``sync``: fsync the temporary file first (survives a power cut too). The
    temporary file never stays behind, even when the write fails (disk full)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def plot_series(path: str | os.PathLike, summary: SummaryBuilder, title: str = "",
                events: list[dict[str, Any]] | None = None) -> None:
    """CSA, flattening ratio and circularity over time, with status bands behind them, a gap where the
    run was paused and the ``events`` marked (baselines set: a line at their time and their value on
    the CSA panel; baselines asked for and snapshots: a line at their time; pauses: a hatched span);
    written atomically (a temporary file beside ``path``, with its extension, that never stays behind)."""
    import matplotlib.pyplot as plt

    fig = plot_figure(summary, title, events)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


#: The colour of each status's band behind the plot's series (``ok`` has none).
STATUS_BANDS = {"no_detection": "0.85", "lost": "#f4b6b6", "reacquired": "#f7e3a1"}


def plot_figure(summary: SummaryBuilder, title: str = "", events: list[dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    """The figure :func:`plot_series` saves (a ``matplotlib.figure.Figure``; the caller closes it with
    ``matplotlib.pyplot.close``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary.series
    t = s.column("t_s")
    calibrated = bool(summary.calibrated)
    panels = [(s.column("area_mm2" if calibrated else "area_px"),
               "CSA (mm²)" if calibrated else "CSA (px, uncalibrated)"),
              (s.column("flattening_ratio"), "flattening ratio"), (s.column("circularity"), "circularity")]
    spans = _status_spans(t, s.column("status"))
    t, panels = _with_gaps(t, panels, summary.gaps)
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    band = STATUS_BANDS
    for ax, (y, label) in zip(axes, panels):
        ax.plot(t, y, lw=1.2, color="#1f77b4")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for status, t0, t1 in spans:
            if status in band:
                ax.axvspan(t0, t1, color=band[status], lw=0, alpha=0.6)
    axes[-1].set_xlabel("time (s)")
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=k) for k, c in band.items()] + _mark_events(axes, events or [], summary, calibrated)
    axes[0].legend(handles=handles, loc="upper right", fontsize=8)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    return fig


def _with_gaps(t: np.ndarray, panels: list, gaps: list[tuple[float, float]]) -> tuple[np.ndarray, list]:
    """The series with a NaN point inside each pause (the lines break there instead of bridging it)."""
    if not gaps or not len(t):
        return t, panels
    at = np.searchsorted(t, [after for _, after in gaps])
    mid = [(before + after) / 2 for before, after in gaps]
    return np.insert(t, at, mid), [(np.insert(y, at, np.nan), label) for y, label in panels]


def _mark_events(axes, events: list[dict[str, Any]], summary: SummaryBuilder, calibrated: bool) -> list:  # type: ignore[no-untyped-def]
    """Draw the run's events on the plot's panels; returns their legend entries."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, seen = [], set()
    t = summary.series.column("t_s")
    t_end = float(t[-1]) if len(t) else 0.0
    sets = [e for e in events if e["event"] == "baseline_set" and e.get("t_s") is not None]
    style = {"baseline_set": ("#2ca02c", "--", "baseline set (its value: dotted)"),
             "baseline_requested": ("#ff7f0e", ":", "baseline asked for (b)"),
             "snapshot": ("#9467bd", "-.", "snapshot (s)")}
    for e in events:
        kind, t0 = e["event"], e.get("t_s")
        if t0 is None:
            continue
        if kind == "pause":
            t1 = e.get("resumed_t_s", t_end)
            for ax in axes:
                ax.axvspan(t0, t1, facecolor="none", edgecolor="0.5", hatch="//", lw=0)
            if kind not in seen:
                handles.append(Patch(facecolor="none", edgecolor="0.5", hatch="//", label="paused"))
        elif kind in style:
            colour, ls, label = style[kind]
            for ax in axes:
                ax.axvline(t0, color=colour, ls=ls, lw=1)
            if kind not in seen:
                handles.append(Line2D([], [], color=colour, ls=ls, label=label))
        seen.add(kind)
    for i, e in enumerate(sets):  # the baseline's value on the CSA panel while it was in effect
        value = e.get("area_mm2") if calibrated else e.get("area_px")
        if value is not None:
            end = sets[i + 1]["t_s"] if i + 1 < len(sets) else t_end
            axes[0].hlines(value, e["t_s"], max(end, e["t_s"]), colors="#2ca02c", linestyles=":", lw=1.2)
    return handles


def _status_spans(t: np.ndarray, codes: np.ndarray) -> list[tuple[str, float, float]]:
    """``(status, start, end)`` of each run of equal statuses (a point lasts until the next one)."""
    spans: list[tuple[str, float, float]] = []
    step = float(np.median(np.diff(t))) if len(t) > 1 else 0.04
    i = 0
    while i < len(t):
        j = i
        while j + 1 < len(t) and codes[j + 1] == codes[i]:
            j += 1
        end = t[j + 1] if j + 1 < len(t) else t[j] + step
        if np.isfinite(codes[i]):
            spans.append((STATUS_CODES[int(codes[i])], float(t[i]), float(end)))
        i = j + 1
    return spans
