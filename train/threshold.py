"""The nerve mask's probability threshold, calibrated by patient cross-validation.

Every model outlines the nerve where its probability is ``>= 0.5``. Whether 0.5 puts the outline where the
annotators put it is a property of the trained network, not of the image: a network whose areas come out a few
percent too small on patients it never saw (the project's models do, on the paper's test images and on mn-cv's
folds) does so on every patient. This module measures that bias on out-of-fold predictions and picks the
threshold that removes it, without letting any image choose its own threshold:

1. ``mn-eval --sweep CSV`` (run by ``mn-cv`` for every fold) writes, for each validation image and each threshold
   of :data:`GRID`, the native-resolution areas and Dice (the ``native`` protocol at that threshold).
2. :func:`choose` takes the threshold of :data:`GRID` whose median signed CSA error over the images is nearest 0
   (ties: the one nearest 0.5). The median, not the mean, so that a missed image (another structure, an error of
   -100 % or +200 % that no threshold fixes) does not move it.
3. :func:`leave_one_fold_out` estimates what that does on patients that chose nothing: fold K is measured at the
   threshold chosen on the *other* folds' images, beside its numbers at 0.5.
4. ``mn-cv --final`` writes the threshold chosen on every fold's images into the final model's config
   (``postprocess.threshold``), which the streaming loop and ``mn-eval`` read as the model's default.

``python -m train.threshold CV_DIR`` prints (and ``--json`` / ``--md`` write) the report of a cross-validation
folder. Pure functions of the sweep rows; numpy only.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
GRID: tuple[float, ...] = tuple(round(0.3 + 0.025 * i, 3) for i in range(17))
"""Thresholds swept: 0.300, 0.325, ..., 0.700."""
SWEEP_FIELDS = ["stem", "threshold", "area_true_px", "area_pred_px", "dsc", "csa_signed"]
SWEEP_NAME = "threshold-sweep.csv"
"""The sweep file of one mn-cv fold folder."""
MISSED_DSC = 0.5


def model_threshold(config: dict | None) -> float:
    """The mask threshold a model's config carries (``postprocess.threshold``), else 0.5."""
    value = ((config or {}).get("postprocess") or {}).get("threshold")
    if value is None:
        return DEFAULT_THRESHOLD
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"the model's postprocess.threshold must be in (0, 1), got {value}")
    return value


def choose_threshold(given: float | None, config: dict | None) -> float:
    """The mask threshold a command cuts at: ``given`` (its ``--threshold``), else the model's
    (:func:`model_threshold`). Raises ValueError, with the fix, for a given one or a model's outside (0, 1)."""
    if given is not None:
        if not 0.0 < float(given) < 1.0:
            raise ValueError(f"--threshold must be between 0 and 1 (a probability), got {given:g}")
        return float(given)
    try:
        return model_threshold(config)
    except ValueError as e:
        raise ValueError(f"{e}; rebuild the model or pass --threshold") from None


def sweep(probs_native: Sequence[np.ndarray], masks_native: Sequence[np.ndarray], stems: Sequence[str],
          grid: Sequence[float] = GRID) -> list[dict[str, Any]]:
    """One row per image and threshold: areas (pixels at native resolution) of ``mask > 0`` and ``prob >= t``,
    their Dice, and the signed relative CSA error ``(pred - true) / true`` (None for an empty truth)."""
    if not (len(probs_native) == len(masks_native) == len(stems)):
        raise ValueError("sweep: probs, masks and stems differ in length")
    rows: list[dict[str, Any]] = []
    for prob, mask, stem in zip(probs_native, masks_native, stems):
        if prob.shape != mask.shape:
            raise ValueError(f"sweep: {stem}: probability shape {prob.shape} != mask shape {mask.shape}")
        truth = mask > 0
        area_true = int(np.count_nonzero(truth))
        for t in grid:
            pred = prob >= np.float32(t)
            area_pred = int(np.count_nonzero(pred))
            inter = int(np.count_nonzero(pred & truth))
            dsc = 1.0 if area_true + area_pred == 0 else 2.0 * inter / (area_true + area_pred)
            rows.append({"stem": stem, "threshold": float(t), "area_true_px": area_true, "area_pred_px": area_pred,
                         "dsc": dsc, "csa_signed": (area_pred - area_true) / area_true if area_true else None})
    return rows


