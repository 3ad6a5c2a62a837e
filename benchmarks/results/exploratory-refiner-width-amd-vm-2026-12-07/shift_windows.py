"""A cascade's stills: how much of the true nerve lies outside the refiner's window, and what averaging the refiner
over five windows (the localiser's and four shifted by 8 px across or 6 px down at 384x288) does. A diagnosis, not
a tool: native-resolution DSC and signed CSA error at threshold 0.5, per image and in all.

    PYTHONPATH=. python benchmarks/results/exploratory-refiner-width-amd-vm-2026-12-07/shift_windows.py \
        CASCADE.pt PER-IMAGE.csv    # the images: the stems of an mn-eval --per-image file
"""
import csv
import sys

import cv2
import numpy as np
import torch

from train.checkpoint import model_from_checkpoint
from train.preprocess import preprocess_image, preprocess_mask
from train.data import read_image, read_mask
from train.window import paste
torch.set_num_threads(1)
model, cfg = model_from_checkpoint(sys.argv[1]); model.eval()
stems = [r['stem'] for r in csv.DictReader(open(sys.argv[2]))]
root = '../shared/data/median-nerve'  # run from the repository root
cw, ch = model.crop
SHIFTS = [(0, 0), (8, 0), (-8, 0), (0, 6), (0, -6)]
rows = []
for s in stems:
    img = read_image(f'{root}/Images/{s}.png'); m = read_mask(f'{root}/Masks/{s}.png') > 0
    H, W = m.shape
    x = torch.from_numpy(preprocess_image(img))[None, None]
    m384 = preprocess_mask(m.astype(np.uint8) * 255) > 0.5
    with torch.no_grad():
        parts = model.forward_parts(x)
        (x0, y0), = parts['boxes']
        outside = 1 - m384[y0:y0 + ch, x0:x0 + cw].sum() / max(m384.sum(), 1)
        probs = []
        for dx, dy in SHIFTS:
            bx = int(np.clip(x0 + dx, 0, 384 - cw)); by = int(np.clip(y0 + dy, 0, 288 - ch))
            win = x[:, :, by:by + ch, bx:bx + cw]
            logit = model.refine(win)
            full = paste(logit, [(bx, by)], (288, 384))
            probs.append(torch.sigmoid(full.float())[0, 0].numpy())
    def score(p):
        up = cv2.resize(p, (W, H), interpolation=cv2.INTER_LINEAR) > 0.5
        inter = (up & m).sum(); d = 2 * inter / (up.sum() + m.sum())
        return d, (up.sum() - m.sum()) / m.sum()
    one = score(probs[0]); avg = score(np.mean(probs, axis=0))
    rows.append((s, outside, *one, *avg))
    print(f'{s} outside {outside:.3f} single DSC {one[0]:.3f} CSA {one[1]:+.3f}  '
          f'shift5 DSC {avg[0]:.3f} CSA {avg[1]:+.3f}', flush=True)
a = np.array([r[1:] for r in rows], float)
print('mean DSC single %.4f shift5 %.4f; CSA |err| median single %.1f%% shift5 %.1f%%; missed %d %d; '
      'outside>1%%: %d' % (
    a[:, 1].mean(), a[:, 3].mean(), np.median(abs(a[:, 2])) * 100, np.median(abs(a[:, 4])) * 100,
    (a[:, 1] < .5).sum(), (a[:, 3] < .5).sum(), (a[:, 0] > .01).sum()))
