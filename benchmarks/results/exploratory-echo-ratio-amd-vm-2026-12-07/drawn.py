"""Drawn frames of other anatomy (and one drawn nerve) through the bundled default and its presence gate, with and
without the echo check: what the network outlines and why the gate keeps or turns it away.

    PYTHONPATH=. python benchmarks/results/exploratory-echo-ratio-amd-vm-2026-12-07/drawn.py

Each frame is speckled soft tissue under a skin line, darker with depth, with: ``neck`` a bright-walled anechoic
oval vein and a round artery (``vessel_frame`` of ``tests/realtime/test_appearance.py``), ``calf`` pennate muscle
with bright septa, ``lymph-node`` a hypoechoic oval with a thin capsule and an echogenic hilum, ``tendon`` a
bright oval, ``muscle`` muscle bellies between fasciae, ``drawn-nerve`` dark fascicles in a bright sheath.
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from engines import load_engine
from engines.registry import BUNDLED_MODELS
from realtime.appearance import echo_ratio
from realtime.postprocess import postprocess
from realtime.presence import make_presence_gate
from realtime.tracker import Tracker
from train.preprocess import preprocess_image

H, W = 468, 606


def finish(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, base.shape).astype(np.float32), (0, 0), 1.2)
    return np.clip(base * speckle / speckle.mean() * np.linspace(1.0, 0.35, H)[:, None], 0, 255).astype(np.uint8)


def frames() -> dict[str, np.ndarray]:
    from tests.realtime.test_appearance import vessel_frame

    rng = np.random.default_rng(1)
    out = {"neck": vessel_frame()}
    b = np.full((H, W), 60, np.float32)
    b[:15] = 170
    b[60:66] += 90
    b[300:306] += 90
    for x0 in range(-400, 700, 28):
        cv2.line(b, (x0, 66), (x0 + 160, 300), 110, 2)
        cv2.line(b, (x0, 306), (x0 + 100, 468), 100, 2)
    out["calf"] = finish(b, rng)
    b = np.full((H, W), 80, np.float32)
    b[:18] = 160
    cv2.ellipse(b, (300, 200), (60, 32), 0, 0, 360, 150, 3)
    cv2.ellipse(b, (300, 200), (57, 29), 0, 0, 360, 40, -1)
    cv2.ellipse(b, (300, 200), (25, 10), 0, 0, 360, 150, -1)
    out["lymph-node"] = finish(b, rng)
    b = np.full((H, W), 70, np.float32)
    b[:18] = 160
    cv2.ellipse(b, (300, 180), (45, 22), 0, 0, 360, 160, -1)
    out["tendon"] = finish(b, rng)
    b = np.full((H, W), 55, np.float32)
    b[:18] = 160
    for y in (70, 200, 330):
        b[y:y + 5] += 100
    for x0 in range(-300, 700, 35):
        cv2.line(b, (x0, 75), (x0 + 60, 200), 85, 2)
    out["muscle"] = finish(b, rng)
    b = np.full((H, W), 70, np.float32)
    b[:18] = 160
    cv2.ellipse(b, (300, 170), (50, 24), 0, 0, 360, 150, 4)
    cv2.ellipse(b, (300, 170), (46, 20), 0, 0, 360, 60, -1)
    for _ in range(14):
        cx, cy = 300 + rng.integers(-38, 38), 170 + rng.integers(-14, 14)
        cv2.circle(b, (int(cx), int(cy)), 4, 30, -1)
    out["drawn-nerve"] = finish(b, rng)
    return out


def main() -> None:
    engine = load_engine("mn-realtime")
    gate = make_presence_gate("on", model_file=str(BUNDLED_MODELS["mn-realtime"]))
    print("| frame | outlined (no gate): centre, area px, echo ratio | gate without the echo check | gate |")
    print("|---|---|---|---|")
    for name, img in frames().items():
        post = postprocess(engine.infer(preprocess_image(img, engine.size)[None, None])[0, 0], (W, H))
        raw = Tracker(None, 24.0, presence=None, confirm_frames=1).update(post, 0, 0.0, image=img)
        cells = ["nothing"]
        if raw.nerve_mask is not None:
            m = raw.nerve_mask > 0
            cy, cx = np.argwhere(m).mean(0)
            cells = [f"({cx:.0f}, {cy:.0f}), {int(m.sum())}, {echo_ratio(img, m):.2f}"]
        for g in (replace(gate, min_echo_ratio=None), gate):
            r = Tracker(None, 24.0, presence=g, confirm_frames=1).update(post, 0, 0.0, image=img)
            score = "" if r.presence_score is None else f", score {r.presence_score:.2f}"
            cells.append(f"{r.status.value}{score}" + (f" ({r.rejected})" if r.rejected else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    engine.close()


if __name__ == "__main__":
    main()
