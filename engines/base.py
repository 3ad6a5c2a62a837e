"""The one interface every inference backend implements.

An :class:`Engine` turns a preprocessed batch ``float32 [N, 1, H, W]`` (the output of
:func:`train.preprocess.preprocess_batch`) into nerve probabilities ``float32 [N, 1, H, W]`` at
the network's resolution, whatever runs inside (PyTorch fp32/fp16, ONNX Runtime, TensorRT).
It checks its input against its metadata, like Polygraphy's runners, and describes itself in a
JSON-able dict that every output file produced with it records (:meth:`Engine.describe`).
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from engines.errors import EngineError

RANDOM_WEIGHTS_NOTE = "random weights (architecture name given): for speed only, the masks are meaningless"
"""The note an engine of random weights carries (:mod:`engines.random_model`): masks without meaning."""

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineError", "EngineInfo"]


@dataclass
class EngineInfo:
    """What an engine is; recorded in every output it produces.

    ``input_shape`` is ``(N, 1, H, W)`` with ``N = -1`` for a dynamic batch; ``config`` is the
    checkpoint config (model, preprocessing, size) when known; ``notes`` collect anything a reader
    of the results must know (e.g. why ``auto`` chose this backend).
    """

    name: str
    backend: str
    precision: str
    device: str
    input_shape: tuple[int, int, int, int]
    source: str = ""
    config: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    max_batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "precision": self.precision,
            "device": self.device,
            "input_shape": list(self.input_shape),
            "max_batch": self.max_batch,
            "source": self.source,
            "model": self.config.get("model"),
            "preprocessing": self.config.get("preprocessing"),
            "notes": list(self.notes),
        }


class Engine(abc.ABC):
    """Runs a segmentation network on preprocessed batches.

    Subclasses implement :meth:`_infer` (input already checked) and may override :meth:`close`.
    Use as a context manager or call :meth:`close` to release GPU memory, sessions and streams.
    """

    def __init__(self, info: EngineInfo) -> None:
        self.info = info
        self._closed = False

    # -- metadata ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def backend(self) -> str:
        return self.info.backend

    @property
    def precision(self) -> str:
        return self.info.precision

    @property
    def device(self) -> str:
        return self.info.device

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.info.input_shape

    @property
    def size(self) -> tuple[int, int]:
        """Network input size as ``(W, H)``, the convention of ``--size``."""
        return self.info.input_shape[3], self.info.input_shape[2]

    def describe(self) -> dict[str, Any]:
        return self.info.to_dict()

    # -- inference --------------------------------------------------------------------------
    window_hints: bool = False
    """Whether :meth:`infer_hinted` places a window where it is told (a cascade does; other engines have
    no window and ignore hints)."""

    def infer_hinted(self, batch: np.ndarray, centres: Sequence[tuple[float, float] | None],
                     verify: Sequence[bool] | None = None) -> tuple[np.ndarray, list[str | None]]:
        """Probabilities as :meth:`infer`, with a window centre per frame (network-input pixels ``(x, y)``, or
        None to let the engine place it) and whether to check that hint against the engine's own placement
        (``verify``); also returns each frame's window source (``"tracked"``: the hint, ``"confirmed"``: the
        hint, checked, ``"localiser"``, or None for an engine without a window)."""
        return self.infer(batch), [None] * len(batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``float32 [N,1,H,W]`` for a preprocessed ``float32 [N,1,H,W]`` batch."""
        if self._closed:
            raise EngineError(f"engine {self.name} ({self.backend}) is closed")
        self.check_input(batch)
        return self._infer(np.ascontiguousarray(batch))

    def check_input(self, batch: Any) -> None:
        """Raise :class:`EngineError` saying what was expected when ``batch`` does not fit."""
        n, c, h, w = self.input_shape
        expected = f"float32 [{'N' if n < 0 else n}, {c}, {h}, {w}]"
        if not isinstance(batch, np.ndarray):
            raise EngineError(f"{self.name}: expected a numpy array {expected}, got {type(batch).__name__}")
        if batch.dtype != np.float32:
            raise EngineError(f"{self.name}: expected {expected}, got dtype {batch.dtype} "
                              "(preprocess frames with train.preprocess.preprocess_batch)")
        if batch.ndim != 4 or batch.shape[1:] != (c, h, w) or (n >= 0 and batch.shape[0] != n) or batch.shape[0] < 1:
            raise EngineError(f"{self.name}: expected {expected}, got shape {list(batch.shape)}")
        if self.info.max_batch is not None and batch.shape[0] > self.info.max_batch:
            raise EngineError(f"{self.name}: batch {batch.shape[0]} exceeds this engine's maximum "
                              f"{self.info.max_batch}; rebuild it with a larger batch profile")

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Backend-specific inference on a checked, contiguous batch."""

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} backend={self.backend} precision={self.precision} "
                f"device={self.device} input={list(self.input_shape)}>")
