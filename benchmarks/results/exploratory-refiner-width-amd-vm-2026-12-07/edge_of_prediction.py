"""Where a cascade's outline sits relative to the bright rim, against where the annotation's does. A diagnosis.

    PYTHONPATH=. python benchmarks/results/exploratory-refiner-width-amd-vm-2026-12-07/edge_of_prediction.py \\
        CASCADE.pt PER-IMAGE.csv    # the images: the stems of an mn-eval --per-image file (DSC >= 0.5 kept)

``rim inside`` (as in ``edge_brightness.py``: the band just inside an outline minus the core, in units of the
tissue beyond) of the annotated mask and of the cascade's mask (native resolution, threshold 0.5) on every image:
their means, spreads and correlation. A spread much smaller for the prediction says the network places its outline
alike relative to the rim on every image, where the annotations do not.
"""

from __future__ import annotations

import csv
import sys

import cv2
import numpy as np
import torch

from train.checkpoint import model_from_checkpoint
from train.data import read_image
from train.preprocess import preprocess_image

ROOT = "../shared/data/median-nerve"  # run from the repository root
KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


def rim_inside(grey: np.ndarray, mask: np.ndarray) -> float:
    er = cv2.erode(mask, KERNEL)
    core = cv2.erode(er, KERNEL) > 0
    di = cv2.dilate(mask, KERNEL)
    inner, far = (mask > 0) & (er == 0), (cv2.dilate(di, KERNEL) > 0) & (di == 0)
    return float((grey[inner].mean() - grey[core].mean()) / (grey[far].mean() + 1e-6))


def main(checkpoint: str, per_image: str) -> None:
    torch.set_num_threads(1)
    model, _ = model_from_checkpoint(checkpoint)
    model.eval()
    truth, pred = [], []
    with open(per_image, newline="") as f:
        stems = [r["stem"] for r in csv.DictReader(f) if float(r["dsc"]) >= 0.5]
    for stem in stems:
        image = read_image(f"{ROOT}/Images/{stem}.png")
        grey = cv2.imread(f"{ROOT}/Images/{stem}.png", cv2.IMREAD_GRAYSCALE).astype(np.float64)
        mask = (cv2.imread(f"{ROOT}/Masks/{stem}.png", cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        with torch.no_grad():
            prob = torch.sigmoid(model(torch.from_numpy(preprocess_image(image))[None, None]).float())[0, 0].numpy()
        ours = (cv2.resize(prob, mask.shape[::-1], interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)
        truth.append(rim_inside(grey, mask))
        pred.append(rim_inside(grey, ours))
    t, p = np.array(truth), np.array(pred)
    print(f"{len(t)} images; rim inside: annotation mean {t.mean():.3f} sd {t.std():.3f}; prediction mean "
          f"{p.mean():.3f} sd {p.std():.3f}; r {np.corrcoef(t, p)[0, 1]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
