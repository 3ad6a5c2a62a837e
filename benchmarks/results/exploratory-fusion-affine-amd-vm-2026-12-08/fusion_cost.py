"""What each ``--fusion-motion`` costs a frame: ``TemporalFusion.apply`` alone, timed in one process, the motions
interleaved frame by frame (so a busy machine slows them alike and their ratio holds).

An animated fold-3 image (as ``benchmarks.window_bench`` animates them: 2 s compression cycles) at the network's
384x288, its truth mask blurred as the probability map; 144 frames, every motion applied to each.

    python benchmarks/results/exploratory-fusion-affine-amd-vm-2026-12-08/fusion_cost.py DATA
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from realtime.fusion import MOTIONS, TemporalFusion  # noqa: E402
from realtime.sources.animate import AnimateSource  # noqa: E402
from train.preprocess import preprocess_image  # noqa: E402

SIZE = (384, 288)


def main(data: Path, frames: int = 144) -> None:
    cv2.setNumThreads(1)
    src = AnimateSource(data / "Images" / "Pz050-001.png", seed=1, frames=frames, compression_period_s=2.0)
    fusions = {m: TemporalFusion(weight=0.25, motion=m) for m in MOTIONS}
    times: dict[str, list[float]] = {m: [] for m in MOTIONS}
    for k in range(frames):
        img, truth = src.render(k)
        x = preprocess_image(img, SIZE).astype(np.float32)
        prob = cv2.GaussianBlur(cv2.resize(truth, SIZE, interpolation=cv2.INTER_AREA).astype(np.float32) / 255,
                                (0, 0), 2.0)
        for m, f in fusions.items():
            t0 = time.perf_counter()
            f.apply(prob, x)
            times[m].append(1000 * (time.perf_counter() - t0))
            f.observe(True)
    print(f"TemporalFusion.apply, {frames} frames of 384x288, one thread (ms): median / p95; frames fused")
    for m, t in times.items():
        print(f"{m}: {np.median(t[1:]):.2f} / {np.percentile(t[1:], 95):.2f}; {fusions[m].counts['fused']}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/median-nerve"))
