"""What does a fold's presence check pass on the held-out images with the nerve painted over?

For every held-out image of fold K: the nerve painted over (``train.perturb.remove_nerve``, as
``mn-presence`` makes its nerve-removed frames) with the default margin (2 % of the width) and with
three times that margin (the seam of the painting 4 % of the width further from the nerve), each run
as a still through the fold's model (``runs/lens/fold-K/lens/model.pt``) and the tracker with the
fold's four-draw presence fit. Per image and painting: status, the gate's appearance score, where the
reported region lies against the painted nerve (IoU with the true mask, whether it overlaps the painted
region at all), its area against the nerve's and its flattening ratio.

    python benchmarks/results/exploratory-painted-over-negatives-amd-vm-2026-12-07/painted.py 2 OUT.json
"""
from __future__ import annotations

import json
import sys

import cv2
import numpy as np

from benchmarks.presence import build_items
from engines.registry import load_engine
from realtime.postprocess import postprocess
from realtime.presence import gated_model_file, make_presence_gate
from realtime.tracker import Tracker
from train.perturb import remove_nerve
from train.preprocess import preprocess_image


def main() -> None:
    fold, out_path = int(sys.argv[1]), sys.argv[2]
    run_dir = f"runs/lens/fold-{fold}/lens"
    engine = load_engine(f"{run_dir}/model.pt", threads=1)
    gate = make_presence_gate("on", None, f"{run_dir}/draws-4/appearance.json", gated_model_file(engine))
    items = [it for it in build_items("../shared/data/median-nerve", "kfold", 42, 5, fold, 0)
             if it["kind"] == "validation"]
    rows = []
    for it in items:
        grey, truth = it["image"], it["mask"] > 0
        h, w = grey.shape[:2]
        row = {"id": it["id"]}
        for name, margin in (("default", None), ("wide3x", max(2, round(0.06 * w)))):
            painted = remove_nerve(grey, it["mask"], margin=margin)
            if painted is None:
                row[name] = None  # no room beside the nerve for the fill
                continue
            m = margin if margin is not None else max(2, round(0.02 * w))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1, 2 * m + 1))
            region = cv2.dilate(truth.astype(np.uint8), kernel) > 0
            prob = engine.infer(preprocess_image(painted, engine.size)[None, None])[0, 0]
            r = Tracker(None, 24.0, presence=gate).update(postprocess(prob, (w, h)), 0, 0.0, image=painted)
            res = {"status": r.status.value, "rejected": r.rejected,
                   "score": None if r.presence_score is None else round(float(r.presence_score), 3)}
            if r.measured:
                pred = r.nerve_mask > 0
                res.update(iou_nerve=round(float((pred & truth).sum() / (pred | truth).sum()), 3),
                           overlaps_painted=bool((pred & region).any()),
                           area_ratio=round(float(pred.sum() / truth.sum()), 3),
                           flattening=round(float(r.measurement.flattening_ratio), 2))
            row[name] = res
        rows.append(row)
    with open(out_path, "w") as f:
        json.dump({"fold": fold, "images": rows}, f, indent=1)
    for name in ("default", "wide3x"):
        done = [r[name] for r in rows if r[name] is not None]
        rep = [d for d in done if d["status"] == "ok"]
        print(f"fold {fold} {name}: {len(rep)} of {len(done)} painted stills reported; "
              f"{sum(not d['overlaps_painted'] for d in rep)} of them off the painted region, "
              f"{sum(d['iou_nerve'] >= 0.5 for d in rep)} with IoU >= 0.5 against the removed nerve")


if __name__ == "__main__":
    main()
