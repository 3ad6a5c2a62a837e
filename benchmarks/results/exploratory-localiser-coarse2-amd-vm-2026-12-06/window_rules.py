"""The localiser component that places the window, chosen by area (shipped), probability mass, peak or mean, on
the folds' held-out stills (2026-12-06 diagnosis).

    python benchmarks/results/exploratory-localiser-coarse2-amd-vm-2026-12-06/window_rules.py lens 0,1,2,3,4

VARIANT is a benchmarks/localiser_ensemble.sh variant under runs/lens.
"""

import sys, numpy as np, torch, cv2
from train.checkpoint import model_from_checkpoint
from train.preprocess import preprocess_image, preprocess_mask
from train.data import read_image, read_mask
from train.window import crop_box, paste
from folds import D, dice, fold_stems

torch.set_num_threads(1)



RULES = ("area", "mass", "peak", "mean")


def centre(prob, rule, step=4):
    small = np.ascontiguousarray(prob[step // 2 :: step, step // 2 :: step])
    b = (small >= 0.5).astype(np.uint8)
    if not b.any():
        y, x = np.unravel_index(int(np.argmax(prob)), prob.shape)
        return float(x), float(y)
    n, lab, st, cen = cv2.connectedComponentsWithStats(b, connectivity=8)
    score = []
    for i in range(1, n):
        v = small[lab == i]
        score.append({"area": st[i, cv2.CC_STAT_AREA], "mass": v.sum(), "peak": v.max(), "mean": v.mean()}[rule])
    best = 1 + int(np.argmax(score))
    cx, cy = cen[best]
    return float(cx * step + step // 2), float(cy * step + step // 2)


res = {r: [] for r in RULES}
variant = sys.argv[1]
folds = [int(f) for f in sys.argv[2].split(",")]
for f in folds:
    m, _ = model_from_checkpoint(f"runs/lens/fold-{f}/{variant}/model.pt")
    m.eval()
    cw, ch = m.crop
    for name in fold_stems(f):
        img = read_image(D + "Images/" + name + ".png")
        msk = read_mask(D + "Masks/" + name + ".png")
        x = torch.from_numpy(np.asarray(preprocess_image(img))).reshape(1, 1, 288, 384).float()
        t = np.asarray(preprocess_mask(msk)).reshape(288, 384) > 0.5
        with torch.no_grad():
            lp = torch.sigmoid(m.localiser(x))[0, 0].numpy()
            boxes = {r: crop_box(centre(lp, r), (cw, ch), (384, 288)) for r in RULES}
            uniq = sorted(set(boxes.values()))
            wins = torch.stack([x[0, :, y0 : y0 + ch, x0 : x0 + cw] for x0, y0 in uniq])
            ref = m.refine(wins)
        out = {}
        for r in RULES:
            j = uniq.index(boxes[r])
            p = torch.sigmoid(paste(ref[j : j + 1], [boxes[r]], (288, 384)))[0, 0].numpy() >= 0.5
            res[r].append(dice(p, t))
            out[r] = res[r][-1]
        if max(out.values()) - min(out.values()) > 0.05:
            print(f, name, " ".join(f"{r}:{v:.2f}" for r, v in out.items()), flush=True)
for r in RULES:
    print(r, "DSC %.4f missed %d n %d" % (np.mean(res[r]), sum(d < 0.5 for d in res[r]), len(res[r])))
