"""Segmentation metrics and the two evaluation protocols (numpy only).

Two protocols share one per-image loop and differ only in how they binarise the maps and
how they summarise the per-image values:

``evaluate_paper`` -- exactly how every number of the paper's Table II was produced
(paper-code-spec.md §3.5, §4 item 7), at model resolution (288x384) on the *soft*
resized masks:

* DSC: per image, prediction ``>= 0.5`` vs ground truth ``> 0`` (the soft rim counts, so
  the ground truth is about 5 % larger than ``> 0.5``); both empty -> 1. Mean and pandas
  std (ddof 1) over **all** images. The paper's U-Net row and Table III dropped images with
  DSC < 0.6; that variant is reported separately as ``dsc_paper_filtered`` (with its n).
* IoU: per image, ``> 0.5`` vs ``> 0.5``, ``(inter + 1e-5) / (union + 1e-5)``; averaged
  within consecutive Keras ``evaluate`` batches of 32 in the given order, then the
  **unweighted** mean of the batch means (44 test images -> batches of 32 and 12).
* Precision / recall: Keras streaming metrics, i.e. **global pixel counts** over the
  whole set, prediction ``> 0.5`` and ground truth ``!= 0`` (``> 0``).

``evaluate_native`` -- a clean protocol at the original image size (606x468): prediction
``>= 0.5`` vs mask ``> 0`` for every metric, no smoothing, every metric averaged per image
(mean ± std, ddof 1), all images.

Both protocols also report the relative error of the nerve cross-sectional area (CSA),
counted in pixels **at native resolution** (DESIGN.md: resizing 606x468 to 384x288 is
anisotropic, so areas are measured after upsampling back). See :func:`native_areas`. The
agreement of predicted and true CSA is summarised the way clinical papers report it (bias,
SD and 95 % limits of agreement, Bland & Altman 1986; mean absolute error; images missed
with DSC < 0.5) under ``csa_agreement``: see :func:`csa_agreement`.

Conventions for empty sets (the dataset has no empty masks, §2, so these only matter for
synthetic or out-of-distribution input):

* Dice / IoU without smoothing: prediction and truth both empty -> 1.0.
* Per-image precision ``TP/(TP+FP)`` and recall ``TP/(TP+FN)`` with a zero denominator:
  1.0 when prediction and truth are both empty (perfect agreement), otherwise 0.0 (the
  image is a failure, consistent with its Dice of 0).
* Global (paper) precision / recall with a zero denominator: 0.0 (Keras ``divide_no_nan``).
* CSA relative error with an empty ground truth is undefined: the row holds ``None`` and
  the image is left out of the CSA summary (a warning is logged).

Every result is made of plain Python ``int``/``float``/``str``/``None`` values so it can be
written with ``json.dumps(..., allow_nan=False)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PAPER_THRESHOLD = 0.5
"""Probability threshold of every metric in both protocols (inclusive for DSC, strict for
the Keras IoU / precision / recall)."""

PAPER_DSC_FILTER = 0.6
"""``lib.evaluate`` printed statistics only for images with DSC >= 0.6 (§3.5)."""

KERAS_IOU_SMOOTH = 1e-5
KERAS_EVAL_BATCH = 32

MISSED_DSC = 0.5
"""An image whose DSC is below this is counted as missed in :func:`csa_agreement`."""

LOA_Z = 1.96
"""95 % limits of agreement: bias ± 1.96 SD (Bland & Altman 1986)."""

RESULT_KEYS = frozenset(
    {"n", "protocol", "dsc", "iou", "precision", "recall", "csa_rel_error", "csa_agreement", "per_image"}
)
"""Top-level keys of every result; ``evaluate_paper`` adds ``dsc_paper_filtered``, ``evaluate_native`` its
``threshold``."""

AGREEMENT_KEYS = frozenset(
    {
        "n", "n_rel",
        "bias_rel", "sd_rel", "loa_rel", "abs_rel_median", "abs_rel_mean",
        "bias_px", "sd_px", "loa_px", "mae_px",
        "mm2_per_px", "bias_mm2", "sd_mm2", "loa_mm2", "mae_mm2",
        "missed", "missed_stems",
    }
)  # fmt: skip
"""Keys of :func:`csa_agreement`'s dict (every key is always present; unknown values are ``None``)."""

