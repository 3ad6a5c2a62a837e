"""``mn-synth``: write a synthetic clip with known truth, for testing and demonstrating the pipeline.

    mn-synth --phantom --frames 240 --out clip.mp4 --truth clip_truth.npz
    mn-synth --image Images/Pz005-001.png [--mask Masks/Pz005-001.png] --frames 144 --out a.mp4 --truth a.npz
    mn-synth --phantom --dataset phantom-data --frames 200 [--seed 3] [--every 6]

With ``--dataset DIR`` the phantom writes training data instead of a clip, in the project's dataset
layout: ``DIR/Images/PhSSS-NNNN.png`` (grey uint8) and ``DIR/Masks/PhSSS-NNNN.png`` (0/255), for
the frames 0, K, 2K, ... of the scripted motion (``--every K``, default 6, so that consecutive
images differ), where SSS is the seed and NNNN the frame index. The default patient regex makes
``PhSSS`` the patient id: one "patient" per seed. The frames carry no "SYN" overlay. Use the
folder with ``mn-train --extra-train DIR``.

The clip is H.264 (libx264, yuv420p, CRF 18 by default so the speckle survives) at ``--fps``;
odd frame sizes are padded by one pixel at the right / bottom edge (yuv420p needs even sizes),
and the masks are padded the same way, so they always match the decoded frames. 16-bit stills
are scaled to 8 bits for the video.

The truth file (``np.savez_compressed``) holds:

* ``masks``: uint8 ``[N, H, W]``, **1 = nerve, 0 = background** (multiply by 255 for an image);
* ``fps`` (scalar), ``pts`` (float64 ``[N]``, seconds), ``index`` (int64 ``[N]``);
* the morphometry of each mask, from :func:`realtime.morphometry.measure_mask` (pixels, no
  calibration): ``area_px``, ``perimeter_px``, ``flattening_ratio``, ``circularity``,
  ``centroid_x_px``, ``centroid_y_px`` (float64 ``[N]``, NaN for an empty mask) and
  ``n_components``; absent (with a warning) while that module is not available;
* the script: for the phantom ``nerve_cx``, ``nerve_cy``, ``nerve_a``, ``nerve_b``,
  ``nerve_angle`` (the ellipse of each mask, see :class:`~realtime.sources.phantom.NerveParams`);
  for an animated still ``matrices`` (float64 ``[N, 2, 3]``, still -> frame);
* ``source``: the source's :meth:`describe` as a JSON string, ``description``: this key list.

The masks are held until the truth file is written: in memory, or, for a clip whose masks need more
than half the available memory (:data:`MEMORY_FRACTION`), in a temporary memory-mapped file beside the
truth file, removed afterwards; a clip that fits neither is refused at its first frame (exit 2).

Exit codes: 0 written; 2 bad input (a missing image, no mask, a bad number) with one line on
stderr; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.cli import add_logging_args, setup_logging
from train.errors import EXIT_OK, UserError, run_cli

log = logging.getLogger(__name__)

MORPHOMETRY_KEYS = ("area_px", "perimeter_px", "flattening_ratio", "circularity", "centroid_x_px", "centroid_y_px")
DEFAULT_EVERY = 6
TRUTH_DESCRIPTION = (
    "masks: uint8 [N,H,W], 1 = nerve, 0 = background (padded like the video to even W and H); fps; pts [N] s; "
    "index [N]; area_px, perimeter_px, flattening_ratio, circularity, centroid_x_px, centroid_y_px, n_components "
    "[N] from realtime.morphometry.measure_mask (when available); phantom: nerve_cx, nerve_cy, nerve_a, nerve_b, "
    "nerve_angle [N] (cv2.ellipse convention); animated still: matrices [N,2,3]; source: JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mn-synth",
        description="Write a synthetic ultrasound clip (H.264 .mp4) and its per-frame truth masks and morphometry "
                    "(.npz): the procedural carpal-tunnel phantom, or an annotated still animated with known motion.",
        epilog="Exit codes: 0 written, 2 bad input (a missing image, no mask, a bad number; one line on stderr), "
               "130 interrupted.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--phantom", action="store_true",
                      help="the procedural phantom: gliding, compression and probe jitter of a known nerve")
    what.add_argument("--image", type=Path, metavar="IMG",
                      help="an annotated still to animate (rigid motion, compression, fresh speckle)")
    parser.add_argument("--mask", type=Path, metavar="MASK",
                        help="the still's mask (with --image; default: ../Masks/<stem>.* in the dataset layout)")
    parser.add_argument("--frames", type=int, required=True, metavar="N", help="number of frames to write")
    parser.add_argument("--fps", type=float, default=24.0, help="frame rate of the clip and its script (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the anatomy, speckle and motion (default 0)")
    parser.add_argument("--out", type=Path, metavar="CLIP.mp4", help="the video to write (required without --dataset)")
    parser.add_argument("--truth", type=Path, metavar="TRUTH.npz",
                        help="the truth file to write (required without --dataset)")
    parser.add_argument("--dataset", type=Path, metavar="DIR",
                        help="with --phantom: write N frames as a training folder DIR/Images/PhSSS-NNNN.png and "
                             "DIR/Masks/PhSSS-NNNN.png (SSS the seed, one patient per seed) instead of a clip")
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY, metavar="K",
                        help=f"with --dataset: take frames 0, K, 2K, ... of the phantom's motion (default "
                             f"{DEFAULT_EVERY})")
    parser.add_argument("--crf", type=int, default=18,
                        help="H.264 constant rate factor, 0 (lossless) to 51 (default 18: the speckle survives)")
    add_logging_args(parser)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.dataset is not None:
        _check_dataset_args(args)
        return
    if args.out is None or args.truth is None:
        raise UserError("--out CLIP.mp4 and --truth TRUTH.npz are required (or write a training folder with "
                        "--phantom --dataset DIR)")
    if args.every != DEFAULT_EVERY:
        raise UserError("--every goes with --dataset")
    if args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if not math.isfinite(args.fps) or args.fps <= 0:
        raise UserError(f"--fps must be a positive number, got {args.fps}")
    if not 0 <= args.crf <= 51:
        raise UserError(f"--crf must be between 0 and 51, got {args.crf}")
    if args.mask is not None and args.image is None:
        raise UserError("--mask goes with --image (the phantom makes its own truth)")
    if args.out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise UserError(f"--out {args.out}: write an .mp4 (H.264), e.g. --out clip.mp4")
    if args.out.resolve() == args.truth.resolve():
        raise UserError("--out and --truth must be different files")


def _check_dataset_args(args: argparse.Namespace) -> None:
    """The ``--dataset`` mode's arguments: phantom only, no clip files, positive counts."""
    if not args.phantom:
        raise UserError("--dataset writes phantom frames: use it with --phantom")
    if args.out is not None or args.truth is not None:
        raise UserError("--dataset writes a folder of images and masks; --out/--truth are for a clip")
    if args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if args.every < 1:
        raise UserError(f"--every must be at least 1, got {args.every}")
    if args.seed < 0:
        raise UserError(f"--seed must be non-negative, got {args.seed}")


