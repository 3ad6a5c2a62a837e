"""How well ``realtime.fusion.image_affine`` finds the animate source's own motion from frame to frame.

Development only (it chose the patch): eight of fold 3's images (patients of neither fold 0 nor 1) animated as
``benchmarks.window_bench`` animates them (seed 1, 2 s compression cycles), the first 48 frames of each at the
network's 384x288, the motion between consecutive frames estimated about the nerve's true centre and compared with
the generator's exact affine near the nerve. Prints, per patch (a share of the frame's width, 3:4), the SD of the
error of the vertical scale (the compression's axis) over the clips, and of the area factor (the determinant).

    python benchmarks/results/exploratory-fusion-affine-amd-vm-2026-12-08/dev/estimator_accuracy.py DATA
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO))

import realtime.fusion as fusion  # noqa: E402
from realtime.sources.animate import AnimateSource  # noqa: E402
from train.preprocess import preprocess_image  # noqa: E402

STEMS = ("Pz003-001", "Pz011-002", "Pz038-003", "Pz050-001", "Pz061-001", "Pz081-001", "Pz089-002", "Pz013-002")
SIZE = (384, 288)
PATCHES = (1 / 3, 1 / 4, 1 / 6)


def clip(data: Path, stem: str, frames: int = 48) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image at the network's size, frame matrix in its pixels, the nerve's centre) per frame."""
    src = AnimateSource(data / "Images" / f"{stem}.png", seed=1, frames=frames, compression_period_s=2.0)
    h, w = src.still.shape[:2]
    scale = np.diag([SIZE[0] / w, SIZE[1] / h, 1.0])
    out = []
    for k in range(frames):
        img, _ = src.render(k)
        m = scale @ np.vstack([src.transform(k), [0.0, 0.0, 1.0]])
        out.append((preprocess_image(img, SIZE).astype(np.float32), m, (m @ np.array([*src.center, 1.0]))[:2]))
    return out


def main(data: Path) -> None:
    clips = [clip(data, s) for s in STEMS]
    print(f"{len(STEMS)} clips x {len(clips[0]) - 1} frame pairs; SD of the per-frame error against the truth")
    for share in PATCHES:
        fusion.AFFINE_PATCH = share
        sy_err, det_err, missing = [], [], 0
        for frames in clips:
            for (prev, m0, c0), (cur, m1, _) in zip(frames, frames[1:]):
                truth = (m1 @ np.linalg.inv(m0))[:2, :2]
                got = fusion.image_affine(prev, cur, (float(c0[0]), float(c0[1])), 28.8)
                if got is None:
                    missing += 1
                    continue
                lin = got[:, :2].astype(np.float64)
                sy_err.append(lin[1, 1] - truth[1, 1])
                det_err.append(np.linalg.det(lin) - np.linalg.det(truth))
        print(f"patch {share:.3f} of the width: vertical scale {100 * np.std(sy_err):.2f} %, area factor "
              f"{100 * np.std(det_err):.2f} %, none {missing}")
    true_change = [np.linalg.det((b[1] @ np.linalg.inv(a[1]))[:2, :2]) - 1 for f in clips for a, b in zip(f, f[1:])]
    print(f"the truth's own area factor change, SD: {100 * np.std(true_change):.2f} %")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/median-nerve"))
