"""Checkpoint -> ONNX: a probability-output graph with float32 I/O and the checkpoint's config inside.

The exported graph is ``prob = sigmoid(model(x))`` (the networks return logits), input
``"input"`` float32 ``[N, 1, H, W]``, output ``"prob"`` float32 ``[N, 1, H, W]``. An FP16 export
runs the network in half precision but keeps float32 I/O (``x.half()`` in, ``.float()`` out,
both casts inside the graph), which is what a strongly typed TensorRT network wants.

Every file carries JSON metadata in ``model.metadata_props`` (:func:`read_onnx_metadata`):
``mn_seg_config`` (the checkpoint's config: model, preprocessing, size), ``precision`` and
``input_shape`` (``N = -1`` for a dynamic batch), so an ``.onnx`` alone knows its model, size and
preprocessing. ``onnx`` is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from engines.base import EngineError
from engines.cache import cache_dir as resolve_cache_dir
from engines.cache import file_sha256

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx
    from torch import nn

log = logging.getLogger(__name__)

OPSET = 18
"""ONNX opset of the exports, the oldest that ``torch.export``'s ONNX exporter writes (TensorRT 10 and
onnxruntime 1.14+ run it); the legacy exporter fallback writes it too."""
MIN_OPSET = 17
DYNAMO_MIN_OPSET = 18
MAX_DYNAMIC_BATCH = 1024
"""Upper bound of a dynamic batch dimension (the exporter needs one)."""
INPUT_NAME = "input"
OUTPUT_NAME = "prob"
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
"""Precisions an ONNX export can have (FP16 keeps float32 I/O)."""

META_CONFIG = "mn_seg_config"
META_PRECISION = "precision"
META_INPUT_SHAPE = "input_shape"
META_CHECKPOINT_SHA = "checkpoint_sha256"
META_VERSION = "mn_seg_version"
JSON_METADATA: tuple[str, ...] = (META_CONFIG, META_INPUT_SHAPE, "int8_calibration", "int8_quantisation")
"""Metadata entries stored as JSON (the int8 ones are written by :mod:`engines.quantize`)."""


def check_precision(precision: str) -> str:
    """Return ``precision`` if an ONNX export supports it, else raise :class:`EngineError`."""
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r} for an ONNX export; use one of {', '.join(PRECISIONS)}")
    return precision


def cascade_export_message(checkpoint: str | os.PathLike) -> str:
    """Why a cascade checkpoint (``train.cascade``) is not exported, and how it is run instead."""
    return (f"{checkpoint} is a localise-then-refine cascade: two networks with a numpy step between them (the "
            "window is placed around the localiser's mask), so it cannot be exported as one ONNX graph or "
            "TensorRT plan. Run it from its checkpoint instead (engines.load_engine, mn-live / mn-segment --model "
            "CASCADE.pt, mn-bench --models CASCADE.pt): every backend exports its two networks into the engine cache "
            "by itself (--cache-dir or $MN_SEG_CACHE)")


def input_shape_for(size: tuple[int, int], batch: int = 1, dynamic_batch: bool = False) -> tuple[int, int, int, int]:
    """``(N, 1, H, W)`` for a ``(W, H)`` size; ``N = -1`` with a dynamic batch."""
    if not dynamic_batch and (not isinstance(batch, int) or batch < 1):
        raise EngineError(f"batch must be a positive integer, got {batch!r}")
    return (-1 if dynamic_batch else batch, 1, int(size[1]), int(size[0]))


def _probability_module(model: "nn.Module", precision: str) -> "nn.Module":
    """``model`` wrapped so that it maps float32 input to float32 probabilities."""
    import torch
    from torch import nn

    class ProbabilityOutput(nn.Module):
        """``sigmoid(model(x))`` with float32 I/O; an fp16 model computes in half inside."""

        def __init__(self, net: nn.Module, half: bool) -> None:
            super().__init__()
            self.net = net
            self.half = half

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
            logits = self.net(x.half() if self.half else x)
            return torch.sigmoid(logits.float())

    net = copy.deepcopy(model).cpu().eval()
    if precision == "fp16":
        net = net.half()
    return ProbabilityOutput(net, precision == "fp16").eval()


def _torch_export(module: "nn.Module", example: Any, path: Path, dynamic_batch: bool, opset: int) -> None:
    """Export ``module`` to ``path`` with ``torch.export`` (``dynamo=True``), or the legacy exporter without onnxscript.

    Why not the legacy TorchScript exporter first: it traces by running the model, and PyTorch's
    half-precision convolutions on a CPU are ~40x slower than fp32 (the fp16 L-UNet export at
    384x288 took 128 s, a DL-UNet would take minutes). ``torch.export`` traces with fake tensors:
    2-13 s for every model, size and precision, and its optimiser folds constants (BatchNorm into
    the convolutions). The legacy exporter (deprecated since PyTorch 2.9) remains the fallback
    where ``onnxscript``, which ``dynamo=True`` needs, is not installed, and for opset 17 (the
    dynamo exporter writes 18 or newer, and its down-conversion fails on the VGG networks).
    """
    import torch

    if opset < DYNAMO_MIN_OPSET:  # e.g. opset 17 for TensorRT 8.6; the dynamo exporter cannot go below 18
        log.info("opset %d: using the legacy TorchScript ONNX exporter", opset)
        _legacy_export(module, example, path, dynamic_batch, opset)
        return
    try:
        import onnxscript  # noqa: F401 - dynamo=True needs it
    except ImportError:
        log.warning("onnxscript is not installed: using the legacy TorchScript ONNX exporter, which runs the "
                    "model once (an fp16 export on a CPU is slow); pip install onnxscript for the fast exporter")
        _legacy_export(module, example, path, dynamic_batch, opset)
        return
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},) if dynamic_batch else None
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" x4
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, optimize=True,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=dynamic_shapes, verbose=False)
    finally:
        registration_log.setLevel(level)
    program.save(str(path), external_data=False)


def _legacy_export(module: "nn.Module", example: Any, path: Path, dynamic_batch: bool, opset: int) -> None:
    """The legacy TorchScript exporter (``dynamo=False``), constant folding on."""
    import torch

    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(module, (example,), str(path), dynamo=False, do_constant_folding=True,
                          opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic_axes)


def _elem_type_name(value_info: "onnx.ValueInfoProto") -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(value_info.type.tensor_type.elem_type)


def write_onnx_metadata(model_proto: "onnx.ModelProto", metadata: Mapping[str, Any]) -> None:
    """Set ``metadata_props`` entries (values that are not strings are stored as JSON)."""
    existing = {p.key: p for p in model_proto.metadata_props}
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if key in existing:
            existing[key].value = text
        else:
            prop = model_proto.metadata_props.add()
            prop.key, prop.value = key, text


def parse_metadata(props: Mapping[str, str]) -> dict[str, Any]:
    """Decode the mn-seg metadata entries of an ONNX file (JSON where it is JSON)."""
    out: dict[str, Any] = {}
    for key, text in props.items():
        if key in JSON_METADATA:
            try:
                out[key] = json.loads(text)
            except json.JSONDecodeError:
                log.warning("ONNX metadata %r is not valid JSON; ignored", key)
        else:
            out[key] = text
    return out


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The mn-seg metadata of an ONNX file: ``mn_seg_config`` (dict), ``precision``, ``input_shape`` (list)...

    Raises:
        EngineError: the file is missing or not an ONNX model.
    """
    model_proto = _load_proto(Path(path))
    return parse_metadata({p.key: p.value for p in model_proto.metadata_props})


