"""``python -m benchmarks.speckle_stability``: how far a refiner's outline moves when only the speckle changes.

In video the same tissue comes back 24 times a second under a new speckle pattern. An outline that follows
the speckle makes the nerve's area flicker although the nerve did not change (issue 18). This measures it on
annotated stills, without making clips: for each image of the chosen split, the window centred on the true
nerve (as ``mn-train --crop`` validates a refiner) is segmented as it is (area ``A0``), then under
``--patterns`` new speckle patterns (:func:`train.consistency.respeckle` on the whole z-scored frame, the
generator of image ``i``'s pattern ``k`` being ``default_rng([seed, i, k])``) and with the window moved by
each of ``--shifts`` pixels (right and down), as a tracked window moves with the nerve. Per image and change:
``|A - A0| / A0`` of the masks cut at the model's mask threshold (``postprocess.threshold``, calibrated by
``mn-cv --final``; 0.5 for a refiner's own checkpoint) or ``--threshold``, in the window. Reported per change:
the median and p95 over every (image, change) pair; and the clean windows' Dice against the truth, for context.

A cheap stand-in for the raw area's frame-to-frame jitter that ``benchmarks.window_bench`` measures on
animated clips, comparable between refiners on the same held-out images (``--split kfold --fold K`` for an
``mn-cv`` fold's refiner, whose validation patients it never trained on).

Exit codes: 0 done, 2 bad input (a checkpoint that is not a refiner, a missing data folder, bad settings,
an unwritable output), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.report_files import report_header, report_paths, write_report
from common.cli import add_logging_args, setup_logging
from common.errors import UserError, run_cli

log = logging.getLogger(__name__)

PROG = "python -m benchmarks.speckle_stability"


def _shifts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shifts takes whole pixels, comma-separated, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--shifts are at least 1 px, got {text!r}")
    return values


def load_refiner(path: str) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    """``(model, window wh, frame wh)`` of a refiner: an ``mn-train --crop`` checkpoint or a cascade's refiner."""
    import train.cascade_net  # noqa: F401  (registers the composite models)
    from train.cascade import part_payload
    from train.models import build_model

    payload = part_payload(path, "refiner")
    config = payload["config"]
    crop = (config.get("crop") or {}).get("size")
    if not crop:
        raise UserError(f"{path} is not a refiner (its config has no crop window): give an mn-train --crop run's "
                        "best.pt or a cascade checkpoint")
    spec = config["model"]
    model = build_model(spec["name"], **spec.get("kwargs", {}))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), (int(crop[0]), int(crop[1])), tuple(int(v) for v in config["preprocessing"]["size"])


def refiner_threshold(path: str, given: float | None) -> float:
    """``given`` (``--threshold``, checked), else the mask threshold the checkpoint carries (a cascade calibrated
    by ``mn-cv --final``), else 0.5."""
    from train.checkpoint import load_checkpoint
    from train.threshold import choose_threshold

    try:
        return choose_threshold(given, None if given is not None else load_checkpoint(path).get("config"))
    except ValueError as e:
        raise UserError(str(e)) from None


