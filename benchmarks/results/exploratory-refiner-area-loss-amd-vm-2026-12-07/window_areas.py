"""Soft and hard areas of refiners on a fold's held-out windows (centred on the true nerve, as mn-train validates).

    python window_areas.py DATA FOLD CKPT [CKPT ...]
    # e.g. ../shared/data/median-nerve 0 runs/lens/fold-0/refiner/last.pt

For each refiner checkpoint: the window Dice (probability >= 0.5 against the mask > 0.5, mean over the windows), and the
relative error against the true (soft, resized) mask area of the soft area (the sum of the probabilities) and of the
hard area (pixels >= 0.5): median of |error| and mean signed error; and the probability mass outside the true nerve
over the true area (median). With more than one checkpoint, a last row for the mean of their probabilities (the
second shown the mirror image, as mn-realtime's two refiners are joined). A markdown table on stdout. Nothing is
chosen on these windows.
"""
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from train.checkpoint import model_from_checkpoint  # noqa: E402
from train.crops import crop_around_truth  # noqa: E402
from train.data import load_samples, scan_dataset  # noqa: E402
from train.splits import make_split  # noqa: E402


def windows(data: str, fold: int, crop=(128, 96), size=(384, 288)):
    samples = scan_dataset(data)
    split = make_split("kfold", [s.patient for s in samples], folds=5, fold=fold, seed=42)
    _, val_idx = split.indices([s.patient for s in samples])
    loaded = load_samples([samples[i] for i in val_idx], size, progress=False)
    images, masks = crop_around_truth(loaded.images, loaded.masks, crop)
    return torch.from_numpy(images), torch.from_numpy(masks)


def main() -> None:
    torch.set_num_threads(1)
    data, fold, ckpts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    x, y = windows(data, fold)
    truth = y.flatten(1).sum(1)
    t = (y > 0.5).float()
    print(f"| fold {fold}, {len(x)} windows | Dice | soft area: \\|error\\| median; bias | hard area: "
          "\\|error\\| median; bias | mass outside the nerve / true area |")
    print("|---|---|---|---|---|")
    probs = []
    for ckpt in ckpts:
        net = model_from_checkpoint(ckpt)[0].eval()
        mirror = len(probs) == 1  # the second refiner sees the mirror image, its map mirrored back
        with torch.no_grad():
            p = torch.sigmoid(net(x.flip(-1) if mirror else x).float())
        probs.append(p.flip(-1) if mirror else p)
    rows = list(zip(ckpts, probs))
    if len(probs) > 1:
        rows.append(("mean of the above (the second on the mirror image)", torch.stack(probs).mean(0)))
    for ckpt, p in rows:
        hard = (p >= 0.5).float()
        dice = (2 * (hard * t).flatten(1).sum(1) / (hard.flatten(1).sum(1) + t.flatten(1).sum(1)).clamp(min=1)).mean()
        cols = []
        for area in (p.flatten(1).sum(1), hard.flatten(1).sum(1)):
            rel = ((area - truth) / truth).tolist()
            cols.append(f"{100 * statistics.median(abs(r) for r in rel):.1f} %; {100 * statistics.mean(rel):+.1f} %")
        outside = ((p * (y == 0)).flatten(1).sum(1) / truth).median()
        print(f"| {ckpt} | {float(dice):.3f} | {cols[0]} | {cols[1]} | {float(outside):.3f} |")


if __name__ == "__main__":
    main()
