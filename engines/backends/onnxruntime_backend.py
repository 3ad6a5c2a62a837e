"""The ONNX Runtime backend: an mn-seg ONNX export run on the CPU.

``CPUExecutionProvider`` with every graph optimisation (``ORT_ENABLE_ALL``), a configurable
intra-op thread count (default: all cores this process may use) and, for a static input
shape, optional I/O binding of a preallocated numpy output buffer. ``onnxruntime`` is imported
inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.base import Engine, EngineError, EngineInfo
from engines.export import META_CONFIG, META_PRECISION, parse_metadata
from engines.quantize import INT8, describe_calibration

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engines.model_source import LoadOptions, ModelSource

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
"""Precisions of the ONNX files this backend runs (fp16 exports keep float32 I/O; int8 is a static QDQ
quantisation of the fp32 export, :mod:`engines.quantize`)."""
PROVIDER = "CPUExecutionProvider"


def available() -> tuple[bool, str]:
    """Whether ``onnxruntime`` imports and offers the CPU provider."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return False, f"onnxruntime is not installed ({exc}); pip install onnxruntime"
    if PROVIDER not in ort.get_available_providers():
        return False, f"onnxruntime {ort.__version__} has no {PROVIDER}"
    return True, f"onnxruntime {ort.__version__} ({PROVIDER})"


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class OnnxRuntimeEngine(Engine):
    """An ONNX file with input ``[N, 1, H, W]`` float32 and output probabilities of the same shape.

    Args:
        path: the ``.onnx`` (an mn-seg export; a file without mn-seg metadata is accepted if its
            I/O fits, with a note).
        threads: intra-op threads (default: all cores).
        io_binding: bind a preallocated numpy output buffer (static batch only; ignored with a
            note for a dynamic batch). Measured on a 2-core CPU it saves about nothing for these
            networks (the copy of one output map is tiny next to the convolutions), so it is off
            by default.
        expected_size: ``(W, H)`` the caller needs; a file made for another size is refused.
        expected_precision: the precision the caller asked for; a file exported with another is refused.
        source, notes: recorded in :class:`EngineInfo` (``source`` defaults to ``path``).

    Raises:
        EngineError: a file onnxruntime cannot load (names the file and the reason), or an ONNX
            whose input/output is not ``[N, 1, H, W]`` float32 (another model), or made for
            another size.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, io_binding: bool = False,
                 expected_size: tuple[int, int] | None = None, expected_precision: str | None = None,
                 source: str | None = None, notes: list[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise EngineError(f"ONNX file {path} does not exist; export one with "
                              "mn-export --checkpoint CKPT --format onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or cpu_count()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle intra-op threads sleep instead of spinning: with two sessions in turn (a cascade's
        # localiser and refiner) the spinning threads of one took the cores from the other, 66 ms
        # instead of 27 ms a frame on 2 cores; a single session loses 0.2 ms (21.7 vs 21.5 ms).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: ORT warns about every unused initializer otherwise
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=[PROVIDER])
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"onnxruntime {ort.__version__} cannot load {path}: {reason}. Is it a complete ONNX "
                              "file of an opset this onnxruntime runs (mn-export writes opset 18)? Re-export it "
                              "with mn-export --format onnx, or upgrade onnxruntime") from None
        meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
        shape = _check_io(path, session)
        notes = list(notes or [])
        if META_CONFIG not in meta:
            notes.append(f"{path.name} has no mn-seg metadata: model and preprocessing unknown")
            log.warning("%s has no mn-seg metadata (not written by mn-export); model and preprocessing unknown",
                        path)
        if expected_size is not None and (shape[3], shape[2]) != tuple(expected_size):
            raise EngineError(f"{path} takes {shape[3]}x{shape[2]} input, not the {expected_size[0]}x"
                              f"{expected_size[1]} asked for; it was exported for another model or size. "
                              "Re-export with mn-export --size WxH")
        precision = meta.get(META_PRECISION, "fp32")
        calibration = describe_calibration(meta)
        if calibration is not None:
            notes.append(calibration)
        if expected_precision is not None and precision != expected_precision:
            raise EngineError(f"{path} is a {precision} export, not {expected_precision}; re-export it with "
                              f"mn-export --precision {expected_precision}, or leave the precision unset")
        config: dict[str, Any] = meta.get(META_CONFIG) or {}
        info = EngineInfo(
            name=(config.get("model") or {}).get("name") or path.stem,
            backend="onnxruntime",
            precision=precision,
            device="cpu",
            input_shape=shape,
            source=source or os.fspath(path),
            config=config,
            notes=notes,
        )
        super().__init__(info)
        self.path = path
        self.session = session
        self.metadata = meta
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self._binding: Any = None
        if io_binding and shape[0] < 0:
            self.info.notes.append("io_binding ignored: the batch is dynamic")
        elif io_binding:
            self._out_buffer = np.empty(shape, dtype=np.float32)
            self._binding = session.io_binding()
            self._binding.bind_output(self._output, "cpu", 0, np.float32, list(shape), self._out_buffer.ctypes.data)
        log.info("onnxruntime session for %s: %d intra-op threads, input %s%s", path.name, opts.intra_op_num_threads,
                 list(shape), ", I/O binding" if self._binding is not None else "")

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._binding is not None:
            self._binding.bind_cpu_input(self._input, batch)
            self.session.run_with_iobinding(self._binding)
            return self._out_buffer.copy()  # the buffer is reused by the next call
        return self.session.run([self._output], {self._input: batch})[0]

    def close(self) -> None:
        self._binding = None
        self.session = None  # type: ignore[assignment]
        super().close()


def _check_io(path: Path, session: Any) -> tuple[int, int, int, int]:
    """``(N, 1, H, W)`` of a session whose one input and output are float32 ``[N, 1, H, W]`` (N may be symbolic)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()

    def fits(arg: Any) -> bool:
        dims = arg.shape
        return (arg.type == "tensor(float)" and len(dims) == 4 and dims[1] == 1
                and all(isinstance(d, int) and d > 0 for d in dims[2:]))

    if len(inputs) != 1 or len(outputs) != 1 or not fits(inputs[0]) or not fits(outputs[0]):
        described = ", ".join(f"{a.name} {a.type} {a.shape}" for a in (*inputs, *outputs))
        raise EngineError(f"{path} is not an mn-seg segmentation model: expected one float32 [N, 1, H, W] input "
                          f"and output, found {described}. Export the checkpoint with mn-export --format onnx")
    n, _, h, w = inputs[0].shape
    if list(outputs[0].shape[2:]) != [h, w]:
        raise EngineError(f"{path}: output {outputs[0].shape} does not match input {inputs[0].shape}; "
                          "it is not an mn-seg segmentation model")
    return (n if isinstance(n, int) and n > 0 else -1, 1, int(h), int(w))


