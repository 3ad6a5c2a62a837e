"""The engine cache: exported ONNX files and TensorRT plans, keyed by what makes them valid.

Location: ``--cache-dir`` flag > ``MN_SEG_CACHE`` > ``~/.cache/mn-seg/engines``.

A TensorRT plan runs only with the TensorRT version and the GPU (model, compute capability)
that built it (NVIDIA TensorRT Developer Guide, "Serialized engine compatibility": engines are
specific to the exact TensorRT version and GPU model they were built on, unless built with the
version-/hardware-compatibility options, which mn-seg does not use). So a plan is named after an
:class:`EngineKey` -- ONNX sha256, TensorRT version, GPU name, compute capability, precision,
input shape and batch profile -- and a JSON sidecar ``<plan>.json`` beside it records that key,
the checkpoint config and the build date. :func:`check_sidecar` refuses a plan whose sidecar
does not match the running environment, with the exact command that rebuilds it
(:func:`rebuild_command`); the same idea as Holoscan HoloInfer's engine file names and
torch_tensorrt's hashed engine cache.

Nothing here imports TensorRT: the whole cache logic is unit-tested on a CPU-only machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shlex
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from engines.errors import EngineError

log = logging.getLogger(__name__)

ENV_VAR = "MN_SEG_CACHE"

SIDECAR_FORMAT = "mn-seg-tensorrt-plan"
SIDECAR_VERSION = 1
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
ENVIRONMENT_FIELDS: tuple[str, ...] = ("trt_version", "gpu_name", "compute_capability")
"""What a plan depends on besides its own build settings; compared by :func:`check_sidecar`."""


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder (created on first use)."""
    if override:
        path = Path(override)
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
    else:
        path = Path.home() / ".cache" / "mn-seg" / "engines"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A crash or a concurrent reader never sees half a file: readers get the old file or the new
    one (``os.replace`` is atomic on POSIX and Windows within one file system).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``: safe in a file name."""
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-.") or "unknown"


# ---------------------------------------------------------------------------------------------
# The key
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineKey:
    """Everything a TensorRT plan's validity depends on.

    Attributes:
        onnx_sha256: sha256 of the ONNX file it was built from.
        trt_version: ``tensorrt.__version__`` of the builder, e.g. ``"10.13.0.35"``.
        gpu_name: ``torch.cuda.get_device_name()``, e.g. ``"NVIDIA H100 80GB HBM3"``.
        compute_capability: ``"major.minor"``, e.g. ``"9.0"``.
        precision: ``"fp32"`` or ``"fp16"``.
        input_shape: ``(N, 1, H, W)``; with a batch profile ``N`` is the profile's *opt* batch.
        max_batch: ``None`` for a static shape, else the profile's maximum batch
            (the profile is ``min 1, opt N, max max_batch``).
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shape: tuple[int, ...]
    max_batch: int | None = None

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(v) for v in self.input_shape)
        except (TypeError, ValueError):
            raise EngineError(f"input_shape must be (N, 1, H, W) integers, got {self.input_shape!r}") from None
        object.__setattr__(self, "input_shape", shape)
        if len(shape) != 4 or shape[1] != 1 or min(shape) < 1:
            raise EngineError(f"input_shape must be (N, 1, H, W) with positive sizes and one channel, "
                              f"got {list(shape)}")
        if self.precision not in PRECISIONS:
            raise EngineError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.max_batch is not None:
            max_batch = int(self.max_batch)
            object.__setattr__(self, "max_batch", max_batch)
            if max_batch < shape[0]:
                raise EngineError(f"max_batch {max_batch} is smaller than the batch {shape[0]} of input_shape "
                                  f"{list(shape)}; use --batch >= {shape[0]}")
        if not re.fullmatch(r"\d+\.\d+", str(self.compute_capability)):
            raise EngineError(f"compute_capability must look like '9.0', got {self.compute_capability!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (``input_shape`` as a list)."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EngineKey":
        """Inverse of :meth:`to_dict`; raises :class:`EngineError` on missing fields."""
        try:
            return cls(onnx_sha256=d["onnx_sha256"], trt_version=d["trt_version"], gpu_name=d["gpu_name"],
                       compute_capability=d["compute_capability"], precision=d["precision"],
                       input_shape=tuple(d["input_shape"]), max_batch=d.get("max_batch"))
        except KeyError as exc:
            raise EngineError(f"engine key lacks the field {exc.args[0]!r}") from None

    def digest(self) -> str:
        """Stable 16-hex-digit digest of every field (sha256 of the sorted, compact JSON)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def dynamic_batch(self) -> bool:
        return self.max_batch is not None

    def batch_tag(self) -> str:
        """``b1`` for a static batch of 1, ``b1-8`` for a profile of batch 1 to 8."""
        return f"b1-{self.max_batch}" if self.max_batch is not None else f"b{self.input_shape[0]}"

    def plan_filename(self, model_name: str) -> str:
        """e.g. ``lunet-fp16-384x288-b1-trt10.13.0.35-nvidia-h100-80gb-hbm3-sm90-<digest>.plan``."""
        _, _, h, w = self.input_shape
        sm = "sm" + self.compute_capability.replace(".", "")
        return (f"{slug(model_name)}-{self.precision}-{w}x{h}-{self.batch_tag()}-trt{slug(self.trt_version)}-"
                f"{slug(self.gpu_name)}-{sm}-{self.digest()}.plan")


def timing_cache_path(directory: str | os.PathLike, running: Mapping[str, Any]) -> Path:
    """The TensorRT timing cache file for one TensorRT version and GPU, in ``directory``.

    A timing cache is only valid for the TensorRT version and device that wrote it
    (``ITimingCache.combine`` documents the header check), so one file per environment keeps a
    cache folder shared between machines from thrashing.
    """
    sm = "sm" + str(running["compute_capability"]).replace(".", "")
    return Path(directory) / (f"timing-trt{slug(running['trt_version'])}-{slug(running['gpu_name'])}-{sm}.cache")


# ---------------------------------------------------------------------------------------------
# The sidecar
# ---------------------------------------------------------------------------------------------


def sidecar_path(plan: str | os.PathLike) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def write_sidecar(plan: str | os.PathLike, key: EngineKey, *, checkpoint_config: Mapping[str, Any] | None = None,
                  checkpoint_path: str | os.PathLike | None = None, extra: Mapping[str, Any] | None = None,
                  model_name: str | None = None, onnx_path: str | os.PathLike | None = None) -> Path:
    """Write ``<plan>.json`` atomically and return its path.

    It holds the key (flat, so a person can read it), its digest, the plan's size and sha256
    (when the plan file exists), the build date (UTC, ISO 8601), the checkpoint path and config,
    the ONNX path, the cache folder and the command that rebuilds the plan; ``extra`` is kept
    under ``"extra"`` (e.g. the build options and the network mode used).
    """
    plan = Path(plan)
    sidecar: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "plan": plan.name,
        **key.to_dict(),
        "digest": key.digest(),
        "model_name": model_name,
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_path": str(Path(checkpoint_path).resolve()) if checkpoint_path else None,
        "onnx_path": str(Path(onnx_path).resolve()) if onnx_path else None,
        "cache_dir": str(plan.resolve().parent),
        "checkpoint_config": dict(checkpoint_config) if checkpoint_config else {},
        "extra": dict(extra) if extra else {},
    }
    if plan.is_file():
        sidecar["plan_bytes"] = plan.stat().st_size
        sidecar["plan_sha256"] = file_sha256(plan)
    sidecar["rebuild_command"] = rebuild_command(sidecar)
    try:
        text = json.dumps(sidecar, indent=2, sort_keys=False)
    except TypeError as exc:
        raise EngineError(f"the metadata of {plan.name} is not JSON-able ({exc}); pass plain dicts, lists, "
                          "strings and numbers as checkpoint_config / extra") from None
    path = sidecar_path(plan)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
    return path


def read_sidecar(plan: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of ``plan`` as a dict; :class:`EngineError` when it is missing or corrupt."""
    plan = Path(plan)
    path = sidecar_path(plan)
    if not path.is_file():
        raise EngineError(
            f"TensorRT plan {plan} has no sidecar {path.name}, so nothing says which TensorRT version and GPU "
            f"built it (a plan runs only with those). Rebuild it with mn-export (e.g. "
            f"{_generic_rebuild(plan)}), or, if you built it yourself on this machine with this TensorRT, "
            "load it with trust_plan=True.")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"the sidecar {path} of TensorRT plan {plan.name} cannot be read ({exc}); delete both "
                          f"files and rebuild the plan, e.g. {_generic_rebuild(plan)}") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise EngineError(f"{path} is not an mn-seg TensorRT sidecar (no 'format': '{SIDECAR_FORMAT}'); delete it "
                          f"and rebuild the plan, e.g. {_generic_rebuild(plan)}")
    if int(sidecar.get("format_version", 0)) > SIDECAR_VERSION:
        raise EngineError(f"{path} has sidecar format version {sidecar['format_version']}, newer than this mn-seg "
                          f"understands ({SIDECAR_VERSION}); upgrade mn-seg or rebuild the plan")
    missing = [f for f in (*ENVIRONMENT_FIELDS, "precision", "input_shape") if f not in sidecar]
    if missing:
        raise EngineError(f"the sidecar {path} lacks {', '.join(missing)}; delete it and rebuild the plan, e.g. "
                          f"{_generic_rebuild(plan)}")
    return sidecar


