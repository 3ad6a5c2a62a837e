"""``mn-segment``: segment and measure every frame of recorded videos, as fast as possible.

    mn-segment scan1.mp4 scan2.mp4 --model best.pt --depth-mm 30 --out results/
    mn-segment clip.mp4 --model best.pt --truth clip-truth.npz      # score against known truth

For each input writes ``OUT/<input stem>/``: measurements.csv, overlay.mp4 (unless --no-video),
summary.json, plot.png, report.html (and the masks with --masks FORMAT: masks/, masks.seq.nrrd or
masks.nii.gz); and ``OUT/batch-summary.json``: every input, its
exit code, frames and how it ended. A folder input takes every video in it. ``--out`` defaults to
``mn-segment-YYYYmmdd-HHMMSS``; the folder belongs to the run (a second run into it is refused while
this one goes on) and earlier results in it are not replaced without ``--overwrite``.

Every input that can be processed is: one that fails (unreadable, broken mid-way, an output that
cannot be written) is reported in one line as it happens, the next one goes on, and the final table
and the batch summary list them all.

Exit codes: 0 done or stopped by the user, 2 bad arguments or input, 3 a file could not be
decoded to its end (the frames before are measured and kept), 4 the engine failed, 5 an output
could not be written (disk full, permission lost: the message names the file); with several
inputs, 6 when any of them failed (the others are done).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from common.cli import HelpFormatter, add_logging_args, setup_logging
from common.errors import EXIT_BATCH_INCOMPLETE, EXIT_FAILURE, EXIT_OK, UserError, run_cli
from realtime.cli_common import attach_signed_values
from realtime.cli_common import (add_engine_args, add_mask_args, add_measure_args, csv_metadata, ensure_writable,
                                 make_calibration, make_tracker, mask_path, open_engine, output_paths, peek_first,
                                 run_metadata, stop_on_signals)
from realtime.live_cli import report
from realtime.run_folder import claim_folder
from realtime.fusion import make_fusion
from realtime.window_policy import make_window_policy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

    from realtime.frame import Frame
    from realtime.pipeline import RunResult

log = logging.getLogger(__name__)

BATCH_SUMMARY = "batch-summary.json"
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mn-segment", description=__doc__.split("\n\n")[0].replace("``", ""),
                                epilog=__doc__.split("\n\n")[-1].strip(),
                                formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, DICOM files (ultrasound images or cine loops), or folders of them (a folder "
                        "of single-frame DICOM images is one input)")
    p.add_argument("--out", default=None,
                   help="output folder, one subfolder per input (default mn-segment-YYYYmmdd-HHMMSS)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in the output folder (refused without it)")
    add_engine_args(p)
    p.add_argument("--batch", type=int, default=4, help="frames per inference batch")
    add_measure_args(p)
    p.add_argument("--no-video", action="store_true", help="do not write the overlay video")
    add_mask_args(p)
    p.add_argument("--truth", default=None, metavar="NPZ",
                   help="truth written by mn-synth: adds per-frame Dice and CSA/FR/centroid errors to the summary")
    p.add_argument("--frames", type=int, default=None, help="process at most this many frames per input")
    add_logging_args(p)
    return p


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    paths: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            from realtime.sources.dicom import segment_inputs

            found = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            found += segment_inputs(path)  # DICOM: each cine loop, or the folder as one series of images
            if not found:
                raise UserError(f"folder {path} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) and no "
                                "DICOM files")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"input {text} does not exist; mn-segment reads recorded video files, DICOM files and "
                            "folders of them (a live source, a device or igtl://, is mn-live --source's)")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise UserError("two inputs share a file name; their output folders would collide: "
                        + ", ".join(sorted({s for s in stems if stems.count(s) > 1})))
    return paths


def load_truth(path: str) -> np.ndarray:
    import numpy as np

    try:
        with np.load(path) as npz:
            masks = npz["masks"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read truth file {path} (expected an .npz from mn-synth with 'masks'): {exc}") from None
    if masks.ndim != 3:
        raise UserError(f"truth file {path}: 'masks' must be [frames, H, W], got shape {list(masks.shape)}")
    return masks


def with_truth(frames: Iterator[Frame], masks: np.ndarray) -> Iterator[Frame]:
    """Attach the truth mask of each frame (by index); a size mismatch is an input error."""
    import numpy as np

    for frame in frames:
        if frame.index < len(masks):
            truth = masks[frame.index]
            if truth.shape[:2] != frame.image.shape[:2]:
                h, w = frame.image.shape[:2]
                truth = truth[:h, :w]  # mn-synth pads odd sizes to even
                if truth.shape != (h, w):
                    raise UserError(f"truth masks are {masks.shape[2]}x{masks.shape[1]}, frames are {w}x{h}")
            frame.truth = (truth > 0).astype(np.uint8) * 255
        yield frame


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(attach_signed_values(argv))
    setup_logging(args.verbose, args.quiet)
    if args.batch < 1:
        raise UserError("--batch must be at least 1")
    if args.frames is not None and args.frames <= 0:
        raise UserError("--frames must be positive")
    inputs = expand_inputs(args.inputs)
    truth = load_truth(args.truth) if args.truth else None
    if truth is not None and len(inputs) != 1:
        raise UserError("--truth goes with exactly one input video")
    out = Path(args.out or f"mn-segment-{dt.datetime.now():%Y%m%d-%H%M%S}")
    results = [out / BATCH_SUMMARY]
    for path in inputs:
        results += [*output_paths(out / path.stem, no_video=False).values(),
                    mask_path(out / path.stem, args.masks or "png")]
    with claim_folder(out, results, overwrite=args.overwrite):  # one run per folder, no silent overwrite
        return segment_all(args, inputs, out, truth)


def segment_all(args: argparse.Namespace, inputs: list[Path], out: Path, truth: np.ndarray | None) -> int:
    """Segment every input into ``OUT/<stem>/``: a failure is logged in one line as it happens and the
    next input goes on (a single input's bad-input error is raised as is); then the final table and
    ``OUT/batch-summary.json``. Returns the exit code (the module docstring)."""
    engine = open_engine(args, batch=args.batch)
    rows: list[dict] = []
    try:
        with engine:
            for path in inputs:
                row = {"input": str(path), "folder": str(out / path.stem), "exit_code": None, "frames_processed": 0,
                       "ended_because": "interrupted"}
                rows.append(row)
                try:
                    result, stopped = segment_one(args, engine, path, out / path.stem, truth)
                except Exception as exc:  # this input fails; the next one goes on
                    code = exc.exit_code if isinstance(exc, UserError) else EXIT_FAILURE
                    text = str(exc) if isinstance(exc, UserError) else f"unexpected {type(exc).__name__}: {exc}"
                    row.update(exit_code=code, ended_because=text)
                    if len(inputs) == 1:
                        raise
                    log.error("%s failed (exit code %d): %s", path, code, text,
                              exc_info=log.isEnabledFor(logging.DEBUG))
                    continue
                row.update(exit_code=result.exit_code, frames_processed=result.summary.get("frames_processed"),
                           ended_because=result.reason)
                if result.exit_code != EXIT_OK:
                    log.error("%s failed (exit code %d): %s", path, result.exit_code, result.reason)
                if stopped:
                    break
    finally:
        for path in inputs[len(rows):]:
            rows.append({"input": str(path), "folder": None, "exit_code": None, "frames_processed": 0,
                         "ended_because": "not processed: the run was stopped before it"})
        failed = [r for r in rows if r["exit_code"] not in (EXIT_OK, None)]
        code = (rows[0]["exit_code"] or EXIT_OK) if len(inputs) == 1 else (EXIT_BATCH_INCOMPLETE if failed else EXIT_OK)
        write_batch_summary(out / BATCH_SUMMARY, rows, code)
        if len(inputs) > 1:
            print(batch_table(rows))
    return code


def batch_table(rows: list[dict]) -> str:
    """The final table of a batch: each input, its exit code, frames and how it ended."""
    width = max(len(Path(r["input"]).name) for r in rows)
    lines = [f"{'input':<{width}}  exit  frames  ended because"]
    for r in rows:
        code = "-" if r["exit_code"] is None else str(r["exit_code"])
        lines.append(f"{Path(r['input']).name:<{width}}  {code:>4}  {r['frames_processed'] or 0:>6}  "
                     f"{r['ended_because']}")
    failed = sum(1 for r in rows if r["exit_code"] not in (EXIT_OK, None))
    lines.append(f"{len(rows) - failed} of {len(rows)} inputs done" + (f", {failed} failed" if failed else ""))
    return "\n".join(lines)


def write_batch_summary(path: Path, rows: list[dict], exit_code: int) -> None:
    from realtime.sinks.summary import write_json

    write_json(path, {"exit_code": exit_code, "inputs": len(rows),
                      "failed": sum(1 for r in rows if r["exit_code"] not in (EXIT_OK, None)),
                      "finished": dt.datetime.now().isoformat(timespec="seconds"), "results": rows})


def segment_one(args: argparse.Namespace, engine, path: Path, folder: Path,
                truth: np.ndarray | None) -> tuple[RunResult, bool]:
    """Segment one video into ``folder``; returns (the run's result, whether the user stopped the run)."""
    from tqdm import tqdm

    from realtime.outputs import Outputs, output_sinks
    from realtime.pipeline import Pipeline, PipelineConfig
    from realtime.sinks.base import Callback
    from realtime.sources import open_source

    ensure_writable(folder)
    paths = output_paths(folder, args.no_video)
    source = open_source(str(path), realtime=False, roi=args.roi)
    with source:
        frames = iter(source)
        first = peek_first(source, frames)
        calibration = make_calibration(args, first.height, source)
        fps = source.fps or 24.0
        meta = run_metadata(engine, calibration, str(path), threshold=args.threshold, mode="offline, every frame",
                            batch=args.batch)
        total = source.describe().get("frames_declared")
        if args.frames:
            total = min(total, args.frames) if total else args.frames
        bar = tqdm(total=total, desc=path.name, unit="frame", disable=not log.isEnabledFor(logging.INFO))
        sinks = output_sinks(Outputs(csv=paths["csv"], video=paths["video"], summary=paths["summary"],
                                     plot=paths["plot"], report=paths["report"],
                                     masks=mask_path(folder, args.masks) if args.masks else None,
                                     masks_format=args.masks or "png"),
                             csv_header=csv_metadata(meta), warmup=args.batch,
                             extra=[Callback(lambda r: bar.update(1))])
        pipe = Pipeline(engine, make_tracker(args, calibration, fps, total, engine), sinks,
                        PipelineConfig(threshold=args.threshold, min_area_px=args.min_area, batch=args.batch,
                                       max_frames=args.frames, fps_hint=fps, metadata=meta,
                                       window=make_window_policy(args.window),
                                       fusion=make_fusion(args.fusion, meta["mask_threshold"], args.fusion_motion)))
        frames = itertools.chain([first], frames)
        if truth is not None:
            frames = with_truth(frames, truth)
        with bar, stop_on_signals(pipe.request_stop) as stopped:
            result = pipe.run(source, frames=frames)
    report(result.summary, paths, result.reason)
    return result, stopped.is_set()


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("mn-segment", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