def load(source: "ModelSource", options: "LoadOptions") -> OnnxRuntimeEngine:
    """An :class:`OnnxRuntimeEngine` for an ``.onnx``, or a checkpoint exported to the cache first."""
    from engines.export import cached_onnx

    if options.device not in (None, "cpu"):
        raise EngineError(f"the onnxruntime backend runs on the CPU only, not {options.device!r}; "
                          "use backend torch or tensorrt for a GPU")
    notes = list(options.notes)
    if source.format == "checkpoint" and options.precision == INT8:
        onnx_path = int8_onnx(source, options)
        notes.append(f"int8 ONNX of {source.path}: {onnx_path}")
    elif source.format == "checkpoint":
        onnx_path, _ = cached_onnx(source.path, precision=options.precision or "fp32", size=options.size,
                                   batch=options.batch, dynamic_batch=options.dynamic_batch,
                                   cache_dir=options.cache_dir)
        notes.append(f"ONNX export of {source.path}: {onnx_path}")
    elif source.format == "onnx":
        onnx_path = source.path
    else:
        raise EngineError(f"onnxruntime cannot run the {source.format} file {source.path}; use backend tensorrt for "
                          "a TensorRT plan, or pass the checkpoint / .onnx")
    return OnnxRuntimeEngine(onnx_path, threads=options.threads, io_binding=bool(options.io_binding),
                             expected_size=options.size, expected_precision=options.precision,
                             source=os.fspath(source.path), notes=notes)



def int8_onnx(source: "ModelSource", options: "LoadOptions") -> Path:
    """The int8 ONNX for the checkpoint ``source``: quantised (and cached) with the images of ``options.calibrate``,
    else the bundled model's ready int8 file (``options.int8_files["model"]``).

    Raises:
        EngineError: neither a calibration folder nor a bundled int8 file (says how to get one).
    """
    from engines.quantize import calibration_set, cached_int8_onnx, preprocessed

    if options.calibrate is not None:
        calibration = calibration_set(options.calibrate, options.calibrate_images)
        path, _ = cached_int8_onnx(source.path, calibration, lambda size: preprocessed(calibration.read(), size),
                                   size=options.size, batch=options.batch, dynamic_batch=options.dynamic_batch,
                                   cache_dir=options.cache_dir)
        return path
    ready = (options.int8_files or {}).get("model")
    if ready is not None:
        return Path(ready)
    raise EngineError(f"int8 needs a calibration for {source.path}: pass --calibrate DIR (a dataset folder with "
                      "Images/ or a folder of frames like those the model will see; calibrate=DIR in load_engine), "
                      "or export one with mn-export --precision int8 --calibrate DIR and load that .onnx")
