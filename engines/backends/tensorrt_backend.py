"""TensorRT backend: build a plan from ONNX (cached), run it with torch CUDA tensors as buffers.

Build (:func:`build_plan`), with the TensorRT Python API (``tensorrt`` >= 10; 8.x still builds):

- ``trt.Builder(logger)``, ``builder.create_network(flags)`` with
  ``1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)`` on TensorRT 9/10; on TensorRT 11
  every network is strongly typed and the flag is deprecated and ignored, so no flag is passed
  (TensorRT 11.0 Python API, ``NetworkDefinitionCreationFlag``). TensorRT 11 removed
  ``BuilderFlag.FP16`` ("Migrating from TensorRT 10.x to 11.x": strongly typed networks are
  required), so FP16 comes from an ONNX that is already FP16 (exported in half precision with
  float32 inputs and outputs); :func:`inspect_onnx` checks the ONNX holds the precision asked
  for. Only a TensorRT without ``STRONGLY_TYPED`` (8.x) falls back to ``EXPLICIT_BATCH`` plus
  ``BuilderFlag.FP16``, and says so in the log.
- ``trt.OnnxParser(network, logger).parse_from_file(path)``; on failure every
  ``parser.get_error(i)`` for ``i < parser.num_errors`` is reported.
- ``builder.create_builder_config()``; ``config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
  bytes)``; ``config.create_timing_cache(bytes)`` / ``config.set_timing_cache(cache,
  ignore_mismatch=False)`` / ``config.get_timing_cache().serialize()`` for a timing cache
  persisted in the cache folder; ``builder.create_optimization_profile()`` /
  ``profile.set_shape(name, min, opt, max)`` / ``config.add_optimization_profile(profile)`` when
  the ONNX input has dynamic dimensions; ``builder.build_serialized_network(network, config)``.

Run (:class:`TensorRTEngine`), TensorRT 10+ name-based I/O API, no pycuda:

- ``trt.Runtime(logger).deserialize_cuda_engine(bytes)``, ``engine.create_execution_context()``;
- I/O discovered with ``engine.num_io_tensors`` / ``get_tensor_name(i)`` / ``get_tensor_mode(name)``
  / ``get_tensor_dtype(name)`` / ``get_tensor_shape(name)`` / ``get_tensor_profile_shape(name, 0)``;
- torch CUDA tensors as device buffers: ``context.set_tensor_address(name, tensor.data_ptr())``,
  ``context.set_input_shape(name, shape)`` for dynamic shapes,
  ``context.execute_async_v3(stream.cuda_stream)`` on a ``torch.cuda.Stream``, then synchronise;
- optional CUDA graph: one ``execute_async_v3`` first (the TensorRT Developer Guide, "CUDA
  Graphs", asks for one enqueue before capture so deferred shape/resource updates are flushed),
  then capture of ``execute_async_v3`` into a ``torch.cuda.CUDAGraph``; a failed capture logs a
  warning, is noted in the engine's metadata, and inference runs without the graph.

``import tensorrt`` happens only inside functions: ``import engines`` works without TensorRT.
NVIDIA's warning applies: a plan is executable code, deserialise only plans you built
(the sidecar check below refuses plans that are not described by an mn-seg sidecar).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

import numpy as np

from engines.base import Engine, EngineError, EngineInfo
from engines.cache import (
    EngineKey,
    atomic_write_bytes,
    cache_dir as resolve_cache_dir,
    check_sidecar,
    file_sha256,
    read_sidecar,
    rebuild_command,
    sidecar_path,
    timing_cache_path,
    write_sidecar,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mn-seg[tensorrt]' on a machine with an NVIDIA GPU and driver"
NOT_INSTALLED = f"tensorrt is not installed: {INSTALL_HINT}"
PIN_MEMORY = True
"""Page-locked host staging buffers, so host<->device copies run asynchronously on the engine's stream."""