def write_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """Write ``args.frames`` phantom frames (every ``args.every``-th) as a training folder; returns a summary."""
    import cv2
    from tqdm import tqdm

    from realtime.sources.phantom import PhantomSource

    images_dir, masks_dir = args.dataset / "Images", args.dataset / "Masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    patient = f"Ph{args.seed:03d}"
    source = PhantomSource(seed=args.seed, fps=args.fps, live=False, label=False)
    areas = []
    t0 = time.perf_counter()
    for k in tqdm(range(args.frames), unit="frame", desc="mn-synth", disable=args.quiet):
        index = k * args.every
        image, truth = source.render(index)
        mask = np.where(truth > 0, np.uint8(255), np.uint8(0))
        name = f"{patient}-{index:04d}.png"
        for path, array in ((images_dir / name, image), (masks_dir / name, mask)):
            if not cv2.imwrite(str(path), array):
                raise UserError(f"cannot write {path}: check that the folder is writable and the disk not full")
        areas.append(int(np.count_nonzero(mask)))
    elapsed = time.perf_counter() - t0
    summary = {"frames": args.frames, "patient": patient, "every": args.every, "dataset": str(args.dataset),
               "ms_per_frame": 1000 * elapsed / args.frames, "area_px_min": min(areas), "area_px_max": max(areas)}
    log.info("wrote %d phantom frames of patient %s (frames 0..%d every %d) to %s/Images and %s/Masks, "
             "%.1f ms/frame, nerve area %d-%d px", args.frames, patient, (args.frames - 1) * args.every, args.every,
             args.dataset, args.dataset, summary["ms_per_frame"], min(areas), max(areas))
    return summary


def _open(args: argparse.Namespace):
    if args.phantom:
        from realtime.sources.phantom import PhantomSource

        return PhantomSource(seed=args.seed, fps=args.fps, live=False, frames=args.frames)
    from realtime.sources.animate import AnimateSource

    source = AnimateSource(args.image, args.mask, seed=args.seed, fps=args.fps, live=False, frames=args.frames)
    if source.mask is None:
        raise UserError(f"no mask for {args.image}: none at ../Masks/{args.image.stem}.*; give one with --mask")
    return source


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _measure(masks: np.ndarray) -> dict[str, np.ndarray] | None:
    """Per-frame morphometry of the 0/1 masks, or ``None`` when realtime.morphometry is missing."""
    try:
        from realtime.morphometry import measure_mask
    except ImportError as exc:
        log.warning("realtime.morphometry is not available (%s): the truth file gets masks without morphometry", exc)
        return None
    out: dict[str, list[float]] = {k: [] for k in (*MORPHOMETRY_KEYS, "n_components")}
    for mask in masks:
        m = measure_mask(mask * np.uint8(255))
        for key in out:
            value = getattr(m, key, None)
            out[key].append(float("nan") if value is None else float(value))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


MEMORY_FRACTION = 0.5
"""The truth masks stay in memory while they need at most this share of the available memory; a longer clip
keeps them in a temporary file beside the truth file (memory-mapped) until the truth file is written."""


