"""``python -m tools.appearance_ablation``: what each group of appearance features buys the presence gate.

The presence gate's appearance check (:mod:`realtime.appearance`) is a logistic regression over the features
of :data:`realtime.appearance.FEATURES`. This report takes the frames one ``python -m tools.presence_fit
--per-frame FILE`` run described (every feature of what the model found in each fit and check frame) and fits
the check again on the first *n* features only, for each *n* of ``--sets``, exactly as the fit does
(class-balanced logistic regression; the threshold the ``--keep`` quantile of the real nerves' out-of-fold
scores, patients dealt into ``--folds`` groups; a frame with a nerve counts as one only where the model's outline
is that nerve, Dice >= ``--found-dice``). Per kind of frame it reports the share with a nerve reported:
out of fold on the fit frames (each scored by a check fit on other patients) and on the check frames (scored by
the check fit on every fit frame). Nothing is run through a network here, so the comparison costs seconds.

Writes ``--json`` and ``--md``. Exit codes: 0, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.cli import add_logging_args, setup_logging
from tools import presence_fit as pf
from train.errors import UserError, run_cli

PROG = "python -m tools.appearance_ablation"


def _subset(rows: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [{**r, "features": list(r["features"][:n])} for r in rows if r.get("features") is not None]


def ablate(fit_rows: Sequence[dict[str, Any]], check_rows: Sequence[dict[str, Any]], patient_of: dict[str, str],
           n: int, *, keep: float = 0.01, folds: int = 10, found_dice: float = 0.5) -> dict[str, Any]:
    """The check refit on the first ``n`` features: its threshold and, per kind, the rates of
    :func:`tools.presence_fit.rates` out of fold on ``fit_rows`` and on ``check_rows``. It compares one-threshold
    checks: the clip frames a fit scores for its hold threshold only (``score_only``) are left out."""

    fit_rows = [r for r in fit_rows if not r.get("score_only")]
    usable = _subset(fit_rows, n)
    groups = [patient_of.get(r["id"], "phantom") for r in usable]
    y = pf.labels(usable, found_dice)
    if not y.any() or y.all():
        raise UserError("the fit frames need true nerves found and frames without one")
    oof, threshold = pf.threshold_out_of_fold(usable, groups, folds, keep, found_dice)
    oof_of = {pf.row_key(r): s for r, s in zip(usable, oof)}  # a fit of several draws repeats kind and id
    fit_ok = [r.get("features") is not None and oof_of[pf.row_key(r)] >= threshold for r in fit_rows]
    params = pf.fit_logistic(np.array([r["features"] for r in usable]), y)
    check_scores = iter(pf._score(params, np.array([r["features"] for r in _subset(check_rows, n)])))
    check_ok = [r.get("features") is not None and float(next(check_scores)) >= threshold for r in check_rows]
    return {"features": n, "threshold": threshold, "fit_out_of_fold": pf.rates(fit_rows, fit_ok),
            "check": pf.rates(check_rows, check_ok)}


def format_md(report: dict[str, Any]) -> str:
    from realtime.appearance import FEATURES

    sets = report["sets"]
    heads = [", ".join(FEATURES[:s["features"]]) for s in sets]
    lines = [f"# Appearance features, ablated: {report['per_frame']}", "",
             f"Command: `{report['command']}`", "",
             f"Each column: the presence gate's appearance check fit on the first n features only (threshold: "
             f"{100 * (1 - report['keep']):.0f} % of the fit's real nerves kept out of fold; a nerve counts as "
             f"found at Dice >= {report['found_dice']:g}). Cells: share of frames with a nerve reported after the "
             "check (on frames with a nerve: kept).", ""]
    for i, head in enumerate(heads):
        lines.append(f"- set {i + 1}: {head} (threshold {sets[i]['threshold']:.3f})")
    lines += ["", "| frames | kind | " + " | ".join(f"set {i + 1}" for i in range(len(sets))) + " |",
              "|---|---|" + "---|" * len(sets)]
    for part, title in (("fit_out_of_fold", "fit, out of fold"), ("check", "held out")):
        kinds = list(sets[0][part])
        for kind in kinds:
            cells = []
            for s in sets:
                d = s[part].get(kind) or {}
                cells.append("-" if d.get("rate") is None else f"{100 * d['rate']:.1f} % ({d['nerve_reported']} of "
                             f"{d['frames']})")
            lines.append(f"| {title} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Refit the presence gate's appearance check on the first n "
                                "features of a presence_fit --per-frame file and compare the rates.")
    p.add_argument("--per-frame", required=True, help="the file python -m tools.presence_fit --per-frame wrote")
    p.add_argument("--data", required=True, help="the median-nerve dataset (each image's patient)")
    p.add_argument("--sets", type=int, nargs="+", default=[4, 6], metavar="N",
                   help="feature counts to compare (the first N of realtime.appearance.FEATURES)")
    p.add_argument("--keep", type=float, default=0.01, help="share of real nerves the threshold may lose")
    p.add_argument("--folds", type=int, default=10, help="patient folds of the out-of-fold scores")
    p.add_argument("--found-dice", type=float, default=0.5, help="Dice from which an outline is the nerve")
    pf.add_report_args(p)
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from realtime.appearance import FEATURES
    from train.data import scan_dataset

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    frames = pf.read_per_frame(args.per_frame)
    fit_rows, check_rows = frames["fit"], frames["check"]
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} is not a folder")
    width = min((len(r["features"]) for r in fit_rows if r.get("features") is not None), default=0)
    for n in args.sets:
        if not 1 <= n <= min(width, len(FEATURES)):
            raise UserError(f"--sets: {n} features asked; the frames have {width} (of {list(FEATURES)})")
    if not 0.0 <= args.keep < 0.5:
        raise UserError(f"--keep is a small share in [0, 0.5), got {args.keep}")
    patient_of = {s.stem: s.patient for s in scan_dataset(args.data)}
    sets = [ablate(fit_rows, check_rows, patient_of, n, keep=args.keep, folds=args.folds, found_dice=args.found_dice)
            for n in args.sets]
    report = {"tool": "appearance-ablation", "date": date.today().isoformat(),
              "command": " ".join([PROG, *(argv if argv is not None else sys.argv[1:])]),
              "per_frame": args.per_frame, "keep": args.keep, "found_dice": args.found_dice, "sets": sets}
    pf.write_report(report, args.json, args.md, format_md(report))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
