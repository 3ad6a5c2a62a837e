"""``python -m benchmarks.compression_phases``: the outline, and the presence gate's verdict, as the nerve flattens.

In a dynamic scan the probe's pressure and the wrist's movement flatten the median nerve, and the frames where
it is most compressed are where a model trained on stills fails first. Each validation image of the chosen split
is animated as ``animate:`` animates it (rigid glide and tilt, the region around the nerve compressed to 0.75 of
its height at the cycle's peak, fresh speckle; seeded by ``--seed``), and ``--phases`` frames spread evenly over
one compression cycle (:data:`realtime.sources.animate.COMPRESSION_PERIOD_S` at 24 fps) are segmented *as
stills*, each as if it were the first frame: the engine with its own window, post-processing and the tracker's
choice of the nerve as live (:func:`benchmarks.presence.classify`), once without a gate (the outline: Dice
against the truth, relative area error) and once with ``--presence`` (whether the gate keeps it).

Reported, per compression phase bin (0 released .. 1 at the peak): frames, mean and median Dice, frames below
0.8 and below 0.5, CSA |error| median and bias (mean signed relative error); and, per Dice bin of the outline
(>= 0.8 right, 0.5-0.8 partly right, < 0.5 wrong), how many the gate keeps, overall and in the most compressed
phases (>= 0.75). A gate that keeps right outlines and drops wrong ones is doing its job; frames lost in video
then come from the network.

Exit codes: 0 done, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from benchmarks.report_files import report_header, report_paths, write_report
from common.cli import add_logging_args, setup_logging
from common.errors import UserError, run_cli

log = logging.getLogger(__name__)

PROG = "python -m benchmarks.compression_phases"
PHASE_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
"""Compression phase bins, ``[low, high)`` (the last one closed)."""
DICE_BINS: tuple[tuple[str, float, float], ...] = (("right (Dice >= 0.8)", 0.8, 1.01),
                                                  ("partly right (0.5-0.8)", 0.5, 0.8),
                                                  ("wrong (< 0.5)", -0.01, 0.5))
"""The outline's Dice bins for the gate's verdict."""
MOST_COMPRESSED = 0.75
"""Phases at or above this are the cycle's most compressed frames."""


def phase_items(path: str, phases: int, seed: int) -> list[dict[str, Any]]:
    """``phases`` frames of ``animate:path`` spread evenly over one compression cycle, as
    :func:`benchmarks.presence.classify` items with their frame index and compression phase."""
    from realtime.sources.animate import COMPRESSION_PERIOD_S, DEFAULT_FPS, AnimateSource

    cycle = int(round(COMPRESSION_PERIOD_S * DEFAULT_FPS))
    source = AnimateSource(path, seed=seed, frames=cycle)
    items = []
    for k in range(phases):
        index = int(round(k * cycle / phases))
        image, truth = source.render(index)
        if truth is None:
            raise UserError(f"{path} has no mask at ../Masks/: the phases need the truth")
        items.append({"kind": "compressed", "id": f"{Path(path).stem}@{index}", "image": image, "mask": truth,
                      "positive": True, "index": index, "compression": source.compression(index)})
    return items


