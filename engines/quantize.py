"""int8 for the CPU: static ONNX Runtime quantisation of an fp32 export, calibrated on real frames.

An int8 engine is an ONNX file in QDQ format (``QuantizeLinear`` / ``DequantizeLinear`` pairs
around the convolutions, which ONNX Runtime's CPU provider fuses into integer kernels): weights
int8 per output channel, activations uint8 per tensor, their ranges measured by running the fp32
network on calibration frames (:data:`QUANTISATION`). It is an onnxruntime-only precision: the
torch and TensorRT backends refuse it. On a CPU with VNNI (AVX-512 VNNI or AVX-VNNI) one instruction
(``vpdpbusd``) does the uint8 x int8 multiply-accumulate that takes three without it (and saturates in int16 on
AVX2), which is where int8 beats fp32; ``backend="auto"`` picks int8 only there
(:func:`cpu_vnni`) and only when an int8 model exists (a bundled model's int8 parts, or a
calibration folder).

Calibration (:func:`calibration_set`): up to :data:`DEFAULT_CALIBRATION_IMAGES` images of a folder
(``DIR/Images`` of a dataset, or ``DIR`` itself), spread evenly over the sorted file names and
preprocessed exactly as at run time (:func:`train.preprocess.preprocess_image` at the network's
size). A cascade's refiner is calibrated on the windows the cascade would cut: the fp32 localiser
places them (:mod:`engines.cascade`). Use frames of the scanner and settings the model will see.

What stays float (``float_nodes``) and how activation ranges are calibrated: measured on the bundled
``mn-realtime`` cascade (lunet-coarse localiser + L-UNet refiner; calibration: 64 of the paper split's 164 training
images spread evenly, the refiner on the fp32 localiser's windows; scores: the paper's 38 validation images,
paper protocol; fp32: val DSC 0.9047, CSA error median 4.85 %), on this project's 2-core AMD EPYC without VNNI
(``benchmarks/results/int8-ablation-vm-2026-12-01.json``, ``python -m benchmarks.int8_bench --ablation``):

==========  ===================  =======  ========  ===============  ===========================
calibration float nodes          val DSC  CSA err   frame Dice min   part Dice min (loc / ref)
==========  ===================  =======  ========  ===============  ===========================
min-max     none                 0.9023   5.50 %    0.927            0.851 / 0.971
min-max     first conv           0.9023   5.36 %    0.939            0.984 / 0.994
min-max     last conv + sigmoid  0.9017   5.50 %    0.908            0.852 / 0.973
min-max     first and last       0.9026   5.33 %    0.941            0.985 / 0.995
percentile  none                 0.9021   5.40 %    0.904            0.712 / 0.970
percentile  first conv           0.9026   5.35 %    0.943            0.987 / 0.993
percentile  last conv + sigmoid  0.9026   5.47 %    0.904            0.707 / 0.973
percentile  first and last       0.9052   4.89 %    0.992            0.990 / 0.992
==========  ===================  =======  ========  ===============  ===========================

(frame Dice: the int8 cascade's mask against the fp32 cascade's, worst of 38 frames; part Dice: each int8 network
against its fp32 self on the same input.) Keeping the first convolution float is what preserves the localiser
(0.71-0.85 -> 0.98-0.99): it sees the z-scored image itself, whose long tails a uint8 range spends its levels on.
Keeping the last convolution float as well matters once the ranges are good: it writes the logits, and with them
rounded to 256 levels the localiser's mask near 0.5 moves, the window lands elsewhere on a few frames and the
cascade's worst frame drops to 0.90-0.94. Percentile ranges (the 99.999th percentile of each activation's
histogram) keep the resolution where the activations are, where min-max ranges let rare peaks set the scale; only
the two together bring every frame within 0.97 of fp32 (worst 0.992) and the validation DSC within 0.001
(0.9052). Hence the defaults: percentile calibration, first and last convolution float
(:data:`DEFAULT_CALIBRATION_METHOD`, :data:`DEFAULT_FLOAT_NODES`). Both kept-float convolutions are the cheapest of
the network (one input or one output channel), so they cost little time.

Speed needs VNNI: on this project's VM (AMD EPYC without AVX-512, AVX2 only) the int8 networks run no faster than
fp32 (0.94-0.97x, ``benchmarks/results/int8-vm-2026-12-01.json``); ONNX Runtime's int8 convolutions gain on CPUs
with ``avx512_vnni`` / ``avx_vnni``, which is why ``auto`` requires them.

The calibration's identity (:meth:`CalibrationSet.identity`: the names and content hashes of its
images, how they were chosen, the quantisation settings and, for a refiner, how its windows were
placed) is hashed into the engine cache's file name and written into the ONNX metadata
(``int8_calibration``), so a different calibration never reuses a cached int8 file and every int8
file says what it was calibrated on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from engines.errors import EngineError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    import onnx

log = logging.getLogger(__name__)

INT8 = "int8"
"""The precision name of a statically quantised ONNX (onnxruntime only)."""
DEFAULT_CALIBRATION_IMAGES = 64
"""Images used for calibration when no count is given: spread evenly over the folder."""
VNNI_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni")
"""``/proc/cpuinfo`` flags of the x86 CPUs whose int8 dot products make int8 faster than fp32."""
CPUINFO = "/proc/cpuinfo"

FLOAT_NODE_CHOICES: tuple[str, ...] = ("none", "first", "last", "first+last")
"""What may stay float: nothing, the first convolution, the last convolution and everything after it
(the sigmoid; the localiser's upsampling), or both."""
DEFAULT_FLOAT_NODES = "first+last"
"""Measured to preserve Dice best (module docstring)."""
CALIBRATION_METHODS: tuple[str, ...] = ("percentile", "minmax")
DEFAULT_CALIBRATION_METHOD = "percentile"
PERCENTILE = 99.999
"""The activation range of the percentile calibration: this percentile of each tensor's |values|."""
QUANTISATION: dict[str, Any] = {
    "format": "QDQ",
    "weights": "int8, per output channel, symmetric",
    "activations": "uint8, per tensor",
    "tool": "onnxruntime.quantization.quantize_static",
}
"""The fixed part of the quantisation settings (recorded with the calibration's identity)."""

META_CALIBRATION = "int8_calibration"
"""ONNX metadata key: the calibration's identity (JSON, :meth:`CalibrationSet.identity`)."""
META_FP32_SHA = "fp32_onnx_sha256"
"""ONNX metadata key: sha256 of the fp32 export that was quantised."""


# -- the CPU --------------------------------------------------------------------------------------
def cpu_vnni(cpuinfo: str | os.PathLike = CPUINFO) -> tuple[bool, str]:
    """``(has_vnni, reason)``: whether the CPU lists ``avx512_vnni`` or ``avx_vnni`` (Linux ``/proc/cpuinfo``).

    Elsewhere (macOS, Windows) the flags are not read and the answer is no: ``auto`` then stays
    fp32, and ``precision="int8"`` still runs int8 when asked for.
    """
    if not sys.platform.startswith("linux") and os.fspath(cpuinfo) == CPUINFO:
        return False, f"CPU flags are not read on {sys.platform}: VNNI not assumed"
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return False, f"cannot read {cpuinfo} ({exc.strerror or exc}): VNNI not assumed"
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    found = [f for f in VNNI_FLAGS if f in flags]
    if found:
        return True, f"the CPU has {' and '.join(found)}"
    return False, f"the CPU has neither {' nor '.join(VNNI_FLAGS)} ({cpuinfo})"


# -- the calibration set --------------------------------------------------------------------------
def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_of(identity: Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of ``identity`` as sorted, compact JSON."""
    return _sha256_text(json.dumps(identity, sort_keys=True, separators=(",", ":")))[:16]


@dataclass(frozen=True)
class CalibrationSet:
    """The images an int8 model is calibrated on.

    Attributes:
        source: where they come from (a folder, or a description such as a dataset's split).
        images: the chosen files, in order.
        available: how many images the source offered.
        selection: how ``images`` were chosen from them.
    """

    source: str
    images: tuple[Path, ...]
    available: int
    selection: str

    def identity(self, *, method: str = DEFAULT_CALIBRATION_METHOD, float_nodes: str = DEFAULT_FLOAT_NODES,
                 windows: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What makes a calibration: the images (names and a hash of their bytes), how they were chosen, the
        quantisation settings and, for a cascade's refiner, how its windows were placed. JSON-able; its
        ``digest`` (:func:`digest_of` of everything else) keys the engine cache."""
        contents = hashlib.sha256()
        for path in self.images:
            contents.update(path.name.encode("utf-8") + b"\0")
            contents.update(_file_digest(path).encode("ascii"))
        identity: dict[str, Any] = {
            "source": self.source,
            "images": len(self.images),
            "available": self.available,
            "selection": self.selection,
            "names": [p.name for p in self.images],
            "names_sha256": _sha256_text("\n".join(p.name for p in self.images)),
            "contents_sha256": contents.hexdigest(),
            "method": method if method != "percentile" else f"percentile {PERCENTILE}",
            "float_nodes": float_nodes,
            "quantisation": dict(QUANTISATION),
        }
        if windows is not None:
            identity["windows"] = dict(windows)
        identity["digest"] = digest_of({k: v for k, v in identity.items() if k not in ("source", "names")})
        return identity

    def read(self) -> list["np.ndarray"]:
        """The images as read for inference (:func:`train.data.read_image`)."""
        from train.data import read_image

        return [read_image(p) for p in self.images]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def spread(items: Sequence[Any], count: int) -> list[Any]:
    """At most ``count`` of ``items`` spread evenly (first and last included): the verification's rule."""
    from engines.verify import spread_indices

    return [items[i] for i in spread_indices(len(items), count)]


def check_count(count: int | None) -> int:
    """``count`` (default :data:`DEFAULT_CALIBRATION_IMAGES`), refused unless it is at least 1."""
    count = DEFAULT_CALIBRATION_IMAGES if count is None else count
    if not isinstance(count, int) or count < 1:
        raise EngineError(f"the number of calibration images must be at least 1, got {count!r} "
                          f"(default {DEFAULT_CALIBRATION_IMAGES})")
    return count


def calibration_set(folder: str | os.PathLike, count: int | None = None) -> CalibrationSet:
    """Up to ``count`` images (default :data:`DEFAULT_CALIBRATION_IMAGES`) spread evenly over the sorted image files
    of ``folder/Images`` (a dataset) or of ``folder`` itself.

    Raises:
        EngineError: a folder that does not exist or holds no images, or a count below 1.
    """
    from train.data import IMAGE_EXTENSIONS, IMAGES_DIR

    count = check_count(count)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise EngineError(f"calibration folder {root} does not exist; pass --calibrate DIR with a dataset folder "
                          f"(holding {IMAGES_DIR}/) or a folder of images from the scanner the model will run on")
    images_dir = root / IMAGES_DIR if (root / IMAGES_DIR).is_dir() else root
    files = sorted(p for p in images_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise EngineError(f"no images in {images_dir} to calibrate int8 on; pass --calibrate DIR with a dataset "
                          f"folder (holding {IMAGES_DIR}/) or a folder of .png/.bmp/.jpg frames")
    chosen = spread(files, count)
    if len(files) < count:
        log.warning("calibrating int8 on all %d images of %s (fewer than the %d asked for)", len(files), images_dir,
                    count)
    return CalibrationSet(source=os.fspath(images_dir.resolve()), images=tuple(chosen), available=len(files),
                          selection=f"{len(chosen)} of {len(files)} sorted by name, spread evenly")


def calibration_from_files(files: Sequence[str | os.PathLike], source: str, count: int | None = None
                           ) -> CalibrationSet:
    """A calibration set of up to ``count`` of ``files`` (in the order given), spread evenly; ``source`` says what
    they are (e.g. the training side of a split)."""
    count = check_count(count)
    files = [Path(f) for f in files]
    if not files:
        raise EngineError(f"no images to calibrate int8 on ({source})")
    chosen = spread(files, count)
    return CalibrationSet(source=source, images=tuple(chosen), available=len(files),
                          selection=f"{len(chosen)} of {len(files)}, spread evenly")


def preprocessed(images: Sequence["np.ndarray"], size: tuple[int, int]) -> "np.ndarray":
    """``float32 [N, 1, H, W]``: each image through :func:`train.preprocess.preprocess_image` at ``size``."""
    import numpy as np

    from train.preprocess import preprocess_image

    return np.stack([preprocess_image(img, size) for img in images])[:, None]


# -- quantisation -----------------------------------------------------------------------------------
def float_node_names(model: "onnx.ModelProto", float_nodes: str = DEFAULT_FLOAT_NODES) -> list[str]:
    """Names of the nodes that stay float: the first ``Conv`` of the (topologically sorted) graph for ``first``; the
    last ``Conv`` and every node after it for ``last``.

    Raises:
        EngineError: an unknown choice, or ``first``/``last`` in a graph without a convolution.
    """
    if float_nodes not in FLOAT_NODE_CHOICES:
        raise EngineError(f"unknown float_nodes {float_nodes!r}; use one of {', '.join(FLOAT_NODE_CHOICES)}")
    nodes = list(model.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if float_nodes == "none":
        return []
    if not convs:
        raise EngineError("the model has no Conv node to keep float; use float_nodes='none'")
    names: list[str] = []
    if "first" in float_nodes:
        names.append(nodes[convs[0]].name)
    if "last" in float_nodes:
        names.extend(n.name for n in nodes[convs[-1]:] if n.name not in names)
    return names


class _Batches:
    """An onnxruntime ``CalibrationDataReader`` over a ``[N, 1, H, W]`` array, ``step`` frames a call
    (the model's static batch; a short last batch is padded with its last frame)."""

    def __init__(self, name: str, inputs: "np.ndarray", step: int) -> None:
        self.name, self.inputs, self.step, self.start = name, inputs, max(1, step), 0

    def get_next(self) -> dict[str, "np.ndarray"] | None:
        import numpy as np

        if self.start >= len(self.inputs):
            return None
        part = self.inputs[self.start:self.start + self.step]
        self.start += self.step
        if len(part) < self.step:
            part = np.concatenate([part, np.repeat(part[-1:], self.step - len(part), axis=0)])
        return {self.name: np.ascontiguousarray(part, dtype=np.float32)}

    def rewind(self) -> None:
        self.start = 0


def quantize_onnx(fp32_onnx: str | os.PathLike, out: str | os.PathLike, inputs: "np.ndarray", *,
                  identity: Mapping[str, Any], method: str = DEFAULT_CALIBRATION_METHOD,
                  float_nodes: str = DEFAULT_FLOAT_NODES) -> Path:
    """Quantise the fp32 mn-seg export ``fp32_onnx`` to int8 (QDQ) calibrated on ``inputs`` and write ``out``
    atomically.

    Args:
        fp32_onnx: an fp32 ``.onnx`` written by :func:`engines.export.export_onnx`.
        out: the int8 ``.onnx`` to write (its mn-seg metadata is the fp32 file's, with ``precision`` ``int8``,
            ``int8_calibration`` = ``identity`` and the quantisation settings).
        inputs: preprocessed calibration frames ``float32 [N, 1, H, W]`` at the model's size.
        identity: the calibration's identity (:meth:`CalibrationSet.identity`), recorded in the file.
        method: ``percentile`` (:data:`PERCENTILE`) or ``minmax``.
        float_nodes: what stays float (:data:`FLOAT_NODE_CHOICES`).

    Raises:
        EngineError: a file that is not an fp32 mn-seg export, inputs of another shape, or a failed quantisation.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engines.cache import file_sha256
    from engines.export import (INPUT_NAME, META_PRECISION, onnx_input_shape, read_onnx_metadata,
                                write_onnx_metadata)

    if method not in CALIBRATION_METHODS:
        raise EngineError(f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}")
    src, out = Path(fp32_onnx), Path(out)
    meta = read_onnx_metadata(src)
    if meta.get(META_PRECISION, "fp32") != "fp32":
        raise EngineError(f"{src} is a {meta.get(META_PRECISION)} export; int8 is quantised from the fp32 export "
                          "(mn-export --precision fp32)")
    n, _, h, w = onnx_input_shape(src)
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 4 or inputs.shape[1:] != (1, h, w) or len(inputs) < 1:
        raise EngineError(f"calibration inputs must be float32 [N, 1, {h}, {w}] for {src.name}, got "
                          f"{list(inputs.shape)}")
    if not np.isfinite(inputs).all():
        raise EngineError("calibration inputs hold NaN or infinity; check the calibration images")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not CalibMaxIntermediateOutputs: onnxruntime 1.32's min-max calibrator drops (does not merge) the batches it
    # flushes, and the histogram calibrator ignores it. Both hold every calibration input's activations in memory
    # (a few hundred MB for the bundled cascade's 64 inputs; pass fewer images for a large network at full size).
    extra: dict[str, Any] = {}
    if method == "percentile":
        calibrate_method = CalibrationMethod.Percentile
        extra["CalibPercentile"] = PERCENTILE
    else:
        calibrate_method = CalibrationMethod.MinMax
    log.info("quantising %s to int8 (%s calibration on %d inputs, float nodes: %s)", src.name, method, len(inputs),
             float_nodes)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out.parent) as tmp:
        pre, quantised = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            prepared = onnx.load(str(pre))
            check_calibration_memory(prepared, len(inputs), src.name)
            excluded = float_node_names(prepared, float_nodes)
            quantize_static(str(pre), str(quantised), _Batches(INPUT_NAME, inputs, n if n > 0 else 1),
                            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, nodes_to_exclude=excluded,
                            calibrate_method=calibrate_method, extra_options=extra)
        except EngineError:
            raise
        except Exception as exc:  # onnxruntime's quantiser raises plain exceptions of many kinds
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"onnxruntime {ort.__version__} could not quantise {src.name} to int8: {reason}; "
                              "use precision fp32 for this model") from None
        proto = onnx.load(str(quantised))
        keep = {k: v for k, v in meta.items() if k != META_PRECISION}
        write_onnx_metadata(proto, {**keep, META_PRECISION: INT8, META_CALIBRATION: dict(identity),
                                    META_FP32_SHA: file_sha256(src),
                                    "int8_quantisation": {**QUANTISATION, "method": identity.get("method", method),
                                                          "float_nodes": excluded, "onnxruntime": ort.__version__}})
        proto.producer_name = "mn-seg"
        onnx.checker.check_model(proto)
        staged = Path(tmp) / "final.onnx"
        onnx.save(proto, str(staged), save_as_external_data=False)
        os.replace(staged, out)
    log.info("wrote %s (%.2f MB, fp32 %.2f MB)", out, out.stat().st_size / 1e6, src.stat().st_size / 1e6)
    return out


def int8_cache_name(fp32_name: str, calibration_digest: str) -> str:
    """The cache file name of the int8 version of the cached fp32 export ``fp32_name``: the same key with
    ``int8-c<calibration digest>`` in place of ``fp32``."""
    stem = fp32_name[:-len(".onnx")] if fp32_name.endswith(".onnx") else fp32_name
    if "-fp32-" not in stem:
        raise EngineError(f"{fp32_name} is not an fp32 export of the engine cache")
    return stem.replace("-fp32-", f"-int8-c{calibration_digest[:12]}-", 1) + ".onnx"


CALIBRATION_MEMORY_SHARE = 0.6
"""Share of the machine's available memory a calibration may plan to hold (the calibrator keeps every
calibration input's activations, about twice their size at its peak)."""


def activation_bytes(model: Any) -> int:
    """Bytes of every intermediate float tensor of one input of ``model`` (an ONNX graph with inferred shapes;
    an unknown dimension, e.g. a dynamic batch, counts as 1)."""
    total = 0
    for info in list(model.graph.value_info) + list(model.graph.output):
        t = info.type.tensor_type
        if t.elem_type not in (1, 10, 16):  # float, float16, bfloat16: what the calibrator collects
            continue
        n = 1
        for d in t.shape.dim:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        total += 4 * n
    return total


def available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_calibration_memory(model: Any, frames: int, name: str, available: int | None = None) -> None:
    """Refuse a calibration that would exhaust the memory (onnxruntime's calibrator holds every input's
    activations at once; a kernel OOM kill would end the whole command without a word).

    Raises:
        EngineError: the plan needs more than :data:`CALIBRATION_MEMORY_SHARE` of the available memory; says
            how many frames fit (``--calibrate-images``).
    """
    available = available_memory() if available is None else available
    per_frame = 2 * activation_bytes(model)
    if not available or per_frame <= 0 or frames * per_frame <= CALIBRATION_MEMORY_SHARE * available:
        return
    fit = max(0, int(CALIBRATION_MEMORY_SHARE * available // per_frame))
    hint = (f"calibrate on at most {fit} frames (--calibrate-images {fit})" if fit >= 1 else
            "quantise it on a machine with more memory")
    raise EngineError(f"calibrating {name} for int8 on {frames} frames needs about "
                      f"{frames * per_frame / 1e9:.1f} GB of memory ({per_frame / 1e6:.0f} MB a frame: onnxruntime "
                      f"keeps every frame's activations), and {available / 1e9:.1f} GB are available: {hint}")


def cached_int8_onnx(
    checkpoint: str | os.PathLike,
    calibration: CalibrationSet,
    inputs: Callable[[tuple[int, int]], "np.ndarray"],
    *,
    size: tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    cache_dir: str | os.PathLike | None = None,
    windows: Mapping[str, Any] | None = None,
    method: str = DEFAULT_CALIBRATION_METHOD,
    float_nodes: str = DEFAULT_FLOAT_NODES,
) -> tuple[Path, dict]:
    """The int8 ONNX of ``checkpoint`` calibrated on ``calibration``, from the engine cache, made on first use.

    The fp32 export comes from :func:`engines.export.cached_onnx`; the int8 file's name adds the
    calibration's digest (images, settings, ``windows``) to its key, so another calibration never reuses it.
    ``inputs(size)`` gives the preprocessed calibration frames ``[N, 1, H, W]`` at the model's ``(W, H)``; it
    is called only when the file has to be made. Returns ``(path, checkpoint config)``.
    """
    from engines.cache import file_sha256
    from engines.export import META_CHECKPOINT_SHA, cached_onnx, reuse_cached

    fp32, config = cached_onnx(checkpoint, precision="fp32", size=size, batch=batch, dynamic_batch=dynamic_batch,
                               cache_dir=cache_dir)
    identity = calibration.identity(method=method, float_nodes=float_nodes, windows=windows)
    path = fp32.with_name(int8_cache_name(fp32.name, identity["digest"]))
    checkpoint_sha = file_sha256(checkpoint)

    def matches(meta: dict) -> bool:
        return ((meta.get(META_CALIBRATION) or {}).get("digest") == identity["digest"]
                and meta.get(META_CHECKPOINT_SHA) == checkpoint_sha)

    if reuse_cached(path, matches, "int8 ONNX", f"{checkpoint} and its calibration"):
        return path, config
    width, height = size or tuple(config["preprocessing"]["size"])
    quantize_onnx(fp32, path, inputs((int(width), int(height))), identity=identity, method=method,
                  float_nodes=float_nodes)
    return path, config


def describe_calibration(meta: Mapping[str, Any]) -> str | None:
    """One line for an engine's notes from an int8 file's metadata; ``None`` for a file without calibration."""
    calib = meta.get(META_CALIBRATION)
    if not isinstance(calib, dict):
        return None
    return (f"int8 (static QDQ, onnxruntime) calibrated on {calib.get('images')} images of {calib.get('source')} "
            f"({calib.get('selection')}; {calib.get('method')}; float: {calib.get('float_nodes')}; "
            f"calibration {calib.get('digest')})")