def window_areas(model: Any, frames: Sequence[np.ndarray], boxes: Sequence[tuple[int, int]],
                 crop_wh: tuple[int, int], threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The refiner's masks (probability >= ``threshold``) of each frame's window at its box: ``(areas, masks)``."""
    import torch

    cw, ch = crop_wh
    windows = np.stack([f.reshape(f.shape[-2:])[y0:y0 + ch, x0:x0 + cw] for f, (x0, y0) in zip(frames, boxes)])
    with torch.inference_mode():
        prob = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(windows[:, None])))).numpy()[:, 0]
    masks = prob >= threshold
    return masks.sum(axis=(1, 2)).astype(np.float64), masks


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    if not len(v):
        return {"n": 0, "median": None, "p95": None, "mean": None}
    return {"n": int(len(v)), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
            "mean": float(v.mean())}


def measure(model: Any, images: np.ndarray, masks: np.ndarray, crop_wh: tuple[int, int], patterns: int,
            shifts: Sequence[int], strength: float, seed: int, image_ids: Sequence[int],
            threshold: float = 0.5) -> dict[str, Any]:
    """The report's numbers for preprocessed ``images`` / ``masks`` ``[N, 1, H, W]`` (see the module docstring);
    ``image_ids`` key each image's speckle generator; masks are ``probability >= threshold``."""
    from train.consistency import respeckle
    from train.metrics import dice_hard
    from train.window import crop_box, mask_centre

    h, w = images.shape[-2:]
    changes: dict[str, list[float]] = {"speckle": [], **{f"shift {s} px": [] for s in shifts}}
    dsc, skipped = [], 0
    for image, mask, ident in zip(images, masks, image_ids):
        centre = mask_centre(mask[0])
        if centre is None:
            skipped += 1
            continue
        box = crop_box(centre, crop_wh, (w, h))
        (a0,), (m0,) = window_areas(model, [image], [box], crop_wh, threshold)
        x0, y0 = box
        truth = mask[0, y0:y0 + crop_wh[1], x0:x0 + crop_wh[0]] > 0.5
        dsc.append(dice_hard(m0, truth))
        if a0 == 0:
            skipped += 1
            continue
        noisy = [respeckle(image, np.random.default_rng([seed, int(ident), k]), strength) for k in range(patterns)]
        if noisy:
            areas, _ = window_areas(model, noisy, [box] * len(noisy), crop_wh, threshold)
            changes["speckle"] += list(np.abs(areas - a0) / a0)
        for s in shifts:
            moved = crop_box((centre[0] + s, centre[1] + s), crop_wh, (w, h))
            (a,), _ = window_areas(model, [image], [moved], crop_wh, threshold)
            changes[f"shift {s} px"].append(abs(a - a0) / a0)
    return {"images": int(len(images)), "skipped": skipped,
            "clean_window_dsc": _stats(dsc), "area_change": {k: _stats(v) for k, v in changes.items()}}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def format_md(report: dict[str, Any]) -> str:
    r = report["result"]
    lines = [f"# Speckle stability: {report['refiner']}", "", f"Command: `{report['command']}`", "",
             f"{r['images']} images ({report['split']}); {r['skipped']} without a nerve or an outline in the clean "
             f"window left out. Clean windows' Dice: mean {r['clean_window_dsc']['mean']:.4f}."
             if r["clean_window_dsc"]["mean"] is not None else f"{r['images']} images, none measurable.", "",
             "| change | pairs | area change median | p95 | mean |", "|---|---|---|---|---|"]
    for name, s in r["area_change"].items():
        lines.append(f"| {name} | {s['n']} | {_pct(s['median'])} | {_pct(s['p95'])} | {_pct(s['mean'])} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--refiner", required=True, help="an mn-train --crop run's checkpoint, or a cascade (its refiner)")
    p.add_argument("--data", required=True, help="dataset folder holding Images/ and Masks/")
    p.add_argument("--split", choices=["none", "paper", "kfold", "random"], default="paper",
                   help="whose images: one side of a patient split, as mn-eval (default: the paper split's validation)")
    p.add_argument("--subset", choices=["val", "train"], default="val", help="which side of --split")
    p.add_argument("--folds", type=int, default=5, help="folds for --split kfold (mn-cv's 5)")
    p.add_argument("--fold", type=int, default=None, help="fold for --split kfold")
    p.add_argument("--val-fraction", type=float, default=0.2, help="for --split random")
    p.add_argument("--seed", type=int, default=42, help="seed of --split kfold/random and of the speckle")
    p.add_argument("--patient-regex", default=None, help="patient id regex (see mn-train)")
    p.add_argument("--patterns", type=int, default=4, help="new speckle patterns per image")
    p.add_argument("--strength", type=float, default=None,
                   help="speckle strength (default: the one --consistency trains with, 0.15)")
    p.add_argument("--shifts", type=_shifts, default=[1, 3], help="window moves in px, comma-separated (1,3)")
    p.add_argument("--threshold", type=float, default=None,
                   help="mask threshold (default: the model's postprocess.threshold, else 0.5)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="default benchmarks/results/speckle-stability-STEM-HOST-DATE.json, with a .md beside it")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from train.cli_util import set_threads
    from train.consistency import SPECKLE
    from train.data import load_samples, scan_dataset
    from train.evaluate import select_samples

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.patterns < 0:
        raise UserError("--patterns must be 0 or more")
    strength = SPECKLE if args.strength is None else args.strength
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"--strength is a fraction of the echo intensity in [0, 1], got {strength}")
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} is not a folder")
    out, md = report_paths(args.json, None, "speckle-stability", Path(args.refiner).stem)
    set_threads(args.threads)
    model, crop_wh, size = load_refiner(args.refiner)
    threshold = refiner_threshold(args.refiner, args.threshold)
    samples = select_samples(args)
    data = load_samples(samples, size, progress=log.isEnabledFor(logging.INFO))
    # each image's speckle is keyed by its place in the whole folder, so a fold's numbers do not depend on the split
    order = {s.stem: i for i, s in enumerate(scan_dataset(args.data, patient_regex=args.patient_regex))}
    result = measure(model, data.images, data.masks, crop_wh, args.patterns, args.shifts, strength, args.seed,
                     [order[s.stem] for s in samples], threshold)
    split = args.split if args.split != "kfold" else f"kfold, fold {args.fold} of {args.folds}, seed {args.seed}"
    report = {**report_header("speckle_stability", PROG, argv), "refiner": str(args.refiner),
              "split": f"{split} ({args.subset})", "patterns": args.patterns, "strength": strength,
              "shifts_px": args.shifts, "threshold": threshold, "window": list(crop_wh), "frame": list(size),
              "result": result}
    write_report(out, report, format_md(report), md)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
