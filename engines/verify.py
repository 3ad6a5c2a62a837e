"""Export is checked, not trusted: compare an engine's masks with the fp32 PyTorch model's on real frames.

Frames come from a data folder (``Images/`` and optionally ``Masks/``), a video file (decoded
with PyAV, threaded); for the synthetic phantom, write a clip with ``mn-synth --phantom`` and
verify on that file (engines do not import the streaming pipeline, which owns the phantom). Each frame is
preprocessed with :func:`train.preprocess.preprocess_image` at the engine's size and run through
both the engine and the fp32 torch model on the CPU. Per frame: the Dice of the engine's mask
(``prob >= 0.5``) against the torch mask (:func:`train.metrics.dice_hard`, both empty = 1), the
largest absolute probability difference, and the mask area difference in pixels. The engine
passes when every frame reaches :data:`ACCEPTANCE_DICE` for its precision.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from tqdm import tqdm

from engines.base import Engine
from train.errors import DataError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import nn

log = logging.getLogger(__name__)

INT8_ACCEPTANCE_DICE = 0.97
"""Smallest per-frame mask Dice against the fp32 torch model that an int8 engine must reach: int8 rounds every
activation to 256 levels, so its mask edges move more than fp16's; 0.97 still bounds an area change to a few
percent on every frame (the measured bundled cascade reaches 0.99, :mod:`engines.quantize`)."""
ACCEPTANCE_DICE: dict[str, float] = {"fp32": 0.99, "fp16": 0.98, "int8": INT8_ACCEPTANCE_DICE}
"""Smallest per-frame mask Dice against the fp32 torch model that an engine of each precision must reach."""
MASK_THRESHOLD = 0.5
"""Probability at and above which a pixel is nerve."""
DEFAULT_FRAMES = 32
"""Frames verified by default (spread across the folder or video)."""
SYNTHETIC = "synthetic"
VIDEO_THREADS = "AUTO"
"""PyAV codec threading: frame and slice threads."""


@dataclass(frozen=True)
class VerifyFrame:
    """One native frame to verify on: a name, the image (grey or BGR) and its mask if the source has one."""

    name: str
    image: np.ndarray
    mask: np.ndarray | None = None


# -- frame sources ------------------------------------------------------------------------------
def spread_indices(total: int, count: int) -> list[int]:
    """At most ``count`` indices spread evenly over ``range(total)`` (first and last included)."""
    if total <= 0 or count <= 0:
        return []
    if count >= total:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, count)})


def folder_frames(root: str | os.PathLike, max_frames: int = DEFAULT_FRAMES) -> list[VerifyFrame]:
    """Up to ``max_frames`` images spread across ``root/Images`` (or ``root`` itself), with masks from ``root/Masks``.

    Raises:
        DataError: no readable images there.
    """
    from train.data import IMAGE_EXTENSIONS, IMAGES_DIR, MASKS_DIR, read_image, read_mask

    root = Path(root)
    images_dir = root / IMAGES_DIR if (root / IMAGES_DIR).is_dir() else root

    def listing(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.iterdir())
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS}

    images = listing(images_dir)
    if not images:
        raise DataError(f"no images in {images_dir} to verify on; pass a data folder with Images/ (e.g. "
                        f"{IMAGES_DIR}/Pz001-001.png) or a video file")
    masks = listing(root / MASKS_DIR)
    stems = list(images)
    chosen = [stems[i] for i in spread_indices(len(stems), max_frames)]
    log.info("verifying on %d of the %d images in %s", len(chosen), len(stems), images_dir)
    return [VerifyFrame(stem, read_image(images[stem]), read_mask(masks[stem]) if stem in masks else None)
            for stem in chosen]


def video_frames(path: str | os.PathLike, max_frames: int = DEFAULT_FRAMES) -> list[VerifyFrame]:
    """Up to ``max_frames`` frames spread across a video (PyAV, threaded decoding), as BGR arrays.

    When the container does not say how many frames it holds, the first ``max_frames`` are used.

    Raises:
        DataError: a file PyAV cannot open or decode, or one without a video stream / frames.
    """
    import av

    path = Path(path)
    frames: list[VerifyFrame] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream; pass a video file or a data folder")
            stream = container.streams.video[0]
            stream.thread_type = VIDEO_THREADS
            total = int(stream.frames or 0)
            wanted = set(spread_indices(total, max_frames)) if total else set(range(max_frames))
            last = max(wanted) if wanted else -1
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    frames.append(VerifyFrame(f"frame{index:06d}", frame.to_ndarray(format="bgr24")))
                if index >= last:
                    break
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot read video {path}: {exc}; pass a video FFmpeg can decode (e.g. H.264 MP4) or "
                        "a data folder with Images/") from None
    if not frames:
        raise DataError(f"no frames decoded from {path}")
    log.info("verifying on %d frames of %s", len(frames), path)
    return frames


def load_frames(source: str | os.PathLike, max_frames: int = DEFAULT_FRAMES) -> list[VerifyFrame]:
    """Frames from ``source``: a data folder or a video file (``synthetic`` explains the mn-synth route).

    Raises:
        DataError: ``synthetic``, a missing path, or a source without usable frames.
    """
    if max_frames < 1:
        raise DataError(f"the number of frames to verify must be at least 1, got {max_frames}")
    if os.fspath(source) == SYNTHETIC:
        raise DataError("to verify on the synthetic phantom, write a clip first: mn-synth --phantom --frames 32 "
                        "--out phantom.mp4 --truth phantom.npz, then pass --verify phantom.mp4")
    path = Path(source)
    if path.is_dir():
        return folder_frames(path, max_frames)
    if path.is_file():
        return video_frames(path, max_frames)
    raise DataError(f"verification source {path} does not exist; pass a data folder with Images/ (and Masks/), "
                    "or a video file (mn-synth --phantom writes a phantom clip)")


# -- comparison ---------------------------------------------------------------------------------
def acceptance_threshold(precision: str) -> float:
    """The per-frame Dice an engine of ``precision`` must reach (the lowest threshold for an unknown one)."""
    if precision in ACCEPTANCE_DICE:
        return ACCEPTANCE_DICE[precision]
    lowest = min(ACCEPTANCE_DICE.values())
    log.warning("no acceptance threshold for precision %r; using %.2f", precision, lowest)
    return lowest


def run_engine(engine: Engine, batch: np.ndarray, chunk: int = 8, progress: bool = False,
               desc: str | None = None) -> np.ndarray:
    """Probabilities for ``batch`` in the batch sizes ``engine`` accepts (a static batch is padded); ``desc``
    labels the progress bar."""
    n_static = engine.input_shape[0]
    step = n_static if n_static > 0 else min(chunk, engine.info.max_batch or chunk)
    out = []
    for start in tqdm(range(0, len(batch), step), desc=desc or f"verify {engine.backend}", unit="batch",
                      disable=not progress, leave=False):
        part = batch[start:start + step]
        real = len(part)
        if n_static > 0 and real < n_static:
            part = np.concatenate([part, np.repeat(part[-1:], n_static - real, axis=0)])
        out.append(engine.infer(np.ascontiguousarray(part))[:real])
    return np.concatenate(out)


def _reference_model(reference: "nn.Module | str | os.PathLike") -> "nn.Module":
    """The fp32 CPU model in eval mode to compare with (a copy of a given module, which stays as it was)."""
    from train.checkpoint import model_from_checkpoint

    if isinstance(reference, (str, os.PathLike)):
        return model_from_checkpoint(reference, "cpu")[0]
    return copy.deepcopy(reference).float().cpu().eval()


def verify_engine(
    engine: Engine,
    reference: "nn.Module | str | os.PathLike",
    frames: Iterable[VerifyFrame],
    *,
    threshold: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare ``engine`` with the fp32 torch model ``reference`` (a model returning logits, or a checkpoint).

    Returns a JSON-able dict: ``backend``, ``precision``, ``threshold``, ``dice_vs_torch``
    ``{min, mean}``, ``max_abs_prob_diff``, ``area_diff_px`` ``{max_abs, mean}``, ``frames`` (count),
    ``per_frame`` (name, dice, max_abs_prob_diff, areas, and Dice against the ground truth when the
    frame has a mask), ``failed_frames``, ``passed`` and ``engine`` (:meth:`Engine.describe`).
    """
    import torch

    from train.evaluate import predict
    from train.metrics import dice_hard
    from train.preprocess import preprocess_image, preprocess_mask

    frames = list(frames)
    if not frames:
        raise DataError("no frames to verify on")
    threshold = acceptance_threshold(engine.precision) if threshold is None else float(threshold)
    size = engine.size
    batch = np.stack([preprocess_image(f.image, size) for f in frames])[:, None]
    model = _reference_model(reference)
    log.info("running the fp32 torch reference on %d frames", len(frames))
    torch_prob = predict(model, batch, torch.device("cpu"), batch_size=4, progress=progress)["prob"]
    engine_prob = run_engine(engine, batch, progress=progress)[:, 0]
    per_frame = []
    for frame, p_eng, p_ref in zip(frames, engine_prob, torch_prob):
        m_eng, m_ref = p_eng >= MASK_THRESHOLD, p_ref >= MASK_THRESHOLD
        row: dict[str, Any] = {
            "name": frame.name,
            "dice": dice_hard(m_eng, m_ref),
            "max_abs_prob_diff": float(np.abs(p_eng - p_ref).max()),
            "area_engine_px": int(m_eng.sum()),
            "area_torch_px": int(m_ref.sum()),
            "area_diff_px": int(m_eng.sum()) - int(m_ref.sum()),
        }
        if frame.mask is not None:
            truth = preprocess_mask(frame.mask, size) >= MASK_THRESHOLD
            row["dice_truth_engine"] = dice_hard(m_eng, truth)
            row["dice_truth_torch"] = dice_hard(m_ref, truth)
        row["passed"] = row["dice"] >= threshold
        per_frame.append(row)
    dice = np.array([r["dice"] for r in per_frame])
    areas = np.array([r["area_diff_px"] for r in per_frame])
    failed = [r["name"] for r in per_frame if not r["passed"]]
    result = {
        "backend": engine.backend,
        "precision": engine.precision,
        "model": engine.info.config.get("model", {}).get("name", engine.name),
        "size": list(size),
        "threshold": threshold,
        "dice_vs_torch": {"min": float(dice.min()), "mean": float(dice.mean())},
        "max_abs_prob_diff": float(max(r["max_abs_prob_diff"] for r in per_frame)),
        "area_diff_px": {"max_abs": int(np.abs(areas).max()), "mean": float(areas.mean())},
        "frames": len(per_frame),
        "per_frame": per_frame,
        "failed_frames": failed,
        "passed": not failed,
        "engine": engine.describe(),
    }
    level = logging.INFO if not failed else logging.ERROR
    log.log(level, "verification of %s %s: Dice vs torch min %.4f mean %.4f (need >= %.2f), max |dprob| %.2e, "
            "%d/%d frames pass", engine.backend, engine.precision, dice.min(), dice.mean(), threshold,
            max(r["max_abs_prob_diff"] for r in per_frame), len(per_frame) - len(failed), len(per_frame))
    return result