def _load_proto(path: Path) -> "onnx.ModelProto":
    """``onnx.load`` with an :class:`EngineError` that names the file for a missing or unreadable one."""
    import onnx

    if not path.is_file():
        raise EngineError(f"ONNX file {path} does not exist; export one with mn-export --checkpoint CKPT --format onnx")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise EngineError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {reason}); re-export it "
                          "with mn-export") from None


def onnx_input_shape(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """``(N, 1, H, W)`` of an ONNX file's graph input, ``N = -1`` when symbolic.

    Raises:
        EngineError: unreadable file, or an input that is not ``[N, 1, H, W]`` with fixed H, W.
    """
    graph = _load_proto(Path(path)).graph
    if len(graph.input) != 1:
        raise EngineError(f"{path} is not an mn-seg segmentation model: it has {len(graph.input)} inputs, not one "
                          "[N, 1, H, W]; export the checkpoint with mn-export")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 1 or min(dims[2:]) < 1:
        raise EngineError(f"{path} is not an mn-seg segmentation model: its input is {dims}, not [N, 1, H, W]; "
                          "export the checkpoint with mn-export")
    return (dims[0] if dims[0] > 0 else -1, 1, dims[2], dims[3])


def export_onnx(
    model: "nn.Module | str | os.PathLike",
    out: str | os.PathLike,
    *,
    precision: str = "fp32",
    size: tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    config: Mapping[str, Any] | None = None,
    opset: int = OPSET,
) -> Path:
    """Export a checkpoint (path) or a model to a single self-contained, checked ONNX file.

    Args:
        model: a checkpoint path (its config is embedded), or an ``nn.Module`` returning logits
            (then pass ``config`` with at least ``{"model": {"name": ...}}``).
        out: the ``.onnx`` to write (atomically: a temporary file, then a rename).
        precision: ``fp32`` or ``fp16`` (half inside, float32 I/O).
        size: ``(W, H)``; default the checkpoint's ``config["preprocessing"]["size"]``.
        batch: the static batch size (ignored with ``dynamic_batch``).
        dynamic_batch: make the batch dimension symbolic.
        config: checkpoint config to embed (default: read from the checkpoint).
        opset: ONNX opset (>= 17; the ``torch.export`` path writes at least 18).

    Returns:
        ``out`` as a Path.

    Raises:
        EngineError / UserError: bad precision or size, a checkpoint that cannot be read,
            an export that does not produce float32 I/O.
    """
    import onnx
    import torch

    from train.checkpoint import model_from_checkpoint
    from train.models import check_input_size

    check_precision(precision)
    if opset < MIN_OPSET:
        raise EngineError(f"opset {opset} is too old; mn-seg exports opset {MIN_OPSET} or newer")
    extra: dict[str, Any] = {}
    checkpoint = None
    if isinstance(model, (str, os.PathLike)):
        checkpoint = Path(model)
        model, ckpt_config = model_from_checkpoint(checkpoint, "cpu")
        config = ckpt_config if config is None else config
        extra[META_CHECKPOINT_SHA] = file_sha256(checkpoint)
    config = dict(config or {})
    if (config.get("model") or {}).get("name") == "cascade":
        raise EngineError(cascade_export_message(checkpoint or "the model"))
    if size is None:
        try:
            size = tuple(config["preprocessing"]["size"])  # type: ignore[assignment]
        except (KeyError, TypeError):
            raise EngineError("no input size: pass size=(W, H) (--size WxH); the config has no "
                              "preprocessing.size") from None
    width, height = int(size[0]), int(size[1])
    name = (config.get("model") or {}).get("name")
    if name:
        check_input_size(name, (width, height))
    shape = input_shape_for((width, height), batch, dynamic_batch)
    example = torch.zeros((1 if dynamic_batch else batch, 1, height, width), dtype=torch.float32)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    log.info("exporting %s %s %dx%d batch %s to %s", name or "model", precision, width, height,
             "dynamic" if dynamic_batch else batch, out)
    try:
        with torch.inference_mode(False), torch.no_grad():
            _torch_export(_probability_module(model, precision), example, tmp, dynamic_batch, opset)
        model_proto = onnx.load(str(tmp))
        io_types = [_elem_type_name(v) for v in (*model_proto.graph.input, *model_proto.graph.output)]
        if io_types != ["FLOAT", "FLOAT"]:
            raise EngineError(f"the {precision} export of {name} has I/O types {io_types}, expected float32 "
                              "input and output; this is a bug in mn-seg's exporter")
        from train.checkpoint import code_version

        write_onnx_metadata(model_proto, {META_CONFIG: config, META_PRECISION: precision,
                                          META_INPUT_SHAPE: list(shape), META_VERSION: code_version(), **extra})
        model_proto.producer_name = "mn-seg"
        onnx.checker.check_model(model_proto, full_check=True)
        onnx.save(model_proto, str(tmp), save_as_external_data=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out


def reuse_cached(path: Path, matches: Callable[[dict], bool], what: str, source: Any) -> bool:
    """Whether the cached ONNX file ``path`` can be used: it exists, its metadata reads and ``matches``
    (e.g. the checkpoint's sha256). Logs which, and why a file that is there is made again."""
    if not path.is_file():
        return False
    try:
        meta = read_onnx_metadata(path)
    except EngineError as exc:
        log.warning("making the unreadable cached %s %s again: %s", what, path, exc)
        return False
    if matches(meta):
        log.info("using the cached %s %s", what, path)
        return True
    log.warning("cached %s %s does not match %s; making it again", what, path, source)
    return False


def cached_onnx(
    checkpoint: str | os.PathLike,
    *,
    precision: str = "fp32",
    size: tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Path, dict]:
    """The ONNX export of ``checkpoint`` from the engine cache, exported on first use.

    The file name is keyed by the checkpoint's sha256, the size, the batch and the precision,
    so a retrained checkpoint never reuses a stale export. Returns ``(path, config)``.
    """
    from train.checkpoint import load_checkpoint

    check_precision(precision)
    checkpoint = Path(checkpoint)
    config = load_checkpoint(checkpoint)["config"]
    if size is None:
        size = tuple(config["preprocessing"]["size"])  # type: ignore[assignment]
    width, height = int(size[0]), int(size[1])
    digest = file_sha256(checkpoint)
    batch_key = "dyn" if dynamic_batch else f"b{batch}"
    name = f"{config['model']['name']}-{digest[:16]}-{width}x{height}-{batch_key}-{precision}-op{OPSET}.onnx"
    path = resolve_cache_dir(cache_dir) / name
    if reuse_cached(path, lambda meta: meta.get(META_CHECKPOINT_SHA) == digest, "ONNX export", checkpoint):
        return path, config
    export_onnx(checkpoint, path, precision=precision, size=(width, height), batch=batch,
                dynamic_batch=dynamic_batch, config=config)
    return path, config
