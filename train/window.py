"""Where the cascade's refiner looks: window geometry in numpy, shared by the PyTorch cascade
(:class:`train.cascade_net.CascadeNet`), the training windows (:mod:`train.crops`) and the
engines' two-session cascade (``engines.cascade``), so every one of them places the same window.

Torch-free (numpy and OpenCV only): the runtime imports it without PyTorch.

1. :func:`find_centre` / :func:`find_centres`: the centre of the largest (or the ``k`` largest)
   components of the localiser's mask;
2. :func:`crop_box`: a fixed window around a centre, clamped inside the frame; :func:`within_jitter`:
   whether a window is one the refiner's training could have cut around a nerve;
3. :func:`window_boxes` / :func:`candidate_boxes`: both per image of a batch;
4. :func:`window_mass`, :func:`candidate_masses`, :func:`choose_candidates`: which candidate
   window the refiner found the most nerve in;
5. :func:`paste`: the refined windows back into full frames;
6. :func:`check_tta`, :func:`flip_average`: the refiner's test-time augmentation (each window and its
   mirror image refined, the two probability maps averaged).
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from common.tta import TTA_MODES
from train.errors import UserError

BACKGROUND_LOGIT = -30.0
"""Logit written outside the refiner's window (sigmoid = 1e-13)."""
CENTRE_STEP = 4
"""The localiser's mask is read every ``CENTRE_STEP`` pixels (its own resolution is 1/4)."""


