"""``mn-live``: segment and measure the median nerve live, from a capture device, a file replayed at
its own pace, or the built-in phantom.

    mn-live --source /dev/video0 --model best.pt --depth-mm 30
    mn-live --source synthetic --model lunet --headless --frames 240

Live semantics: the newest frame is processed and stale ones are dropped (counted per frame in
``dropped_before``), so latency stays bounded when inference is slower than the video;
``--no-drop`` processes every frame of a file or the phantom instead.

Outputs (``--out DIR``, default ``mn-live-YYYYmmdd-HHMMSS``): measurements.csv, overlay.mp4,
summary.json, plot.png, report.html; ``--log``, ``--record``, ``--summary``, ``--plot`` choose paths
one by one. On request: ``--record-raw MKV`` (every processed frame, lossless), ``--masks FORMAT``
(png, nrrd, nifti) and ``--igtl-out PORT`` (masks and measurements served live over OpenIGTLink,
on 127.0.0.1 unless ``--igtl-bind``).
The folder belongs to the run: a second run into it is refused while this one goes on, and results
of an earlier run are not replaced without ``--overwrite``. Every output path is checked before the
first frame. The files survive a crash: CSV rows written whole, a video playable up to the last
second, summary.json rewritten (atomically) every 10 s while the run goes on.

The window (unless ``--headless``) opens at the frame's size (``--window-size``); keys: q/Esc quit, space
pause/resume, b baseline now, s snapshot PNG, r find the image area again (``--roi auto``); closing the
window quits. Paused time is not data: see ``paused_s`` and ``paused_before`` in the CSV.

Exit codes: 0 done or stopped by the user (q, closing the window, Ctrl-C, SIGTERM), 2 bad arguments or input,
3 the source failed mid-run, 4 the engine failed, 5 an output could not be written (disk full,
permission lost, folder removed: the message names the file). Every file is finalised in each case.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from common.cli import HelpFormatter, add_logging_args, setup_logging
from common.errors import UserError, run_cli
from realtime.cli_common import attach_signed_values
from realtime.cli_common import (add_engine_args, add_live_output_args, add_mask_args, add_measure_args,
                                 check_live_outputs, csv_metadata, igtl_options, live_output_paths, make_calibration,
                                 make_tracker, open_engine, output_paths, peek_first, run_metadata, stop_on_signals)
from realtime.run_folder import check_outputs, claim_folder
from realtime.fusion import make_fusion
from realtime.window_policy import make_window_policy

log = logging.getLogger(__name__)

#: The flag that names each output (for the messages of :func:`realtime.run_folder.check_outputs`).
OUTPUT_FLAGS = {"csv": "--log", "video": "--record", "summary": "--summary", "plot": "--plot"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mn-live", description=__doc__.split("\n\n")[0].replace("``", ""),
                                epilog=__doc__.split("\n\n")[-1].strip(),
                                formatter_class=HelpFormatter)
    p.add_argument("--source", default="synthetic",
                   help="/dev/videoN or a device index (a frame grabber); a video file; a DICOM file or a folder of "
                        "them (ultrasound image or cine loop; spacing and image area from the file); "
                        "igtl://HOST[:PORT][/DEVICE_NAME] (an OpenIGTLink server such as PlusServer, default port "
                        "18944; spacing from the image matrix); 'synthetic[:SEED]' (the built-in phantom); or "
                        "'animate:IMAGE[:MASK]'")
    p.add_argument("--list-models", action="store_true", help="list the bundled models and exit")
    add_engine_args(p)
    add_measure_args(p)
    p.add_argument("--fps", type=float, default=None, help="requested device frame rate / phantom rate (default 24)")
    p.add_argument("--capture-size", default=None, metavar="WxH", help="requested device frame size")
    p.add_argument("--reconnect-s", type=float, default=5.0,
                   help="how long to retry a device or an OpenIGTLink server that stops delivering before ending "
                        "the run (exit 3)")
    p.add_argument("--out", default=None, help="output folder (default mn-live-YYYYmmdd-HHMMSS)")
    p.add_argument("--log", default=None, metavar="CSV", help="per-frame CSV (default OUT/measurements.csv)")
    p.add_argument("--record", default=None, metavar="MP4", help="overlay video (default OUT/overlay.mp4)")
    p.add_argument("--summary", default=None, metavar="JSON", help="run summary (default OUT/summary.json)")
    p.add_argument("--plot", default=None, metavar="PNG", help="CSA/FR/circularity plot (default OUT/plot.png)")
    p.add_argument("--no-video", action="store_true", help="do not record the overlay video")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in the output folder (refused without it)")
    p.add_argument("--headless", action="store_true", help="no window (automatic when there is no display)")
    p.add_argument("--window-size", type=window_size, default=None, metavar="WxH",
                   help="the window's size in pixels (default: the frame's size, so the picture is shown pixel for "
                        "pixel; the window keeps the size it is given until you resize it)")
    p.add_argument("--frames", type=int, default=None, help="stop after this many processed frames")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after this many seconds")
    p.add_argument("--no-drop", action="store_true",
                   help="process every frame of a file or the phantom (no live dropping; devices always drop)")
    p.add_argument("--seed", type=int, default=None, help="phantom / animation seed")
    add_mask_args(p)
    add_live_output_args(p)
    add_logging_args(p)
    return p


def window_size(text: str) -> tuple[int, int]:
    """``--window-size WxH`` (argparse type): two whole numbers of pixels, 1 to 16384."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 1212x936, got {text!r}")
    w, h = (int(p) for p in parts)
    if not (1 <= w <= 16384 and 1 <= h <= 16384):
        raise argparse.ArgumentTypeError(f"{text}: width and height must be 1 to 16384 pixels")
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(attach_signed_values(argv))
    setup_logging(args.verbose, args.quiet)
    if args.list_models:
        from engines.catalogue import models_table, no_models_text
        from engines.registry import read_manifest

        print(models_table(read_manifest()) or no_models_text())
        return 0
    for name in ("frames", "duration"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name} must be positive")
    folder = Path(args.out or f"mn-live-{dt.datetime.now():%Y%m%d-%H%M%S}")
    paths = output_paths(folder, args.no_video)
    paths.update({k: Path(v) for k, v in (("csv", args.log), ("video", args.record), ("summary", args.summary),
                                          ("plot", args.plot)) if v})
    paths.update(live_output_paths(args, folder))
    check_live_outputs(args, paths)  # the raw recording's name, the OpenIGTLink port free: before the engine loads
    check_outputs(paths, OUTPUT_FLAGS)  # every output path checked before the engine loads and the first frame
    with claim_folder(folder, paths.values(), overwrite=args.overwrite):  # one run per folder, no silent overwrite
        return run(args, folder, paths)