# ---------------------------------------------------------------------------------------------
# Availability and the running environment
# ---------------------------------------------------------------------------------------------


def _import_tensorrt() -> ModuleType:
    """``import tensorrt``, or :class:`EngineError` with the install hint."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, heavy
    except ImportError:
        raise EngineError(NOT_INSTALLED) from None
    except Exception as exc:  # a broken install: missing libnvinfer, CUDA mismatch...
        raise EngineError(f"tensorrt cannot be imported ({type(exc).__name__}: {exc}); reinstall it: "
                          f"{INSTALL_HINT}") from None
    return trt


def _cuda_reason() -> str | None:
    """Why torch cannot use a CUDA GPU, or ``None`` when it can."""
    import torch

    if torch.cuda.is_available():
        return None
    built = torch.version.cuda
    return (f"no CUDA GPU visible to PyTorch (torch {torch.__version__}, "
            + (f"built for CUDA {built}); check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"
               if built else "a CPU-only build); install a CUDA build of torch on a machine with an NVIDIA GPU"))


def tensorrt_available() -> tuple[bool, str]:
    """``(True, "TensorRT X on GPU")`` when TensorRT can build and run here, else ``(False, why)``."""
    try:
        trt = _import_tensorrt()
    except EngineError as exc:
        return False, str(exc)
    reason = _cuda_reason()
    if reason:
        return False, reason
    import torch

    return True, f"TensorRT {getattr(trt, '__version__', '?')} on {torch.cuda.get_device_name(0)}"


def _require_tensorrt() -> ModuleType:
    """TensorRT and a CUDA GPU, or :class:`EngineError` saying how to get them."""
    trt = _import_tensorrt()
    reason = _cuda_reason()
    if reason:
        raise EngineError(f"the TensorRT backend needs a CUDA GPU: {reason}")
    return trt


def running_environment(device: int | None = None) -> dict[str, str]:
    """``{"trt_version", "gpu_name", "compute_capability"}`` of this process.

    From ``tensorrt.__version__``, ``torch.cuda.get_device_name`` and
    ``torch.cuda.get_device_capability`` (as ``"major.minor"``).
    """
    trt = _require_tensorrt()
    import torch

    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return {"trt_version": str(trt.__version__), "gpu_name": torch.cuda.get_device_name(index),
            "compute_capability": f"{major}.{minor}"}


def _cuda_device() -> Any:
    """The ``torch.device`` TensorRT runs on: the current CUDA device (TensorRT uses the current context)."""
    import torch

    return torch.device("cuda", torch.cuda.current_device())


def _trt_major(trt: ModuleType) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------
# The TensorRT logger (one per process, routed to Python logging)
# ---------------------------------------------------------------------------------------------

_TRT_LOGGER: Any = None
_trt_log = logging.getLogger("engines.tensorrt")


def _logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` forwarding TensorRT's messages to the ``engines.tensorrt`` logger.

    TensorRT expects one logger per process for all builders and runtimes (it warns when a
    second, different one is given), so it is created once. VERBOSE messages are dropped,
    INFO goes to DEBUG (TensorRT's INFO is chatty), WARNING and ERROR keep their level.
    """
    global _TRT_LOGGER
    if _TRT_LOGGER is not None:
        return _TRT_LOGGER
    severity = trt.ILogger.Severity

    class _PyLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # required by the bindings (TensorRT Python API, ILogger)

        def log(self, sev: Any, msg: str) -> None:
            if sev in (severity.INTERNAL_ERROR, severity.ERROR):
                _trt_log.error("%s", msg)
            elif sev == severity.WARNING:
                _trt_log.warning("%s", msg)
            elif sev == severity.INFO:
                _trt_log.debug("%s", msg)

    _TRT_LOGGER = _PyLogger()
    return _TRT_LOGGER


# ---------------------------------------------------------------------------------------------
# ONNX inspection (no TensorRT needed)
# ---------------------------------------------------------------------------------------------


