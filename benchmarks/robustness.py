"""``mn-robustness``: accuracy under the changes a real scanner brings.

A model trained on one scanner meets others: another depth (pixel size), field of view, pixel
aspect, probe tilt, gain, contrast curve, time-gain compensation, speckle, blur, and a video path
that compresses (JPEG, H.264). This report applies each acquisition perturbation of
:mod:`train.perturb` at fixed levels (:data:`train.perturb.REPORT_LEVELS` by default) to annotated
validation images and measures how the accuracy moves against the clean images, through the very
engine that runs live (:func:`engines.registry.load_engine`, via the flags ``mn-live`` takes).

Per image and condition (the clean image plus every perturbation and level): the native grey image
(float ``[H, W]`` in 0..255) and its mask (0..1) are perturbed together (geometric changes move the
mask; crop and pad change the frame size), the result is rounded to an 8-bit frame as a frame grabber
delivers it, preprocessed with :func:`train.preprocess.preprocess_image` at the engine's size (as the
live pipeline does), inferred, the probability upsampled (bilinear) to the perturbed frame, thresholded
at the model's mask threshold (0.5 unless it carries one: :mod:`train.threshold`) and compared
with the perturbed mask > 0.5: hard Dice, true and predicted area (px), the
signed relative CSA error (pred - true) / true, missed (Dice < 0.5) and empty predictions. No
post-processing (components, hole filling) is applied, as in ``mn-eval --protocol native``.

Per condition: ``n``, ``dsc_mean``, ``csa_abs_median`` (median |error|, fraction), ``csa_bias``
(mean signed error), ``missed``, ``empty``, and against the clean row ``delta_dsc``,
``delta_csa_abs_median_pts`` (percentage points) and ``within_2pts``: the goal that the CSA
|error| median stays within 2 points of the clean images' at every level.

``--window-diagnosis`` (a cascade only) tells which part fails: per condition, ``window_off`` (images
whose window is none the refiner's training could have cut around their true nerve: centred on it, shifted
by up to :data:`WINDOW_JITTER` of the half-window's side and clamped inside the frame as training clamps it,
:func:`train.window.within_jitter`) and the accuracy with the
window centred on the true nerve (``dsc_true_window``, ``csa_abs_median_true_window``,
``csa_bias_true_window``): the refiner's own share of the error, what a perfect localiser would give.

Noise is deterministic: the generator of image ``i`` (its index in the data folder's sorted list)
under perturbation ``p`` (its index in :data:`train.perturb.PERTURBATIONS`) is
``default_rng([seed, i, p])``, so every level of a perturbation sees the same noise and a rerun gives
the same numbers.

Exit codes: 0 done, 2 bad input (unknown model or perturbation, bad level, missing data folder,
unwritable output), 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from common.cli import HelpFormatter
from engines.base import Engine
from engines.cascade import REFINER_JITTER
from engines.verify import run_engine
from realtime.cli_common import add_engine_args, default_model, open_engine
from train.cli_util import add_logging_args, set_threads, setup_logging
from train.data import Sample, read_image, read_mask, scan_dataset
from train.errors import UserError, run_cli
from train.metrics import MISSED_DSC, dice_hard
from train.perturb import PERTURBATIONS, parse_levels, perturb
from train.preprocess import preprocess_image
from train.splits import DEFAULT_FOLDS, DEFAULT_SEED, make_split
from train.threshold import model_threshold
from train.window import mask_centre, within_jitter

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
"""Where the report goes by default: ``robustness-<model>-<host>-<date>.json`` and ``.md``."""
CLEAN = "none"
"""The ``perturbation`` of the clean row."""
THRESHOLD = 0.5
"""Probability at and above which a pixel is nerve; the (perturbed) mask counts above 0.5."""
WITHIN_PTS = 2.0
"""The goal: CSA |error| median within this many percentage points of the clean images'."""
PERTURBATION_IDS: dict[str, int] = {name: i for i, name in enumerate(PERTURBATIONS)}
"""A stable id per perturbation (its place in the registry) for the noise generator's seed."""
ROW_KEYS = ("perturbation", "level", "n", "n_with_truth", "dsc_mean", "dsc_std", "csa_abs_median", "csa_bias",
            "missed", "empty", "delta_dsc", "delta_csa_abs_median_pts", "within_2pts")
"""The keys of every row of the report (the clean row included)."""
PER_IMAGE_FIELDS = ("stem", "fold", "perturbation", "level", "width", "height", "dsc", "area_true_px",
                    "area_pred_px", "csa_rel_error", "missed", "empty")
