"""``python -m tools.presence_draws``: how steady the presence fit's thresholds are, from one fit of many draws.

A fit of ``R`` draws (``python -m tools.presence_fit --draws R --per-frame FILE``) holds ``R`` acquisition-changed
and clip copies of every fit frame, each marked with its draw. This report recomputes, without running the model
again, the two thresholds (:func:`tools.presence_fit.fit_thresholds`) of every single draw (the frames as acquired
plus draw ``r``'s copies, the patients dealt as a one-draw fit of seed ``S + DRAW_STRIDE * r`` deals them) and of
consecutive groups of ``--group`` draws (as a fit of ``--draws G`` would make them), and compares their spread: the
SD over the groups divided by the SD over single draws (independent draws would give ``1 / sqrt(G)``). With
``--out DIR`` each group's appearance model is written as ``DIR/group-K/appearance.json``, to run through the clips
like any fit. Exit codes: 0, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.cli import add_logging_args, setup_logging
from tools.presence_fit import (DRAW_STRIDE, add_report_args, fit_logistic, fit_thresholds, fitted, labels,
                                read_per_frame, write_report)
from train.errors import UserError, run_cli

PROG = "python -m tools.presence_draws"


def draw_thresholds(rows: Sequence[dict[str, Any]], patient_of: dict[str, str], group: int, *, fit_seed: int = 0,
                    folds: int = 10, keep: float = 0.01, max_false: float = 0.05, min_keep: float = 0.95,
                    found_dice: float = 0.5) -> dict[str, Any]:
    """Entry and hold thresholds of every single draw and of every group of ``group`` consecutive draws of the fit
    rows ``rows``, their means and SDs, and the ratio of the SDs; ``models``: each group's fit (mean, scale,
    weights, bias, thresholds, out-of-fold rates) for :func:`write_models`.

    Raises:
        UserError: rows of one draw, or fewer than two groups of ``group`` draws.
    """
    draws = sorted({int(r["draw"]) for r in rows if "draw" in r})
    if len(draws) < 2 or draws != list(range(len(draws))):
        raise UserError(f"the frames hold draws {draws}: make them with python -m tools.presence_fit --draws R "
                        "--per-frame FILE (R of at least 2 x --group)")
    if group < 1 or len(draws) // group < 2:
        raise UserError(f"--group {group}: {len(draws)} draws make fewer than two groups of it")
    base = [r for r in rows if "draw" not in r]

    def fit(chosen: list[int]) -> tuple[list[dict[str, Any]], float, float, dict[str, float]]:
        sel = base + [r for r in rows if r.get("draw") in chosen]
        usable, _, entry, hold, choice = fit_thresholds(sel, patient_of, folds, keep, max_false, min_keep, found_dice,
                                                        seed=fit_seed + DRAW_STRIDE * chosen[0], deals=len(chosen))
        return usable, entry, hold, choice

    single = [fit([r])[1:3] for r in draws]
    grouped, models = [], []
    for g in range(len(draws) // group):
        chosen = draws[g * group:(g + 1) * group]
        usable, entry, hold, choice = fit(chosen)
        grouped.append((entry, hold))
        y, train = labels(usable, found_dice), fitted(usable)
        X = np.array([r["features"] for r in usable])
        mean, scale, weights, bias = fit_logistic(X[train], y[train])
        models.append({"draws": chosen, "fit_seed": fit_seed + DRAW_STRIDE * chosen[0], "mean": mean.tolist(),
                       "scale": scale.tolist(), "weights": weights.tolist(), "bias": bias, "threshold": entry,
                       "hold_threshold": hold, "out_of_fold": choice})
    s, g = np.array(single), np.array(grouped)
    sd_s, sd_g = s.std(0, ddof=1), g.std(0, ddof=1)
    ratio = [float(a / b) if b > 0 else None for a, b in zip(sd_g, sd_s)]
    return {"draws": len(draws), "group": group, "single": [list(t) for t in single],
            "groups": [list(t) for t in grouped], "mean_single": s.mean(0).tolist(),
            "mean_groups": g.mean(0).tolist(), "sd_single": sd_s.tolist(), "sd_groups": sd_g.tolist(),
            "sd_ratio": ratio, "models": models}


def write_models(report: dict[str, Any], out: Path, source: str) -> list[Path]:
    """Each group's appearance model (:class:`realtime.appearance.AppearanceModel`) as
    ``out/group-K/appearance.json``."""
    from realtime.appearance import FEATURES, AppearanceModel

    paths = []
    for k, m in enumerate(report["models"]):
        model = AppearanceModel(features=FEATURES, mean=tuple(m["mean"]), scale=tuple(m["scale"]),
                                weights=tuple(m["weights"]), bias=m["bias"], threshold=m["threshold"],
                                hold_threshold=m["hold_threshold"],
                                provenance={"fit_by": f"{PROG}, draws {m['draws']} of {source} (as python -m "
                                            f"tools.presence_fit --fit-seed {m['fit_seed']} --draws {report['group']})",
                                            "draws": report["group"], "fit_seed": m["fit_seed"],
                                            "out_of_fold": m["out_of_fold"], "date": date.today().isoformat()})
        (out / f"group-{k}").mkdir(parents=True, exist_ok=True)
        paths.append(model.save(out / f"group-{k}" / "appearance.json"))
    return paths


def format_md(report: dict[str, Any]) -> str:
    def cell(mean: float, sd: float, values: list[float]) -> str:
        return f"{mean:.3f}, {sd:.3f}, {min(values):.3f}-{max(values):.3f}"

    rows = []
    for label, part in (("single draws", "single"), (f"groups of {report['group']}", "groups")):
        vals = report[part]
        cells = [cell(report["mean_" + part][i], report["sd_" + part][i], [v[i] for v in vals]) for i in (0, 1)]
        rows.append(f"| {label} ({len(vals)}) | {cells[0]} | {cells[1]} |")
    ratio = " | ".join("-" if r is None else f"{r:.2f}" for r in report["sd_ratio"])
    return "\n".join([f"# Presence fit thresholds over draws: {report['per_frame']}", "",
                      f"Command: `{report['command']}`", "",
                      "| | entry threshold: mean, SD, range | hold threshold: mean, SD, range |", "|---|---|---|",
                      *rows, f"| SD ratio (independent draws: {1 / np.sqrt(report['group']):.2f}) | {ratio} |"]) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-frame", required=True, help="the file python -m tools.presence_fit --draws R --per-frame "
                                                      "wrote")
    p.add_argument("--data", required=True, help="the median-nerve dataset (each image's patient)")
    p.add_argument("--group", type=int, default=4, help="draws per group (default 4, tools.presence_fit's default)")
    p.add_argument("--fit-seed", type=int, default=0, help="the --fit-seed of the fit that wrote the frames")
    p.add_argument("--folds", type=int, default=10, help="patient folds of the out-of-fold scores (the fit's)")
    p.add_argument("--keep", type=float, default=0.01, help="the fit's --keep")
    p.add_argument("--max-false", type=float, default=0.05, help="the fit's --max-false")
    p.add_argument("--min-keep", type=float, default=0.95, help="the fit's --min-keep")
    p.add_argument("--found-dice", type=float, default=0.5, help="the fit's --found-dice")
    p.add_argument("--out", default=None, metavar="DIR", help="also write each group's model as DIR/group-K/")
    add_report_args(p)
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from train.data import scan_dataset

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    rows = read_per_frame(args.per_frame)["fit"]
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} is not a folder")
    patient_of = {s.stem: s.patient for s in scan_dataset(args.data)}
    report = draw_thresholds(rows, patient_of, args.group, fit_seed=args.fit_seed, folds=args.folds, keep=args.keep,
                             max_false=args.max_false, min_keep=args.min_keep, found_dice=args.found_dice)
    report = {"tool": "presence-draws", "date": date.today().isoformat(),
              "command": " ".join([PROG, *(argv if argv is not None else sys.argv[1:])]),
              "per_frame": args.per_frame, **report}
    if args.out:
        write_models(report, Path(args.out), args.per_frame)
    write_report(report, args.json, args.md, format_md(report))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