def write_sweep(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SWEEP_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "csa_signed": "" if r["csa_signed"] is None else r["csa_signed"]})


def read_sweep(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a sweep CSV (:func:`write_sweep`)."""
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(SWEEP_FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} is not a threshold sweep (no {', '.join(sorted(missing))} column)")
        for r in reader:
            rows.append({"stem": r["stem"], "threshold": float(r["threshold"]),
                         "area_true_px": int(r["area_true_px"]), "area_pred_px": int(r["area_pred_px"]),
                         "dsc": float(r["dsc"]), "csa_signed": float(r["csa_signed"]) if r["csa_signed"] else None})
    return rows


def thresholds_of(rows: Sequence[dict[str, Any]]) -> list[float]:
    return sorted({float(r["threshold"]) for r in rows})


def at(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Metrics of the images at one swept threshold: n, mean Dice, missed (Dice < 0.5), CSA |error| median, mean
    and median signed error (fractions)."""
    sel = [r for r in rows if math.isclose(r["threshold"], threshold, abs_tol=1e-9)]
    if not sel:
        raise ValueError(f"threshold {threshold:g} was not swept")
    signed = [r["csa_signed"] for r in sel if r["csa_signed"] is not None]
    return {"threshold": float(threshold), "n": len(sel),
            "dsc_mean": float(np.mean([r["dsc"] for r in sel])),
            "missed": sum(r["dsc"] < MISSED_DSC for r in sel),
            "csa_abs_median": float(np.median(np.abs(signed))) if signed else None,
            "csa_signed_mean": float(np.mean(signed)) if signed else None,
            "csa_signed_median": float(np.median(signed)) if signed else None}


def choose(rows: Sequence[dict[str, Any]]) -> float:
    """The swept threshold whose median signed CSA error is nearest 0 (ties: nearest 0.5)."""
    grid = thresholds_of(rows)
    if not grid:
        raise ValueError("choose: no sweep rows")
    scored = []
    for t in grid:
        m = at(rows, t)["csa_signed_median"]
        if m is not None:
            scored.append((abs(m), abs(t - DEFAULT_THRESHOLD), t))
    if not scored:
        raise ValueError("choose: no image with a true area")
    return min(scored)[2]


def leave_one_fold_out(folds: dict[int, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Each fold at the threshold chosen on the other folds' images, beside 0.5; pooled over all folds' images.

    Needs at least two folds. ``chosen_all`` is the threshold all folds' images choose; ``final`` the one
    ``mn-cv --final`` writes into the final model: ``chosen_all`` when choosing helps out of fold (``helps``: the
    pooled CSA |error| median at each fold's chosen threshold is no larger than at 0.5), else 0.5. The choice
    only aims at the median signed error; a calibration that leaves one fold out and makes the pooled |error|
    larger has fitted the folds' noise, not a bias."""
    if len(folds) < 2:
        raise ValueError("leave_one_fold_out needs at least two folds")
    per_fold = []
    pooled_default: list[dict[str, Any]] = []
    pooled_chosen: list[dict[str, Any]] = []
    for k in sorted(folds):
        others = [r for j, rows in folds.items() if j != k for r in rows]
        t = choose(others)
        mine = folds[k]
        per_fold.append({"fold": k, "threshold": t, "at_default": at(mine, DEFAULT_THRESHOLD),
                         "at_chosen": at(mine, t)})
        pooled_default += [r for r in mine if math.isclose(r["threshold"], DEFAULT_THRESHOLD, abs_tol=1e-9)]
        pooled_chosen += [{**r, "threshold": -1.0} for r in mine if math.isclose(r["threshold"], t, abs_tol=1e-9)]
    everything = [r for rows in folds.values() for r in rows]
    pooled = at(pooled_chosen, -1.0)
    pooled["threshold"] = None  # each fold's own
    default = at(pooled_default, DEFAULT_THRESHOLD)
    chosen_all = choose(everything)
    a, b = default["csa_abs_median"], pooled["csa_abs_median"]
    helps = a is not None and b is not None and b <= a
    return {"folds": sorted(folds), "grid": thresholds_of(everything), "per_fold": per_fold,
            "pooled_at_default": default, "pooled_at_chosen": pooled, "chosen_all": chosen_all,
            "helps": helps, "final": chosen_all if helps else DEFAULT_THRESHOLD}


def load_cv(folder: str | Path, sub: str = "") -> dict[int, list[dict[str, Any]]]:
    """``{fold: sweep rows}`` of an mn-cv folder's ``fold-K/threshold-sweep.csv`` files (``sub="as-final"``:
    ``fold-K/as-final/threshold-sweep.csv``, the folds trained the way ``mn-cv --final`` trains)."""
    out: dict[int, list[dict[str, Any]]] = {}
    sub = sub.strip("/")
    for path in sorted(Path(folder).glob("/".join(p for p in ("fold-*", sub, SWEEP_NAME) if p))):
        fold_dir = path.parent.parent if sub else path.parent
        try:
            k = int(fold_dir.name.split("-", 1)[1])
        except ValueError:
            continue
        out[k] = read_sweep(path)
    return out


def _pct(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else (f"{100 * x:+.1f} %" if signed else f"{100 * x:.1f} %")


def format_report(report: dict[str, Any]) -> str:
    lines = ["Mask threshold, leave one fold out: each fold at the threshold the other folds' images chose "
             "(median signed CSA error nearest 0), beside 0.5.", "",
             "| fold | threshold | DSC at 0.5 / chosen | CSA \\|error\\| median | mean signed | median signed "
             "| missed |",
             "|---|---|---|---|---|---|---|"]

    def row(name: str, t: str, a: dict, b: dict) -> str:
        return (f"| {name} | {t} | {a['dsc_mean']:.4f} / {b['dsc_mean']:.4f} | {_pct(a['csa_abs_median'])} -> "
                f"{_pct(b['csa_abs_median'])} | {_pct(a['csa_signed_mean'], True)} -> "
                f"{_pct(b['csa_signed_mean'], True)} | {_pct(a['csa_signed_median'], True)} -> "
                f"{_pct(b['csa_signed_median'], True)} | {a['missed']} -> {b['missed']} |")
    for f in report["per_fold"]:
        lines.append(row(str(f["fold"]), f"{f['threshold']:.3f}", f["at_default"], f["at_chosen"]))
    lines.append(row(f"pooled ({report['pooled_at_default']['n']} images)", "each fold's",
                     report["pooled_at_default"], report["pooled_at_chosen"]))
    lines += ["", f"Chosen on every fold's images: {report['chosen_all']:.3f}. "
                  + ("mn-cv --final writes it into the final model." if report.get("helps", True) else
                     f"mn-cv --final keeps {DEFAULT_THRESHOLD:g}: leaving one fold out, the chosen thresholds make "
                     f"the pooled CSA |error| median larger ({_pct(report['pooled_at_default']['csa_abs_median'])} "
                     f"-> {_pct(report['pooled_at_chosen']['csa_abs_median'])}).")]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from common.cli import HelpFormatter
    from train.cli_util import add_logging_args, setup_logging
    from train.errors import UserError

    p = argparse.ArgumentParser(prog="python -m train.threshold", formatter_class=HelpFormatter,
                                description="The mask threshold an mn-cv folder's out-of-fold predictions choose, "
                                            "with a leave-one-fold-out estimate of what it changes.",
                                epilog="Exit codes: 0 done, 2 bad input (fewer than two folds with a sweep).")
    p.add_argument("cv", help="an mn-cv --out folder (fold-K/threshold-sweep.csv)")
    p.add_argument("--as-final", action="store_true",
                   help="read the sweeps of the folds trained the way mn-cv --final trains "
                        "(fold-K/as-final/threshold-sweep.csv, written by mn-cv --as-final)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument("--md", default=None, metavar="FILE", help="write the table as Markdown")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not Path(args.cv).is_dir():
        raise UserError(f"{args.cv} is not a folder; give an mn-cv --out folder")
    try:
        folds = load_cv(args.cv, "as-final" if args.as_final else "")
    except ValueError as e:
        raise UserError(str(e)) from None
    if len(folds) < 2:
        raise UserError(f"{args.cv} has {len(folds)} fold(s) with a {SWEEP_NAME}; the estimate needs two or more "
                        f"(mn-cv writes one when it evaluates a fold: run mn-cv --fold K again for the folds done"
                        f"{', with --as-final' if args.as_final else ''})")
    report = leave_one_fold_out(folds)
    text = format_report(report)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.md:
        Path(args.md).write_text(text + "\n")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    from train.errors import run_cli

    return run_cli("python -m train.threshold", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