def run(args: argparse.Namespace, folder: Path, paths: dict[str, Path | None]) -> int:
    """The run, once the output folder is held: source, engine, pipeline; returns the exit code."""
    # a run's modules load once the arguments are known good (--help and usage errors stay instant)
    from realtime.outputs import Outputs, output_sinks
    from realtime.pipeline import Pipeline, PipelineConfig
    from realtime.sinks.window import LiveWindow, display_available
    from realtime.sources import open_source

    capture_size = None
    if args.capture_size:
        from train.preprocess import parse_size

        capture_size = parse_size(args.capture_size)
    # the source first: a missing device or file fails at once, before the engine loads
    source = open_source(args.source, realtime=not args.no_drop, roi=args.roi, fps=args.fps, size=capture_size,
                         reconnect_s=args.reconnect_s, seed=args.seed)
    try:
        engine = open_engine(args, live=True)
    except BaseException:
        source.close()
        raise
    with engine, source:
        frames = iter(source)
        first = peek_first(source, frames)  # the frame size (for --depth-mm) is known once a frame came
        calibration = make_calibration(args, first.height, source)
        fps = source.fps or args.fps or 24.0
        meta = run_metadata(engine, calibration, str(args.source), threshold=args.threshold,
                            mode="every frame" if args.no_drop else "live")
        window = None
        if not args.headless:
            if display_available():
                window = LiveWindow(f"mn-live {args.source}", snapshot_dir=folder, size=args.window_size)
            else:
                log.info("no display: running headless")
        sinks = output_sinks(Outputs(csv=paths["csv"], video=paths["video"], summary=paths["summary"],
                                     plot=paths["plot"], report=paths["report"], raw=paths.get("raw"),
                                     masks=paths.get("masks"), masks_format=args.masks or "png",
                                     igtl=igtl_options(args)),
                             window=window, csv_header=csv_metadata(meta), warmup=5)
        pipe = Pipeline(engine, make_tracker(args, calibration, fps, source.describe().get("frames_declared"), engine),
                        sinks,
                        PipelineConfig(threshold=args.threshold, min_area_px=args.min_area, max_frames=args.frames,
                                       duration_s=args.duration, fps_hint=fps, metadata=meta,
                                       window=make_window_policy(args.window),
                                       fusion=make_fusion(args.fusion, meta["mask_threshold"], args.fusion_motion)))
        with stop_on_signals(pipe.request_stop):
            result = pipe.run(source, frames=itertools.chain([first], frames))
    report(result.summary, paths, result.reason)
    return result.exit_code