def format_report(result: dict[str, Any]) -> str:
    """A human-readable table of :func:`verify_engine`'s result: one line per frame, then the summary."""
    has_truth = any("dice_truth_engine" in r for r in result["per_frame"])
    head = f"{'frame':<24} {'dice':>7} {'max|dp|':>9} {'area px':>8} {'d area':>7}"
    head += f" {'gt eng':>7} {'gt torch':>8}" if has_truth else ""
    lines = [head]
    for r in result["per_frame"]:
        line = (f"{r['name'][:24]:<24} {r['dice']:7.4f} {r['max_abs_prob_diff']:9.2e} {r['area_torch_px']:8d} "
                f"{r['area_diff_px']:+7d}")
        if "dice_truth_engine" in r:
            line += f" {r['dice_truth_engine']:7.4f} {r['dice_truth_torch']:8.4f}"
        lines.append(line + ("" if r["passed"] else "  FAIL"))
    d = result["dice_vs_torch"]
    verdict = "PASSED" if result["passed"] else f"FAILED on {len(result['failed_frames'])} frame(s)"
    lines.append(f"{result['backend']} {result['precision']} vs torch fp32 on {result['frames']} frames: "
                 f"Dice min {d['min']:.4f} mean {d['mean']:.4f} (need >= {result['threshold']:.2f} on every frame), "
                 f"max |prob diff| {result['max_abs_prob_diff']:.2e}, max |area diff| "
                 f"{result['area_diff_px']['max_abs']} px: {verdict}")
    return "\n".join(lines)