def _bin(value: float, bins: Sequence[tuple[float, float]]) -> int:
    for i, (low, high) in enumerate(bins):
        if low <= value < high or (i == len(bins) - 1 and value == high):
            return i
    raise ValueError(f"{value} outside the bins")


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's tables from one row per frame: ``compression``, ``dsc`` (the ungated outline's Dice),
    ``area_px`` / ``true_area_px`` (None: nothing found) and ``kept`` (the gate reported it)."""
    by_phase = []
    for i, (low, high) in enumerate(PHASE_BINS):
        sel = [r for r in rows if _bin(r["compression"], PHASE_BINS) == i]
        dsc = [r["dsc"] for r in sel]
        signed = [(r["area_px"] - r["true_area_px"]) / r["true_area_px"] for r in sel
                  if r["area_px"] is not None and r["true_area_px"]]
        by_phase.append({"phase": [low, high], "frames": len(sel),
                         "dsc_mean": statistics.fmean(dsc) if dsc else None,
                         "dsc_median": statistics.median(dsc) if dsc else None,
                         "below_0_8": sum(d < 0.8 for d in dsc), "below_0_5": sum(d < 0.5 for d in dsc),
                         "nothing_found": sum(r["area_px"] is None for r in sel),
                         "csa_abs_rel_median": statistics.median(abs(e) for e in signed) if signed else None,
                         "csa_bias": statistics.fmean(signed) if signed else None})
    gate = []
    found = [r for r in rows if r["area_px"] is not None]
    for label, low, high in DICE_BINS:
        sel = [r for r in found if low <= r["dsc"] < high]
        peak = [r for r in sel if r["compression"] >= MOST_COMPRESSED]
        gate.append({"outline": label, "frames": len(sel), "kept": sum(r["kept"] for r in sel),
                     "frames_most_compressed": len(peak), "kept_most_compressed": sum(r["kept"] for r in peak)})
    return {"frames": len(rows), "by_phase": by_phase, "gate": gate}


def measure(engine: Any, paths: Sequence[str], phases: int, seed: int, presence: str,
            progress: bool = True) -> list[dict[str, Any]]:
    """One row per frame (see :func:`summarise`), with the image's stem and frame index."""
    from benchmarks.presence import classify
    from realtime.presence import gated_model_file, make_presence_gate

    gates = {"off": None, "gate": make_presence_gate(presence, model_file=gated_model_file(engine))}
    rows = []
    for path in paths:
        items = phase_items(path, phases, seed)
        verdicts = classify(engine, items, gates, progress=False)
        by_item = {(v["id"], v["gate"]): v for v in verdicts}
        for it in items:
            off, gated = by_item[(it["id"], "off")], by_item[(it["id"], "gate")]
            rows.append({"id": it["id"], "index": it["index"], "compression": it["compression"],
                         "dsc": off["dsc"], "area_px": off["area_px"], "true_area_px": off["true_area_px"],
                         "kept": bool(gated["reported"])})
        if progress:
            log.info("%s: %d frames", Path(path).stem, len(items))
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def format_md(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [f"# The nerve compressed: {report['model']}", "", f"Command: `{report['command']}`", "",
             f"{report['images']} images ({report['split']}), {report['phases']} frames each over one compression "
             f"cycle of `animate:` (seed {report['seed']}), segmented as stills; "
             f"gate `--presence {report['presence']}`.",
             "", "| compression phase | frames | Dice mean | median | < 0.8 | < 0.5 | nothing found | CSA \\|error\\| "
             "median | CSA bias |", "|---|---|---|---|---|---|---|---|---|"]
    for b in s["by_phase"]:
        mean = "-" if b["dsc_mean"] is None else f"{b['dsc_mean']:.3f}"
        med = "-" if b["dsc_median"] is None else f"{b['dsc_median']:.3f}"
        lines.append(f"| {b['phase'][0]:g}-{b['phase'][1]:g} | {b['frames']} | {mean} | {med} | {b['below_0_8']} | "
                     f"{b['below_0_5']} | {b['nothing_found']} | {_pct(b['csa_abs_rel_median'])} | "
                     f"{_pct(b['csa_bias'])} |")
    lines += ["", f"The gate's verdict on the outlines found (phase >= {MOST_COMPRESSED:g}: the most compressed):", "",
              "| outline | frames | kept by the gate | at phase >= 0.75 |", "|---|---|---|---|"]
    for g in s["gate"]:
        lines.append(f"| {g['outline']} | {g['frames']} | {g['kept']} | {g['kept_most_compressed']} of "
                     f"{g['frames_most_compressed']} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mn-realtime", help="a bundled model name or checkpoint (default mn-realtime)")
    p.add_argument("--data", required=True, help="dataset folder holding Images/ and Masks/")
    p.add_argument("--split", choices=["paper", "kfold"], default="paper",
                   help="whose validation images: the paper split's (they chose the shipped models) or a fold of "
                        "mn-cv's patient split (--fold)")
    p.add_argument("--folds", type=int, default=5, help="folds of --split kfold (mn-cv's 5)")
    p.add_argument("--fold", type=int, default=None, help="the fold of --split kfold")
    p.add_argument("--seed", type=int, default=42, help="seed of --split kfold; the animation's seed too")
    p.add_argument("--images", type=int, default=1000, help="at most this many validation images (default all)")
    p.add_argument("--phases", type=int, default=12, help="frames per image over the cycle (default 12)")
    p.add_argument("--presence", choices=["on", "shape"], default="on", help="the gate judged (default on)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the engine")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="default benchmarks/results/compression-phases-MODEL-HOST-DATE.json, with a .md beside it")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.window_bench import clip_specs
    from engines import load_engine

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.phases < 1 or args.images < 1:
        raise UserError("--phases and --images must be at least 1")
    if args.split == "kfold" and args.fold is None:
        raise UserError("--split kfold needs --fold K")
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} is not a folder")
    out, md = report_paths(args.json, None, "compression-phases", Path(args.model).stem)
    specs = clip_specs(args.data, 0, args.images, args.split, args.folds, args.fold, args.seed)
    paths = [spec.split(":", 1)[1] for _, spec in specs]
    engine = load_engine(args.model, threads=args.threads)
    rows = measure(engine, paths, args.phases, args.seed, args.presence, progress=log.isEnabledFor(logging.INFO))
    split = "paper" if args.split == "paper" else f"kfold, fold {args.fold} of {args.folds}, seed {args.seed}"
    report = {**report_header("compression_phases", PROG, argv), "model": str(args.model),
              "split": f"{split} (val)", "images": len(paths), "phases": args.phases, "seed": args.seed,
              "presence": args.presence, "summary": summarise(rows), "frames": rows}
    write_report(out, report, format_md(report), md)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
