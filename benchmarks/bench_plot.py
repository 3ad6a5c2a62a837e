"""``mn-bench --plot``: the end-to-end latency CDF of every combination and its stage medians.

Left: the cumulative distribution of e2e latency (capture -> measurement) over the measured frames,
one line per combination (solid: offline, dashed: realtime; baselines in black and greys). Right: a
stacked bar per combination of the median of each pipeline stage (:data:`realtime.record.STAGES`).
Written with matplotlib's Agg backend (no display needed), atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.bench import BenchRun
from common.figures import save_figure
from realtime.record import STAGES

STAGE_COLOURS = {"capture_wait": "#bbbbbb", "preprocess": "#9ecae1", "infer": "#3182bd", "postprocess": "#fd8d3c",
                 "track": "#74c476", "render": "#9e9ac8", "write": "#636363"}


def run_label(run: BenchRun) -> str:
    r = run.row
    batch = f" b{r['batch']}" if r["batch"] != 1 else ""
    return f"{r['model']} {r['backend']} {r['precision']} {r['size']} {r['mode']}{batch}"


def plot_runs(path: str | os.PathLike, runs: Sequence[BenchRun], title: str = "") -> Path | None:
    """Write the figure to ``path``; ``None`` (nothing written) when no combination measured a frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r.measured]
    if not runs:
        return None
    height = max(4.0, 0.35 * len(runs) + 1.8)
    fig, (ax_cdf, ax_bar) = plt.subplots(1, 2, figsize=(15, height), gridspec_kw={"width_ratios": [1, 1.2]})
    cmap = plt.get_cmap("tab10")
    colours: dict[tuple, Any] = {}  # one colour per combination across modes; the mode sets the line style
    for run in runs:
        e2e = np.sort(np.asarray([x.e2e_ms for x in run.measured], dtype=np.float64))
        e2e = e2e[np.isfinite(e2e)]
        if e2e.size == 0:
            continue
        y = np.arange(1, e2e.size + 1) / e2e.size
        key = tuple(run.row[k] for k in ("baseline", "model", "backend", "precision", "size", "batch"))
        if key not in colours:
            n = sum(1 for k in colours if k[0] == run.row["baseline"])
            colours[key] = str(0.3 * (n % 3)) if run.row["baseline"] else cmap(n % 10)  # baselines: black, greys
        colour = colours[key]
        ax_cdf.step(e2e, y, where="post", lw=1.4, color=colour,
                    ls="--" if run.row["mode"] == "realtime" else "-", label=run_label(run))
    ax_cdf.set_xlabel("end-to-end latency, capture -> measurement (ms)")
    ax_cdf.set_ylabel("fraction of frames")
    ax_cdf.set_ylim(0, 1.0)
    ax_cdf.grid(alpha=0.3)
    xmax = max((max(x.e2e_ms for x in r.measured) for r in runs), default=1.0)
    xmin = min((min(x.e2e_ms for x in r.measured) for r in runs), default=1.0)
    if xmin > 0 and xmax / xmin > 20:
        ax_cdf.set_xscale("log")
    ax_cdf.legend(fontsize=7, loc="lower right")
    ax_cdf.set_title("e2e latency CDF (solid offline, dashed realtime)")

    labels = [run_label(r) for r in runs]
    ypos = np.arange(len(runs))
    left = np.zeros(len(runs))
    for stage in STAGES:
        med = np.array([((r.row["latency_ms"].get(stage) or {}).get("p50") or 0.0) for r in runs])
        ax_bar.barh(ypos, med, left=left, color=STAGE_COLOURS.get(stage), label=stage, height=0.7)
        left += med
    ax_bar.set_yticks(ypos, labels, fontsize=7)
    ax_bar.invert_yaxis()
    ax_bar.set_xlabel("median per stage (ms; capture_wait includes the realtime pacing)")
    ax_bar.grid(axis="x", alpha=0.3)
    ax_bar.legend(fontsize=7, loc="lower right", ncol=2)
    ax_bar.set_title("stage medians")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
