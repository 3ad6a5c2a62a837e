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
from pathlib import Path

import cv2
import numpy as np
import torch

from train.checkpoint import model_from_checkpoint
from train.data import read_image
from train.evaluate import upsample
from train.preprocess import preprocess_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_brightness import rim_features  # noqa: E402  the same bands, beside this script

ROOT = "../shared/data/median-nerve"  # run from the repository root


def rim_inside(grey: np.ndarray, mask: np.ndarray) -> float:
    return float(rim_features(grey, mask)[0])


def main(checkpoint: str, per_image: str) -> None:
    torch.set_num_threads(1)
    model, _ = model_from_checkpoint(checkpoint)
    model.eval()
    truth, pred = [], []
    with open(per_image, newline="") as f:
        stems = [r["stem"] for r in csv.DictReader(f) if float(r["dsc"]) >= 0.5]
    for stem in stems:
        image = read_image(f"{ROOT}/Images/{stem}.png")
        grey = image.astype(np.float64)  # read_image gives the grey image the network reads
        mask = (cv2.imread(f"{ROOT}/Masks/{stem}.png", cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        with torch.no_grad():
            prob = torch.sigmoid(model(torch.from_numpy(preprocess_image(image))[None, None]).float())[0, 0].numpy()
        ours = (upsample(prob, mask.shape) > 0.5).astype(np.uint8)
        truth.append(rim_inside(grey, mask))
        pred.append(rim_inside(grey, ours))
    t, p = np.array(truth), np.array(pred)
    print(f"{len(t)} images; rim inside: annotation mean {t.mean():.3f} sd {t.std():.3f}; prediction mean "
          f"{p.mean():.3f} sd {p.std():.3f}; r {np.corrcoef(t, p)[0, 1]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
