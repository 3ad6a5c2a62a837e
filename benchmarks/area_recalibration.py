"""Would correcting the measured area help on unseen patients? Leave one fold out over a cross-validation.

    python -m benchmarks.area_recalibration CV_DIR [--sub as-final] [--protocol paper] [--json F] [--md F]

Reads every ``CV_DIR/fold-K/SUB/per-image-PROTOCOL.csv`` (what ``mn-cv`` writes for a fold model: one row per held-out
image with ``area_true_px`` and ``area_pred_px``) and asks whether a correction of the predicted area, fit on the
other folds' images and applied to each fold's, brings the areas closer to the truth:

- ``scale``: area x c, c fit so that the other folds' mean log ratio is 0 (a constant bias removed);
- ``linear``: log area_true = a log area_pred + b, least squares on the other folds (a bias that depends on size:
  small nerves too large, large ones too small, or the reverse).

Images the model missed (DSC < 0.5: the outline is another structure) take no part: correcting an area says nothing
about them. Reported: the pooled median |relative error| and mean signed error of the raw areas and of each
correction, and per fold the fitted constants. Each fold's correction is fit without its images, so the corrected
numbers are what such a correction would do on patients it was not fit to.

``--grid-floor DATA`` adds how much of the error the model's resolution alone explains: every annotated mask of
DATA taken to the network's grid (``--size``, as training targets are made: bilinear, soft edges) and back to its
own size (bilinear, threshold 0.5, as ``mn-eval --protocol native`` does with a prediction): the CSA error of a
model that reproduced the annotation perfectly at that resolution.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.report_files import print_and_write
from train.cli_util import add_logging_args, setup_logging
from train.errors import UserError, run_cli
from train.preprocess import DEFAULT_SIZE, parse_size

log = logging.getLogger(__name__)

MISSED_DSC = 0.5
METHODS = ("raw", "scale", "linear")


def read_folds(cv_dir: Path, sub: str, protocol: str) -> dict[int, np.ndarray]:
    """``{fold: array of (area_true, area_pred)}`` for the images each fold found (DSC >= 0.5)."""
    if not cv_dir.is_dir():
        raise UserError(f"{cv_dir} is not a folder; give an mn-cv --out folder")
    folds: dict[int, np.ndarray] = {}
    for d in sorted(cv_dir.glob("fold-*")):
        k = d.name.split("-", 1)[1]
        f = d / sub / f"per-image-{protocol}.csv" if sub else d / f"per-image-{protocol}.csv"
        if not k.isdigit() or not f.is_file():
            continue
        rows = []
        with f.open(newline="") as fh:
            for r in csv.DictReader(fh):
                try:
                    dsc, t, p = float(r["dsc"]), float(r["area_true_px"]), float(r["area_pred_px"])
                except (KeyError, ValueError) as e:
                    raise UserError(f"{f}: not an mn-eval per-image file ({e}); it needs dsc, area_true_px "
                                    "and area_pred_px columns") from None
                if dsc >= MISSED_DSC and t > 0 and p > 0:
                    rows.append((t, p))
        folds[int(k)] = np.asarray(rows, dtype=float).reshape(-1, 2)
    if len(folds) < 2:
        where = f"fold-K/{sub}/" if sub else "fold-K/"
        raise UserError(f"{cv_dir}: {len(folds)} fold(s) with {where}per-image-{protocol}.csv; leaving one fold "
                        "out needs at least 2 (run mn-cv first, or set --sub to where the folds' files are)")
    return folds


def fit(train: np.ndarray, method: str) -> tuple[float, float]:
    """(a, b) of log area_true = a log area_pred + b fit on ``train`` rows (true, pred)."""
    lt, lp = np.log(train[:, 0]), np.log(train[:, 1])
    if method == "raw":
        return 1.0, 0.0
    if method == "scale":
        return 1.0, float(np.mean(lt - lp))
    if method == "linear":
        a, b = np.polyfit(lp, lt, 1)
        return float(a), float(b)
    raise ValueError(method)


def leave_one_fold_out(folds: dict[int, np.ndarray]) -> dict[str, Any]:
    """Every method's relative errors over all folds, each fold corrected by a fit on the others."""
    out: dict[str, Any] = {"folds": sorted(folds), "images": int(sum(len(v) for v in folds.values())),
                           "methods": {}}
    for method in METHODS:
        errors, per_fold = [], {}
        for k, test in folds.items():
            train = np.concatenate([v for j, v in folds.items() if j != k])
            if len(train) < 3:
                raise UserError(f"fold {k}: the other folds found {len(train)} image(s); a fit needs at least 3")
            a, b = fit(train, method)
            pred = np.exp(a * np.log(test[:, 1]) + b)
            err = (pred - test[:, 0]) / test[:, 0]
            errors.append(err)
            per_fold[str(k)] = {"a": a, "b": b, "abs_rel_median": float(np.median(np.abs(err))) if len(err) else None}
        e = np.concatenate(errors)
        out["methods"][method] = {"abs_rel_median": float(np.median(np.abs(e))), "bias_rel": float(np.mean(e)),
                                  "per_fold": per_fold}
    return out