@dataclass
class OnnxSummary:
    """What :func:`build_plan` needs to know about an ONNX file before handing it to TensorRT.

    Shapes use ``None`` for a dynamic dimension. ``float16_weights`` / ``float32_weights`` count
    the *elements* of float16 / float32 initializers and constants, so a handful of small float32
    constants that ONNX requires (``Resize`` scales) do not make an FP16 export look FP32.
    """

    inputs: list[tuple[str, tuple[int | None, ...], str]] = field(default_factory=list)
    outputs: list[tuple[str, tuple[int | None, ...], str]] = field(default_factory=list)
    float16_weights: int = 0
    float32_weights: int = 0

    @property
    def precision(self) -> str:
        """``"fp16"`` when most weight elements are float16, else ``"fp32"``."""
        return "fp16" if self.float16_weights > self.float32_weights else "fp32"


def inspect_onnx(path: str | os.PathLike) -> OnnxSummary:
    """Inputs, outputs (name, shape, element type) and weight precision of an ONNX file.

    Reads the graph with ``onnx.load(..., load_external_data=False)``; weights stored outside
    the file are counted by their declared type.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise EngineError(f"cannot read ONNX file {path} ({type(exc).__name__}: {exc}); re-export it with "
                          "mn-export --format onnx") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    type_name = onnx.TensorProto.DataType.Name

    def describe(value: Any) -> tuple[str, tuple[int | None, ...], str]:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tensor.shape.dim)
        return value.name, dims, type_name(tensor.elem_type)

    summary = OnnxSummary(inputs=[describe(v) for v in graph.input if v.name not in initializers],
                          outputs=[describe(v) for v in graph.output])
    tensors = list(graph.initializer) + [attr.t for node in graph.node if node.op_type == "Constant"
                                         for attr in node.attribute if attr.name == "value"]
    for tensor in tensors:  # weights are initializers, or Constant nodes in some exports
        count = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
        if tensor.data_type == onnx.TensorProto.FLOAT16:
            summary.float16_weights += count
        elif tensor.data_type == onnx.TensorProto.FLOAT:
            summary.float32_weights += count
    return summary


def _check_onnx(summary: OnnxSummary, onnx_path: Path, precision: str, input_shape: tuple[int, ...],
                max_batch: int | None, strongly_typed: bool) -> tuple[str, tuple[int | None, ...]]:
    """Validate the ONNX against the requested build; return its input name and ONNX shape."""
    if len(summary.inputs) != 1:
        raise EngineError(f"{onnx_path.name} has {len(summary.inputs)} inputs "
                          f"({', '.join(n for n, _, _ in summary.inputs)}); an mn-seg network takes one [N,1,H,W] "
                          "input. Export it with mn-export --format onnx")
    name, dims, elem = summary.inputs[0]
    if elem != "FLOAT":
        raise EngineError(f"{onnx_path.name}: input {name!r} is {elem}, expected float32 inputs and outputs "
                          "(an FP16 ONNX keeps float32 I/O and casts inside); re-export with mn-export")
    if len(dims) != 4:
        raise EngineError(f"{onnx_path.name}: input {name!r} has rank {len(dims)}, expected [N, 1, H, W]")
    for axis, (want, have) in enumerate(zip(input_shape, dims)):
        if have is not None and have != want:
            if axis == 0:
                raise EngineError(
                    f"{onnx_path.name} has a fixed batch of {have}, but a batch of {want} was asked for; export an "
                    "ONNX with a dynamic batch (mn-export --dynamic-batch) or build with the ONNX's batch")
            raise EngineError(f"{onnx_path.name} has input shape {list(dims)}, but {list(input_shape)} was asked "
                              f"for; export the ONNX at the size you want (mn-export --size WxH)")
    if max_batch is not None and dims[0] is not None:
        raise EngineError(f"{onnx_path.name} has a fixed batch of {dims[0]}, so no batch profile up to {max_batch} "
                          "can be built; export it with a dynamic batch dimension "
                          "(mn-export --dynamic-batch --batch N)")
    have_precision = summary.precision
    if strongly_typed and have_precision != precision:
        raise EngineError(
            f"{onnx_path.name} holds {have_precision} weights but a {precision} engine was asked for. TensorRT "
            f"builds strongly typed networks (TensorRT 11 removed the FP16 builder flag), so the precision comes "
            f"from the ONNX: export it with mn-export --precision {precision}")
    if not strongly_typed and have_precision == "fp16" and precision == "fp32":
        raise EngineError(f"{onnx_path.name} holds fp16 weights; an fp32 engine needs an fp32 ONNX "
                          "(mn-export --precision fp32)")
    return name, dims


def _network_mode(trt: ModuleType, precision: str) -> tuple[int, bool, str]:
    """``(create_network flags, set BuilderFlag.FP16?, description)`` for this TensorRT.

    TensorRT 11+: 0 (strong typing always on; ``STRONGLY_TYPED`` is deprecated and ignored).
    TensorRT 9/10: ``1 << STRONGLY_TYPED``. Older (8.x): ``1 << EXPLICIT_BATCH`` and, for fp16,
    ``BuilderFlag.FP16`` (weakly typed: TensorRT may choose FP16 kernels for an FP32 ONNX).
    """
    flags_enum = trt.NetworkDefinitionCreationFlag
    if _trt_major(trt) >= 11:
        return 0, False, "strongly typed (always on in TensorRT 11+)"
    if hasattr(flags_enum, "STRONGLY_TYPED"):
        flags = 1 << int(flags_enum.STRONGLY_TYPED)
        return flags, False, "strongly typed (NetworkDefinitionCreationFlag.STRONGLY_TYPED)"
    flags = 1 << int(flags_enum.EXPLICIT_BATCH) if hasattr(flags_enum, "EXPLICIT_BATCH") else 0
    if precision == "fp16":
        return flags, True, "weakly typed with BuilderFlag.FP16 (this TensorRT has no strongly typed networks)"
    return flags, False, "weakly typed, fp32 (this TensorRT has no strongly typed networks)"


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def _as_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 4 or shape[1] != 1 or min(shape) < 1:
        raise EngineError(f"input_shape must be (N, 1, H, W) with positive sizes, got {list(input_shape)}")
    return shape  # type: ignore[return-value]


def plan_key(onnx_path: str | os.PathLike, *, precision: str, input_shape: Sequence[int],
             max_batch: int | None = None, running: Mapping[str, str] | None = None) -> EngineKey:
    """The :class:`EngineKey` of a plan built here from ``onnx_path`` with these settings."""
    running = running if running is not None else running_environment()
    return EngineKey(onnx_sha256=file_sha256(onnx_path), trt_version=running["trt_version"],
                     gpu_name=running["gpu_name"], compute_capability=running["compute_capability"],
                     precision=precision, input_shape=_as_input_shape(input_shape), max_batch=max_batch)


def build_plan(onnx_path: str | os.PathLike, *, precision: str, input_shape: Sequence[int],
               max_batch: int | None = None, workspace_mb: int | None = None,
               cache_dir: str | os.PathLike | None = None, checkpoint_config: Mapping[str, Any] | None = None,
               checkpoint_path: str | os.PathLike | None = None, model_name: str | None = None,
               force: bool = False) -> Path:
    """Build (or find in the cache) the TensorRT plan of an ONNX file; return its path.

    Args:
        onnx_path: ONNX with float32 input/output; FP16 weights for ``precision="fp16"``.
        precision: ``"fp32"`` or ``"fp16"`` (must match the ONNX: the network is strongly typed).
        input_shape: ``(N, 1, H, W)``. Without ``max_batch`` the engine has exactly this shape.
        max_batch: build an optimisation profile ``min 1, opt N, max max_batch`` on the batch
            axis (the ONNX must have a dynamic batch dimension).
        workspace_mb: limit of TensorRT's workspace memory pool, in MiB (default: TensorRT's,
            the whole GPU memory).
        cache_dir: cache folder (default: ``MN_SEG_CACHE`` or ``~/.cache/mn-seg/engines``).
        checkpoint_config, checkpoint_path: recorded in the sidecar (the rebuild command uses the path).
        model_name: plan file name prefix (default: the checkpoint config's model name, else the ONNX stem).
        force: rebuild even when a matching plan is cached.

    Returns:
        The ``.plan`` path; its sidecar ``.plan.json`` is beside it. A cached plan with a matching
        sidecar is returned without building.

    Raises:
        EngineError: no TensorRT or GPU, an ONNX that does not fit the request, parse or build failure.
    """
    trt = _require_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX file {onnx_path} does not exist; export one with mn-export --format onnx")
    shape = _as_input_shape(input_shape)
    running = running_environment()
    key = plan_key(onnx_path, precision=precision, input_shape=shape, max_batch=max_batch, running=running)
    directory = resolve_cache_dir(cache_dir)
    if model_name is None:
        model_name = ((checkpoint_config or {}).get("model") or {}).get("name") or onnx_path.stem
    plan = directory / key.plan_filename(model_name)

    if plan.is_file() and not force:
        try:
            sidecar = check_sidecar(plan, running)
        except EngineError as exc:
            log.warning("cached plan %s cannot be used (%s); rebuilding it", plan.name, str(exc).splitlines()[0])
        else:
            if sidecar.get("digest") == key.digest():
                log.info("using cached TensorRT plan %s", plan)
                return plan
            log.warning("cached plan %s has a different key in its sidecar; rebuilding it", plan.name)

    flags, fp16_flag, mode = _network_mode(trt, precision)
    strongly_typed = not mode.startswith("weakly")
    input_name, onnx_dims = _check_onnx(inspect_onnx(onnx_path), onnx_path, precision, shape, max_batch,
                                        strongly_typed)
    log.warning("building TensorRT engine for %s (%s, %s, input %s%s) -- this can take several minutes...",
                onnx_path.name, precision, mode, list(shape), f", batch 1..{max_batch}" if max_batch else "")
    t0 = time.perf_counter()
    serialized, timing_cache_file = _build_serialized(trt, onnx_path, directory, running, flags=flags,
                                                      fp16_flag=fp16_flag, input_name=input_name,
                                                      onnx_dims=onnx_dims, shape=shape, max_batch=max_batch,
                                                      workspace_mb=workspace_mb)
    atomic_write_bytes(plan, serialized)
    seconds = time.perf_counter() - t0
    write_sidecar(plan, key, checkpoint_config=checkpoint_config, checkpoint_path=checkpoint_path,
                  model_name=model_name, onnx_path=onnx_path,
                  extra={"network_mode": mode, "workspace_mb": workspace_mb, "build_seconds": round(seconds, 1),
                         "timing_cache": timing_cache_file.name, "onnx_input": input_name,
                         "python": sys.version.split()[0]})
    log.info("built %s in %.0f s (%.1f MB)", plan, seconds, plan.stat().st_size / 1e6)
    return plan


def _build_serialized(trt: ModuleType, onnx_path: Path, directory: Path, running: Mapping[str, str], *,
                      flags: int, fp16_flag: bool, input_name: str, onnx_dims: tuple[int | None, ...],
                      shape: tuple[int, int, int, int], max_batch: int | None,
                      workspace_mb: int | None) -> tuple[bytes, Path]:
    """Parse and build; returns the serialized plan and the timing cache file it used."""
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}:\n  " + "\n  ".join(errors or ["(no details)"])
                          + "\nRe-export it with mn-export --format onnx (opset 18; TensorRT 8.x needs opset 17: "
                            "engines.export.export_onnx(..., opset=17)); if it persists, the network uses an "
                            "operator this TensorRT does not support")
    config = builder.create_builder_config()
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)

    timing_file = timing_cache_path(directory, running)
    cache_bytes = b""
    if timing_file.is_file():
        try:
            cache_bytes = timing_file.read_bytes()
        except OSError as exc:
            log.warning("cannot read the timing cache %s (%s); starting an empty one", timing_file, exc)
    timing_cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("the timing cache %s does not match this TensorRT/GPU; starting an empty one", timing_file.name)
        timing_cache = config.create_timing_cache(b"")
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
    elif cache_bytes:
        log.info("using the timing cache %s", timing_file)

    if any(d is None for d in onnx_dims):
        n = shape[0]
        opt = tuple(shape)
        lo = (1 if max_batch is not None else n, *shape[1:])
        hi = (max_batch if max_batch is not None else n, *shape[1:])
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, lo, opt, hi)
        config.add_optimization_profile(profile)
        log.info("optimisation profile for %s: min %s, opt %s, max %s", input_name, list(lo), list(opt), list(hi))

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {onnx_path.name}; see the TensorRT errors logged "
                          "above (out of GPU memory: pass a larger --workspace or free the GPU)")
    try:
        atomic_write_bytes(timing_file, bytes(config.get_timing_cache().serialize()))
    except OSError as exc:
        log.warning("cannot save the timing cache %s: %s", timing_file, exc)
    return bytes(serialized), timing_file


# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------


def _torch_dtype(trt: ModuleType, dtype: Any) -> Any:
    """The torch dtype of a ``trt.DataType`` (float32, float16, bfloat16 for this backend's I/O)."""
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    try:
        return table[dtype]
    except (KeyError, TypeError):
        raise EngineError(f"this backend needs float32/float16 engine inputs and outputs, the plan has {dtype}; "
                          "rebuild it from an ONNX exported by mn-export") from None


class TensorRTEngine(Engine):
    """A TensorRT plan behind the :class:`~engines.base.Engine` interface.

    The plan's sidecar is checked before it is deserialised (TensorRT version, GPU name and
    compute capability must match, see :func:`engines.cache.check_sidecar`). Inputs are copied
    through a pinned host buffer into a torch CUDA tensor whose address TensorRT reads
    (``set_tensor_address``), inference runs with ``execute_async_v3`` on a dedicated
    ``torch.cuda.Stream`` (or by replaying a captured CUDA graph), and the output comes back as
    float32 numpy ``[N, 1, H, W]``.

    Args:
        plan_path: the ``.plan`` file (from :func:`build_plan` / ``mn-export --format engine``).
        cuda_graph: capture ``execute_async_v3`` into a CUDA graph (static-shape plans only;
            a dynamic-batch plan or a failed capture runs without, with a logged warning and a
            note in :attr:`info`).
        trust_plan: load a plan that has no (readable) sidecar, with a warning. A plan whose
            sidecar names another TensorRT version or GPU is refused regardless.
    """

    def __init__(self, plan_path: str | os.PathLike, *, cuda_graph: bool = False, trust_plan: bool = False) -> None:
        plan = Path(plan_path)
        trt = _require_tensorrt()
        if not plan.is_file():
            raise EngineError(f"TensorRT plan {plan} does not exist; build it with mn-export --checkpoint CKPT "
                              "--format engine --precision fp16 --size WxH")
        running = running_environment()
        sidecar: dict[str, Any] | None
        if trust_plan and not sidecar_path(plan).is_file():
            log.warning("loading TensorRT plan %s without a sidecar (trust_plan=True): nothing checks that it was "
                        "built with TensorRT %s for %s", plan, running["trt_version"], running["gpu_name"])
            sidecar = None
        elif trust_plan:
            try:
                sidecar = check_sidecar(plan, running)
            except EngineError as exc:
                if not _sidecar_unreadable(plan):
                    raise
                log.warning("trust_plan=True: ignoring the unusable sidecar of %s (%s)", plan.name,
                            str(exc).splitlines()[0])
                sidecar = None
        else:
            sidecar = check_sidecar(plan, running)
        rebuild = rebuild_command(sidecar, plan) if sidecar else "mn-export ... --format engine"

        import torch

        self._trt = trt
        self._torch = torch
        self._graph: Any = None
        self._device = _cuda_device()
        self._runtime = trt.Runtime(_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialise {plan} (see the TensorRT error logged above). "
                              f"Rebuild it with:\n  {rebuild}")
        self._discover_io(plan)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"TensorRT could not create an execution context for {plan.name} (out of GPU memory?)")
        self._allocate()

        precision = sidecar["precision"] if sidecar else ("fp16" if self._out_dtype == torch.float16 else "unknown")
        shape = (-1 if self._dynamic else self._max_shape[0], *self._max_shape[1:])
        config = (sidecar or {}).get("checkpoint_config") or {}
        name = (sidecar or {}).get("model_name") or (config.get("model") or {}).get("name") or plan.stem
        notes = [f"TensorRT {running['trt_version']} plan {plan.name}"]
        if sidecar is None:
            notes.append("plan loaded without a matching sidecar (trust_plan=True)")
        super().__init__(EngineInfo(name=name, backend="tensorrt", precision=precision,
                                    device=f"{self._device} ({running['gpu_name']})",
                                    input_shape=shape,  # type: ignore[arg-type]
                                    source=str(plan), config=dict(config), notes=notes,
                                    max_batch=self._max_shape[0]))
        if cuda_graph:
            self._capture_graph()

    # -- setup ---------------------------------------------------------------------------------
    def _discover_io(self, plan: Path) -> None:
        trt, engine = self._trt, self._engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            entry = (name, engine.get_tensor_dtype(name), tuple(engine.get_tensor_shape(name)))
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(entry)
        if len(inputs) != 1 or len(outputs) != 1:  # execute_async_v3 needs an address for every I/O tensor
            raise EngineError(f"{plan.name} has {len(inputs)} inputs and {len(outputs)} outputs; an mn-seg plan has "
                              "one [N,1,H,W] input and one [N,1,H,W] probability output (build it from an ONNX "
                              "exported by mn-export)")
        self._in_name, in_dtype, in_shape = inputs[0]
        self._out_name, out_dtype, _ = outputs[0]
        if len(in_shape) != 4 or in_shape[1] not in (1, -1):
            raise EngineError(f"{plan.name}: input {self._in_name!r} has shape {list(in_shape)}, expected [N,1,H,W]")
        self._in_dtype = _torch_dtype(trt, in_dtype)
        self._out_dtype = _torch_dtype(trt, out_dtype)
        self._dynamic = any(d < 0 for d in in_shape)
        if self._dynamic:
            lo, _opt, hi = engine.get_tensor_profile_shape(self._in_name, 0)
            self._min_shape, self._max_shape = tuple(lo), tuple(hi)
            if tuple(lo) == tuple(hi):  # min == opt == max: in effect static
                self._dynamic = False
        else:
            self._min_shape = self._max_shape = tuple(in_shape)
        self._needs_shape = any(d < 0 for d in in_shape)

    def _allocate(self) -> None:
        torch, ctx = self._torch, self._context
        self._stream = torch.cuda.Stream(device=self._device)
        if self._needs_shape and not ctx.set_input_shape(self._in_name, self._max_shape):
            raise EngineError(f"TensorRT refused the input shape {list(self._max_shape)}")
        out_shape = tuple(ctx.get_tensor_shape(self._out_name))
        if any(d < 0 for d in out_shape):
            raise EngineError(f"output {self._out_name!r} has a data-dependent shape {list(out_shape)}; "
                              "this backend needs an output shape fixed by the input shape")
        self._d_in = torch.empty(self._max_shape, dtype=self._in_dtype, device=self._device)
        self._d_out = torch.empty(out_shape, dtype=self._out_dtype, device=self._device)
        self._h_in = torch.empty(self._max_shape, dtype=torch.float32, pin_memory=PIN_MEMORY)
        self._h_out = torch.empty(out_shape, dtype=torch.float32, pin_memory=PIN_MEMORY)
        # the addresses never change: buffers are sized for the largest batch, smaller batches use their start
        ctx.set_tensor_address(self._in_name, self._d_in.data_ptr())
        ctx.set_tensor_address(self._out_name, self._d_out.data_ptr())
        self._set_shape = None if not self._needs_shape else tuple(self._max_shape)

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise EngineError(f"TensorRT execute_async_v3 failed for {self.name} (see the TensorRT error logged above)")

    def _capture_graph(self) -> None:
        """Capture ``execute_async_v3`` into a ``torch.cuda.CUDAGraph`` (static shape only)."""
        torch = self._torch
        if self._dynamic:
            msg = "CUDA graph not used: this plan has a dynamic batch (graphs need a static shape)"
            log.warning("%s: %s", self.name, msg)
            self.info.notes.append(msg)
            return
        try:
            with torch.cuda.stream(self._stream):
                self._d_in.zero_()
                self._enqueue()  # warm-up: flushes TensorRT's deferred updates before capture
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                self._enqueue()
            self._stream.synchronize()
        except Exception as exc:  # capture is best effort: TensorRT or the driver may refuse it
            msg = f"CUDA graph capture failed ({type(exc).__name__}: {exc}); running without a CUDA graph"
            log.warning("%s: %s", self.name, msg)
            self.info.notes.append(msg)
            self._graph = None
            return
        self._graph = graph
        self.info.notes.append("CUDA graph: execute_async_v3 captured once, replayed per batch")

    # -- inference -----------------------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        n = batch.shape[0]
        shape = (n, *self._max_shape[1:])
        with torch.cuda.stream(self._stream):
            self._h_in.numpy().reshape(-1)[: batch.size] = batch.reshape(-1)
            h_in = self._h_in.view(-1)[: batch.size].view(shape)
            self._d_in.view(-1)[: batch.size].view(shape).copy_(h_in, non_blocking=True)
            if self._graph is not None:
                self._graph.replay()
            else:
                if self._needs_shape and self._set_shape != shape:
                    if not self._context.set_input_shape(self._in_name, shape):
                        raise EngineError(f"{self.name}: TensorRT refused input shape {list(shape)} (profile "
                                          f"{list(self._min_shape)}..{list(self._max_shape)})")
                    self._set_shape = shape
                self._enqueue()
            out_shape = tuple(self._context.get_tensor_shape(self._out_name)) if self._needs_shape else tuple(
                self._d_out.shape)
            count = int(np.prod(out_shape))
            d_out = self._d_out.view(-1)[:count].view(out_shape)
            if d_out.dtype != torch.float32:
                d_out = d_out.float()
            h_out = self._h_out.view(-1)[:count].view(out_shape)
            h_out.copy_(d_out, non_blocking=True)
        self._stream.synchronize()
        return h_out.numpy().copy()

    def close(self) -> None:
        """Free the CUDA graph, execution context, engine, runtime and buffers (in that order)."""
        for attr in ("_graph", "_context", "_engine", "_runtime", "_d_in", "_d_out", "_h_in", "_h_out", "_stream"):
            if hasattr(self, attr):
                setattr(self, attr, None)
        super().close()


def _sidecar_unreadable(plan: Path) -> bool:
    """True when the sidecar is missing or cannot be parsed (as opposed to a mismatch)."""
    try:
        read_sidecar(plan)
    except EngineError:
        return True
    return False


__all__ = [
    "INSTALL_HINT",
    "OnnxSummary",
    "TensorRTEngine",
    "build_plan",
    "inspect_onnx",
    "plan_key",
    "running_environment",
    "tensorrt_available",
]
