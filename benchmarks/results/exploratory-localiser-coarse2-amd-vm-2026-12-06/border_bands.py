"""A black border around or above the frame (pad 0.1; a band of 5 or 10 % of the height on top): each image's Dice and
the localiser's mean probability on the true nerve, then the means (2026-12-06 diagnosis).

    python .../border_bands.py runs/lens/fold-2/base/model.pt 2   # from the repository root: fold 2's images
    python .../border_bands.py MODEL Pz084-001,Pz084-002      # given images
"""

import sys, numpy as np, torch, cv2
from train.checkpoint import model_from_checkpoint
from train.preprocess import preprocess_image, preprocess_mask
from train.data import read_image, read_mask
from train.perturb import pad
from folds import D, dice, fold_stems

torch.set_num_threads(1)
model = sys.argv[1]
names = sys.argv[2].split(",") if not sys.argv[2].isdigit() else fold_stems(int(sys.argv[2]))
m, _ = model_from_checkpoint(model)
m.eval()



def reflect(img, msk, lv):
    h, w = img.shape
    dx, dy = int(round(lv * w)), int(round(lv * h))
    b = dict(top=dy, bottom=dy, left=dx, right=dx)
    return cv2.copyMakeBorder(img, borderType=cv2.BORDER_REFLECT, **b), cv2.copyMakeBorder(
        msk, borderType=cv2.BORDER_CONSTANT, value=0, **b
    )


def toponly(img, msk, lv):
    h, w = img.shape
    dy = int(round(lv * h))
    b = dict(top=dy, bottom=0, left=0, right=0)
    return cv2.copyMakeBorder(img, borderType=cv2.BORDER_CONSTANT, value=0, **b), cv2.copyMakeBorder(
        msk, borderType=cv2.BORDER_CONSTANT, value=0, **b
    )


ops = {
    "clean": lambda i, m: (i, m),
    "pad.1": lambda i, m: pad(i, m, 0.1),
    "top.05": lambda i, m: toponly(i, m, 0.05),
    "top.1": lambda i, m: toponly(i, m, 0.1),
}
res = []
for name in names:
    img = read_image(D + "Images/" + name + ".png").astype(np.float32)
    msk = read_mask(D + "Masks/" + name + ".png").astype(np.float32)
    out = []
    for k, op in ops.items():
        im, mk = op(img, msk)
        im = np.clip(im, 0, 255).astype(np.uint8)
        mk = np.where(mk > 127, 255, 0).astype(np.uint8)
        x = torch.from_numpy(np.asarray(preprocess_image(im))).reshape(1, 1, 288, 384).float()
        t = np.asarray(preprocess_mask(mk)).reshape(288, 384) > 0.5
        with torch.no_grad():
            o = m.forward_parts(x)
        lp = torch.sigmoid(o["localiser"])[0, 0].numpy()
        p = torch.sigmoid(o["logits"])[0, 0].numpy() > 0.5
        out.append(f"{k}: {dice(p, t):.2f}/{lp[t].mean():.2f}")
    print(name, " | ".join(out), flush=True)
    res.append(out)
for j, k in enumerate(ops):
    d = [float(r[j].split(": ")[1].split("/")[0]) for r in res]
    print(k, "mean DSC %.4f missed %d" % (np.mean(d), sum(x < 0.5 for x in d)))
