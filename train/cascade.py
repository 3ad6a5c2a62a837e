"""Localise-then-refine: the DL-UNet idea (a second network looks again where the first one
found the nerve) made cheap enough for a 2-core CPU.

A cascade takes the usual preprocessed frame (``[N,1,H,W]`` at the frame size, 384x288 by
default) and

1. runs a *localiser* (``lunet-coarse``: the frame pooled 4x4, a narrow L-UNet, upsampled
   back) on the whole frame;
2. takes the centre of the largest component of its mask (:func:`find_centre`);
3. cuts a fixed window (``crop``, e.g. 128x96 of the 384x288 frame, i.e. 202x156 pixels of a
   606x468 ultrasound image) around that centre, clamped inside the frame (:func:`crop_box`);
4. runs a *refiner* (an L-UNet) on the window at the frame's full resolution and pastes its
   logits back; outside the window the output is background.

So a cascade is an ordinary model to the rest of mn-seg: frame in, full-size logits out, and
mn-eval's paper protocol scores it at the frame size, like the paper's networks at 384x288.
The refiner is trained by ``mn-train --crop WxH`` on windows around the true nerve, shifted at
random by up to ``crop_jitter`` of the window (the localiser's error); the localiser is trained
as any network. :func:`build_cascade_checkpoint` (``python -m train.cascade``) joins the two
checkpoints into one.

The same numpy functions place the window in PyTorch (:class:`CascadeNet`) and in the engines'
two-session cascade (``engines.cascade``), so both give the same mask.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, ClassVar, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from train.errors import UserError

log = logging.getLogger(__name__)

BACKGROUND_LOGIT = -30.0
"""Logit written outside the refiner's window (sigmoid = 1e-13)."""
CENTRE_STEP = 4
"""The localiser's mask is read every ``CENTRE_STEP`` pixels (its own resolution is 1/4)."""


# ---------------------------------------------------------------------------------------------
# window geometry (numpy, shared by torch and the engines)
# ---------------------------------------------------------------------------------------------


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


def window_boxes(loc_prob: np.ndarray, crop_wh: tuple[int, int], threshold: float = 0.5) -> list[tuple[int, int]]:
    """Window corners ``(x0, y0)`` for localiser probabilities ``[N, 1, H, W]``: :func:`find_centre`
    then :func:`crop_box` per image (the one placement rule of the torch and engine cascades)."""
    h, w = loc_prob.shape[-2:]
    return [crop_box(find_centre(p[0], threshold), crop_wh, (w, h)) for p in loc_prob]


def find_centres(prob: np.ndarray, k: int, threshold: float = 0.5, step: int = CENTRE_STEP) -> list[tuple[float, float]]:
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


def check_crop(crop_wh: Sequence[int], frame_wh: Sequence[int], stride: int, model: str) -> tuple[int, int]:
    """``crop_wh`` as a tuple, or a :class:`UserError` saying what is wrong with it."""
    from train.models.layers import check_size_divisible

    cw, ch = (int(v) for v in crop_wh)
    fw, fh = (int(v) for v in frame_wh)
    if cw > fw or ch > fh:
        raise UserError(f"--crop {cw}x{ch} must fit inside --size {fw}x{fh}")
    check_size_divisible((cw, ch), stride, model)
    return cw, ch


# ---------------------------------------------------------------------------------------------
# training windows
# ---------------------------------------------------------------------------------------------