def available_memory() -> int | None:
    """Bytes of memory available to this process (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def mask_store(shape: tuple[int, int, int], folder: Path):
    """A zeroed uint8 array of ``shape`` (frames, height, width) for the truth masks: in memory when it fits in
    :data:`MEMORY_FRACTION` of the available memory, else memory-mapped from a temporary file in ``folder`` (the
    truth file's, removed on exit however the run ends).

    Raises:
        UserError: the masks fit neither in memory nor on the disk of ``folder`` (with the sizes and a way out).
    """
    need = int(np.prod(shape, dtype=np.int64))
    memory = available_memory()
    if memory is None or need <= MEMORY_FRACTION * memory:
        yield np.zeros(shape, np.uint8)
        return
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free // 2:  # the masks and, beside them, the truth file being compressed
        raise UserError(f"--frames {shape[0]} of {shape[2]}x{shape[1]}: the truth masks need {need / 1e9:.1f} GB, "
                        f"more than half the memory available ({memory / 1e9:.1f} GB) and half the free disk of "
                        f"{folder} ({free / 1e9:.1f} GB): write fewer frames per clip (several clips with different "
                        "--seed), or free disk space there")
    log.info("the truth masks (%.1f GB) are kept in a temporary file in %s until the truth file is written",
             need / 1e9, folder)
    fd, name = tempfile.mkstemp(prefix=".mn-synth-masks-", suffix=".u8", dir=folder)
    os.close(fd)
    try:
        yield np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=shape)
    finally:
        try:
            os.unlink(name)
        except OSError as exc:  # pragma: no cover - the folder vanished
            log.debug("could not remove %s: %s", name, exc)


def synthesize(args: argparse.Namespace) -> dict[str, Any]:
    """Write the clip and the truth file; returns a summary."""
    with contextlib.ExitStack() as stack:  # a memory-mapped mask store lives until the truth file is written
        return _synthesize(args, stack)


def _synthesize(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    from tqdm import tqdm

    from realtime.sinks.video import VideoWriter

    with _open(args) as source:
        n = args.frames
        masks: np.ndarray | None = None
        pts = np.zeros(n, np.float64)
        index = np.zeros(n, np.int64)
        script: dict[str, list[Any]] = {}
        writer = VideoWriter(args.out, fps=args.fps, crf=args.crf)
        t0 = time.perf_counter()
        k = 0
        try:
            for frame in tqdm(source, total=n, unit="frame", desc="mn-synth", disable=args.quiet):
                if frame.truth is None:  # pragma: no cover - both generated sources carry truth
                    raise UserError(f"{source.name} gave frame {frame.index} without truth")
                h, w = frame.truth.shape
                hp, wp = h + h % 2, w + w % 2
                if masks is None:
                    masks = stack.enter_context(mask_store((n, hp, wp), args.truth.parent))
                mask = (frame.truth > 0).astype(np.uint8)
                masks[k] = np.pad(mask, ((0, hp - h), (0, wp - w)), mode="edge") if (hp, wp) != (h, w) else mask
                writer.write(_to_bgr8(frame.image))
                pts[k], index[k] = frame.pts, frame.index
                params = source.truth_params(frame.index)
                if args.phantom:
                    for key, value in params.as_dict().items():
                        script.setdefault(f"nerve_{key}", []).append(value)
                else:
                    script.setdefault("matrices", []).append(params.matrix)
                k += 1
        finally:
            writer.close()
        elapsed = time.perf_counter() - t0
        description = source.describe()
    if masks is None or k != n:
        raise UserError(f"the source gave {k} of the {n} frames asked for")
    arrays: dict[str, Any] = {"masks": masks, "fps": np.float64(args.fps), "pts": pts, "index": index}
    morph = _measure(masks)
    if morph is not None:
        arrays.update(morph)
    arrays.update({key: np.asarray(values, np.float64) for key, values in script.items()})
    arrays["source"] = np.asarray(json.dumps(description))
    arrays["description"] = np.asarray(TRUTH_DESCRIPTION)
    args.truth.parent.mkdir(parents=True, exist_ok=True)
    with open(args.truth, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    areas = masks.reshape(n, -1).sum(axis=1)
    summary = {"frames": n, "size": [int(masks.shape[2]), int(masks.shape[1])], "ms_per_frame": 1000 * elapsed / n,
               "area_px_min": int(areas.min()), "area_px_max": int(areas.max()),
               "morphometry": morph is not None}
    log.info("wrote %s and %s: %d frames %dx%d, %.1f ms/frame, nerve area %d-%d px%s", args.out, args.truth, n,
             summary["size"][0], summary["size"][1], summary["ms_per_frame"], summary["area_px_min"],
             summary["area_px_max"], "" if morph is not None else " (no morphometry: realtime.morphometry missing)")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, write the clip and its truth; exit code 0, or 2 for bad input."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    _check_args(args)
    if args.dataset is not None:
        write_dataset(args)
    else:
        synthesize(args)
    return EXIT_OK


def cli(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``mn-synth``."""
    return run_cli("mn-synth", main, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli())
