"""The PyTorch backend: a checkpoint run eagerly on the CPU or a CUDA GPU, fp32 or fp16.

fp16 is a CUDA-only option (a CPU would emulate half precision slowly, and the point of fp16
is the GPU's tensor cores). On CUDA, ``cuda_graph=True`` captures the whole forward pass for
the engine's static input shape in a :class:`torch.cuda.CUDAGraph` (static input/output
buffers, warm-up on a side stream first), which removes the per-kernel launch overhead that
dominates small-batch latency.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from engines.base import Engine, EngineError, EngineInfo

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engines.model_source import LoadOptions, ModelSource

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
CUDA_GRAPH_WARMUP = 3
"""Forward passes on a side stream before a CUDA graph is captured (cuDNN autotuning, allocator)."""


def available() -> tuple[bool, str]:
    """The torch backend always runs (on the CPU at least); the reason says where."""
    if torch.cuda.is_available():
        return True, f"PyTorch {torch.__version__} with CUDA GPU {torch.cuda.get_device_name(0)}"
    return True, f"PyTorch {torch.__version__}, CPU only (no CUDA GPU visible)"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> the first CUDA GPU if there is one, else the CPU; refuse a CUDA device that is absent."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device} was requested but this PyTorch ({torch.__version__}) sees no CUDA GPU; "
                          "use device cpu, or install a CUDA build of PyTorch on a machine with an NVIDIA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise EngineError(f"the torch backend runs on cpu or cuda[:N], not {device!r}")
    return dev


class TorchEngine(Engine):
    """An ``nn.Module`` returning logits, run under ``torch.inference_mode``; outputs ``sigmoid`` as float32.

    Args:
        model: the network (returns logits ``[N, 1, H, W]``); moved to ``device`` and ``precision``.
        info: its description; ``input_shape`` fixes the accepted batch (``N = -1``: any).
        channels_last: feed and keep the weights in NHWC memory format (faster convolutions on
            most CPUs and on tensor-core GPUs).
        cuda_graph: capture a CUDA graph for the static ``input_shape`` (CUDA only).
        threads: intra-op CPU threads (``torch.set_num_threads``, process wide); ``None`` keeps
            PyTorch's setting.

    Raises:
        EngineError: fp16 on the CPU, a CUDA graph on the CPU or with a dynamic batch.
    """

    def __init__(self, model: nn.Module, info: EngineInfo, *, channels_last: bool = True, cuda_graph: bool = False,
                 threads: int | None = None) -> None:
        super().__init__(info)
        self._device = torch.device(info.device)
        if info.precision not in _DTYPES:
            raise EngineError(f"the torch backend runs {', '.join(PRECISIONS)}, not {info.precision!r}")
        if info.precision == "fp16" and self._device.type != "cuda":
            raise EngineError("fp16 with the torch backend needs a CUDA GPU (half precision on the CPU is slow and "
                              "not what fp16 is for); use precision fp32 on the CPU, or backend onnxruntime")
        if cuda_graph and self._device.type != "cuda":
            raise EngineError("cuda_graph needs a CUDA device; drop --cuda-graph on the CPU")
        if cuda_graph and info.input_shape[0] < 0:
            raise EngineError("a CUDA graph needs a static input shape; use a fixed batch instead of a dynamic one")
        if threads:
            torch.set_num_threads(threads)
        self._dtype = _DTYPES[info.precision]
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.eval().to(device=self._device, dtype=self._dtype, memory_format=self._memory_format)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._graph: Any = None
        if cuda_graph:
            self._capture_graph()

    # -- plain eager inference --------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities (float32) of a float32 device tensor."""
        x = x.to(dtype=self._dtype).contiguous(memory_format=self._memory_format)
        return torch.sigmoid(self.model(x).float())

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        with torch.inference_mode():
            if self._graph is not None:
                self._static_in.copy_(x, non_blocking=False)
                self._graph.replay()
                out = self._static_out.cpu()
            else:
                out = self._forward(x.to(self._device)).cpu()
        return np.ascontiguousarray(out.numpy(), dtype=np.float32)

    # -- CUDA graph ---------------------------------------------------------------------------
    def _capture_graph(self) -> None:
        """Warm up on a side stream, then capture one forward pass into static buffers."""
        n, c, h, w = self.input_shape
        with torch.inference_mode():
            self._static_in = torch.zeros((n, c, h, w), device=self._device, dtype=torch.float32)
            stream = torch.cuda.Stream(device=self._device)
            stream.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(stream):
                for _ in range(CUDA_GRAPH_WARMUP):
                    self._forward(self._static_in)
            torch.cuda.current_stream(self._device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._static_out = self._forward(self._static_in)
        torch.cuda.synchronize(self._device)
        self._graph = graph
        self.info.notes.append(f"CUDA graph captured for input {list(self.input_shape)}")
        log.info("captured a CUDA graph for %s input %s", self.name, list(self.input_shape))

    def close(self) -> None:
        self._graph = None
        self.__dict__.pop("_static_in", None)
        self.__dict__.pop("_static_out", None)
        if self._device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()
        super().close()


def load(source: "ModelSource", options: "LoadOptions") -> TorchEngine:
    """A :class:`TorchEngine` for a checkpoint ``source`` (the registry's entry point)."""
    from engines.export import input_shape_for
    from train.checkpoint import model_from_checkpoint
    from train.models import check_input_size

    if source.format != "checkpoint":
        raise EngineError(f"the torch backend runs checkpoints (.pt), and {source.path} is a {source.format} file; "
                          "use backend onnxruntime for .onnx or tensorrt for .engine/.plan")
    device = resolve_device(options.device)
    precision = options.precision or "fp32"
    model, config = model_from_checkpoint(source.path, "cpu")
    size = options.size or tuple(config["preprocessing"]["size"])
    check_input_size(config["model"]["name"], size)
    info = EngineInfo(
        name=config["model"]["name"],
        backend="torch",
        precision=precision,
        device=str(device),
        input_shape=input_shape_for(size, options.batch, options.dynamic_batch),
        source=os.fspath(source.path),
        config=config,
        notes=list(options.notes),
    )
    return TorchEngine(model, info, channels_last=options.channels_last, cuda_graph=options.cuda_graph,
                       threads=options.threads)