class CropDataset(torch.utils.data.Dataset):
    """Windows of ``crop_wh`` around the (augmented) true nerve of a full-frame dataset.

    Each item takes the full-frame ``(image, mask)`` of ``base`` (augmented there), centres the
    window on the mask's centroid, shifts it by a uniform offset of up to ``jitter`` times half
    the window in each direction (what a localiser gets wrong), clamps it inside the frame and
    cuts. A mask the augmentation pushed out of the frame gives a random window. Deterministic
    in (seed, epoch, index), like :class:`train.data.SegmentationDataset`.

    With ``negatives`` > 0, that share of the items is instead a window placed at random where it
    holds no nerve at all (no mask pixel above :data:`NEGATIVE_MAX`), with an empty target: the
    refiner learns to answer "nothing here" for a window the localiser put on another structure
    (a tendon, a vessel, another body part), which is what the presence decision reads. An item
    for which no such window is found in :data:`NEGATIVE_TRIES` draws stays a positive.
    """

    def __init__(self, base: Any, crop_wh: tuple[int, int], jitter: float = 0.25, seed: int = 0,
                 negatives: float = 0.0) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise UserError(f"--crop-jitter must be in [0, 1], got {jitter}")
        if not 0.0 <= negatives < 1.0:
            raise UserError(f"--crop-negatives is a share of the windows in [0, 1), got {negatives}")
        self.base = base
        self.crop = (int(crop_wh[0]), int(crop_wh[1]))
        self.jitter = float(jitter)
        self.seed = int(seed)
        self.negatives = float(negatives)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return int(self.base.epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.base[index]
        h, w = image.shape[-2:]
        rng = np.random.default_rng([self.seed, self.epoch, int(index) % len(self), 7])
        centre = mask_centre(mask[0].numpy())
        cw, ch = self.crop
        if centre is None:
            centre = (rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2))
        dx, dy = rng.uniform(-1.0, 1.0, size=2) * self.jitter * np.array([cw / 2.0, ch / 2.0])
        x0, y0 = crop_box((centre[0] + dx, centre[1] + dy), self.crop, (w, h))
        if self.negatives > 0 and rng.random() < self.negatives:
            box = negative_box(mask[0].numpy(), self.crop, rng)
            if box is not None:
                x0, y0 = box
                empty = torch.zeros((mask.shape[0], ch, cw), dtype=mask.dtype)
                return image[:, y0:y0 + ch, x0:x0 + cw].contiguous(), empty
        return image[:, y0:y0 + ch, x0:x0 + cw].contiguous(), mask[:, y0:y0 + ch, x0:x0 + cw].contiguous()


NEGATIVE_MAX = 0.01
"""A negative window holds no mask value above this (soft edges of a resized mask included)."""
NEGATIVE_TRIES = 30
"""Random window positions tried before a negative item falls back to a positive one."""


def negative_box(mask: np.ndarray, crop_wh: tuple[int, int], rng: np.random.Generator) -> tuple[int, int] | None:
    """Top-left ``(x0, y0)`` of a random ``crop_wh`` window of ``mask`` ``[H, W]`` with no nerve in it, or None."""
    h, w = mask.shape
    cw, ch = crop_wh
    for _ in range(NEGATIVE_TRIES):
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        if float(mask[y0:y0 + ch, x0:x0 + cw].max(initial=0.0)) <= NEGATIVE_MAX:
            return x0, y0
    return None