def report(summary: dict, paths: dict, reason: str) -> None:
    """The few numbers a person wants on the terminal after a run, and where the files are."""
    lat = summary.get("latency_ms", {})
    csa = summary.get("csa", {})
    unit = summary.get("units", {}).get("area", "px")
    lines = [
        f"ended: {reason}",
        f"frames processed {summary['frames_processed']}, dropped {summary['frames_dropped']}, "
        + (f"paused {_f(summary.get('paused_s'), 1)} s ({summary.get('frames_paused', 0)} frames skipped), "
           if summary.get("paused_s") else "")
        + f"status {json.dumps(summary['status_counts'])}",
        f"CSA median {_f(csa.get('median'))} {unit} (min {_f(csa.get('min'))}, max {_f(csa.get('max'))}); "
        f"FR median {_f(summary.get('flattening_ratio', {}).get('median'), 2)}",
        f"latency p50 {_f(lat.get('p50'), 1)} ms, p95 {_f(lat.get('p95'), 1)} ms, max {_f(lat.get('max'), 1)} ms; "
        f"{_f(summary.get('processing_fps'), 1)} frames/s",
    ]
    if "truth" in summary:
        t = summary["truth"]
        pct = lambda x: None if x is None else 100 * x  # noqa: E731
        lines.append(f"truth ({t['frames']} frames): Dice mean {_f(t['dice_mean'], 3)} min {_f(t['dice_min'], 3)}; "
                     f"|CSA error| median {_f(pct(t['csa_rel_error_median']), 1)} % p95 "
                     f"{_f(pct(t['csa_rel_error_p95']), 1)} %; |FR error| median {_f(t['fr_abs_error_median'], 2)}; "
                     f"centroid error median {_f(t['centroid_error_px_median'], 1)} px")
        j, tj = (t.get("jitter") or {}).get("area_rel") or {}, (t.get("truth_jitter") or {}).get("area_rel") or {}
        if j.get("n"):
            lines.append(f"area frame to frame: median {_f(pct(j['median']), 1)} % p95 {_f(pct(j['p95']), 1)} % "
                         f"(truth: median {_f(pct(tj.get('median')), 1)} % p95 {_f(pct(tj.get('p95')), 1)} %)")
    if "random weights" in (summary.get("engine_notes") or ""):
        lines.append("note: the model has random weights (an architecture name was given): the timings are real, "
                     "the masks are not; pass --model with a trained checkpoint")
    lines += [f"{k}: {v}" for k, v in paths.items() if v is not None and Path(v).exists()]
    print("\n".join(lines))


def _f(x, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("mn-live", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
