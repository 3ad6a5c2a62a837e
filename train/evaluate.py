"""``mn-eval``: accuracy of a checkpoint on a folder of annotated images.

Two protocols (paper-code-spec §3.5, §4 item 7):

- ``paper``: how the paper's Table II was computed: per-image hard Dice at the network's
  resolution (prediction >= 0.5 against the resized soft mask > 0), IoU per image averaged per
  Keras batch of 32, precision and recall from global pixel counts.
- ``native``: the probability map upsampled (bilinear) to the original image size, thresholded at
  0.5 (or ``--threshold``, or the threshold the model carries: :mod:`train.threshold`) and compared with
  the original binary mask; per-image means of every metric.

``--sweep CSV`` writes each image's native areas and Dice at every threshold of :data:`train.threshold.GRID`,
whatever the protocol: what ``mn-cv`` calibrates the mask threshold on.

Both report the nerve area (pixels at native resolution) of truth and prediction, the
relative CSA error, and the CSA agreement as clinical papers give it (``csa_agreement``: bias, SD
and 95 % limits of agreement, MAE, missed images; in mm² with ``--mm-per-px``), with Bland-Altman
plots under ``--plots``. For the double networks the DSC of output 1 shows what network 2 adds (the
paper's Table IV). Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.cli import HelpFormatter
from common.figures import save_figure
from train.checkpoint import model_from_checkpoint
from train.cli_util import add_logging_args, resolve_device, set_threads, setup_logging
from train.data import LoadedData, load_samples, read_image, scan_dataset
from train.errors import UserError, run_cli
from train.metrics import MISSED_DSC, dice_hard, evaluate_native, evaluate_paper, format_summary, summary
from train.splits import make_split

log = logging.getLogger(__name__)

PER_IMAGE_FIELDS = ["stem", "dsc", "iou", "precision", "recall", "area_true_px", "area_pred_px", "csa_rel_error"]
BLAND_ALTMAN_PNG = "bland-altman.png"
BLAND_ALTMAN_REL_PNG = "bland-altman-rel.png"


@torch.inference_mode()
def predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 8,
            details: bool = False, progress: bool = True) -> dict[str, np.ndarray]:
    """Probabilities [N,H,W] of the final output (``"prob"``); with ``details`` for a double
    network also ``"output1"`` and ``"multiply"`` (the paper's figures 16-17)."""
    model.eval()
    details = details and hasattr(model, "forward_details")
    out: dict[str, list[np.ndarray]] = {"prob": []}
    if details:
        out.update(output1=[], multiply=[])
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch", disable=not progress,
                      leave=False):
        x = torch.from_numpy(images[start:start + batch_size]).to(device)
        if details:
            d = model.forward_details(x)
            out["prob"].append(d["output2"][:, 0].float().cpu().numpy())
            out["output1"].append(d["output1"][:, 0].float().cpu().numpy())
            out["multiply"].append(d["multiply"][:, 0].float().cpu().numpy())
        else:
            out["prob"].append(torch.sigmoid(model(x).float())[:, 0].cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def upsample(prob: np.ndarray, native_hw: tuple[int, int]) -> np.ndarray:
    """A model-resolution probability map resized (bilinear) to the native image size."""
    h, w = native_hw
    return cv2.resize(prob.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def evaluate(model: nn.Module, data: LoadedData, protocol: str, device: torch.device, batch_size: int = 8,
             progress: bool = True, mm2_per_px: float | None = None,
             threshold: float = 0.5) -> tuple[dict, dict[str, np.ndarray]]:
    """Run the model on loaded data and compute the protocol's metrics; returns (result, predictions).

    ``mm2_per_px`` (area of one native pixel) fills the mm² values of ``csa_agreement``. For a
    double network the predictions also hold output 1 and the multiply layer, and the result the
    DSC of output 1 alone (``output1_dsc``)."""
    preds = predict(model, data.images, device, batch_size, details=True, progress=progress)
    result = score(preds["prob"], data, protocol, mm2_per_px, threshold=threshold)
    if "output1" in preds:
        gt = data.masks[:, 0] > 0
        result["output1_dsc"] = summary([dice_hard(o >= 0.5, g) for o, g in zip(preds["output1"], gt)])
    return result, preds


def score(prob: np.ndarray, data: LoadedData, protocol: str, mm2_per_px: float | None = None,
          threshold: float = 0.5) -> dict:
    """The protocol's metrics for model-resolution probabilities ``prob`` ``[N, H, W]`` of ``data``'s images, however
    they were computed (this module's PyTorch model, or an engine: ``engines.evaluate_cli``). ``threshold`` is the
    native protocol's; the paper protocol is the paper's computation, at 0.5."""
    if protocol == "paper":
        return evaluate_paper(prob, data.masks[:, 0], native_masks=data.native_masks, stems=data.stems,
                              mm2_per_px=mm2_per_px)
    if protocol == "native":
        probs_native = [upsample(p, m.shape[:2]) for p, m in zip(prob, data.native_masks)]
        return evaluate_native(probs_native, data.native_masks, stems=data.stems, mm2_per_px=mm2_per_px,
                               threshold=threshold)
    raise UserError(f"unknown protocol {protocol!r}; use paper or native")


def save_overlays(folder: Path, samples: list, data: LoadedData, preds: dict[str, np.ndarray],
                  per_image: list[dict], progress: bool = True, threshold: float = 0.5) -> None:
    """One PNG per image: image | ground truth | prediction (native resolution), and for double
    networks a second row: output 1 | multiply layer | output 2."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(tqdm(samples, desc="overlays", unit="image", leave=False, disable=not progress)):
        grey = read_image(sample.image_path)
        h, w = grey.shape[:2]
        base = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        truth = data.native_masks[i] > 0
        pred = upsample(preds["prob"][i], (h, w)) >= threshold
        row = [_label(base, "image"), _label(_tint(base, truth, (0, 200, 0)), "ground truth"),
               _label(_tint(base, pred, (0, 0, 255)), f"prediction  DSC {per_image[i]['dsc']:.3f}")]
        panel = np.hstack(row)
        if "output1" in preds:
            mul = preds["multiply"][i]
            mul = (mul - mul.min()) / max(float(np.ptp(mul)), 1e-6)
            maps = [("output 1", preds["output1"][i]), ("multiply", mul), ("output 2", preds["prob"][i])]
            second = [_label(cv2.applyColorMap((upsample(m, (h, w)).clip(0, 1) * 255).astype(np.uint8),
                                               cv2.COLORMAP_VIRIDIS), name) for name, m in maps]
            panel = np.vstack([panel, np.hstack(second)])
        cv2.imwrite(str(folder / f"{sample.stem}.png"), panel)


def _tint(base: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = base.copy()
    overlay = out.copy()
    overlay[mask] = colour
    out = cv2.addWeighted(overlay, 0.35, out, 0.65, 0)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (8, img.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(img, text, (8, img.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def parse_mm_per_px(text: str | None) -> float | None:
    """``--mm-per-px``: ``F`` (square pixels) or ``FX,FY`` in mm per native pixel -> the area of one
    pixel in mm² (``F*F`` or ``FX*FY``); ``None`` -> ``None``.

    Raises:
        UserError: on anything but one or two finite numbers > 0.
    """
    if text is None:
        return None
    parts = [t.strip() for t in str(text).split(",")]
    try:
        values = [float(t) for t in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"--mm-per-px {text!r}: give the pixel size in mm at the original image size, one positive "
                        "number for square pixels (e.g. --mm-per-px 0.08) or width,height (e.g. --mm-per-px "
                        "0.08,0.075)")
    fx, fy = values if len(values) == 2 else (values[0], values[0])
    return fx * fy


def prepare_plot_folder(folder: str | os.PathLike) -> Path:
    """Create ``--plots`` DIR (and parents) and check that it can be written, before the slow part.

    Raises:
        UserError: if it is a file, cannot be created, or is not writable.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UserError(f"--plots {path}: is a file, not a folder; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--plots {path}: cannot create the folder ({exc.strerror or exc}); give a folder you can "
                        "write to") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--plots {path}: the folder is not writable; give a folder you can write to")
    return path


def save_bland_altman(folder: str | os.PathLike, result: dict[str, Any]) -> list[Path]:
    """Bland-Altman plots of the CSA of an ``evaluate_*`` result; returns the paths written.

    ``folder/bland-altman.png``: x the mean of true and predicted area, y the difference pred - true,
    in mm² when ``csa_agreement`` is calibrated (``mm2_per_px``) else in pixels;
    ``folder/bland-altman-rel.png``: y the relative difference (pred - true) / true in % (images with an
    empty ground truth left out). Both draw the bias and the 95 % limits of agreement (bias ± 1.96 SD,
    labelled with their values) and mark images with DSC < 0.5 (missed) apart. Written with the Agg
    backend, atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    agr = result["csa_agreement"]
    factor = agr["mm2_per_px"]
    unit = "px" if factor is None else "mm²"
    scale = 1.0 if factor is None else float(factor)
    rows = [r for r in result["per_image"] if r["area_true_px"] is not None and r["area_pred_px"] is not None]
    true = np.array([r["area_true_px"] for r in rows], dtype=np.float64)
    pred = np.array([r["area_pred_px"] for r in rows], dtype=np.float64)
    missed = np.array([r["dsc"] < MISSED_DSC for r in rows], dtype=bool)
    has_truth = true > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(has_truth, 100.0 * (pred - true) / np.where(has_truth, true, 1.0), np.nan)
    suffix = "_mm2" if factor is not None else "_px"
    figures = [
        (folder / BLAND_ALTMAN_PNG, (true + pred) / 2 * scale, (pred - true) * scale, np.ones_like(missed),
         agr["bias" + suffix], agr["loa" + suffix], 1.0, f"difference pred - true ({unit})", unit),
        (folder / BLAND_ALTMAN_REL_PNG, (true + pred) / 2 * scale, rel, has_truth,
         agr["bias_rel"], agr["loa_rel"], 100.0, "relative difference (pred - true) / true (%)", "%"),
    ]
    written: list[Path] = []
    for path, x, y, keep, bias, loa, mul, ylabel, yunit in figures:
        fig, ax = plt.subplots(figsize=(7, 5))
        try:
            ok, bad = keep & ~missed, keep & missed
            ax.scatter(x[ok], y[ok], s=18, color="#1f77b4", alpha=0.8, label=f"images (n={int(ok.sum())})")
            if bad.any():
                ax.scatter(x[bad], y[bad], s=40, marker="x", color="#d62728",
                           label=f"missed, DSC < {MISSED_DSC} (n={int(bad.sum())})")
            lines = [] if bias is None else [("bias", bias * mul, "-")]
            if loa is not None:
                lines += [("LoA bias - 1.96 SD", loa[0] * mul, "--"), ("LoA bias + 1.96 SD", loa[1] * mul, "--")]
            trans = ax.get_yaxis_transform()
            for name, value, style in lines:
                ax.axhline(value, color="0.3", ls=style, lw=1)
                ax.text(0.99, value, f"{name} {value:+.2f} {yunit}", transform=trans, ha="right", va="bottom",
                        fontsize=8, color="0.2",
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})
            ax.axhline(0.0, color="0.7", lw=0.8, zorder=0)
            if not keep.any():
                ax.text(0.5, 0.5, "no images with measured areas", transform=ax.transAxes, ha="center")
            ax.set_xlabel(f"mean of true and predicted CSA ({unit})")
            ax.set_ylabel(ylabel)
            ax.set_title(f"Bland-Altman, CSA ({result.get('protocol', '')} protocol, n={int(keep.sum())})")
            ax.grid(alpha=0.3)
            if keep.any():
                ax.legend(fontsize=8, loc="upper left")
            fig.tight_layout()
            save_figure(fig, path)
        finally:
            plt.close(fig)
        written.append(path)
    return written


def build_parser(require_checkpoint: bool = True) -> argparse.ArgumentParser:
    """mn-eval's flags; ``require_checkpoint=False`` for a command that offers another way to name the model
    (``engines.evaluate_cli``'s ``--model``), which adds its own flags to this parser."""
    p = argparse.ArgumentParser(
        prog="mn-eval",
        description="Evaluate a checkpoint: DSC, IoU, precision, recall and CSA error, by the paper's protocol or "
                    "at native resolution.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--checkpoint", required=require_checkpoint, help="a best.pt / last.pt written by mn-train")
    p.add_argument("--data", required=True, help="dataset folder holding Images/ and Masks/")
    p.add_argument("--protocol", choices=["paper", "native"], default="paper",
                   help="paper: Table II's computation at the network's size; native: at the original image size")
    p.add_argument("--split", choices=["none", "paper", "kfold", "random"], default="none",
                   help="evaluate only one side of a patient split (default: every image in --data)")
    p.add_argument("--subset", choices=["val", "train"], default="val", help="which side of --split")
    p.add_argument("--folds", type=int, default=None, help="folds for --split kfold (default 5)")
    p.add_argument("--fold", type=int, default=None, help="fold for --split kfold")
    p.add_argument("--val-fraction", type=float, default=0.2, help="for --split random")
    p.add_argument("--seed", type=int, default=42, help="seed of --split kfold/random")
    p.add_argument("--patient-regex", default=None, help="patient id regex (see mn-train)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON ('-' for stdout)")
    p.add_argument("--per-image", default=None, metavar="CSV", help="write one row per image")
    p.add_argument("--save-overlays", default=None, metavar="DIR",
                   help="write image / ground truth / prediction panels (and output 1 / multiply / output 2 for "
                        "the double networks)")
    p.add_argument("--mm-per-px", default=None, metavar="F|FX,FY",
                   help="pixel size in mm at the original image size (one number, or width,height); fills the mm² "
                        "values of csa_agreement (area of a pixel = FX*FY)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write Bland-Altman plots of the CSA: DIR/bland-altman.png (difference, mm² with "
                        "--mm-per-px else px) and DIR/bland-altman-rel.png (relative difference, %%)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="the native protocol's mask threshold (default: the model's postprocess.threshold, which "
                        "mn-cv --final calibrates, else 0.5); the paper protocol always uses 0.5")
    p.add_argument("--sweep", default=None, metavar="CSV",
                   help="also write every image's native areas and Dice at thresholds 0.30, 0.325, ..., 0.70 "
                        "(python -m train.threshold calibrates on mn-cv's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=int, default=8, help="inference batch size")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return run(args)


def select_samples(args: argparse.Namespace) -> list:
    """The samples of ``args.data`` that ``--split``/``--subset`` (``--folds``, ``--fold``, ...) choose."""
    samples = scan_dataset(args.data, patient_regex=args.patient_regex)
    if args.split != "none":
        if args.split == "kfold" and args.fold is None:
            raise UserError("--split kfold needs --fold K")
        patients = [s.patient for s in samples]
        kfold = args.split == "kfold"
        split = make_split(args.split, patients, folds=args.folds if kfold else None,
                           fold=args.fold if kfold else None, seed=args.seed, val_fraction=args.val_fraction)
        train_idx, val_idx = split.indices(patients)
        chosen = val_idx if args.subset == "val" else train_idx
        if len(chosen) == 0:
            raise UserError(f"split {args.split} has no {args.subset} images in {args.data}")
        samples = [samples[i] for i in chosen]
    return samples


def run(args: argparse.Namespace) -> int:
    """mn-eval on parsed arguments (:func:`build_parser`): the PyTorch model of ``args.checkpoint``."""
    mm2_per_px = parse_mm_per_px(args.mm_per_px)  # check the cheap flags before the slow part
    check_threshold_args(args)
    plots = prepare_plot_folder(args.plots) if args.plots else None
    set_threads(args.threads)
    device = resolve_device(args.device)
    model, config = model_from_checkpoint(args.checkpoint, device)
    threshold = resolve_threshold(args.threshold, config, args.protocol)
    size = tuple(config["preprocessing"]["size"])
    samples = select_samples(args)
    progress = log.isEnabledFor(logging.INFO)
    data = load_samples(samples, size, progress=progress)
    result, preds = evaluate(model, data, args.protocol, device, args.batch_size, progress=progress,
                             mm2_per_px=mm2_per_px, threshold=threshold)
    result["checkpoint"] = str(args.checkpoint)
    result["model"] = config["model"]["name"]
    write_outputs(args, result, samples, data, preds, plots)
    return 0


def check_threshold_args(args: argparse.Namespace) -> None:
    """The cheap checks of ``--threshold`` / ``--sweep``, before anything is loaded."""
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise UserError(f"--threshold must be between 0 and 1, got {args.threshold:g}")
    if args.threshold is not None and args.protocol == "paper":
        raise UserError("--threshold applies to --protocol native; the paper protocol is the paper's, at 0.5")
    if args.sweep and not Path(args.sweep).resolve().parent.is_dir():
        raise UserError(f"--sweep {args.sweep}: its folder does not exist")


def resolve_threshold(given: float | None, config: dict | None, protocol: str) -> float:
    """The native protocol's threshold: ``--threshold``, else the model's (:func:`train.threshold.model_threshold`);
    0.5 for the paper protocol."""
    from train.threshold import model_threshold

    if protocol == "paper":
        return 0.5
    if given is not None:
        return float(given)
    try:
        threshold = model_threshold(config)
    except ValueError as e:
        raise UserError(f"{e}; rebuild the model with mn-cv --final or pass --threshold") from None
    if threshold != 0.5:
        log.info("mask threshold %.3f: the model's (calibrated by cross-validation)", threshold)
    return threshold


def write_sweep(path: str, prob: np.ndarray, data: LoadedData) -> None:
    """``--sweep``: native areas and Dice of every image at every threshold of :data:`train.threshold.GRID`."""
    from train.threshold import sweep, write_sweep as write_rows

    probs_native = [upsample(p, m.shape[:2]) for p, m in zip(prob, data.native_masks)]
    write_rows(path, sweep(probs_native, data.native_masks, data.stems))
    log.info("wrote %s", path)


def write_outputs(args: argparse.Namespace, result: dict, samples: list, data: LoadedData,
                  preds: dict[str, np.ndarray], plots: Path | None) -> None:
    """Add ``data`` and ``split`` to ``result``, print its summary and write what the flags ask for (``--json``,
    ``--per-image``, ``--save-overlays``, ``--plots``)."""
    progress = log.isEnabledFor(logging.INFO)
    result["data"] = str(args.data)
    result["split"] = args.split if args.split == "none" else f"{args.split}:{args.subset}"
    report = sys.stderr if args.json == "-" else sys.stdout  # keep stdout pure JSON with --json -
    print(format_summary(result), file=report)
    if "output1_dsc" in result:
        o1 = result["output1_dsc"]
        print(f"output 1 (network 1 alone) DSC {o1['mean']:.4f} ± {o1['std']:.4f}", file=report)
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            log.info("wrote %s", args.json)
    if args.per_image:
        with open(args.per_image, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=PER_IMAGE_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(result["per_image"])
        log.info("wrote %s", args.per_image)
    if args.save_overlays:
        save_overlays(Path(args.save_overlays), samples, data, preds, result["per_image"], progress=progress,
                      threshold=result.get("threshold", 0.5))
        log.info("wrote %d overlays to %s", len(samples), args.save_overlays)
    if getattr(args, "sweep", None):
        write_sweep(args.sweep, preds["prob"], data)
    if plots is not None:
        for path in save_bland_altman(plots, result):
            log.info("wrote %s", path)


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("mn-eval", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