ROW_KEYS = frozenset(
    {"index", "dsc", "iou", "precision", "recall", "area_true_px", "area_pred_px", "csa_rel_error"}
)
"""Keys of every ``per_image`` row; ``stem`` is added when stems are given."""


# ---------------------------------------------------------------------------------------
# Scalar metrics
# ---------------------------------------------------------------------------------------


def _check_pair(pred: np.ndarray, true: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(true, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"{what}: prediction shape {p.shape} != ground-truth shape {t.shape}")
    return p, t


def dice_hard(pred: np.ndarray, true: np.ndarray) -> float:
    """Hard Dice ``2|A∩B| / (|A|+|B|)`` of two boolean masks; both empty -> 1.0 (§3.5 ``lib.dice``)."""
    p, t = _check_pair(pred, true, "dice_hard")
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou_hard(pred: np.ndarray, true: np.ndarray, smooth: float = KERAS_IOU_SMOOTH) -> float:
    """Hard IoU ``(|A∩B| + smooth) / (|A∪B| + smooth)`` of two boolean masks.

    ``smooth = 1e-5`` is the Keras code's IoU (§3.5); with ``smooth = 0`` and both masks
    empty the result is 1.0.
    """
    p, t = _check_pair(pred, true, "iou_hard")
    inter = int(np.logical_and(p, t).sum())
    union = int(np.logical_or(p, t).sum())
    if union == 0 and smooth == 0:
        return 1.0
    return (inter + smooth) / (union + smooth)


def _agreement_ratio(num: int, den: int, both_empty: bool) -> float:
    """``num/den``; a zero denominator gives 1.0 if prediction and truth are both empty, else 0.0."""
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


def summary(values: Iterable[float]) -> dict[str, float]:
    """Mean and sample std (ddof 1, as pandas ``Series.std``) of ``values``; n < 2 -> std 0.0.

    The paper's "±" is this std over images (§4 item 13), not a spread over runs.

    Raises:
        ValueError: if ``values`` is empty.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("summary: no values")
    std = float(v.std(ddof=1)) if v.size >= 2 else 0.0
    return {"mean": float(v.mean()), "std": std}


def median(values: Iterable[float]) -> float:
    """Median of ``values`` as a plain float.

    Raises:
        ValueError: if ``values`` is empty.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("median: no values")
    return float(np.median(v))


def csa_rel_error(area_pred: float, area_true: float) -> float:
    """Relative CSA error ``|A_pred - A_true| / A_true`` (areas in any common unit).

    Raises:
        ValueError: if ``area_true <= 0`` (undefined for an empty ground truth).
    """
    if area_true <= 0:
        raise ValueError(f"csa_rel_error: the true area must be > 0, got {area_true}")
    return abs(float(area_pred) - float(area_true)) / float(area_true)


def _bias_sd_loa(diff: np.ndarray) -> tuple[float | None, float | None, list[float] | None]:
    """Mean, sample SD (ddof 1) and 95 % limits of agreement of ``diff``; n < 2 -> SD and LoA ``None``."""
    if diff.size == 0:
        return None, None, None
    bias = float(diff.mean())
    if diff.size < 2:
        return bias, None, None
    sd = float(diff.std(ddof=1))
    return bias, sd, [bias - LOA_Z * sd, bias + LOA_Z * sd]


def csa_agreement(
    area_true: Sequence[float | None],
    area_pred: Sequence[float | None],
    mm2_per_px: float | None = None,
    *,
    dsc: Sequence[float] | None = None,
    stems: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Agreement of predicted and true nerve CSA, as clinical papers report it.

    Bland-Altman statistics (Bland & Altman 1986) of the per-image difference
    ``pred - true``: the bias (mean difference), the **sample** SD (``ddof=1``) and the
    95 % limits of agreement ``bias ± 1.96 SD``; for the relative difference
    ``(pred - true) / true`` (a signed **fraction**, like :func:`csa_rel_error`, which is
    its absolute value), for the difference in pixels and, when calibrated, in mm².

    Args:
        area_true: per-image true areas in pixels; ``None`` for an image whose areas were
            not measured (it then only counts towards ``missed``).
        area_pred: per-image predicted areas in pixels, the same length.
        mm2_per_px: area of one pixel in mm² (``mm_per_px_x * mm_per_px_y``); ``None`` leaves
            the mm² keys ``None``.
        dsc: optional per-image DSC, the same length; images with DSC < :data:`MISSED_DSC`
            are counted as ``missed``.
        stems: optional per-image file stems, the same length, for ``missed_stems``.

    Returns:
        A dict with exactly the keys :data:`AGREEMENT_KEYS`, plain ``int``/``float``/``None``:

        * ``n``: images with measured areas; ``n_rel``: those with a true area > 0 (the
          relative terms leave out an empty ground truth, where they are undefined; a
          warning is logged).
        * ``bias_rel``, ``sd_rel``, ``loa_rel`` (``[low, high]``): of ``(pred - true) / true``.
        * ``abs_rel_median``, ``abs_rel_mean``: of ``|pred - true| / true``.
        * ``bias_px``, ``sd_px``, ``loa_px``, ``mae_px`` (mean ``|pred - true|``): in pixels.
        * ``mm2_per_px`` as given, and ``bias_mm2``, ``sd_mm2``, ``loa_mm2``, ``mae_mm2``: the
          pixel values times ``mm2_per_px`` (``None`` when uncalibrated).
        * ``missed``: images with DSC < 0.5 (``None`` without ``dsc``); ``missed_stems``:
          their stems (``None`` without ``dsc`` or ``stems``).

        With fewer than 2 values an SD (and its LoA) is ``None``; with none, the bias and
        means are ``None`` too.

    Raises:
        ValueError: on sequences of different lengths, a negative or non-finite area, an
            area given for only one side, or ``mm2_per_px`` that is not finite and > 0.
    """
    n_img = len(area_true)
    if len(area_pred) != n_img:
        raise ValueError(f"csa_agreement: {len(area_pred)} predicted areas for {n_img} true areas")
    _check_len(dsc, n_img, "csa_agreement: dsc")
    _check_len(stems, n_img, "csa_agreement: stems")
    if mm2_per_px is not None and not (math.isfinite(mm2_per_px) and mm2_per_px > 0):
        raise ValueError(f"csa_agreement: mm2_per_px must be finite and > 0, got {mm2_per_px}")
    pairs: list[tuple[float, float]] = []
    for i, (t, p) in enumerate(zip(area_true, area_pred)):
        if t is None and p is None:
            continue
        if t is None or p is None:
            raise ValueError(f"csa_agreement: image {i} has only one of its two areas ({t}, {p})")
        t, p = float(t), float(p)
        if not (math.isfinite(t) and math.isfinite(p) and t >= 0 and p >= 0):
            raise ValueError(f"csa_agreement: image {i}: areas must be finite and >= 0, got true {t}, pred {p}")
        pairs.append((t, p))
    a = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    true, pred = a[:, 0], a[:, 1]
    diff = pred - true
    has_truth = true > 0
    if not has_truth.all():
        log.warning(
            "csa_agreement: %d image(s) with an empty ground truth left out of the relative terms",
            int((~has_truth).sum()),
        )
    rel = diff[has_truth] / true[has_truth]

    bias_rel, sd_rel, loa_rel = _bias_sd_loa(rel)
    bias_px, sd_px, loa_px = _bias_sd_loa(diff)
    mae_px = float(np.abs(diff).mean()) if diff.size else None
    out: dict[str, Any] = {
        "n": int(diff.size),
        "n_rel": int(rel.size),
        "bias_rel": bias_rel,
        "sd_rel": sd_rel,
        "loa_rel": loa_rel,
        "abs_rel_median": float(np.median(np.abs(rel))) if rel.size else None,
        "abs_rel_mean": float(np.abs(rel).mean()) if rel.size else None,
        "bias_px": bias_px,
        "sd_px": sd_px,
        "loa_px": loa_px,
        "mae_px": mae_px,
        "mm2_per_px": None if mm2_per_px is None else float(mm2_per_px),
        "bias_mm2": None,
        "sd_mm2": None,
        "loa_mm2": None,
        "mae_mm2": None,
        "missed": None,
        "missed_stems": None,
    }
    if mm2_per_px is not None:
        bias_mm2, sd_mm2, loa_mm2 = _bias_sd_loa(diff * mm2_per_px)
        out.update(bias_mm2=bias_mm2, sd_mm2=sd_mm2, loa_mm2=loa_mm2,
                   mae_mm2=float(np.abs(diff * mm2_per_px).mean()) if diff.size else None)
    if dsc is not None:
        missed = [i for i, d in enumerate(dsc) if float(d) < MISSED_DSC]
        out["missed"] = len(missed)
        if stems is not None:
            out["missed_stems"] = [str(stems[i]) for i in missed]
    return out


# ---------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------


def _as_stack(x: Any, name: str) -> np.ndarray:
    """``[N,H,W]`` or ``[N,1,H,W]`` -> float64 ``[N,H,W]``, checked to lie in [0, 1]."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected shape [N,H,W] or [N,1,H,W], got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name}: no images")
    _check_unit_range(a, name)
    return a


def _check_unit_range(a: np.ndarray, name: str) -> None:
    if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(
            f"{name}: values must be finite and in [0, 1] (got min {np.nanmin(a):.4g}, max {np.nanmax(a):.4g}); "
            "pass probabilities (sigmoid of the logits) and masks divided by 255"
        )


def _as_2d_list(seq: Sequence[Any], name: str, unit_range: bool) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for i, x in enumerate(seq):
        a = np.asarray(x)
        if a.ndim != 2:
            raise ValueError(f"{name}[{i}]: expected a 2-D [H,W] array, got shape {a.shape}")
        if unit_range:
            a = a.astype(np.float64, copy=False)
            _check_unit_range(a, f"{name}[{i}]")
        out.append(a)
    if not out:
        raise ValueError(f"{name}: no images")
    return out


def _check_len(seq: Sequence[Any] | None, n: int, name: str) -> None:
    if seq is not None and len(seq) != n:
        raise ValueError(f"{name}: {len(seq)} entries for {n} images")


# ---------------------------------------------------------------------------------------
# Native-resolution areas
# ---------------------------------------------------------------------------------------


def native_areas(
    probs_model_res: Sequence[np.ndarray] | np.ndarray,
    native_masks: Sequence[np.ndarray],
    threshold: float = PAPER_THRESHOLD,
) -> list[tuple[int, int]]:
    """Nerve areas in pixels at native resolution: ``[(area_true_px, area_pred_px), ...]``.

    Each probability map is upsampled to its native mask's size with OpenCV
    ``INTER_LINEAR`` (``dsize = (W, H)``; the same interpolation the realtime
    post-processing and the preprocessing use, §4 item 11) and thresholded at
    ``>= threshold``; the true area is the count of ``mask > 0``. No connected-component
    filtering or hole filling is applied: this measures the raw network output.

    A map that is already at the native size is used as it is (no resampling), so
    :func:`evaluate_native` uses this same function and its areas are exactly the pixel
    counts of its DSC masks.

    Args:
        probs_model_res: ``[N,H,W]`` / ``[N,1,H,W]`` array, or a list of ``[H,W]`` maps, in [0, 1].
        native_masks: list of ``[H,W]`` masks at the original image size (uint8 0/255 or bool).
        threshold: inclusive probability threshold (0.5, like the paper's DSC).
    """
    import cv2  # heavy import where it is used (DESIGN.md)

    if isinstance(probs_model_res, np.ndarray) and probs_model_res.ndim in (3, 4):
        probs = list(_as_stack(probs_model_res, "probs_model_res"))
    else:
        probs = _as_2d_list(probs_model_res, "probs_model_res", unit_range=True)
    masks = _as_2d_list(native_masks, "native_masks", unit_range=False)
    _check_len(masks, len(probs), "native_masks")
    areas: list[tuple[int, int]] = []
    for prob, mask in zip(probs, masks):
        h, w = mask.shape
        if prob.shape == (h, w):
            up = prob  # already native: no resampling, no float32 rounding at the threshold
        else:
            up = cv2.resize(prob.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        areas.append((int(np.count_nonzero(mask > 0)), int(np.count_nonzero(up >= threshold))))
    return areas


# ---------------------------------------------------------------------------------------
# The shared per-image loop
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Threshold:
    """``x >= value`` (inclusive) or ``x > value``."""

    value: float
    inclusive: bool

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return a >= self.value if self.inclusive else a > self.value


_GE_HALF = _Threshold(PAPER_THRESHOLD, inclusive=True)
_GT_HALF = _Threshold(PAPER_THRESHOLD, inclusive=False)
_GT_ZERO = _Threshold(0.0, inclusive=False)


@dataclass(frozen=True)
class _Rule:
    """How a protocol binarises (prediction, truth) for each metric."""

    name: str
    dsc_pred: _Threshold
    dsc_true: _Threshold
    iou_pred: _Threshold
    iou_true: _Threshold
    iou_smooth: float
    pr_pred: _Threshold
    pr_true: _Threshold


_PAPER_RULE = _Rule(
    name="paper",
    dsc_pred=_GE_HALF,
    dsc_true=_GT_ZERO,
    iou_pred=_GT_HALF,
    iou_true=_GT_HALF,
    iou_smooth=KERAS_IOU_SMOOTH,
    pr_pred=_GT_HALF,
    pr_true=_GT_ZERO,
)
_NATIVE_RULE = _Rule(
    name="native",
    dsc_pred=_GE_HALF,
    dsc_true=_GT_ZERO,
    iou_pred=_GE_HALF,
    iou_true=_GT_ZERO,
    iou_smooth=0.0,
    pr_pred=_GE_HALF,
    pr_true=_GT_ZERO,
)


@dataclass
class _PixelCounts:
    """Global (whole-set) confusion counts for the precision/recall binarisation."""

    tp: int = 0
    fp: int = 0
    fn: int = 0


def _per_image(
    probs: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    rule: _Rule,
    areas: Sequence[tuple[int, int]] | None,
    stems: Sequence[str] | None,
) -> tuple[list[dict[str, Any]], _PixelCounts]:
    """Per-image rows (the ``per_image`` contract) and the global pixel counts."""
    rows: list[dict[str, Any]] = []
    counts = _PixelCounts()
    for i, (prob, truth) in enumerate(zip(probs, truths)):
        if prob.shape != truth.shape:
            raise ValueError(f"image {i}: probability shape {prob.shape} != mask shape {truth.shape}")
        pp, pt = rule.pr_pred(prob), rule.pr_true(truth)
        tp = int(np.count_nonzero(pp & pt))
        n_pred, n_true = int(np.count_nonzero(pp)), int(np.count_nonzero(pt))
        counts.tp += tp
        counts.fp += n_pred - tp
        counts.fn += n_true - tp
        both_empty = n_pred == 0 and n_true == 0
        row: dict[str, Any] = {
            "index": i,
            "dsc": dice_hard(rule.dsc_pred(prob), rule.dsc_true(truth)),
            "iou": iou_hard(rule.iou_pred(prob), rule.iou_true(truth), smooth=rule.iou_smooth),
            "precision": _agreement_ratio(tp, n_pred, both_empty),
            "recall": _agreement_ratio(tp, n_true, both_empty),
            "area_true_px": None,
            "area_pred_px": None,
            "csa_rel_error": None,
        }
        if areas is not None:
            a_true, a_pred = int(areas[i][0]), int(areas[i][1])
            row["area_true_px"], row["area_pred_px"] = a_true, a_pred
            if a_true > 0:
                row["csa_rel_error"] = csa_rel_error(a_pred, a_true)
            else:
                log.warning("image %d: empty ground truth, CSA relative error undefined (left out)", i)
        if stems is not None:
            row["stem"] = str(stems[i])
        rows.append(row)
    return rows, counts


def _csa_summary(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    errors = [r["csa_rel_error"] for r in rows if r["csa_rel_error"] is not None]
    if not errors:
        return {"median": None, "mean": None}
    return {"median": median(errors), "mean": float(np.mean(errors))}


def _column(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in rows]


def _agreement(rows: Sequence[dict[str, Any]], mm2_per_px: float | None) -> dict[str, Any]:
    """:func:`csa_agreement` of the per-image rows (native-resolution areas, DSC, stems)."""
    stems = [r["stem"] for r in rows] if rows and all("stem" in r for r in rows) else None
    return csa_agreement(
        _column(rows, "area_true_px"), _column(rows, "area_pred_px"), mm2_per_px,
        dsc=_column(rows, "dsc"), stems=stems,
    )  # fmt: skip


def _result(
    rule: _Rule,
    rows: list[dict[str, Any]],
    dsc: dict[str, float],
    iou: dict[str, float],
    precision: dict[str, float],
    recall: dict[str, float],
    mm2_per_px: float | None = None,
) -> dict[str, Any]:
    return {
        "n": len(rows),
        "protocol": rule.name,
        "dsc": dsc,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "csa_rel_error": _csa_summary(rows),
        "csa_agreement": _agreement(rows, mm2_per_px),
        "per_image": rows,
    }


# ---------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------


def keras_batch_mean(values: Sequence[float], batch_size: int = KERAS_EVAL_BATCH) -> float:
    """Unweighted mean of the means of consecutive batches of ``batch_size`` (Keras ``evaluate``).

    A Keras metric function that returns one scalar per batch is averaged over batches
    with weight 1 each, so a short last batch weighs as much as a full one (§3.5).
    """
    if batch_size < 1:
        raise ValueError(f"keras batch size must be >= 1, got {batch_size}")
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("keras_batch_mean: no values")
    batch_means = [float(v[s : s + batch_size].mean()) for s in range(0, v.size, batch_size)]
    return float(np.mean(batch_means))


def evaluate_paper(
    probs: np.ndarray,
    soft_masks: np.ndarray,
    areas: Sequence[tuple[int, int]] | None = None,
    keras_batch: int = KERAS_EVAL_BATCH,
    *,
    native_masks: Sequence[np.ndarray] | None = None,
    stems: Sequence[str] | None = None,
    mm2_per_px: float | None = None,
) -> dict[str, Any]:
    """The paper's Table II protocol at model resolution (paper-code-spec.md §3.5, §4 item 7).

    Args:
        probs: ``[N,H,W]`` or ``[N,1,H,W]`` probabilities in [0, 1] at model resolution, in
            the evaluation order (the test set sorted by file name; the order fixes the
            Keras batches of the IoU).
        soft_masks: the same shape, the bilinearly resized masks divided by 255 (soft edges,
            no re-binarisation, §3.1).
        areas: optional ``[(area_true_native_px, area_pred_native_px), ...]`` for the CSA
            error, already counted at native resolution.
        keras_batch: the Keras ``evaluate`` batch size that groups the IoU (32).
        native_masks: optional native-size masks; the areas are then computed with
            :func:`native_areas` (upsampled probability ``>= 0.5`` vs mask ``> 0``). This is
            the preferred way. Give either ``areas`` or ``native_masks``, not both. With
            neither, the area fields and the CSA summary are ``None`` (and a warning is logged).
        stems: optional file stems, copied into the rows as ``"stem"``.
        mm2_per_px: optional area of one native pixel in mm², for the mm² values of
            ``csa_agreement``.

    Returns:
        The result dict (module docstring; keys :data:`RESULT_KEYS` plus
        ``"dsc_paper_filtered"``). For this protocol:

        * ``dsc``: mean ± std (ddof 1) of the per-image DSC over **all** images.
        * ``dsc_paper_filtered``: ``{"mean", "std", "n"}`` over images with DSC >= 0.6
          (the U-Net and Table III figures); mean/std ``None`` if no image passes.
        * ``iou.mean``: the Keras batch-averaged value (the Table II number);
          ``iou.std``: std of the per-image IoU.
        * ``precision.mean`` / ``recall.mean``: the global pixel-count values (the Table II
          numbers); their ``std``: std of the per-image values (information only).
        * per-image rows hold the per-image DSC, IoU, precision and recall with the same
          binarisations.
    """
    p = _as_stack(probs, "probs")
    m = _as_stack(soft_masks, "soft_masks")
    if p.shape != m.shape:
        raise ValueError(f"evaluate_paper: probs shape {p.shape} != soft_masks shape {m.shape}")
    n = p.shape[0]
    if areas is not None and native_masks is not None:
        raise ValueError("evaluate_paper: give either areas or native_masks, not both")
    if native_masks is not None:
        areas = native_areas(p, native_masks)
    elif areas is None:
        log.warning("evaluate_paper: no native masks or areas given; the CSA error is not computed")
    _check_len(areas, n, "areas")
    _check_len(stems, n, "stems")

    rows, counts = _per_image(p, m, _PAPER_RULE, areas, stems)
    dscs = _column(rows, "dsc")
    ious = _column(rows, "iou")

    kept = [d for d in dscs if d >= PAPER_DSC_FILTER]
    if kept:
        filtered: dict[str, Any] = {**summary(kept), "n": len(kept)}
    else:
        log.warning("evaluate_paper: no image has DSC >= %.1f; the filtered DSC is undefined", PAPER_DSC_FILTER)
        filtered = {"mean": None, "std": None, "n": 0}

    precision = _agreement_ratio(counts.tp, counts.tp + counts.fp, both_empty=False)
    recall = _agreement_ratio(counts.tp, counts.tp + counts.fn, both_empty=False)
    result = _result(
        _PAPER_RULE,
        rows,
        dsc=summary(dscs),
        iou={"mean": keras_batch_mean(ious, keras_batch), "std": summary(ious)["std"]},
        precision={"mean": precision, "std": summary(_column(rows, "precision"))["std"]},
        recall={"mean": recall, "std": summary(_column(rows, "recall"))["std"]},
        mm2_per_px=mm2_per_px,
    )
    result["dsc_paper_filtered"] = filtered
    return result


def evaluate_native(
    probs_native: Sequence[np.ndarray],
    masks_native: Sequence[np.ndarray],
    *,
    stems: Sequence[str] | None = None,
    mm2_per_px: float | None = None,
    threshold: float = PAPER_THRESHOLD,
) -> dict[str, Any]:
    """The clean protocol at native resolution (paper-code-spec.md §4 item 7, DESIGN.md).

    Every metric uses prediction ``>= threshold`` (0.5 unless the model carries a threshold calibrated by
    cross-validation, :mod:`train.threshold`) vs mask ``> 0``; DSC, IoU (no smoothing),
    precision and recall are computed per image and summarised as mean ± std (ddof 1) over
    all images. Empty-set conventions are in the module docstring. Areas for the CSA error
    are the pixel counts of the same two masks (:func:`native_areas` at identity size).

    Args:
        probs_native: list of ``[H,W]`` probability maps in [0, 1] at each image's original
            size (upsampled from the model output by the caller).
        masks_native: list of ``[H,W]`` uint8 (0/255) or bool masks at the same sizes.
        stems: optional file stems, copied into the rows as ``"stem"``.
        mm2_per_px: optional area of one pixel in mm², for the mm² values of ``csa_agreement``.
        threshold: the prediction's inclusive threshold, recorded as ``result["threshold"]``.
    """
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"evaluate_native: threshold must be in (0, 1), got {threshold}")
    probs = _as_2d_list(probs_native, "probs_native", unit_range=True)
    masks = _as_2d_list(masks_native, "masks_native", unit_range=False)
    n = len(probs)
    _check_len(masks, n, "masks_native")
    _check_len(stems, n, "stems")
    for i, (p, m) in enumerate(zip(probs, masks)):
        if p.shape != m.shape:
            raise ValueError(f"evaluate_native: image {i}: probability shape {p.shape} != mask shape {m.shape}")
    areas = native_areas(probs, masks, threshold=threshold)
    at_t = _Threshold(float(threshold), inclusive=True)
    rule = replace(_NATIVE_RULE, dsc_pred=at_t, iou_pred=at_t, pr_pred=at_t)
    rows, _ = _per_image(probs, masks, rule, areas, stems)
    result = _result(
        rule,
        rows,
        dsc=summary(_column(rows, "dsc")),
        iou=summary(_column(rows, "iou")),
        precision=summary(_column(rows, "precision")),
        recall=summary(_column(rows, "recall")),
        mm2_per_px=mm2_per_px,
    )
    result["threshold"] = float(threshold)
    return result


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f} %"


def _signed_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.1f}"