"""Columns of ``--per-image``; ``csa_rel_error`` is signed, (pred - true) / true, empty when true is 0."""
WINDOW_JITTER = REFINER_JITTER
"""``--window-diagnosis``: a cascade's window is *off* when no training window of the refiner, centred on the true
nerve, shifted by up to this share of the half-window's width and height (:data:`engines.cascade.REFINER_JITTER`)
and clamped inside the frame, is that window (:func:`train.window.within_jitter`): the refiner has never seen its
nerve there. (Before 2026-12-05 the centres were compared without the clamp, so a nerve near the top edge, whose
window is clamped as in training, counted as off.)"""
WINDOW_ROW_KEYS = ("window_off", "dsc_true_window", "csa_abs_median_true_window", "csa_bias_true_window")
"""The extra keys of every row with ``--window-diagnosis``."""
WINDOW_FIELDS = ("window_off", "window_offset_x", "window_offset_y", "dsc_true_window", "csa_rel_error_true_window")
"""The extra ``--per-image`` columns with ``--window-diagnosis`` (offsets: true centroid - window centre, in the
engine's input pixels)."""


# ---------------------------------------------------------------------------------------------
# what is measured: images, conditions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One annotated image in memory: grey float32 ``[H, W]`` in 0..255, mask float32 0..1.

    ``index`` seeds its noise (the image's place in the data folder's sorted list, so an image
    gets the same noise whichever split it is evaluated in); ``fold`` names the cross-validation
    fold whose model evaluates it (``None`` outside ``--cv-dir``).
    """

    stem: str
    image: np.ndarray
    mask: np.ndarray
    index: int
    fold: int | None = None


@dataclass(frozen=True)
class Condition:
    """The clean image (``perturbation == CLEAN``, ``level is None``) or one perturbation at one level."""

    perturbation: str
    level: float | None = None

    @property
    def clean(self) -> bool:
        return self.perturbation == CLEAN

    @property
    def label(self) -> str:
        return "clean" if self.clean else f"{self.perturbation} {self.level:g}"


def conditions_for(levels: Mapping[str, Iterable[float]]) -> list[Condition]:
    """The clean condition first, then every ``(perturbation, level)`` of ``levels`` in order."""
    out = [Condition(CLEAN)]
    for name, values in levels.items():
        if name not in PERTURBATIONS:
            raise UserError(f"unknown perturbation {name!r}; choose from: {', '.join(PERTURBATIONS)}")
        for value in dict.fromkeys(float(v) for v in values):  # a level given twice is measured once
            out.append(Condition(name, value))
    return out


def check_conditions(conditions: Sequence[Condition]) -> None:
    """Apply every condition to a tiny blank image so that a level out of range fails now, not
    after minutes of work.

    Raises:
        UserError: a level the perturbation refuses (the perturbation's message).
    """
    blank = np.zeros((16, 16), np.float32)
    for cond in conditions:
        if not cond.clean:
            perturb(cond.perturbation, blank, blank, cond.level, np.random.default_rng(0))


def to_float_grey(image: np.ndarray) -> np.ndarray:
    """A grey image (as :func:`train.data.read_image` returns it) as float32 in 0..255: colour is
    converted with ``cv2.cvtColor`` BGR2GRAY, 16-bit is scaled to 8-bit (/257)."""
    image = np.asarray(image)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(np.ascontiguousarray(image), code) if image.shape[2] in (3, 4) else image[:, :, 0]
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(257.0)
    return image.astype(np.float32)


def load_items(samples: Sequence[Sample], indices: Sequence[int], fold: int | None = None,
               progress: bool = False) -> list[Item]:
    """Read ``samples`` (image grey float32, mask / 255); ``indices`` are their noise indices."""
    items = []
    for sample, index in tqdm(list(zip(samples, indices)), desc="read", unit="image", leave=False,
                              disable=not progress):
        mask = read_mask(sample.mask_path).astype(np.float32) / np.float32(255.0)
        items.append(Item(sample.stem, to_float_grey(read_image(sample.image_path)), mask, int(index), fold))
    return items


def apply_condition(item: Item, cond: Condition, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The 8-bit frame and the float mask of ``item`` under ``cond`` (deterministic in ``seed``)."""
    if cond.clean:
        image, mask = item.image, item.mask
    else:
        rng = np.random.default_rng([int(seed), int(item.index), PERTURBATION_IDS[cond.perturbation]])
        image, mask = perturb(cond.perturbation, item.image, item.mask, cond.level, rng)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


# ---------------------------------------------------------------------------------------------
# scoring (pure)
# ---------------------------------------------------------------------------------------------


def upsample(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A model-size probability map resized (``cv2.INTER_LINEAR``) to ``hw = (H, W)``."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape == tuple(hw):
        return prob
    return cv2.resize(prob, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_LINEAR)


def score(prob_native: np.ndarray, mask: np.ndarray, threshold: float = THRESHOLD) -> dict[str, Any]:
    """Accuracy of one probability map against one mask of the same size.

    ``prob >= threshold`` (the model's mask threshold, 0.5 unless it carries one) against ``mask > 0.5``:
    ``dsc`` (both empty = 1), ``area_true_px``,
    ``area_pred_px``, ``csa_rel_error`` (signed (pred - true) / true; ``None`` when the true area is 0),
    ``missed`` (Dice < :data:`train.metrics.MISSED_DSC`) and ``empty`` (nothing predicted).
    """
    pred = np.asarray(prob_native) >= threshold
    truth = np.asarray(mask) > 0.5
    dsc = dice_hard(pred, truth)
    area_true, area_pred = int(truth.sum()), int(pred.sum())
    return {
        "dsc": float(dsc),
        "area_true_px": area_true,
        "area_pred_px": area_pred,
        "csa_rel_error": (area_pred - area_true) / area_true if area_true > 0 else None,
        "missed": bool(dsc < MISSED_DSC),
        "empty": area_pred == 0,
    }


def summarise(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The per-condition numbers of a list of :func:`score` results (no deltas yet).

    ``csa_abs_median`` and ``csa_bias`` are over the images with a true area > 0 (``n_with_truth``;
    ``None`` when there is none); ``dsc_std`` is the sample SD (0 for one image).
    """
    dsc = np.array([s["dsc"] for s in scores], dtype=np.float64)
    rel = np.array([s["csa_rel_error"] for s in scores if s["csa_rel_error"] is not None], dtype=np.float64)
    return {
        "n": len(scores),
        "n_with_truth": int(rel.size),
        "dsc_mean": float(dsc.mean()) if dsc.size else None,
        "dsc_std": float(dsc.std(ddof=1)) if dsc.size > 1 else (0.0 if dsc.size else None),
        "csa_abs_median": float(np.median(np.abs(rel))) if rel.size else None,
        "csa_bias": float(rel.mean()) if rel.size else None,
        "missed": int(sum(bool(s["missed"]) for s in scores)),
        "empty": int(sum(bool(s["empty"]) for s in scores)),
        **(summarise_window(scores) if scores and "window_off" in scores[0] else {}),
    }


def summarise_window(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The :data:`WINDOW_ROW_KEYS` of scores that carry :data:`WINDOW_FIELDS`: how many windows were off, and the
    DSC mean, CSA |error| median and bias with the window on the true nerve (images with a nerve)."""
    dsc = [s["dsc_true_window"] for s in scores if s.get("dsc_true_window") is not None]
    rel = np.array([s["csa_rel_error_true_window"] for s in scores
                    if s.get("csa_rel_error_true_window") is not None], dtype=np.float64)
    return {"window_off": int(sum(bool(s.get("window_off")) for s in scores)),
            "dsc_true_window": float(np.mean(dsc)) if dsc else None,
            "csa_abs_median_true_window": float(np.median(np.abs(rel))) if rel.size else None,
            "csa_bias_true_window": float(rel.mean()) if rel.size else None}


def add_deltas(rows: list[dict[str, Any]], within_pts: float = WITHIN_PTS) -> list[dict[str, Any]]:
    """Fill ``delta_dsc``, ``delta_csa_abs_median_pts`` and ``within_2pts`` of every row against the
    clean row (the one whose ``perturbation`` is :data:`CLEAN`); in place, returns ``rows``.

    ``within_2pts`` is ``|delta_csa_abs_median_pts| <= within_pts`` (``True`` for the clean row,
    ``None`` where a median is undefined).
    """
    clean = next((r for r in rows if r["perturbation"] == CLEAN), None)
    if clean is None:
        raise ValueError("add_deltas needs the clean row")
    for row in rows:
        if row["dsc_mean"] is not None and clean["dsc_mean"] is not None:
            row["delta_dsc"] = row["dsc_mean"] - clean["dsc_mean"]
        else:
            row["delta_dsc"] = None
        if row["csa_abs_median"] is not None and clean["csa_abs_median"] is not None:
            delta = 100.0 * (row["csa_abs_median"] - clean["csa_abs_median"])
            row["delta_csa_abs_median_pts"] = delta
            row["within_2pts"] = bool(abs(delta) <= within_pts + 1e-9)
        else:
            row["delta_csa_abs_median_pts"] = None
            row["within_2pts"] = None
    return rows


def summarise_conditions(per_image: Sequence[Mapping[str, Any]], conditions: Sequence[Condition],
                         within_pts: float = WITHIN_PTS) -> list[dict[str, Any]]:
    """One row per condition (keys :data:`ROW_KEYS`) from per-image rows that carry
    ``perturbation`` and ``level`` (as :func:`measure` returns them), deltas filled."""
    groups: dict[tuple[str, float | None], list[Mapping[str, Any]]] = {
        (c.perturbation, c.level): [] for c in conditions}
    for r in per_image:
        groups[(r["perturbation"], r["level"])].append(r)
    rows = []
    for cond in conditions:
        row: dict[str, Any] = {"perturbation": cond.perturbation, "level": cond.level}
        row.update(summarise(groups[(cond.perturbation, cond.level)]))
        rows.append(row)
    add_deltas(rows, within_pts)
    return [{k: r[k] for k in ROW_KEYS + (WINDOW_ROW_KEYS if "window_off" in r else ())} for r in rows]


def all_within(rows: Sequence[Mapping[str, Any]]) -> bool:
    """True when every perturbed row is within the goal (``within_2pts is True``)."""
    return all(r["within_2pts"] is True for r in rows if r["perturbation"] != CLEAN)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def true_centre(mask: np.ndarray, size: tuple[int, int]) -> tuple[float, float] | None:
    """The true nerve's centroid ``(x, y)`` in the engine's input pixels (``size = (W, H)``): the mask resized as
    the frame is (``cv2.INTER_LINEAR``), then :func:`train.window.mask_centre`; None for an empty mask."""
    small = cv2.resize(np.asarray(mask, np.float32), (int(size[0]), int(size[1])), interpolation=cv2.INTER_LINEAR)
    return mask_centre(small)


def window_diagnosis(engine: Engine, x: np.ndarray, mask: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray,
                                                                                                   dict[str, Any]]:
    """One preprocessed frame ``x`` (``[1, 1, H, W]``) through a cascade twice: as it runs (the localiser places
    the window) and with the window centred on the true nerve. Returns the first probability map (``[H, W]``, what
    :func:`measure` scores) and the fields :data:`WINDOW_FIELDS` (native size ``hw`` for the second score)."""
    parts = engine.infer_parts(x)
    (x0, y0), (cw, ch) = parts["boxes"][0], engine.crop
    centre = true_centre(mask, engine.size)
    fields: dict[str, Any] = dict.fromkeys(WINDOW_FIELDS)
    if centre is not None:
        dx, dy = centre[0] - (x0 + cw / 2.0), centre[1] - (y0 + ch / 2.0)
        reachable = within_jitter((x0, y0), centre, (cw, ch), (x.shape[-1], x.shape[-2]), WINDOW_JITTER)
        fields.update(window_offset_x=dx, window_offset_y=dy, window_off=not reachable)
        placed, _ = engine.infer_hinted(x, [centre])
        truth_score = score(upsample(placed[0, 0], hw), mask, model_threshold(engine.info.config))
        fields.update(dsc_true_window=truth_score["dsc"], csa_rel_error_true_window=truth_score["csa_rel_error"])
    return parts["prob"][0, 0], fields


def measure(engine: Engine, items: Sequence[Item], conditions: Sequence[Condition], *, seed: int = DEFAULT_SEED,
            batch: int = 1, progress: bool = False, bar: tqdm | None = None,
            diagnose_window: bool = False) -> list[dict[str, Any]]:
    """Per-image rows (:func:`score` plus ``stem``, ``fold``, ``perturbation``, ``level``, ``width``,
    ``height``) of every item under every condition, in item-major order.

    ``batch`` frames go through the engine together (the engine must accept that batch: load it
    with ``dynamic_batch=True``; a static-batch engine is padded, see
    :func:`engines.verify.run_engine`). ``bar``: an outer progress bar to advance instead of one's own.
    ``diagnose_window`` (a cascade only): each frame also gets :data:`WINDOW_FIELDS`
    (:func:`window_diagnosis`; frames go through one at a time).
    """
    if diagnose_window and not getattr(engine, "window_hints", False):
        raise UserError(f"--window-diagnosis needs a cascade (a localiser and a refiner); {engine.name} is one "
                        "network")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    jobs = [(item, cond) for item in items for cond in conditions]
    own_bar = bar is None
    bar = bar if bar is not None else tqdm(total=len(jobs), desc="robustness", unit="image",
                                           disable=not progress)
    size = engine.size
    threshold = model_threshold(engine.info.config)
    step = max(1, int(batch))
    rows: list[dict[str, Any]] = []
    try:
        for start in range(0, len(jobs), step):
            chunk = jobs[start:start + step]
            frames, masks = zip(*(apply_condition(item, cond, seed) for item, cond in chunk))
            x = np.stack([preprocess_image(frame, size) for frame in frames])[:, None]
            if diagnose_window:
                diagnosed = [window_diagnosis(engine, x[i:i + 1], masks[i], frames[i].shape[:2])
                             for i in range(len(chunk))]
                probs = [prob for prob, _ in diagnosed]
            else:
                probs = run_engine(engine, x, chunk=step)[:, 0]
            for i, ((item, cond), frame, mask, prob) in enumerate(zip(chunk, frames, masks, probs)):
                row: dict[str, Any] = {"stem": item.stem, "fold": item.fold, "perturbation": cond.perturbation,
                                       "level": cond.level, "width": int(frame.shape[1]),
                                       "height": int(frame.shape[0])}
                row.update(score(upsample(prob, frame.shape[:2]), mask, threshold))
                if diagnose_window:
                    row.update(diagnosed[i][1])
                rows.append(row)
            bar.update(len(chunk))
    finally:
        if own_bar:
            bar.close()
    return rows


def run_report(engine: Engine, items: Sequence[Item], conditions: Sequence[Condition], *,
               seed: int = DEFAULT_SEED, batch: int = 1, progress: bool = False,
               diagnose_window: bool = False) -> dict[str, Any]:
    """Measure ``items`` under ``conditions`` with one engine and summarise.

    Returns ``n_images``, ``levels`` (``{perturbation: [levels]}``), ``rows`` (one per condition,
    keys :data:`ROW_KEYS`, the clean row first), ``all_within_2pts`` and ``per_image``.
    """
    per_image = measure(engine, items, conditions, seed=seed, batch=batch, progress=progress,
                        diagnose_window=diagnose_window)
    return report_from(per_image, conditions, n_images=len(items))


def report_from(per_image: list[dict[str, Any]], conditions: Sequence[Condition], n_images: int) -> dict[str, Any]:
    """The summary of pooled per-image rows (see :func:`run_report`)."""
    rows = summarise_conditions(per_image, conditions)
    levels: dict[str, list[float]] = {}
    for cond in conditions:
        if not cond.clean:
            levels.setdefault(cond.perturbation, []).append(cond.level)
    return {"n_images": n_images, "levels": levels, "within_pts": WITHIN_PTS, "rows": rows,
            "all_within_2pts": all_within(rows), "per_image": per_image}


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def _num(x: float | None, fmt: str, scale: float = 1.0) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x * scale, fmt)


def format_table(result: Mapping[str, Any]) -> str:
    """The report as Markdown: a heading, what was measured, one table row per condition, the verdict."""
    rows = result["rows"]
    windows = bool(rows) and "window_off" in rows[0]
    title = f"# Robustness of {result.get('model', 'the model')}"
    engine = result.get("engine") or {}
    what = []
    if result.get("data") is not None:
        what.append(f"data {result['data']} ({result.get('split', '')}, {result['n_images']} images)")
    else:
        what.append(f"{result['n_images']} images")
    if engine:
        shape = engine.get("input_shape") or []
        size = f", input {shape[3]}x{shape[2]}" if len(shape) == 4 else ""
        what.append(f"engine {engine.get('backend')} {engine.get('precision')} on {engine.get('device')}{size}")
    notes = [f"- engine note: {n}" for n in engine.get("notes") or []]
    lines = [title, "", "; ".join(what) + ".", "", *notes, *([""] if notes else []),
             f"CSA errors are relative to the true area at native resolution; goal: the CSA |error| median "
             f"within {result.get('within_pts', WITHIN_PTS):g} points of the clean images' at every level.", "",
             *([f"Window diagnosis: *window off* counts the images whose window is none the refiner's training "
                f"could have cut around the true nerve (centred on it, shifted by up to {WINDOW_JITTER:g} of the "
                "half-window's width and height, clamped inside the frame); *true window* is the same engine with "
                "the window centred on the true nerve: what a perfect localiser would give.", ""] if windows else []),
             "| perturbation | level | n | DSC | ΔDSC | CSA \\|err\\| median | Δ (pts) | CSA bias | missed | empty "
             "| within 2 pts |"
             + (" window off | true window: DSC | CSA \\|err\\| median | CSA bias |" if windows else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if windows else "")]
    for r in rows:
        clean = r["perturbation"] == CLEAN
        within = "-" if clean else {True: "yes", False: "**no**", None: "?"}[r["within_2pts"]]
        lines.append(
            f"| {'clean' if clean else r['perturbation']} | {'-' if r['level'] is None else format(r['level'], 'g')} "
            f"| {r['n']} | {_num(r['dsc_mean'], '.4f')} | {'-' if clean else _num(r['delta_dsc'], '+.4f')} "
            f"| {_num(r['csa_abs_median'], '.1f', 100)} % | "
            f"{'-' if clean else _num(r['delta_csa_abs_median_pts'], '+.1f')} "
            f"| {_num(r['csa_bias'], '+.1f', 100)} % | {r['missed']} | {r['empty']} | {within} |"
            + (f" {r['window_off']} | {_num(r['dsc_true_window'], '.4f')} | "
               f"{_num(r['csa_abs_median_true_window'], '.1f', 100)} % | "
               f"{_num(r['csa_bias_true_window'], '+.1f', 100)} % |" if windows else ""))
    outside = [f"{r['perturbation']} {r['level']:g}" for r in rows
               if r["perturbation"] != CLEAN and r["within_2pts"] is not True]
    perturbed = sum(1 for r in rows if r["perturbation"] != CLEAN)
    lines += ["", f"{perturbed - len(outside)} of {perturbed} perturbed conditions within "
                  f"{result.get('within_pts', WITHIN_PTS):g} points of the clean CSA error"
              + (f"; outside: {', '.join(outside)}." if outside else ".")]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``;
    nothing is left behind when writing fails."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def per_image_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ``--per-image`` CSV text (columns :data:`PER_IMAGE_FIELDS`, then :data:`WINDOW_FIELDS` when the rows
    have them)."""
    fields = list(PER_IMAGE_FIELDS) + (list(WINDOW_FIELDS) if rows and "window_off" in rows[0] else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()


def check_output(path: Path, flag: str) -> Path:
    """``path`` as given, after checking that its folder exists and is writable and that it is not a folder.

    Raises:
        UserError: saying which flag and how to fix it.
    """
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file name")
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: the folder {parent} does not exist; create it or give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder {parent} is not writable; give a path you can write to")
    return path


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mn-robustness",
        description="Accuracy under acquisition changes: DSC and CSA error of a model on validation images under "
                    "zoom, aspect, crop, pad, shift, rotation, gain, gamma, TGC, speckle, blur, JPEG and H.264, "
                    "each against the clean images.",
        epilog="Exit codes: 0 done, 2 bad input (unknown model or perturbation, bad level, missing data folder, "
               "unwritable output), 130 interrupted.",
        formatter_class=HelpFormatter,
    )
    add_engine_args(p)
    p.add_argument("--data", default=None,
                   help="dataset folder holding Images/ and Masks/ (with --cv-dir: default the one in "
                        "cv-summary.json)")
    p.add_argument("--split", choices=["paper", "kfold", "none"], default=None,
                   help="evaluate one side of a patient split (default paper); none = every image")
    p.add_argument("--subset", choices=["val", "train"], default="val", help="which side of --split")
    p.add_argument("--folds", type=int, default=None,
                   help=f"folds of --split kfold or of --cv-dir (default {DEFAULT_FOLDS}, or cv-summary.json's)")
    p.add_argument("--fold", type=int, default=None,
                   help="fold of --split kfold; with --cv-dir only this fold (default every fold)")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of --split kfold / --cv-dir's folds and of the noise (default {DEFAULT_SEED}, or "
                        "cv-summary.json's)")
    p.add_argument("--patient-regex", default=None, help="patient id regex (see mn-train)")
    p.add_argument("--cv-dir", default=None, metavar="DIR",
                   help="an mn-cv output folder: each DIR/fold-K/model.pt on fold K's validation patients, pooled "
                        "(instead of --model/--split)")
    p.add_argument("--perturb", nargs="+", default=None, metavar="NAME[=L1,L2]",
                   help=f"perturbations and levels, e.g. zoom=0.8,1.2 jpeg (its default levels); default all: "
                        f"{', '.join(PERTURBATIONS)}")
    p.add_argument("--batch", type=int, default=1,
                   help="frames per inference call (>1 loads a dynamic-batch engine)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="results JSON (default benchmarks/results/robustness-MODEL-HOST-DATE.json)")
    p.add_argument("--md", default=None, metavar="FILE", help="Markdown table (default: the JSON's name, .md)")
    p.add_argument("--per-image", default=None, metavar="CSV", help="also write one row per image and condition")
    p.add_argument("--window-diagnosis", action="store_true",
                   help="a cascade only: also count the windows placed off the true nerve and score the refiner "
                        "with its window on the true nerve (which part fails under each change)")
    add_logging_args(p)
    return p


def _select(samples: list[Sample], args: argparse.Namespace) -> tuple[list[int], str]:
    """Indices of the samples on the asked side of ``--split`` and the split's name."""
    if args.split == "none":
        return list(range(len(samples))), "none"
    if args.split == "kfold" and args.fold is None:
        raise UserError("--split kfold needs --fold K")
    if args.split != "kfold" and (args.folds is not None or args.fold is not None):
        raise UserError(f"--folds/--fold apply to --split kfold (or --cv-dir) only, not to --split {args.split}")
    patients = [s.patient for s in samples]
    kfold = args.split == "kfold"
    split = make_split(args.split, patients, folds=args.folds if kfold else None, fold=args.fold if kfold else None,
                       seed=args.seed)
    train_idx, val_idx = split.indices(patients)
    chosen = val_idx if args.subset == "val" else train_idx
    if len(chosen) == 0:
        raise UserError(f"split {args.split} has no {args.subset} images in {args.data}")
    return [int(i) for i in chosen], f"{split.name}:{args.subset}"


def _cv_plan(args: argparse.Namespace) -> tuple[Path, list[int], int]:
    """``(cv_dir, folds to run, fold count)``; fills ``args.data``/``args.seed`` from cv-summary.json."""
    cv_dir = Path(args.cv_dir)
    if not cv_dir.is_dir():
        raise UserError(f"--cv-dir {cv_dir} is not a folder; give the --out folder of an mn-cv run")
    if args.split is not None:
        raise UserError("--cv-dir evaluates each fold's model on that fold's validation patients; drop --split")
    if args.model is not None:
        raise UserError("--cv-dir takes each fold's model from DIR/fold-K/model.pt; drop --model")
    summary_path = cv_dir / "cv-summary.json"
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{summary_path} cannot be read ({exc}); repair it with mn-cv --aggregate") from None
    for key, flag in (("folds", "--folds"), ("seed", "--seed")):
        given, recorded = getattr(args, key), summary.get(key)
        if given is not None and recorded is not None and int(given) != int(recorded):
            raise UserError(f"{flag} {given} disagrees with {summary_path} ({key} {recorded}); drop {flag}")
        if given is None and recorded is not None:
            setattr(args, key, int(recorded))
    if args.data is None:
        args.data = summary.get("data")
        if args.data is None:
            raise UserError(f"--cv-dir {cv_dir} has no cv-summary.json naming the data; pass --data")
    folds = int(args.folds if args.folds is not None else DEFAULT_FOLDS)
    wanted = [args.fold] if args.fold is not None else list(range(folds))
    for k in wanted:
        if not 0 <= k < folds:
            raise UserError(f"--fold must be in 0..{folds - 1}, got {k}")
    present = [k for k in wanted if (cv_dir / f"fold-{k}" / "model.pt").is_file()]
    missing = sorted(set(wanted) - set(present))
    if not present:
        raise UserError(f"no fold model in {cv_dir} (expected {cv_dir}/fold-K/model.pt); run mn-cv first")
    if missing:
        log.warning("folds %s have no model.pt in %s yet: left out of the report", missing, cv_dir)
    return cv_dir, present, folds


def _output_paths(args: argparse.Namespace, stem: str) -> tuple[Path, Path, Path | None]:
    if args.json:
        json_path = check_output(Path(args.json), "--json")
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        json_path = check_output(RESULTS / f"robustness-{stem}-{socket.gethostname()}-{dt.date.today()}.json",
                                 "--json")
    md_path = check_output(Path(args.md) if args.md else json_path.with_suffix(".md"), "--md")
    per_image = check_output(Path(args.per_image), "--per-image") if args.per_image else None
    if len({json_path.resolve(), md_path.resolve(), *([per_image.resolve()] if per_image else [])}) < (
            3 if per_image else 2):
        raise UserError("--json, --md and --per-image must be different files")
    return json_path, md_path, per_image


def _safe_stem(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "model"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    started = time.monotonic()
    # the cheap checks first: perturbations and levels, numbers, folders, output files
    conditions = conditions_for(parse_levels(args.perturb))
    check_conditions(conditions)
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    cv = _cv_plan(args) if args.cv_dir else None
    if cv is None:
        args.split = args.split or "paper"
        if args.data is None:
            raise UserError("--data is required: the dataset folder holding Images/ and Masks/")
    seed = DEFAULT_SEED if args.seed is None else int(args.seed)
    args.seed = seed
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} is not a folder; give the dataset folder holding Images/ and Masks/")
    model_name = str(args.model or default_model()) if cv is None else f"cv:{cv[0]}"
    stem = _safe_stem(Path(str(args.model or default_model())).stem if cv is None else f"cv-{cv[0].resolve().name}")
    json_path, md_path, per_image_path = _output_paths(args, stem)
    if args.threads:
        set_threads(args.threads)
        cv2.setNumThreads(args.threads)

    samples = scan_dataset(args.data, patient_regex=args.patient_regex)
    progress = log.isEnabledFor(logging.INFO)
    # what each engine evaluates: [(fold, model, sample indices)]
    if cv is None:
        chosen, split_name = _select(samples, args)
        plan = [(None, args.model, chosen)]
    else:
        cv_dir, folds_present, n_folds = cv
        patients = [s.patient for s in samples]
        plan = []
        for k in folds_present:
            split = make_split("kfold", patients, folds=n_folds, fold=k, seed=seed)
            val_idx = [int(i) for i in split.indices(patients)[1]]
            if not val_idx:
                raise UserError(f"fold {k} of {n_folds} (seed {seed}) has no validation images in {args.data}")
            plan.append((k, str(cv_dir / f"fold-{k}" / "model.pt"), val_idx))
        split_name = f"cv:kfold-{n_folds} seed {seed}, folds {folds_present}, validation patients of each fold"
    n_images = sum(len(idx) for _, _, idx in plan)
    log.info("%d images x %d conditions (%d perturbations)", n_images, len(conditions),
             len({c.perturbation for c in conditions if not c.clean}))

    per_image: list[dict[str, Any]] = []
    engines: list[dict[str, Any]] = []
    bar = tqdm(total=n_images * len(conditions), desc="robustness", unit="image", disable=not progress)
    try:
        for fold, model, indices in plan:
            args.model = model
            engine = open_engine(args, batch=args.batch)
            try:
                items = load_items([samples[i] for i in indices], indices, fold=fold)
                per_image.extend(measure(engine, items, conditions, seed=seed, batch=args.batch, bar=bar,
                                         diagnose_window=args.window_diagnosis))
                desc = engine.describe()
                engines.append({"fold": fold, "model": str(model), "images": len(items), "engine": desc,
                                "threshold": model_threshold(engine.info.config)})
            finally:
                engine.close()
    finally:
        bar.close()

    report = report_from(per_image, conditions, n_images)
    from benchmarks.system import system_info

    result: dict[str, Any] = {
        "benchmark": "robustness",
        "date": dt.date.today().isoformat(),
        "command": "mn-robustness " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": model_name,
        "engine": engines[0]["engine"],
        "data": str(args.data),
        "split": split_name,
        "n_images": n_images,
        "seed": seed,
        "threshold": engines[0]["threshold"],
        "levels": report["levels"],
        "within_pts": WITHIN_PTS,
        "window_diagnosis": {"window_jitter": WINDOW_JITTER} if args.window_diagnosis else None,
        "all_within_2pts": report["all_within_2pts"],
        "rows": report["rows"],
        "folds": engines if cv is not None else None,
        "system": system_info(),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    table = format_table(result)
    write_atomic(json_path, json.dumps(result, indent=2) + "\n")
    write_atomic(md_path, table + "\n")
    log.info("wrote %s and %s", json_path, md_path)
    if per_image_path is not None:
        write_atomic(per_image_path, per_image_csv(per_image))
        log.info("wrote %s (%d rows)", per_image_path, len(per_image))
    print(table)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("mn-robustness", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
