"""A cascade's stills: how much of the true nerve lies outside the refiner's window, and what averaging the refiner
over five windows (the localiser's and four shifted by 8 px across or 6 px down at 384x288) does. A diagnosis, not
a tool: native-resolution DSC and signed CSA error at threshold 0.5, per image and in all.

    PYTHONPATH=. python benchmarks/results/exploratory-refiner-width-amd-vm-2026-12-07/shift_windows.py \
        CASCADE.pt PER-IMAGE.csv    # the images: the stems of an mn-eval --per-image file
"""

from __future__ import annotations

import csv
import sys

import numpy as np
import torch

from train.checkpoint import model_from_checkpoint
from train.data import read_image, read_mask
from train.evaluate import upsample
from train.preprocess import preprocess_image, preprocess_mask
from train.window import paste

ROOT = "../shared/data/median-nerve"  # run from the repository root
SHIFTS = [(0, 0), (8, 0), (-8, 0), (0, 6), (0, -6)]


def score(prob: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Native DSC and signed relative CSA error of a frame-size probability map against the native mask."""
    ours = upsample(prob, mask.shape) > 0.5
    dsc = 2 * (ours & mask).sum() / (ours.sum() + mask.sum())
    return float(dsc), float((ours.sum() - mask.sum()) / mask.sum())


def shifted_probs(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[np.ndarray], tuple[int, int]]:
    """The refiner's frame-size probabilities for the localiser's window and each shift of it; that window."""
    h, w = x.shape[2:]
    cw, ch = model.crop
    with torch.no_grad():
        (x0, y0), = model.forward_parts(x)["boxes"]
        probs = []
        for dx, dy in SHIFTS:
            bx, by = int(np.clip(x0 + dx, 0, w - cw)), int(np.clip(y0 + dy, 0, h - ch))
            logit = model.refine(x[:, :, by:by + ch, bx:bx + cw])
            probs.append(torch.sigmoid(paste(logit, [(bx, by)], (h, w)).float())[0, 0].numpy())
    return probs, (x0, y0)


def main(checkpoint: str, per_image: str) -> None:
    torch.set_num_threads(1)
    model, _ = model_from_checkpoint(checkpoint)
    model.eval()
    cw, ch = model.crop
    with open(per_image, newline="") as f:
        stems = [r["stem"] for r in csv.DictReader(f)]
    rows = []
    for s in stems:
        mask = read_mask(f"{ROOT}/Masks/{s}.png") > 0
        x = torch.from_numpy(preprocess_image(read_image(f"{ROOT}/Images/{s}.png")))[None, None]
        probs, (x0, y0) = shifted_probs(model, x)
        small = preprocess_mask(mask.astype(np.uint8) * 255) > 0.5
        outside = 1 - small[y0:y0 + ch, x0:x0 + cw].sum() / max(small.sum(), 1)
        one, avg = score(probs[0], mask), score(np.mean(probs, axis=0), mask)
        rows.append((outside, *one, *avg))
        print(f"{s} outside {outside:.3f} single DSC {one[0]:.3f} CSA {one[1]:+.3f}  "
              f"shift5 DSC {avg[0]:.3f} CSA {avg[1]:+.3f}", flush=True)
    a = np.array(rows, float)
    print("mean DSC single %.4f shift5 %.4f; CSA |err| median single %.1f%% shift5 %.1f%%; missed %d %d; "
          "outside>1%%: %d" % (a[:, 1].mean(), a[:, 3].mean(), np.median(abs(a[:, 2])) * 100,
                               np.median(abs(a[:, 4])) * 100, (a[:, 1] < .5).sum(), (a[:, 3] < .5).sum(),
                               (a[:, 0] > .01).sum()))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
