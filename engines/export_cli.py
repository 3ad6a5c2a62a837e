"""``mn-export``: checkpoint -> ONNX or TensorRT engine, optionally verified against the fp32 torch model.

Examples::

    mn-export --checkpoint runs/lunet/best.pt --format onnx --verify data/median-nerve --json export.json
    mn-export --checkpoint runs/lunet/best.pt --format engine --precision fp16 --verify clip.mp4
    mn-export --checkpoint runs/lunet/best.pt --precision int8 --calibrate data/median-nerve --verify clip.mp4

Exit codes: 0 exported (and verified, with ``--verify``); 1 the verification failed (the exported
file is deleted: no engine that computes other masks is kept); 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from engines.base import Engine, EngineError
from engines.export import PRECISIONS, cascade_export_message, export_onnx
from engines.quantize import DEFAULT_CALIBRATION_IMAGES, INT8
from engines.registry import DEFAULT_MAX_BATCH, LoadOptions, get_backend, load_engine, resolve_model, tensorrt_plan
from engines.verify import DEFAULT_FRAMES, format_report, load_frames, verify_engine
from train.cli_util import add_logging_args, add_size_arg, setup_logging
from train.errors import EXIT_FAILURE, EXIT_OK, UserError, run_cli

log = logging.getLogger(__name__)

FORMATS = ("onnx", "engine")
DEFAULT_PRECISION = {"onnx": "fp32", "engine": "fp16"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mn-export",
        description="Export a checkpoint to ONNX (run by onnxruntime) or a TensorRT engine, and verify that the "
                    "export computes the same masks as the fp32 PyTorch model.",
        epilog="Exit codes: 0 ok, 1 verification failed (the export is deleted), 2 bad input.",
    )
    p.add_argument("--checkpoint", default=None, metavar="CKPT",
                   help="a best.pt / last.pt written by mn-train, or a bundled model name (required, except for "
                        "--format engine --onnx)")
    p.add_argument("--onnx", default=None, metavar="ONNX",
                   help="--format engine only: build the plan from this mn-seg ONNX export instead of exporting "
                        "the checkpoint (--verify still needs --checkpoint)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx: a single self-contained .onnx; engine: a TensorRT plan (needs an NVIDIA GPU and "
                        "pip install 'mn-seg[tensorrt]')")
    p.add_argument("--precision", choices=[*PRECISIONS, INT8], default=None,
                   help="fp32, fp16 (half precision inside, float32 input/output) or int8 (--format onnx only: static "
                        "int8 quantisation for onnxruntime on the CPU, needs --calibrate); default fp32 for onnx, "
                        "fp16 for engine")
    p.add_argument("--calibrate", default=None, metavar="DIR",
                   help="--precision int8: images to calibrate the quantisation on, a dataset folder (its Images/) "
                        "or a folder of frames like those the model will see")
    p.add_argument("--calibrate-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                   help="--precision int8: how many images of --calibrate, spread evenly over the sorted names")
    add_size_arg(p, default=None)
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="static batch size (default 1); with --dynamic-batch and --format engine, the largest "
                        f"batch of the TensorRT profile (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension dynamic")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="output file (default: for onnx, CKPT_STEM-MODEL-WxH-BATCH-PRECISION.onnx beside the "
                        "checkpoint; for engine, the plan stays in the cache and is also copied here if given)")
    p.add_argument("--verify", default=None, metavar="SRC",
                   help="verify the export against the fp32 torch model on frames from SRC: a data folder with "
                        "Images/ (and Masks/), or a video file (mn-synth --phantom writes a phantom clip)")
    p.add_argument("--verify-frames", type=int, default=DEFAULT_FRAMES, metavar="N",
                   help="frames to verify on, spread across the folder or video")
    p.add_argument("--json", default=None, metavar="FILE", help="write the export and verification results as JSON")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="engine cache (default: $MN_SEG_CACHE or ~/.cache/mn-seg/engines)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the verification (default: all cores)")
    p.add_argument("--workspace-mb", type=int, default=None,
                   help="--format engine: TensorRT workspace memory limit in MiB (default: TensorRT's)")
    add_logging_args(p)
    return p


def _default_onnx_path(checkpoint: Path, config: dict, size: tuple[int, int], batch: int, dynamic: bool,
                       precision: str) -> Path:
    batch_tag = "dyn" if dynamic else f"b{batch}"
    name = config["model"]["name"]
    return checkpoint.with_name(f"{checkpoint.stem}-{name}-{size[0]}x{size[1]}-{batch_tag}-{precision}.onnx")


def _check_args(args: argparse.Namespace) -> None:
    if args.checkpoint is None and args.onnx is None:
        raise UserError("--checkpoint CKPT is required (or --onnx ONNX with --format engine)")
    if args.onnx is not None and args.format != "engine":
        raise UserError("--onnx is only for --format engine; for --format onnx pass --checkpoint")
    if args.verify is not None and args.checkpoint is None:
        raise UserError("--verify compares against the fp32 torch model: pass --checkpoint CKPT too")
    if args.batch is not None and args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    if args.verify_frames < 1:
        raise UserError(f"--verify-frames must be at least 1, got {args.verify_frames}")
    if args.precision == INT8 and args.format != "onnx":
        raise UserError("int8 is an onnxruntime-only precision: use --format onnx --precision int8 (a TensorRT "
                        "plan is built from --precision fp16 or fp32)")
    if args.precision == INT8 and args.calibrate is None:
        raise UserError("--precision int8 needs --calibrate DIR: a dataset folder (its Images/) or a folder of "
                        "frames like those the model will see, to measure the activation ranges on")
    if args.calibrate is not None and args.precision != INT8:
        raise UserError("--calibrate is for --precision int8 only")
    if args.calibrate_images < 1:
        raise UserError(f"--calibrate-images must be at least 1, got {args.calibrate_images}")
    args.bundled = False
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        source = resolve_model(args.checkpoint)  # a bundled name, or an error that lists them
        if source.format != "checkpoint":
            raise UserError(f"--checkpoint {args.checkpoint} is a bundled {source.format}, not a checkpoint")
        args.checkpoint, args.bundled = str(source.path), True


def _refuse_cascade(args: argparse.Namespace) -> None:
    """A cascade is two networks with numpy glue: it runs from its checkpoint (engines.cascade), not an export."""
    from engines.cascade import CASCADE_NAME

    if (args.checkpoint is not None and Path(args.checkpoint).is_file()
            and resolve_model(args.checkpoint).architecture == CASCADE_NAME):
        raise UserError(cascade_export_message(args.checkpoint))


@dataclass
class Exported:
    """What :func:`_export` wrote: every file (deleted if the verification fails), the ONNX, the
    file to verify and the model name."""

    files: list[Path]
    onnx: Path | None
    target: Path
    model: str | None


def _export(args: argparse.Namespace, precision: str) -> Exported:
    """Export as asked (ONNX beside the checkpoint, or a TensorRT plan in the cache copied to --out)."""
    if args.format == "onnx":
        from train.checkpoint import load_checkpoint

        checkpoint = Path(args.checkpoint)
        config = load_checkpoint(checkpoint)["config"]
        size = args.size or tuple(config["preprocessing"]["size"])
        batch = args.batch or 1
        beside = Path.cwd() / checkpoint.name if args.bundled else checkpoint  # never into the installed package
        out = Path(args.out) if args.out else _default_onnx_path(beside, config, size, batch,
                                                                 args.dynamic_batch, precision)
        if precision == INT8:
            _quantize(args, checkpoint, out, size, batch)
            return Exported([out], out, out, config["model"]["name"])
        export_onnx(checkpoint, out, precision=precision, size=size, batch=batch, dynamic_batch=args.dynamic_batch,
                    config=config)
        return Exported([out], out, out, config["model"]["name"])

    from engines.cache import read_sidecar, sidecar_path

    get_backend("tensorrt").require(precision)
    dynamic = args.dynamic_batch
    options = LoadOptions(precision=precision, size=args.size, batch=1 if dynamic else (args.batch or 1),
                          dynamic_batch=dynamic, max_batch=args.batch if dynamic else None,
                          cache_dir=args.cache_dir, workspace_mb=args.workspace_mb)
    plan = tensorrt_plan(resolve_model(args.onnx or args.checkpoint), options)
    try:
        sidecar = read_sidecar(plan)
    except EngineError as exc:
        log.warning("cannot read the sidecar of %s: %s", plan, exc)
        sidecar = {}
    files = [plan, sidecar_path(plan)]
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plan, out)
        shutil.copyfile(sidecar_path(plan), sidecar_path(out))
        files += [out, sidecar_path(out)]
        log.info("copied %s and its sidecar to %s", plan, out)
        plan = out
    onnx_path = sidecar.get("onnx_path")
    return Exported(files, Path(onnx_path) if onnx_path else None, plan, sidecar.get("model_name"))


def _quantize(args: argparse.Namespace, checkpoint: Path, out: Path, size: tuple[int, int], batch: int) -> None:
    """Write the int8 ONNX of ``checkpoint`` to ``out``: the fp32 export from the engine cache, quantised with the
    images of ``--calibrate`` (:mod:`engines.quantize`)."""
    from engines.export import cached_onnx
    from engines.quantize import calibration_set, preprocessed, quantize_onnx

    calibration = calibration_set(args.calibrate, args.calibrate_images)
    fp32, _ = cached_onnx(checkpoint, precision="fp32", size=size, batch=batch, dynamic_batch=args.dynamic_batch,
                          cache_dir=args.cache_dir)
    quantize_onnx(fp32, out, preprocessed(calibration.read(), size), identity=calibration.identity())


def _open_engine(path: Path, fmt: str, threads: int | None, cache_dir: str | None) -> Engine:
    backend = "onnxruntime" if fmt == "onnx" else "tensorrt"
    return load_engine(path, backend, threads=threads, cache_dir=cache_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    _check_args(args)
    _refuse_cascade(args)
    progress = log.isEnabledFor(logging.INFO)
    precision = args.precision or DEFAULT_PRECISION[args.format]
    frames = load_frames(args.verify, args.verify_frames) if args.verify else None  # fail before a long build

    exported = _export(args, precision)
    report: dict[str, Any] = {
        "format": args.format, "backend": "onnxruntime" if args.format == "onnx" else "tensorrt",
        "precision": precision, "model": exported.model, "checkpoint": args.checkpoint,
        "output": str(exported.target), "onnx": str(exported.onnx) if exported.onnx else None,
        "verify_source": args.verify, "dice_vs_torch": None, "max_abs_prob_diff": None, "frames": 0,
        "per_frame": [], "passed": None,
    }
    code = EXIT_OK
    if frames is not None:
        with _open_engine(exported.target, args.format, args.threads, args.cache_dir) as engine:
            result = verify_engine(engine, args.checkpoint, frames, progress=progress)
        report.update(result)
        print(format_report(result))
        if not result["passed"]:
            for path in exported.files:
                path.unlink(missing_ok=True)
            log.error("verification failed: deleted %s", ", ".join(str(p) for p in exported.files))
            report["deleted"] = [str(p) for p in exported.files]
            code = EXIT_FAILURE
    if code == EXIT_OK:
        print(f"exported {exported.target}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        log.info("wrote %s", args.json)
    return code


def cli(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``mn-export``): errors become one line and exit code 2."""
    return run_cli("mn-export", main, argv)


if __name__ == "__main__":
    sys.exit(cli())

