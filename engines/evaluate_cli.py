"""``mn-eval``: accuracy of any model on annotated images, through the same :class:`~engines.base.Engine` that
runs live.

Two ways to name the model:

- ``--checkpoint CKPT`` alone: the PyTorch model of a checkpoint, exactly as :mod:`train.evaluate` computes it
  (every flag and output as before; double networks also report output 1). A bundled model's name
  (``mn-realtime``) is accepted too and stands for its file.
- ``--model NAME|CHECKPOINT|ONNX|PLAN`` (or ``--checkpoint`` with any of ``--backend``, ``--precision``,
  ``--calibrate``): :func:`engines.load_engine` loads it as ``mn-live`` does (bundled names, cascades, ONNX
  files, TensorRT plans, int8), every image goes through ``Engine.infer`` at batch 1, and the probabilities
  are scored by the same functions (:func:`train.evaluate.score`: :func:`train.metrics.evaluate_paper` /
  :func:`~train.metrics.evaluate_native` with their CSA agreement), so the JSON has the same keys, plus
  ``engine`` (what ran, :meth:`Engine.describe`, with the notes that say why ``auto`` chose it).

Examples::

    mn-eval --model mn-realtime --data ../shared/data/median-nerve --split paper --precision int8 --json r.json
    mn-eval --checkpoint runs/lunet/best.pt --data DATA --protocol native

Exit codes: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from common.cli import setup_logging
from common.errors import UserError, run_cli
from common.tta import TTA_MODES
from engines.quantize import DEFAULT_CALIBRATION_IMAGES, INT8
from engines.registry import BUNDLED_MODELS, list_backends, resolve_model

log = logging.getLogger(__name__)

PROG = "mn-eval"
PRECISION_CHOICES: tuple[str, ...] = ("fp32", "fp16", INT8)
ENGINE_FLAGS: tuple[str, ...] = ("model", "backend", "precision", "calibrate", "tta")
"""Flags that make mn-eval run an engine rather than the checkpoint's PyTorch model."""


def build_parser() -> argparse.ArgumentParser:
    """mn-eval's flags (:func:`train.evaluate.build_parser`) and the engine's."""
    from train.evaluate import build_parser as train_parser

    p = train_parser(require_checkpoint=False)
    p.prog = PROG
    p.description = ("Evaluate a model: DSC, IoU, precision, recall and CSA error, by the paper's protocol or at "
                     "native resolution. --checkpoint alone runs the checkpoint's PyTorch model; --model runs the "
                     "engine mn-live runs (bundled name, checkpoint, .onnx or TensorRT plan, any backend and "
                     "precision).")
    p.epilog = "Exit codes: 0 done, 2 bad input."
    for action in p._actions:  # argparse offers no public way to amend a flag's help
        if action.dest == "checkpoint":
            action.help = ("a best.pt / last.pt written by mn-train, or a bundled model name (e.g. mn-realtime); "
                           "alone: its PyTorch model; with --backend/--precision/--calibrate: run as --model")
        elif action.dest == "device":
            action.help = ("cpu, cuda, cuda:N or auto; default cpu for --checkpoint alone, the engine's choice "
                           "(auto: a GPU when there is one) with --model")
        elif action.dest == "batch_size":
            action.help = "inference batch size of --checkpoint alone (an engine runs every image at batch 1, as live)"
    p.set_defaults(device=None)
    g = p.add_argument_group("engine: evaluate what runs live")
    g.add_argument("--model", default=None, metavar="MODEL",
                   help="a bundled model name, a checkpoint (.pt), an .onnx or a TensorRT plan, loaded with "
                        "engines.load_engine as mn-live loads it")
    g.add_argument("--backend", default=None, choices=["auto", *list_backends()],
                   help="inference backend (default auto: TensorRT, else torch CUDA, else onnxruntime on the CPU; "
                        "the choice is logged and written into the JSON's engine.notes)")
    g.add_argument("--precision", default=None, choices=list(PRECISION_CHOICES),
                   help="fp32, fp16 or int8 (onnxruntime only: a bundled model's shipped int8 parts, or "
                        "--calibrate); default the backend's choice")
    g.add_argument("--calibrate", default=None, metavar="DIR",
                   help="int8: images to calibrate the quantisation on (a dataset folder's Images/ or a folder of "
                        "frames); never the images being evaluated if the numbers are to mean anything")
    g.add_argument("--calibrate-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                   help="int8: how many images of --calibrate, spread evenly")
    g.add_argument("--tta", default=None, choices=TTA_MODES,
                   help="a cascade's refiner test-time augmentation, as mn-live's --tta (default: the model's own)")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="engine cache (default $MN_SEG_CACHE or ~/.cache/mn-seg/engines)")
    return p


