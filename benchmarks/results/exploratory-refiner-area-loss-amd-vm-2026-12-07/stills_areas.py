"""Soft and hard areas of joined cascades on a fold's held-out stills, at native resolution (as mn-eval measures).

    python stills_areas.py DATA FOLD MODEL [MODEL ...]
    # e.g. ../shared/data/median-nerve 0 runs/lens/fold-0/lens/model.pt

For each model (a checkpoint mn-eval takes): its probability map on each held-out image (the whole frame, the
refiner's window placed in it), upsampled to the image's native size as mn-eval's native protocol does; the hard
area is the count of pixels >= 0.5 (mn-eval's), the soft area the sum of the probabilities. Relative error against
the annotated area: median of |error|, mean signed error, and the images whose |error| exceeds 20 %. A markdown table
on stdout. Nothing is chosen on these images.
"""
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from train.checkpoint import model_from_checkpoint  # noqa: E402
from train.data import load_samples, scan_dataset  # noqa: E402
from train.evaluate import predict, upsample  # noqa: E402
from train.splits import make_split  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    data, fold, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    samples = scan_dataset(data)
    split = make_split("kfold", [s.patient for s in samples], folds=5, fold=fold, seed=42)
    _, val_idx = split.indices([s.patient for s in samples])
    held = [samples[i] for i in val_idx]
    print(f"| fold {fold}, {len(held)} stills | hard area: \\|error\\| median; bias; > 20 % | soft area: \\|error\\| "
          "median; bias; > 20 % |")
    print("|---|---|---|")
    for path in models:
        model, config = model_from_checkpoint(path, torch.device("cpu"))
        loaded = load_samples(held, tuple(config["preprocessing"]["size"]), progress=False)
        prob = predict(model, loaded.images, torch.device("cpu"), progress=False)["prob"]
        cols = []
        for soft in (False, True):
            rel = []
            for p, m in zip(prob, loaded.native_masks):
                up = upsample(p, m.shape[:2])
                area = float(up.sum()) if soft else float(np.count_nonzero(up >= 0.5))
                true = float(np.count_nonzero(m > 0))
                rel.append((area - true) / true)
            cols.append(f"{100 * statistics.median(abs(r) for r in rel):.1f} %; {100 * statistics.mean(rel):+.1f} %; "
                        f"{sum(abs(r) > 0.2 for r in rel)}")
        print(f"| {path} | {cols[0]} | {cols[1]} |")


if __name__ == "__main__":
    main()
