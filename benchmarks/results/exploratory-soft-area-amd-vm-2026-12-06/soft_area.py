"""Would the probability mass be a steadier area than the mask's pixel count? (issue 18; exploratory, 2026-12-06)

    python soft_area.py REFINER FOLD [DATA]     # e.g. runs/lens/fold-3/refiner/last.pt 3 ../shared/data/median-nerve

For each image of the fold's held-out patients, the refiner's window centred on the true nerve (as
benchmarks.speckle_stability places it) is segmented as it is and under 6 new speckle patterns (train.consistency's
respeckle at its strength, 0.15; the pattern of image i, k from default_rng([42, i, k])). Three areas per window:
``hard`` the pixels with probability >= 0.5 (what mn-seg measures), ``soft`` the sum of the probabilities over the
window, ``soft_comp`` that sum within the hard mask dilated by 3 px. Printed per area: the change under a new pattern
(|A - A0| / A0, median and p95 over every image and pattern) and the clean window's error against the true mask's
area (median |error|, mean signed).
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from benchmarks.speckle_stability import load_refiner  # noqa: E402
from train.consistency import SPECKLE, respeckle  # noqa: E402
from train.data import load_samples, scan_dataset  # noqa: E402
from train.evaluate import select_samples  # noqa: E402
from train.window import crop_box, mask_centre  # noqa: E402


def main(ref, fold, data_dir):
    torch.set_num_threads(1)
    args = argparse.Namespace(data=data_dir, split="kfold", subset="val", folds=5, fold=fold, val_fraction=0.2,
                              seed=42, patient_regex=None)
    model, (cw, ch), size = load_refiner(ref)
    samples = select_samples(args)
    data = load_samples(samples, size, progress=False)
    order = {s.stem: i for i, s in enumerate(scan_dataset(data_dir))}
    change = {k: [] for k in ("hard", "soft", "soft_comp")}
    error = {k: [] for k in change}
    for img, m, s in zip(data.images, data.masks, samples):
        x0, y0 = crop_box(mask_centre(m[0]), (cw, ch), (size[0], size[1]))
        truth = m[0, y0:y0 + ch, x0:x0 + cw].sum()
        frames = [img] + [respeckle(img, np.random.default_rng([42, order[s.stem], k]), SPECKLE) for k in range(6)]
        windows = np.stack([f[0, y0:y0 + ch, x0:x0 + cw] for f in frames])[:, None]
        with torch.inference_mode():
            p = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(windows)))).numpy()[:, 0]
        areas = {"hard": (p >= 0.5).sum((1, 2)).astype(float), "soft": p.sum((1, 2)),
                 "soft_comp": np.array([q[cv2.dilate((q >= 0.5).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0].sum()
                                        for q in p])}
        for k, a in areas.items():
            if a[0] > 0:
                change[k] += list(np.abs(a[1:] - a[0]) / a[0])
                error[k].append((a[0] - truth) / truth)
    for k in change:
        c, e = np.array(change[k]), np.array(error[k])
        print(f"{k:9s}  new speckle: change median {100 * np.median(c):.2f} %, p95 {100 * np.percentile(c, 95):.2f} %"
              f"  |  clean window vs truth: |error| median {100 * np.median(np.abs(e)):.2f} %, "
              f"mean signed {100 * e.mean():+.2f} %  ({len(e)} windows)")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "../shared/data/median-nerve")