def grid_floor(data: Path, size: tuple[int, int]) -> dict[str, Any]:
    """CSA relative error of each annotated mask of ``data`` taken to the ``size`` grid and back (module doc)."""
    import cv2

    from train.data import scan_dataset
    from train.preprocess import preprocess_mask

    errors = []
    for sample in scan_dataset(data):
        mask = cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise UserError(f"cannot read the mask {sample.mask_path}")
        truth = mask > 0
        if not truth.any():
            continue
        small = preprocess_mask(truth, size)
        back = cv2.resize(small, truth.shape[::-1], interpolation=cv2.INTER_LINEAR) >= 0.5
        errors.append((back.sum() - truth.sum()) / truth.sum())
    e = np.asarray(errors, dtype=float)
    return {"data": str(data), "size": list(size), "images": int(len(e)),
            "abs_rel_median": float(np.median(np.abs(e))), "bias_rel": float(np.mean(e)),
            "abs_rel_p95": float(np.percentile(np.abs(e), 95))}


def format_md(result: dict[str, Any], source: str) -> str:
    lines = [f"# Area correction, leave one fold out: {source}", "",
             f"Folds {', '.join(map(str, result['folds']))}; {result['images']} images found (DSC >= {MISSED_DSC}); "
             "each fold corrected by a fit on the others.", "",
             "| correction | CSA \\|error\\| median, pooled | mean signed | per fold |median| |", "|---|---|---|---|"]
    for method, m in result["methods"].items():
        each = " / ".join("-" if v["abs_rel_median"] is None else f"{100 * v['abs_rel_median']:.1f}"
                          for v in m["per_fold"].values())
        lines.append(f"| {method} | {100 * m['abs_rel_median']:.1f} % | {100 * m['bias_rel']:+.1f} % | {each} |")
    lin = result["methods"]["linear"]["per_fold"]
    lines += ["", "linear: log true = a log pred + b; a per fold: "
              + ", ".join(f"{v['a']:.3f}" for v in lin.values())
              + " (a < 1: small predicted areas are raised relative to large ones)."]
    if "grid_floor" in result:
        g = result["grid_floor"]
        lines += ["", f"The network's grid alone ({g['size'][0]}x{g['size'][1]}): the {g['images']} annotated masks "
                  f"taken to it and back give a CSA |error| median of {100 * g['abs_rel_median']:.1f} % (p95 "
                  f"{100 * g['abs_rel_p95']:.1f} %, mean signed {100 * g['bias_rel']:+.1f} %)."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.area_recalibration",
                                description="Would a correction of the measured area, fit on other folds, help?")
    p.add_argument("cv_dir", type=Path, help="an mn-cv --out folder (fold-K/ inside)")
    p.add_argument("--sub", default="as-final",
                   help="the folder inside fold-K/ with the per-image files ('' for fold-K/ itself; default as-final)")
    p.add_argument("--protocol", choices=("paper", "native"), default="paper")
    p.add_argument("--grid-floor", type=Path, default=None, metavar="DATA",
                   help="also measure the error of DATA's masks taken to the network's grid and back")
    p.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, metavar="WxH",
                   help="the network's input size for --grid-floor (default 384x288)")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON")
    p.add_argument("--md", type=Path, default=None, help="write the table as Markdown")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    result = leave_one_fold_out(read_folds(args.cv_dir, args.sub, args.protocol))
    result.update(source=str(args.cv_dir), sub=args.sub, protocol=args.protocol)
    if args.grid_floor is not None:
        result["grid_floor"] = grid_floor(args.grid_floor, args.size)
    text = format_md(result, f"{args.cv_dir} ({args.protocol} protocol)")
    print_and_write(text, result, args.json, args.md)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("python -m benchmarks.area_recalibration", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