def sidecar_key(sidecar: Mapping[str, Any]) -> EngineKey:
    """The :class:`EngineKey` recorded in a sidecar."""
    return EngineKey.from_dict(sidecar)


def check_sidecar(plan: str | os.PathLike, running: Mapping[str, Any], *, verify_plan: bool = True) -> dict[str, Any]:
    """Read ``plan``'s sidecar and refuse a plan that cannot run here.

    Args:
        plan: the ``.plan`` file.
        running: the running environment, ``{"trt_version", "gpu_name", "compute_capability"}``
            (see :func:`engines.backends.tensorrt_backend.running_environment`).
        verify_plan: also check that the plan file is the one the sidecar describes (size and
            sha256), so a truncated or swapped plan is not deserialised.

    Returns:
        The sidecar dict.

    Raises:
        EngineError: missing/corrupt sidecar, a different TensorRT version, GPU name or compute
            capability (the message names both and gives :func:`rebuild_command`), or a plan
            file that changed since its sidecar was written.
    """
    plan = Path(plan)
    sidecar = read_sidecar(plan)
    diffs = [(f, sidecar.get(f), running.get(f)) for f in ENVIRONMENT_FIELDS
             if str(sidecar.get(f)) != str(running.get(f))]
    if diffs:
        what = {"trt_version": "TensorRT version", "gpu_name": "GPU", "compute_capability": "compute capability"}
        lines = "; ".join(f"{what[f]}: built with {b!r}, running {r!r}" for f, b, r in diffs)
        raise EngineError(
            f"TensorRT plan {plan.name} does not match this machine ({lines}). A TensorRT plan runs only with "
            f"the TensorRT version and GPU that built it. Rebuild it here with:\n  {rebuild_command(sidecar, plan)}")
    if verify_plan and plan.is_file() and ("plan_sha256" in sidecar or "plan_bytes" in sidecar):
        size = plan.stat().st_size
        if ("plan_bytes" in sidecar and int(sidecar["plan_bytes"]) != size) or (
                "plan_sha256" in sidecar and file_sha256(plan) != sidecar["plan_sha256"]):
            raise EngineError(
                f"TensorRT plan {plan} is not the file its sidecar describes (size or sha256 differ: truncated, "
                f"or replaced by another plan). Rebuild it with:\n  {rebuild_command(sidecar, plan)}")
    return sidecar


