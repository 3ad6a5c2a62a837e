"""What the realtime tests share: a perfect stand-in engine and frames it segments exactly, the fast
engine flags of the command tests, and counting a video's frames."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from engines.base import Engine, EngineInfo
from realtime.frame import Frame

FAST = ["--model", "lunet", "--size", "64x48", "-q"]  # random weights, tiny input: the plumbing, not accuracy
NATIVE = (606, 468)  # W, H
MODEL = (384, 288)


def ellipse_mask(cx: float, cy: float, ax: float = 45, ay: float = 28, angle: float = 20) -> np.ndarray:
    m = np.zeros((NATIVE[1], NATIVE[0]), np.uint8)
    cv2.ellipse(m, (int(cx), int(cy)), (int(ax), int(ay)), angle, 0, 360, 255, -1)
    return m


class TruthEngine(Engine):
    """Returns each frame's true mask resized to the model size, as a perfect network would.

    The frame's image *is* its mask here (bright nerve on black), so the engine sees only the
    preprocessed input: it un-z-scores nothing, it thresholds the z-scored input at its midpoint.
    """

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        super().__init__(EngineInfo(name="truth", backend="fake", precision="fp32", device="cpu",
                                    input_shape=(-1, 1, MODEL[1], MODEL[0])))
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.calls = 0

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise RuntimeError("GPU fell off the bus")
        time.sleep(self.delay_s)
        lo = batch.min(axis=(1, 2, 3), keepdims=True)
        hi = batch.max(axis=(1, 2, 3), keepdims=True)
        return ((batch - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)


def frames(n: int, fps: float = 24.0) -> list[Frame]:
    out = []
    for i in range(n):
        mask = ellipse_mask(200 + 3 * i, 90 + i)
        out.append(Frame(index=i, t_capture=time.monotonic(), pts=i / fps, image=mask.copy(), truth=mask))
    return out


def decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))