def find_centre(prob: np.ndarray, threshold: float = 0.5, step: int = CENTRE_STEP) -> tuple[float, float]:
    """``(x, y)`` centre of the nerve in a probability map ``[H, W]``.

    The centroid of the largest connected component of ``prob >= threshold`` (read every
    ``step`` pixels); without any pixel above the threshold, the most probable pixel.
    """
    if prob.ndim != 2:
        raise ValueError(f"find_centre needs a [H, W] map, got shape {prob.shape}")
    small = np.ascontiguousarray(prob[step // 2::step, step // 2::step])
    binary = (small >= threshold).astype(np.uint8)
    if binary.any():
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        cx, cy = centroids[best]
        return float(cx * step + step // 2), float(cy * step + step // 2)
    y, x = np.unravel_index(int(np.argmax(prob)), prob.shape)
    return float(x), float(y)


def mask_centre(mask: np.ndarray) -> tuple[float, float] | None:
    """Centroid ``(x, y)`` of ``mask > 0.5`` (``[H, W]``), or None for an empty mask."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        return None
    return float(xs.mean()), float(ys.mean())


def crop_box(centre: tuple[float, float], crop_wh: tuple[int, int], frame_wh: tuple[int, int]) -> tuple[int, int]:
    """Top-left ``(x0, y0)`` of a ``crop_wh`` window centred on ``centre``, clamped inside the frame."""
    (cx, cy), (cw, ch), (fw, fh) = centre, crop_wh, frame_wh
    if cw > fw or ch > fh:
        raise UserError(f"crop {cw}x{ch} is larger than the frame {fw}x{fh}")
    x0 = int(round(cx - cw / 2.0))
    y0 = int(round(cy - ch / 2.0))
    return min(max(x0, 0), fw - cw), min(max(y0, 0), fh - ch)


def within_jitter(box: tuple[int, int], centre: tuple[float, float], crop_wh: tuple[int, int],
                  frame_wh: tuple[int, int], jitter: float) -> bool:
    """Whether the window at top-left ``box`` is one the refiner's training could have cut for a nerve
    centred at ``centre``: training shifts the centre by up to ``jitter`` of the half-window each way and then
    clamps the window inside the frame (:class:`train.crops.CropDataset`), so the reachable corners lie between
    those of the two extreme shifts. Near a border that includes windows whose centre is far from the
    nerve's: a nerve 20 px below the top edge sits 28 px above a 96 px window's centre, as in training."""
    (cx, cy), (cw, ch) = centre, crop_wh
    dx, dy = jitter * cw / 2.0, jitter * ch / 2.0
    lo = crop_box((cx - dx, cy - dy), crop_wh, frame_wh)
    hi = crop_box((cx + dx, cy + dy), crop_wh, frame_wh)
    return lo[0] <= box[0] <= hi[0] and lo[1] <= box[1] <= hi[1]


def window_boxes(loc_prob: np.ndarray, crop_wh: tuple[int, int], threshold: float = 0.5) -> list[tuple[int, int]]:
    """Window corners ``(x0, y0)`` for localiser probabilities ``[N, 1, H, W]``: :func:`find_centre`
    then :func:`crop_box` per image (the one placement rule of the torch and engine cascades)."""
    h, w = loc_prob.shape[-2:]
    return [crop_box(find_centre(p[0], threshold), crop_wh, (w, h)) for p in loc_prob]


def find_centres(prob: np.ndarray, k: int, threshold: float = 0.5,
                 step: int = CENTRE_STEP) -> list[tuple[float, float]]:
    """Up to ``k`` candidate centres ``(x, y)`` in a probability map ``[H, W]``, the most likely first.

    The centroids of the ``k`` largest connected components of ``prob >= threshold`` (read every
    ``step`` pixels), largest first, so the first is :func:`find_centre`'s; without any pixel above
    the threshold, the most probable pixel alone.
    """
    if k < 1:
        raise ValueError(f"need at least one candidate, got k={k}")
    if k == 1:
        return [find_centre(prob, threshold, step)]
    small = np.ascontiguousarray(prob[step // 2::step, step // 2::step])
    binary = (small >= threshold).astype(np.uint8)
    if not binary.any():
        return [find_centre(prob, threshold, step)]
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    order = 1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")
    return [(float(centroids[i][0] * step + step // 2), float(centroids[i][1] * step + step // 2))
            for i in order[:k]]


def _overlap(a: tuple[int, int], b: tuple[int, int], crop_wh: tuple[int, int]) -> float:
    """Intersection over the window area of two ``crop_wh`` windows at corners ``a`` and ``b``."""
    cw, ch = crop_wh
    ix = max(0, cw - abs(a[0] - b[0]))
    iy = max(0, ch - abs(a[1] - b[1]))
    return ix * iy / float(cw * ch)


CANDIDATE_OVERLAP = 0.5
"""A candidate window overlapping an earlier one by more than this share of its area is dropped."""


def candidate_boxes(loc_prob: np.ndarray, crop_wh: tuple[int, int], k: int, threshold: float = 0.5
                    ) -> list[list[tuple[int, int]]]:
    """Per image of ``[N, 1, H, W]`` localiser probabilities, up to ``k`` window corners, the most
    likely first (the first is :func:`window_boxes`'); windows that mostly overlap an earlier one
    are dropped (:data:`CANDIDATE_OVERLAP`)."""
    h, w = loc_prob.shape[-2:]
    out = []
    for p in loc_prob:
        boxes: list[tuple[int, int]] = []
        for centre in find_centres(p[0], k, threshold):
            box = crop_box(centre, crop_wh, (w, h))
            if all(_overlap(box, b, crop_wh) <= CANDIDATE_OVERLAP for b in boxes):
                boxes.append(box)
        out.append(boxes)
    return out


def window_mass(prob: np.ndarray, threshold: float = 0.5) -> float:
    """The refiner's evidence for a nerve in one window: the summed probability of the pixels at or
    above ``threshold`` (the tracker's "probability mass"); 0 for a window it calls empty."""
    p = np.asarray(prob, dtype=np.float32)
    return float(p[p >= threshold].sum())


def candidate_masses(cands: Sequence[Sequence[tuple[int, int]]], probs: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(masses [N, K], index [N, K])`` for refined window probabilities ``probs [M, 1, h, w]`` laid out
    image by image as in ``cands`` (``index``: the row of ``probs``; -inf / -1 where an image has fewer)."""
    masses = np.full((len(cands), k), -np.inf)
    index = np.full((len(cands), k), -1, dtype=np.int64)
    row = 0
    for i, boxes in enumerate(cands):
        for j in range(len(boxes)):
            masses[i, j] = window_mass(probs[row, 0])
            index[i, j] = row
            row += 1
    return masses, index


def choose_candidates(masses: np.ndarray) -> np.ndarray:
    """Index of the chosen candidate per image from ``masses [N, K]`` (-inf where an image has fewer
    candidates): the largest mass; ties go to the earlier (more likely) candidate."""
    return np.argmax(np.asarray(masses, dtype=np.float64), axis=1)


def paste(refined: Any, boxes: Sequence[tuple[int, int]], frame_hw: tuple[int, int],
          fill: float = BACKGROUND_LOGIT) -> Any:
    """Full-frame ``[N,1,H,W]`` maps with each window ``refined[i]`` at ``boxes[i]``, ``fill`` elsewhere.

    ``refined`` is a numpy array or a torch tensor (the result is of the same kind, dtype and
    device); this module never imports torch: a tensor is recognised by its ``new_full``.
    """
    h, w = frame_hw
    ch, cw = refined.shape[-2:]
    if hasattr(refined, "new_full"):  # a torch tensor
        out = refined.new_full((refined.shape[0], 1, h, w), fill)
    else:
        out = np.full((refined.shape[0], 1, h, w), fill, dtype=refined.dtype)
    for i, (x0, y0) in enumerate(boxes):
        out[i, :, y0:y0 + ch, x0:x0 + cw] = refined[i]
    return out


def check_tta(mode: Any) -> str:
    """``mode`` if it is one of :data:`TTA_MODES`.

    Raises:
        UserError: another value (says which are valid).
    """
    if not isinstance(mode, str) or mode not in TTA_MODES:
        raise UserError(f"unknown test-time augmentation {mode!r} for the cascade's refiner; use one of "
                        f"{', '.join(TTA_MODES)}")
    return mode


def flip_average(prob: Any, prob_of_mirror: Any) -> Any:
    """The ``hflip`` average of probabilities ``[N, 1, h, w]`` of windows and of their left-right mirrors:
    ``(prob + mirror(prob_of_mirror)) / 2`` (the mirror's map flipped back onto the window first). Numpy arrays
    or torch tensors (recognised by ``new_full``, as in :func:`paste`), the result of the same kind."""
    mirrored = prob_of_mirror.flip(-1) if hasattr(prob_of_mirror, "new_full") else prob_of_mirror[..., ::-1]
    return 0.5 * (prob + mirrored)
