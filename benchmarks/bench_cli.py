"""``mn-bench``: latency and throughput of the whole pipeline, per model, backend, precision and size.

    mn-bench --models lunet --sizes 384x288 192x144 --backends onnxruntime --precisions fp32 --mode both
    mn-bench --source recording.mp4 --mode offline --batch 1 4 --frames 500
    mn-bench --engines-only --models lunet unet --backends torch onnxruntime     # Engine.infer alone
    mn-bench --soak 60 --models mn-realtime --source synthetic                   # a long live run: RSS, drops

Every combination runs the real pipeline (source -> preprocess -> infer -> postprocess -> track ->
render) over --warmup frames (left out) and then --frames measured frames, --repeats times, in the
offline mode (every frame, as fast as possible: throughput) and/or the realtime mode (the source
paced at its frame rate, newest frame only: end-to-end latency and dropped frames). A baseline row,
the naive PyTorch eager fp32 CPU loop, is measured in the same run and every other row shows its
speed-up over it. A combination that cannot run keeps its row, marked failed with the reason.

Outputs: the table on stdout; --json (default benchmarks/results/bench-HOST-DATE.json), a plot
beside it (--plot, or --no-plot), --csv with every frame's stage times.

--soak MINUTES (benchmarks.soak) is one live run of the first model instead, with every mn-live output
written, recording RSS, latency percentiles per --window-s window and dropped frames over time, and
checking them against the targets (RSS within 5 MB after the first minute, 5-minute p95 within 10 %,
no drops): JSON and PNG (default benchmarks/results/soak-MODEL-HOST-DATE.json).

Exit codes: 0 the run completed (failed rows included), 2 bad arguments or input, 130 stopped by
Ctrl-C / SIGTERM (the rows measured so far are written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

from benchmarks import engines_bench
from benchmarks import soak as soak_mode
from common.tta import TTA_MODES
from engines.registry import BUNDLED_MODELS, list_backends
from realtime.cli_common import default_model as cli_default_model
from realtime.cli_common import stop_on_signals
from realtime.fusion import DEFAULT_WEIGHT as FUSION_DEFAULT
from realtime.fusion import DEFAULT_MOTION as FUSION_MOTION_DEFAULT
from realtime.fusion import MOTIONS as FUSION_MOTIONS
from realtime.fusion import fusion_weight
from realtime.sources.phantom import DEFAULT_FPS as PHANTOM_FPS
from train.cli_util import add_logging_args, setup_logging
from train.errors import EXIT_INTERRUPTED, UserError, run_cli
from train.preprocess import DEFAULT_SIZE, parse_size

# benchmarks.bench (the pipeline, the engines, torch) is imported by the modes that run: --help needs none of it

log = logging.getLogger(__name__)

PROG = "mn-bench"
PIPELINE_DEFAULTS = {"warmup": 20, "repeats": 1}
"""Defaults of --warmup (frames) and --repeats for the pipeline benchmark; --engines-only takes
engines_bench's own (infer calls)."""


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    engine_defaults = engines_bench.DEFAULTS
    default = cli_default_model()
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].replace("``", ""),
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help=f"bundled model names, checkpoints (.pt), .onnx files, TensorRT plans or architecture names "
                        f"(random weights, speed only, the report says so; mn-train --list-models lists them). "
                        f"Default: the bundled default model once one ships, else lunet (here: "
                        f"{default if default in BUNDLED_MODELS else 'lunet'})")
    p.add_argument("--backends", nargs="+", default=None, choices=["auto", *list_backends()], metavar="BACKEND",
                   help=f"inference backends ({', '.join(['auto', *list_backends()])}); default auto (the pipeline) or "
                        f"{' '.join(engine_defaults['backends'])} (--engines-only)")
    p.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "fp16", "int8"], metavar="PRECISION",
                   help="fp32, fp16 and/or int8 (onnxruntime only: a bundled model's shipped int8 files, or "
                        "--calibrate); default the backend's own choice (the pipeline) or fp32 fp16 (--engines-only)")
    p.add_argument("--sizes", nargs="+", type=_size, default=None, metavar="WxH",
                   help=f"network input sizes; default a checkpoint's own, {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} for "
                        "architecture names (an exported .onnx or plan runs only at the size it was made for)")
    p.add_argument("--mode", choices=["offline", "realtime", "both"], default="both",
                   help="offline: every frame as fast as possible (throughput); realtime: the source paced at its "
                        "frame rate, newest frame only (latency, drops); both (default)")
    p.add_argument("--batch", nargs="+", type=int, default=None, metavar="N",
                   help="frames per inference batch, offline mode only (default 1; --engines-only: 1 8)")
    p.add_argument("--frames", type=int, default=1000, help="measured frames per combination and repeat (default 1000)")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"frames processed first and left out of every number (default {PIPELINE_DEFAULTS['warmup']}; "
                        f"--engines-only: untimed infer calls, default {engine_defaults['warmup']})")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"runs per combination, pooled (default {PIPELINE_DEFAULTS['repeats']}; --engines-only: timed "
                        f"infer calls, default {engine_defaults['repeats']})")
    p.add_argument("--source", default="synthetic",
                   help="synthetic[:SEED] (the built-in phantom, default), a video file, a device (0, /dev/video0) "
                        "or animate:IMAGE[:MASK]")
    p.add_argument("--fps", type=float, default=None,
                   help=f"rate of the phantom / requested device rate (default the source's own, "
                        f"{PHANTOM_FPS:g} for the phantom); the realtime mode is paced at it")
    p.add_argument("--roi", default=None, metavar="x,y,w,h", help="crop the scanner's image area first")
    p.add_argument("--cuda-graph", action="store_true",
                   help="replay each engine's inference as a CUDA graph (torch on CUDA, TensorRT); not the baseline")
    p.add_argument("--calibrate", default=None, metavar="DIR",
                   help="int8 of a model that ships no int8 files: frames to calibrate the quantisation on (a "
                        "dataset folder or a folder of images); bundled models with int8 files always use those")
    p.add_argument("--calibrate-images", type=int, default=None, metavar="N",
                   help="how many --calibrate frames (default 64; fewer for a large network when memory is short)")
    p.add_argument("--tta", choices=TTA_MODES, default=None,
                   help="a cascade's refiner test-time augmentation, as mn-live's --tta (default: the model's own)")
    p.add_argument("--window", choices=["tracked", "localiser"], default="tracked",
                   help="a cascade's window as mn-live places it (default tracked: the localiser is skipped while "
                        "the nerve is tracked) or by the localiser on every frame")
    p.add_argument("--presence", choices=["on", "shape", "off"], default="on",
                   help="the tracker's presence gate, as mn-live's --presence (default on)")
    p.add_argument("--fusion", type=fusion_weight, default=FUSION_DEFAULT, metavar="W",
                   help="temporal fusion as mn-live's --fusion (default %(default)s; 1 turns it off)")
    p.add_argument("--fusion-motion", choices=FUSION_MOTIONS, default=FUSION_MOTION_DEFAULT,
                   help="how fusion moves the previous map, as mn-live's --fusion-motion (default %(default)s)")
    p.add_argument("--prefetch", action="store_true",
                   help="offline mode: decode/render the source on a thread ahead of inference (never for the "
                        "baseline or the realtime mode)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="leave out the baseline rows (naive PyTorch eager fp32 CPU loop); no speed-ups then")
    p.add_argument("--threads", type=int, default=None, help="CPU inference threads (default: all cores)")
    p.add_argument("--cache-dir", default=None,
                   help="engine cache: random-weights checkpoints, ONNX exports, TensorRT plans "
                        "(default $MN_SEG_CACHE or ~/.cache/mn-seg/engines)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="results JSON (default benchmarks/results/bench-HOST-DATE.json; --engines-only: "
                        "engines-HOST-DATE.json)")
    p.add_argument("--csv", default=None, metavar="FILE", help="every processed frame's stage times, one row a frame")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="latency CDF and stage medians per combination (default: beside the JSON, .png)")
    p.add_argument("--no-plot", action="store_true", help="do not write the plot")
    p.add_argument("--engines-only", action="store_true",
                   help="time Engine.infer alone (benchmarks.engines_bench) at batch 1 and 8 instead of the pipeline")
    soak_mode.add_soak_args(p)
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from benchmarks import bench

    command = f"{PROG} {shlex.join(argv)}".strip()
    if args.engines_only:
        return engines_only(args, command)
    if args.soak is not None:
        return soak(args, command)
    settings = bench.Settings(
        source=args.source, frames=args.frames,
        warmup=PIPELINE_DEFAULTS["warmup"] if args.warmup is None else args.warmup,
        repeats=PIPELINE_DEFAULTS["repeats"] if args.repeats is None else args.repeats,
        fps=args.fps, threads=args.threads, cache_dir=args.cache_dir, prefetch=args.prefetch, roi=args.roi,
        cuda_graph=args.cuda_graph, window=args.window, presence=args.presence, fusion=args.fusion,
        fusion_motion=args.fusion_motion,
        calibrate=args.calibrate, calibrate_images=args.calibrate_images, tta=args.tta)
    settings.check()
    batches = args.batch or [1]
    if min(batches) < 1:
        raise UserError(f"--batch values must be at least 1, got {min(batches)}")
    models = args.models or [bench.default_model()]
    sizes = args.sizes or [None]
    bench.check_models(models, sizes)
    bench.check_source(settings)
    modes = bench.MODES if args.mode == "both" else (args.mode,)
    combos = bench.plan(models, args.backends or ["auto"], args.precisions or [None], sizes, modes, batches,
                        baseline=args.baseline)
    system = bench.bench_system(args.threads)
    out = Path(args.json) if args.json else engines_bench.RESULTS / f"bench-{system['host']}-{dt.date.today()}.json"
    plot = None if args.no_plot else Path(args.plot) if args.plot else out.with_suffix(".png")
    log.info("%d combinations x %d repeat(s), %d + %d frames each, source %s", len(combos), settings.repeats,
             settings.warmup, settings.frames, settings.source)
    frame_csv = bench.FrameCsv(args.csv) if args.csv else None
    runner = bench.Runner(settings, on_run=frame_csv.write if frame_csv else None)
    try:
        with stop_on_signals(runner.request_stop):
            runs = runner.run(combos)
    finally:
        if frame_csv:
            frame_csv.close()
    result = {
        "benchmark": "pipeline",
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "timing": bench.TIMING,
        "speedup": bench.SPEEDUP,
        "settings": {"source": settings.source, "frames": settings.frames, "warmup": settings.warmup,
                     "repeats": settings.repeats, "fps": settings.fps, "threads": settings.threads,
                     "prefetch": settings.prefetch, "roi": settings.roi, "modes": list(modes), "batches": batches,
                     "window": settings.window, "presence": settings.presence, "fusion": settings.fusion,
                     "fusion_motion": settings.fusion_motion,
                     "calibrate": settings.calibrate},
        "system": system,
        "runs": [r.row for r in runs],
    }
    if runner.stop_reason:
        result["interrupted"] = runner.stop_reason
    from realtime.sinks.summary import write_json

    write_json(out, result)
    written = [out]
    if plot is not None:
        from benchmarks.bench_plot import plot_runs

        if plot_runs(plot, runs, title=command):
            written.append(plot)
    if frame_csv:
        written.append(frame_csv.path)
    print(bench.system_header(system))
    print(bench.table(result["runs"]))
    print(textwrap.fill(f"timing: {bench.TIMING}", width=120))
    for path in written:
        print(f"wrote {path}")
    return EXIT_INTERRUPTED if runner.stop_reason else 0


def engines_only(args: argparse.Namespace, command: str) -> int:
    """``--engines-only``: :func:`benchmarks.engines_bench.run` per size, its table, one JSON."""
    from benchmarks import bench
    from realtime.sinks.summary import write_json
    from train.models import list_models

    defaults = engines_bench.DEFAULTS
    models = args.models or [bench.default_model()]
    not_arch = [m for m in models if m not in list_models()]
    if not_arch:
        raise UserError(f"--engines-only times architectures with random weights; {', '.join(not_arch)} "
                        f"{'is' if len(not_arch) == 1 else 'are'} not one of {', '.join(list_models())} (run the "
                        "pipeline benchmark, without --engines-only, for checkpoints and exported files)")
    backends = args.backends or defaults["backends"]
    if "auto" in backends:
        raise UserError("--engines-only compares named backends; replace auto with "
                        + " ".join(list_backends()))
    sizes = args.sizes or [DEFAULT_SIZE]
    rows: list[dict[str, Any]] = []
    for size in sizes:
        rows += engines_bench.run(
            models, backends, args.precisions or defaults["precisions"],
            args.batch or defaults["batches"], tuple(size),
            defaults["repeats"] if args.repeats is None else args.repeats,
            defaults["warmup"] if args.warmup is None else args.warmup,
            args.threads, args.cache_dir, naive=args.baseline)
    system = bench.bench_system(args.threads)
    result = {
        "benchmark": "engines",
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "what": "Engine.infer alone (preprocessed float32 batch in, probabilities out), random weights",
        "timing": "perf_counter_ns around each infer call. " + bench.INFER_TIMING,
        "threads": args.threads or system["cores"],
        "system": system,
        "runs": rows,
    }
    out = Path(args.json) if args.json else engines_bench.RESULTS / f"engines-{system['host']}-{dt.date.today()}.json"
    write_json(out, result)
    print(bench.system_header(system))
    print(engines_bench.table(rows))
    print(f"wrote {out}")
    return 0


def soak(args: argparse.Namespace, command: str) -> int:
    """``--soak MINUTES``: :func:`benchmarks.soak.run_soak` of the first model, its JSON and plot."""
    if not (args.soak > 0 and args.window_s > 0):
        raise UserError("--soak MINUTES and --window-s must be positive")
    from benchmarks import bench
    from realtime.sinks.summary import write_json

    models = args.models or [bench.default_model()]
    if len(models) > 1:
        log.warning("--soak runs one model: %s (not %s)", models[0], ", ".join(models[1:]))
    bench.check_models(models[:1], (args.sizes or [None])[:1])
    host = bench.bench_system(args.threads)["host"]
    name = Path(models[0]).stem
    out = Path(args.json) if args.json else engines_bench.RESULTS / f"soak-{name}-{host}-{dt.date.today()}.json"
    plot = None if args.no_plot else Path(args.plot) if args.plot else out.with_suffix(".png")
    result = soak_mode.run_soak(args.soak, models[0], size=args.sizes[0] if args.sizes else None, source=args.source,
                                fps=args.fps, window_s=args.window_s, threads=args.threads, cache_dir=args.cache_dir,
                                out=args.soak_out, command=command)
    write_json(out, result)
    print(soak_mode.report(result))
    print(f"wrote {out}")
    if plot is not None:
        print(f"wrote {soak_mode.plot_soak(plot, result)}")
    return EXIT_INTERRUPTED if "stopped" in result["ended_because"] else 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