def _agreement_line(agr: dict[str, Any], n: int) -> str:
    loa = agr["loa_rel"]
    loa_text = "n/a" if loa is None else f"{_signed_pct(loa[0])} .. {_signed_pct(loa[1])} %"
    sd = "n/a" if agr["sd_rel"] is None else f"{100.0 * agr['sd_rel']:.1f} %"
    bias = "n/a" if agr["bias_rel"] is None else f"{_signed_pct(agr['bias_rel'])} %"
    mae = "n/a" if agr["mae_px"] is None else f"{agr['mae_px']:.1f} px"
    if agr["mae_mm2"] is not None:
        mae += f" [{agr['mae_mm2']:.2f} mm²]"
    missed = "n/a" if agr["missed"] is None else str(agr["missed"])
    return f"  CSA bias {bias} (SD {sd}, 95 % LoA {loa_text}), MAE {mae}, missed {missed} of {n}"


def format_summary(result: dict[str, Any]) -> str:
    """A short multi-line human summary of an ``evaluate_*`` result.

    Example::

        n=44 protocol=paper
          DSC 0.9027 ± 0.0603  IoU 0.8145 ± 0.0712  precision 0.9460  recall 0.8499
          DSC paper filter (DSC >= 0.6): 0.9027 ± 0.0603 (n=44)
          CSA error median 6.1 %  mean 7.4 %
          CSA bias +1.2 % (SD 9.0 %, 95 % LoA -16.4 .. +18.8 %), MAE 61.3 px [0.42 mm²], missed 1 of 44
    """
    paper = result["protocol"] == "paper"

    def pr(key: str) -> str:
        v = result[key]
        return f"{key} {_fmt(v['mean'])}" + ("" if paper else f" ± {_fmt(v['std'])}")

    t = result.get("threshold")
    lines = [
        f"n={result['n']} protocol={result['protocol']}" + (f" threshold={t:g}" if t not in (None, 0.5) else ""),
        f"  DSC {_fmt(result['dsc']['mean'])} ± {_fmt(result['dsc']['std'])}"
        f"  IoU {_fmt(result['iou']['mean'])} ± {_fmt(result['iou']['std'])}"
        f"  {pr('precision')}  {pr('recall')}",
    ]
    if paper:
        f = result["dsc_paper_filtered"]
        lines.append(
            f"  DSC paper filter (DSC >= {PAPER_DSC_FILTER}): {_fmt(f['mean'])} ± {_fmt(f['std'])} (n={f['n']})"
        )
    csa = result["csa_rel_error"]
    lines.append(f"  CSA error median {_pct(csa['median'])}  mean {_pct(csa['mean'])}")
    if "csa_agreement" in result:  # absent from results written before it existed
        lines.append(_agreement_line(result["csa_agreement"], result["n"]))
    return "\n".join(lines)