# ---------------------------------------------------------------------------------------------
# The rebuild command
# ---------------------------------------------------------------------------------------------


def _q(value: Any) -> str:
    return shlex.quote(str(value))


def rebuild_command(sidecar: Mapping[str, Any], plan: str | os.PathLike | None = None) -> str:
    """The ``mn-export`` command line that rebuilds the plan a sidecar describes.

    ``mn-export --checkpoint CKPT --format engine --precision P --size WxH [--dynamic-batch]
    [--batch N] [--workspace-mb M] --cache-dir DIR``, with the checkpoint path recorded in the
    sidecar; when none was recorded, ``--onnx ONNX`` (the recorded ONNX file) or a placeholder for
    the checkpoint. ``--dynamic-batch --batch N`` rebuilds a batch profile up to ``N``; a static
    batch other than 1 is ``--batch N``.
    """
    shape = list(sidecar.get("input_shape") or [1, 1, 0, 0])
    n, h, w = int(shape[0]), int(shape[2]), int(shape[3])
    max_batch = sidecar.get("max_batch")
    if sidecar.get("checkpoint_path"):
        source = f"--checkpoint {_q(sidecar['checkpoint_path'])}"
    elif sidecar.get("onnx_path"):
        source = f"--onnx {_q(sidecar['onnx_path'])}"
    else:
        source = "--checkpoint CHECKPOINT.pt"
    parts = ["mn-export", source, "--format engine", f"--precision {sidecar.get('precision', 'fp16')}",
             f"--size {w}x{h}"]
    if max_batch is not None:
        parts.append(f"--dynamic-batch --batch {int(max_batch)}")
    elif n != 1:
        parts.append(f"--batch {n}")
    workspace = (sidecar.get("extra") or {}).get("workspace_mb")
    if workspace:
        parts.append(f"--workspace-mb {int(workspace)}")
    directory = sidecar.get("cache_dir") or (str(Path(plan).resolve().parent) if plan is not None else None)
    if directory:
        parts.append(f"--cache-dir {_q(directory)}")
    return " ".join(parts)


def _generic_rebuild(plan: Path) -> str:
    """A rebuild command for a plan whose sidecar is unusable: what the file name tells."""
    m = re.match(r"^(?P<model>.+?)-(?P<prec>fp32|fp16)-(?P<w>\d+)x(?P<h>\d+)-b(?P<b>\d+)(?:-(?P<max>\d+))?-",
                 plan.name)
    directory = _q(plan.resolve().parent)
    if not m:
        return ("mn-export --checkpoint CHECKPOINT.pt --format engine --precision fp16 --size WxH "
                f"--cache-dir {directory}")
    info: dict[str, Any] = {"cache_dir": str(plan.resolve().parent), "precision": m["prec"],
                            "input_shape": [int(m["b"]), 1, int(m["h"]), int(m["w"])],
                            "max_batch": int(m["max"]) if m["max"] else None}
    return rebuild_command(info)
