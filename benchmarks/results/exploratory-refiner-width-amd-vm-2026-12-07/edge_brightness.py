"""Does the stills' CSA error follow how bright the annotated mask's own edge is? A diagnosis.

    python edge_brightness.py DATA PER-IMAGE.csv [PER-IMAGE.csv ...]

For every image of the ``mn-eval --per-image`` files (native protocol) that the model did not miss (DSC >= 0.5), three
grey-level bands of the image about the annotated mask, each a 5x5 elliptical erosion or dilation step wide: the
band just inside the mask's edge, the mask's core (two steps in), the band just outside, and the tissue beyond (two
steps out). Features, in units of the tissue beyond's mean grey: ``rim inside`` = inner band - core (the annotation
took in a bright rim), ``rim outside`` = outer band - inner band (a bright rim lies just outside the annotation).
Prints the Pearson correlation of each with the signed relative CSA error (pred - true) / true, pooled and per file,
and the error's median in the thirds of ``rim inside``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


def rim_features(grey: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(rim inside, rim outside) of a 0/1 uint8 ``mask`` on the grey image, in units of the tissue beyond."""
    er = cv2.erode(mask, KERNEL)
    core = cv2.erode(er, KERNEL) > 0
    di = cv2.dilate(mask, KERNEL)
    inner, outer = (mask > 0) & (er == 0), (di > 0) & (mask == 0)
    far = (cv2.dilate(di, KERNEL) > 0) & (di == 0)
    scale = grey[far].mean() + 1e-6
    return (grey[inner].mean() - grey[core].mean()) / scale, (grey[outer].mean() - grey[inner].mean()) / scale


def features(data: Path, stem: str) -> tuple[float, float]:
    img = cv2.imread(str(data / "Images" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    m = (cv2.imread(str(data / "Masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
    return rim_features(img, m)


def main(data: Path, files: list[str]) -> None:
    pooled = []
    for f in files:
        with open(f, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if float(r["dsc"]) >= 0.5]
        got = np.array([(*features(data, r["stem"]),
                         (float(r["area_pred_px"]) - float(r["area_true_px"])) / float(r["area_true_px"]))
                        for r in rows])
        pooled.append(got)
        print(f"{f}: {len(got)} images, r(rim inside, error) {np.corrcoef(got[:, 0], got[:, 2])[0, 1]:+.2f}, "
              f"r(rim outside, error) {np.corrcoef(got[:, 1], got[:, 2])[0, 1]:+.2f}")
    a = np.concatenate(pooled)
    print(f"pooled: {len(a)} images, r(rim inside, error) {np.corrcoef(a[:, 0], a[:, 2])[0, 1]:+.2f}, "
          f"r(rim outside, error) {np.corrcoef(a[:, 1], a[:, 2])[0, 1]:+.2f}")
    cuts = np.quantile(a[:, 0], [1 / 3, 2 / 3])
    for name, sel in (("least rim inside", a[:, 0] <= cuts[0]),
                      ("middle", (a[:, 0] > cuts[0]) & (a[:, 0] <= cuts[1])),
                      ("most rim inside", a[:, 0] > cuts[1])):
        e = a[sel, 2]
        print(f"  {name} third: {sel.sum()} images, signed error median {np.median(e):+.1%}, "
              f"|error| median {np.median(np.abs(e)):.1%}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