def uses_engine(args: argparse.Namespace) -> bool:
    """Whether the flags ask for an engine (:data:`ENGINE_FLAGS`) rather than the checkpoint's PyTorch model."""
    return any(getattr(args, flag) is not None for flag in ENGINE_FLAGS)


def resolve_checkpoint(text: str) -> str:
    """``--checkpoint``: an existing path as given; a bundled model's name -> its file. Anything else is passed on
    unchanged (the checkpoint loader says what is wrong with it)."""
    if Path(text).exists() or text not in BUNDLED_MODELS:
        return text
    source = resolve_model(text)
    if source.format != "checkpoint":
        raise UserError(f"--checkpoint {text} is a bundled {source.format}, not a checkpoint; use --model {text}")
    log.info("--checkpoint %s: the bundled model %s", text, source.path)
    return str(source.path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.model is not None and args.checkpoint is not None:
        raise UserError("give the model once: --model MODEL, or --checkpoint CKPT (not both)")
    if args.model is None and args.checkpoint is None:
        raise UserError("say what to evaluate: --checkpoint CKPT (its PyTorch model) or --model MODEL (a bundled "
                        "name, checkpoint, .onnx or TensorRT plan, run as mn-live runs it)")
    if not uses_engine(args):
        from train.evaluate import run

        args.checkpoint = resolve_checkpoint(args.checkpoint)
        args.device = args.device or "cpu"
        return run(args)
    return run_engine(args)


def run_engine(args: argparse.Namespace) -> int:
    """Evaluate ``--model`` (or ``--checkpoint``) through :func:`engines.load_engine` and ``Engine.infer``."""
    from engines.registry import load_engine
    from engines.verify import run_engine as infer_all
    from train.data import load_samples
    from train.evaluate import (check_threshold_args, parse_mm_per_px, prepare_plot_folder, resolve_threshold, score,
                                select_samples, write_outputs)

    model = args.model if args.model is not None else args.checkpoint
    mm2_per_px = parse_mm_per_px(args.mm_per_px)  # the cheap checks first, as mn-eval does
    check_threshold_args(args)
    plots = prepare_plot_folder(args.plots) if args.plots else None
    if args.calibrate_images < 1:
        raise UserError(f"--calibrate-images must be at least 1, got {args.calibrate_images}")
    if args.calibrate is not None and Path(args.calibrate).resolve() == Path(args.data).resolve():
        log.warning("--calibrate %s is the folder being evaluated: the int8 ranges are then measured on images that "
                    "are also scored (calibrate on the training images instead)", args.calibrate)
    device = None if args.device in (None, "auto") else args.device
    engine = load_engine(model, backend=args.backend or "auto", precision=args.precision, device=device,
                         threads=args.threads, cache_dir=args.cache_dir, calibrate=args.calibrate,
                         calibrate_images=args.calibrate_images if args.calibrate is not None else None,
                         tta=args.tta)
    with engine:
        for note in engine.info.notes:
            log.info("engine note: %s", note)
        samples = select_samples(args)
        progress = log.isEnabledFor(logging.INFO)
        data = load_samples(samples, engine.size, progress=progress)
        prob = infer_all(engine, data.images, progress=progress, desc=f"{engine.backend} {engine.precision}")[:, 0]
        description = engine.describe()
        threshold = resolve_threshold(args.threshold, engine.info.config, args.protocol)
    result = score(prob, data, args.protocol, mm2_per_px, threshold=threshold)
    result["checkpoint"] = description.get("source") or str(model)
    result["model"] = (description.get("model") or {}).get("name") or engine.name
    result["model_arg"] = str(model)
    result["engine"] = description
    write_outputs(args, result, samples, data, {"prob": prob}, plots)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``mn-eval``): errors become one line and exit code 2."""
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