def crop_around_truth(images: np.ndarray, masks: np.ndarray, crop_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validation windows: each ``[N,1,H,W]`` image and mask cut around its true nerve (no jitter)."""
    out_i, out_m = [], []
    h, w = images.shape[-2:]
    cw, ch = crop_wh
    for image, mask in zip(images, masks):
        centre = mask_centre(mask[0]) or (w / 2.0, h / 2.0)
        x0, y0 = crop_box(centre, crop_wh, (w, h))
        out_i.append(image[:, y0:y0 + ch, x0:x0 + cw])
        out_m.append(mask[:, y0:y0 + ch, x0:x0 + cw])
    return np.ascontiguousarray(np.stack(out_i)), np.ascontiguousarray(np.stack(out_m))


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------


def paste(refined: np.ndarray | Tensor, boxes: Sequence[tuple[int, int]], frame_hw: tuple[int, int],
          fill: float = BACKGROUND_LOGIT) -> Any:
    """Full-frame ``[N,1,H,W]`` maps with each window ``refined[i]`` at ``boxes[i]``, ``fill`` elsewhere."""
    h, w = frame_hw
    ch, cw = refined.shape[-2:]
    if isinstance(refined, Tensor):
        out = torch.full((refined.shape[0], 1, h, w), fill, dtype=refined.dtype, device=refined.device)
    else:
        out = np.full((refined.shape[0], 1, h, w), fill, dtype=refined.dtype)
    for i, (x0, y0) in enumerate(boxes):
        out[i, :, y0:y0 + ch, x0:x0 + cw] = refined[i]
    return out


class CascadeNet(nn.Module):
    """Localiser + refiner as one model: ``[N,1,H,W]`` frame in, full-frame logits out.

    ``localiser`` and ``refiner`` are ``{"name", "kwargs"}`` records of registered networks;
    ``crop`` is the refiner's window ``[W, H]``. The window centres are computed on the CPU
    (numpy), so this module cannot be exported as one graph: the engines run the two networks
    as two sessions with the same numpy glue (``engines.cascade``).
    """

    name: ClassVar[str] = "cascade"
    stride: ClassVar[int] = 32
    """Frame sides must be multiples of the localiser's stride (32 for ``lunet-coarse``)."""
    has_vgg_encoder: ClassVar[bool] = False

    def __init__(self, localiser: dict | None = None, refiner: dict | None = None,
                 crop: Sequence[int] = (128, 96), candidates: int = 1) -> None:
        from train.models import build_model, model_stride

        super().__init__()
        self.localiser_spec = dict(localiser or {"name": "lunet-coarse", "kwargs": {}})
        self.refiner_spec = dict(refiner or {"name": "lunet", "kwargs": {}})
        self.localiser = build_model(self.localiser_spec["name"], **self.localiser_spec.get("kwargs", {}))
        self.refiner = build_model(self.refiner_spec["name"], **self.refiner_spec.get("kwargs", {}))
        self.crop = (int(crop[0]), int(crop[1]))
        if int(candidates) < 1:
            raise UserError(f"a cascade needs at least one candidate window, got {candidates}")
        self.candidates = int(candidates)
        self.frame_stride = model_stride(self.localiser_spec["name"])
        check_crop(self.crop, (1 << 30, 1 << 30), model_stride(self.refiner_spec["name"]),
                   self.refiner_spec["name"])

    def boxes(self, loc_prob: np.ndarray) -> list[tuple[int, int]]:
        """Window corners for localiser probabilities ``[N,1,H,W]``."""
        return window_boxes(loc_prob, self.crop)

    def forward(self, x: Tensor) -> Tensor:
        """Full-frame logits ``[N, 1, H, W]``."""
        return self.forward_parts(x)["logits"]

    def forward_parts(self, x: Tensor) -> dict[str, Any]:
        """``logits`` (full frame), ``localiser`` logits and the window ``boxes``."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise UserError(f"cascade expects a [N, 1, H, W] grey batch, got shape {tuple(x.shape)}")
        h, w = int(x.shape[2]), int(x.shape[3])
        cw, ch = self.crop
        if cw > w or ch > h:
            raise UserError(f"the cascade's window {cw}x{ch} does not fit a {w}x{h} frame")
        loc = self.localiser(x)
        loc_prob = torch.sigmoid(loc.float()).detach().cpu().numpy()
        if self.candidates == 1:
            boxes = self.boxes(loc_prob)
            windows = torch.stack([x[i, :, y0:y0 + ch, x0:x0 + cw] for i, (x0, y0) in enumerate(boxes)])
            refined = self.refiner(windows)
            return {"logits": paste(refined, boxes, (h, w)), "localiser": loc, "boxes": boxes}
        cands = candidate_boxes(loc_prob, self.crop, self.candidates)
        flat = [(i, box) for i, boxes in enumerate(cands) for box in boxes]
        windows = torch.stack([x[i, :, y0:y0 + ch, x0:x0 + cw] for i, (x0, y0) in flat])
        refined_all = self.refiner(windows)
        probs = torch.sigmoid(refined_all.float()).detach().cpu().numpy()
        masses, index = candidate_masses(cands, probs, self.candidates)
        picks = [int(index[i, c]) for i, c in enumerate(choose_candidates(masses))]
        boxes = [flat[j][1] for j in picks]
        refined = refined_all[picks]
        return {"logits": paste(refined, boxes, (h, w)), "localiser": loc, "boxes": boxes,
                "candidates": cands, "masses": masses}

    def extra_repr(self) -> str:  # noqa: D102
        return f"crop={self.crop[0]}x{self.crop[1]}, candidates={self.candidates}"


# ---------------------------------------------------------------------------------------------
# joining two trained checkpoints
# ---------------------------------------------------------------------------------------------


def build_cascade_checkpoint(localiser_ckpt: str, refiner_ckpt: str, out: str, candidates: int = 1) -> dict:
    """Write one checkpoint holding a trained localiser and refiner; returns its config.

    The localiser must be a full-frame network and the refiner a ``mn-train --crop`` run at
    the same frame size and preprocessing.
    """
    from train.checkpoint import code_version, load_checkpoint, save_checkpoint

    loc, ref = load_checkpoint(localiser_ckpt), load_checkpoint(refiner_ckpt)
    lc, rc = loc["config"], ref["config"]
    if lc.get("crop"):
        raise UserError(f"{localiser_ckpt} is a --crop (refiner) run; the localiser must see whole frames")
    if not rc.get("crop"):
        raise UserError(f"{refiner_ckpt} was not trained with --crop WxH; train the refiner with mn-train --crop")
    frame = rc["crop"]["frame_size"]
    if list(lc["preprocessing"]["size"]) != list(frame):
        raise UserError(f"frame sizes differ: localiser {lc['preprocessing']['size']}, refiner windows of "
                        f"{frame} frames; train both with the same --size")
    if lc["preprocessing"].get("id") != rc["preprocessing"].get("id"):
        raise UserError("the two checkpoints use different preprocessing; train both with this mn-seg")
    net = CascadeNet(localiser=lc["model"], refiner=rc["model"], crop=rc["crop"]["size"], candidates=candidates)
    net.localiser.load_state_dict(loc["state_dict"])
    net.refiner.load_state_dict(ref["state_dict"])
    config = {
        "model": {"name": "cascade", "kwargs": {"localiser": lc["model"], "refiner": rc["model"],
                                                "crop": list(rc["crop"]["size"]),
                                                **({"candidates": int(candidates)} if candidates != 1 else {})}},
        "preprocessing": lc["preprocessing"],
        "parts": {"localiser": {"checkpoint": str(localiser_ckpt), "config": lc},
                  "refiner": {"checkpoint": str(refiner_ckpt), "config": rc}},
        "code_version": code_version(),
        "metrics": {},
    }
    save_checkpoint(out, net, config)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    from train.cli_util import add_logging_args, setup_logging

    p = argparse.ArgumentParser(prog="python -m train.cascade",
                                description="Join a localiser checkpoint (whole frames) and a refiner checkpoint "
                                            "(mn-train --crop) into one cascade checkpoint.")
    p.add_argument("--localiser", required=True, help="best.pt of the localiser (e.g. mn-train --model lunet-coarse)")
    p.add_argument("--refiner", required=True, help="best.pt of the refiner (mn-train --crop WxH)")
    p.add_argument("--out", required=True, help="cascade checkpoint to write (.pt)")
    p.add_argument("--candidates", type=int, default=1,
                   help="windows refined per frame: the K largest localiser components; the one with the largest "
                        "refined probability mass wins (1: the largest component only)")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    config = build_cascade_checkpoint(args.localiser, args.refiner, args.out, candidates=args.candidates)
    kw = config["model"]["kwargs"]
    log.info("wrote %s: %s -> %s on %dx%d windows", args.out, kw["localiser"]["name"], kw["refiner"]["name"],
             *kw["crop"])
    return 0


if __name__ == "__main__":
    from train.errors import run_cli

    sys.exit(run_cli("train.cascade", main))
