"""``mn-train``: train one of the paper's networks on a folder of annotated images.

Exit codes: 0 done, 2 bad input (one line on stderr), 130 stopped by Ctrl-C / SIGTERM after
saving ``RUN_DIR/last.pt`` (continue with ``--resume``).

Distributed: ``torchrun --nproc_per_node N --no-python mn-train ...`` (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from common.cli import HelpFormatter
from train.augment import AUGMENT_NAMES
from train.cli_util import _size_type, add_logging_args, add_size_arg, resolve_device, set_threads, setup_logging
from train.errors import UserError, run_cli

if TYPE_CHECKING:  # pragma: no cover - typing only
    from train.trainer import TrainConfig

log = logging.getLogger(__name__)


LUNET_FAMILY = ("lunet", "lunet-coarse", "lunet-coarse2")
"""The networks that take --variant and --width (an L-UNet, alone or behind a localiser's pool)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mn-train",
        description="Train a median-nerve segmentation network (U-Net, L-UNet, DoubleU-Net, DL-UNet) with the "
                    "DL-UNet paper's recipe. Writes RUN_DIR/best.pt, last.pt, config.json, history.csv, curves.png.",
        epilog="Exit codes: 0 done, 2 bad input (one line on stderr), 130 stopped by Ctrl-C / SIGTERM after saving "
               "RUN_DIR/last.pt (continue with --resume).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--list-models", action="store_true",
                   help="print the networks with their parameter counts and GFLOPs at 288x384, then exit")
    p.add_argument("--data", help="dataset folder holding Images/ and Masks/ with matching file names")
    p.add_argument("--model", default="lunet", help="architecture name (see --list-models)")
    p.add_argument("--variant", default=None,
                   help="lunet only: 'table2' (BN after both convs, Table II count) or 'head' (BN after the first "
                        "conv, dropout 0.2: the authors' final code)")
    p.add_argument("--width", type=float, default=None,
                   help="lunet / lunet-coarse(2) only: scale every filter count (1.0 = the paper's L-UNet; "
                        "lunet-coarse and lunet-coarse2 default to 0.5)")
    p.add_argument("--out", help="run folder for checkpoints, history and curves")
    p.add_argument("--epochs", type=int, default=100, help="number of epochs")
    p.add_argument("--batch-size", type=int, default=8, help="global batch size (split across torchrun processes)")
    p.add_argument("--lr", type=float, default=None,
                   help="initial learning rate (default: 1e-2 for unet/lunet, 1e-3 otherwise, as the authors' code)")
    add_size_arg(p)
    p.add_argument("--split", choices=["paper", "kfold", "random", "none"], default=None,
                   help="patient split: the paper's validation patients, k-fold by patient (--folds/--fold), "
                        "a seeded random patient split (--val-fraction), or none (train on everything); default: "
                        "kfold when --folds/--fold are given, else paper")
    p.add_argument("--folds", type=int, default=None,
                   help="number of patient folds (implies --split kfold; default 5 with --split kfold)")
    p.add_argument("--fold", type=int, default=None, help="which fold is the validation fold (0-based)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation share of patients for --split random")
    p.add_argument("--seed", type=int, default=42, help="seed of the split, the batch order and the augmentation")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt exactly where it stopped")
    p.add_argument("--encoder-weights", default=None, metavar="PTH",
                   help="torchvision-format VGG19 state dict for the encoder of dbunet/dlunet (default: random init)")
    p.add_argument("--lr-factor", type=float, default=0.1, help="ReduceLROnPlateau factor")
    p.add_argument("--lr-patience", type=int, default=10,
                   help="epochs without a --lr-min-delta improvement of the validation loss before the LR drops "
                        "(Keras semantics)")
    p.add_argument("--lr-min-delta", type=float, default=1e-4, help="absolute improvement that resets the LR patience")
    p.add_argument("--early-stop", type=int, default=50, help="stop after this many epochs without improvement")
    p.add_argument("--augment", choices=AUGMENT_NAMES, default="paper",
                   help="training augmentation: 'paper' (the authors' joint affine: rotation, shift, shear, flip), "
                        "'strong' (that plus a joint elastic deformation, gamma, contrast, speckle and blur, then a "
                        "per-image z-score), 'acquisition' (strong plus what another scanner brings: zoom / pixel "
                        "size +-20 %%, field of view, aspect, depth gain, overall gain, JPEG artefacts), 'fov' "
                        "(acquisition without its depth gain, overall gain and JPEG artefacts), 'compress' "
                        "(strong plus the nerve flattened by up to 25 %% about its centroid, as in a dynamic scan) "
                        "or 'none'")
    p.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                   help="same as --augment none")
    p.add_argument("--extra-train", nargs="+", default=[], metavar="DIR",
                   help="extra dataset folders (Images/, Masks/) whose images are ALL added to the training side, "
                        "never to validation; the split is computed on --data only (e.g. phantom frames written by "
                        "mn-synth --phantom --dataset DIR)")
    p.add_argument("--crop", type=_size_type, default=None, metavar="WxH",
                   help="train a cascade refiner: the network sees WxH windows of the --size frame around the true "
                        "nerve (see python -m train.cascade)")
    p.add_argument("--crop-jitter", type=float, default=0.25,
                   help="with --crop: shift each training window by up to this fraction of its half-size")
    p.add_argument("--crop-negatives", type=float, default=0.0, metavar="SHARE",
                   help="with --crop: this share of the training windows is placed where there is no nerve, with an "
                        "empty target (teaches the refiner to say 'no nerve here')")
    p.add_argument("--nerve-removed", type=float, default=0.0, metavar="SHARE",
                   help="this share of the training items has the nerve painted over by the tissue beside it and an "
                        "empty target (with --crop: the window stays where the nerve was); teaches 'no nerve here'")
    p.add_argument("--consistency", type=float, default=0.0, metavar="W",
                   help="temporal consistency: train every item also under a new speckle pattern (the same tissue in "
                        "the next video frame) and add W x the two outlines' disagreement (on 0/1 masks 1 - their "
                        "Dice) to the loss; 0: off. Twice the compute per batch (train/consistency.py)")
    p.add_argument("--loss", default="bce_dice",
                   help="the training loss: bce_dice (the paper's: BCE + the batch-pooled soft Dice) or bce_dice_area "
                        "(the same plus each image's relative soft-area error |sum p - sum t| / sum t, weight 1: the "
                        "area the tool reports, per image; train/losses.py)")
    p.add_argument("--speckle", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="with --augment strong, acquisition, fov or compress: draw each training image's speckle "
                        "strength uniformly from [LO, HI] instead of the fixed 0.15 (scanners differ in how grainy the "
                        "image is; e.g. 0 0.6)")
    p.add_argument("--compress", type=float, nargs=2, default=None, metavar=("LEVEL", "P"),
                   help="with --augment compress: the lowest vertical scale of the nerve's compression (drawn from "
                        "[LEVEL, 1]; default 0.75, flattened by up to 25 %%) and the probability that an image is "
                        "compressed (default 0.5); e.g. 0.65 0.7. With --augment acquisition or fov: compress the "
                        "nerve so too (it does not otherwise), e.g. 0.75 0.5")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from the weights of this checkpoint (fine-tuning; a bundled model file works too); "
                        "the optimiser, schedule and epochs start afresh")
    p.add_argument("--init-part", default=None, metavar="PART",
                   help="with --init of a cascade checkpoint: which of its networks to start from: localiser or "
                        "refiner, or one member of an ensemble part, e.g. refiner.members.1 (mn-realtime's second "
                        "refiner)")
    p.add_argument("--lr-drops", type=int, nargs="+", default=[], metavar="EPOCH",
                   help="a fixed learning-rate schedule instead of ReduceLROnPlateau: multiply it by --lr-factor after "
                        "each of these epochs (e.g. a run on every image that should end at a low, steady rate)")
    p.add_argument("--swa-from", type=int, default=None, metavar="EPOCH",
                   help="stochastic weight averaging: average the weights at the end of every epoch from EPOCH on "
                        "and, when the run ends, write the mean as RUN_DIR/swa.pt (BatchNorm statistics measured "
                        "again on one pass over the training items; best.pt and last.pt unchanged). E.g. a fine-tune: "
                        "--init CKPT --lr 3e-4 --lr-patience 1000 --epochs 24 --swa-from 1 (train/swa.py)")
    p.add_argument("--blind", action="store_true",
                   help="measure the validation images but let nothing depend on them: the learning-rate schedule, "
                        "best.pt and the early stop watch the training loss, as in a run on every image (--split "
                        "none); mn-cv --as-final trains each fold so, to validate what --final does")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="time budget of this invocation: finish the epoch in progress once M minutes have passed, "
                        "then end normally (exit 0) with best.pt and last.pt saved; the run's config records the "
                        "epochs actually run")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that augment batches in parallel (0: in the training process; results do not "
                        "depend on it)")
    p.add_argument("--amp", dest="amp", action="store_true", default=None,
                   help="mixed precision (default: on for CUDA; off on a CPU, where --amp trains in bfloat16, about "
                        "twice as fast where the CPU has AVX512-BF16 or AMX, and float32 elsewhere)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="train in float32 on CUDA too")
    p.add_argument("--amp-dtype", choices=["auto", "bf16", "fp16"], default="auto",
                   help="mixed-precision type: auto = bfloat16 where the GPU supports it (float16 overflows in the "
                        "VGG encoders), else float16; always bfloat16 on a CPU")
    p.add_argument("--patient-regex", default=None,
                   help="regular expression whose first group is the patient id in a file name (default: the part "
                        "before the last '-', e.g. Pz003-004 -> Pz003)")
    p.add_argument("--max-images", type=int, default=None,
                   help="use only this many images, spread over the folder (smoke tests)")
    p.add_argument("--save-every-min", type=float, default=10.0,
                   help="also save last.pt every this many minutes within an epoch (0: only at epoch ends)")
    add_logging_args(p)
    return p


def list_models_table() -> str:
    """The ``--list-models`` table: name, trainable parameters, Keras-style total, GFLOPs at 288x384."""
    from train.models import describe_model, list_models
    from train.models.complexity import model_table

    rows = model_table(list_models())
    lines = [f"{'name':<13} {'trainable':>12} {'keras total':>12} {'GFLOPs':>8}  description"]
    for r in rows:
        lines.append(f"{r['name']:<13} {r['trainable']:>12,} {r['keras_total']:>12,} {r['gflops']:>8.1f}  "
                     f"{describe_model(r['name'])}")
    lines.append("GFLOPs: multiply-adds x 2 of one 288x384 forward pass (convolutions and matrix products).")
    return "\n".join(lines)


def training_config(args: argparse.Namespace, device: str) -> TrainConfig:
    """The :class:`~train.trainer.TrainConfig` of parsed ``mn-train`` arguments (``device`` resolved); what the run
    records in its ``config.json`` (``train``). Raises :class:`UserError` for arguments that do not go together."""
    from train.trainer import TrainConfig

    split = args.split or ("kfold" if args.folds is not None or args.fold is not None else "paper")
    if split == "kfold" and args.fold is None:
        raise UserError("--split kfold needs --fold K (0-based), e.g. --folds 5 --fold 0")
    if split != "kfold" and (args.folds is not None or args.fold is not None):
        raise UserError(f"--folds/--fold go with --split kfold, not --split {split}")
    model_kwargs: dict = {}
    if args.variant is not None:
        if args.model not in LUNET_FAMILY:
            raise UserError(f"--variant applies to --model {' / '.join(LUNET_FAMILY)} only")
        model_kwargs["variant"] = args.variant
    if args.width is not None:
        if args.model not in LUNET_FAMILY:
            raise UserError(f"--width applies to --model {' / '.join(LUNET_FAMILY)} only")
        model_kwargs["width"] = args.width
    from train.models import list_models

    if args.model not in list_models():
        raise UserError(f"unknown model {args.model!r}; choose one of: {', '.join(list_models())}")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    return TrainConfig(
        data=args.data, model=args.model, out=args.out, model_kwargs=model_kwargs, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, size=tuple(args.size), split=split, folds=args.folds,
        fold=args.fold, val_fraction=args.val_fraction, seed=args.seed, device=device,
        lr_factor=args.lr_factor, lr_patience=args.lr_patience, lr_min_delta=args.lr_min_delta,
        early_stop=args.early_stop, augment=args.augment, amp=args.amp, encoder_weights=args.encoder_weights,
        patient_regex=args.patient_regex, max_images=args.max_images, resume=args.resume,
        save_every_min=args.save_every_min, extra_train=args.extra_train,
        crop=tuple(args.crop) if args.crop else None, crop_jitter=args.crop_jitter, workers=args.workers,
        crop_negatives=args.crop_negatives, nerve_removed=args.nerve_removed, init=args.init, init_part=args.init_part,
        max_minutes=args.max_minutes,
        amp_dtype=args.amp_dtype, consistency=args.consistency, blind=args.blind,
        speckle=args.speckle, compress=args.compress,
        lr_drops=args.lr_drops,
        swa_from=args.swa_from, loss=args.loss,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.list_models:
        print(list_models_table())
        return 0
    from train.trainer import Trainer

    if not args.data or not args.out:
        raise UserError("--data DIR and --out RUN_DIR are required (or use --list-models)")
    set_threads(args.threads)
    device = resolve_device(args.device)
    cfg = training_config(args, str(device))
    summary = Trainer(cfg, device).fit()
    swa = {"swa_checkpoint": str(Path(args.out) / "swa.pt"), "swa": summary["swa"]} if "swa" in summary else {}
    print(json.dumps({"best_checkpoint": str(Path(args.out) / "best.pt"), **summary["metrics"], **swa}))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("mn-train", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
