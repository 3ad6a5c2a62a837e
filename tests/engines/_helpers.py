"""Shared helpers of the engine tests: random-weight checkpoints at small sizes and parity measures."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch

from train.checkpoint import save_checkpoint
from train.metrics import dice_hard
from train.models import build_model

SMALL_SIZE: dict[str, tuple[int, int]] = {
    "unet": (128, 96),
    "lunet": (128, 96),
    "lunet-coarse": (128, 96),
    "lunet-coarse2": (128, 96),
    "dbunet": (64, 48),
    "dlunet": (64, 48),
    "dlunet-b4c3": (64, 48),
}
"""(W, H) used per architecture: the VGG networks are too slow on 2 cores at bigger sizes."""

T = TypeVar("T")


def make_checkpoint(path: Path, name: str = "lunet", size: tuple[int, int] = (128, 96), seed: int = 0) -> Path:
    """A checkpoint of ``name`` with random (seeded) weights and ``preprocessing.size = size``."""
    torch.manual_seed(seed)
    save_checkpoint(path, build_model(name), {"model": {"name": name, "kwargs": {}},
                                              "preprocessing": {"size": list(size)}})
    return path


def random_batch(size: tuple[int, int], n: int = 1, seed: int = 0) -> np.ndarray:
    """A z-scored-like float32 ``[n, 1, H, W]`` batch."""
    return np.random.default_rng(seed).standard_normal((n, 1, size[1], size[0])).astype(np.float32)


def torch_prob(checkpoint: Path, batch: np.ndarray) -> np.ndarray:
    """The fp32 torch reference: ``sigmoid(model(x))``."""
    from train.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(checkpoint, "cpu")
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(batch))).numpy()


def min_dice(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest per-image Dice of the ``>= 0.5`` masks of two probability batches."""
    return min(dice_hard(x >= 0.5, y >= 0.5) for x, y in zip(a, b))


def write_video(path: Path, n_frames: int = 12, size: tuple[int, int] = (160, 120), fps: int = 24) -> Path:
    """A tiny MP4 (H.264 if available, else MPEG-4 part 2) of a bright disc moving over speckle."""
    import av
    import cv2

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    rng = np.random.default_rng(0)
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n_frames):
            img = (60 + 40 * rng.random((h, w))).astype(np.uint8)
            cv2.circle(img, (w // 4 + i * w // (2 * n_frames), h // 2), h // 5, 200, -1)
            frame = av.VideoFrame.from_ndarray(np.dstack([img] * 3), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def load_fp16_or_skip(load: Callable[[], T]) -> T:
    """``load()`` an fp16 ONNX engine; skip only when this onnxruntime build has no CPU kernel for an op of
    it (its NOT_IMPLEMENTED error, a platform limit, named in the reason). Any other ``EngineError`` is a
    broken fp16 export and fails the test."""
    from engines import EngineError

    try:
        return load()
    except EngineError as exc:
        if "NOT_IMPLEMENTED" not in str(exc):
            raise
        import pytest

        pytest.skip(f"this onnxruntime build has no CPU kernel for an fp16 op: {exc}")
