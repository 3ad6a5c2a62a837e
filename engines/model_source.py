"""What a model argument is and how to load it: :class:`ModelSource` and :class:`LoadOptions`.

The registry (:mod:`engines.registry`) makes them, the backends and composites
(:mod:`engines.backends`, :mod:`engines.cascade`) read them; this module imports none of those, so
each of them can import it. A model's format -- checkpoint, ONNX or TensorRT plan, and for a
checkpoint the architecture its config names -- is decided once, here, when it is resolved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
ONNX_SUFFIXES = (".onnx",)
PLAN_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class ModelSource:
    """What ``load_engine``'s ``model`` argument points at.

    ``kind`` is how it was named (``checkpoint``, ``onnx``, ``plan`` or ``bundled``); ``format``
    is what the file is (``checkpoint``, ``onnx`` or ``plan``; a bundled model is one of these);
    ``architecture`` is the ``config["model"]["name"]`` of a readable checkpoint (``None`` for an
    export or a checkpoint that cannot be read here; its backend says what is wrong with it).
    """

    kind: str
    format: str
    path: Path
    name: str
    architecture: str | None = None


@dataclass
class LoadOptions:
    """Everything ``load_engine`` passes to a backend's loader (backends ignore what they do not use)."""

    precision: str | None = None
    device: str | None = None
    threads: int | None = None
    size: tuple[int, int] | None = None
    batch: int = 1
    dynamic_batch: bool = False
    cuda_graph: bool = False
    cache_dir: str | os.PathLike | None = None
    channels_last: bool = True
    io_binding: bool | None = None
    max_batch: int | None = None
    workspace_mb: int | None = None
    notes: list[str] = field(default_factory=list)
    calibrate: str | os.PathLike | None = None
    """int8: the folder whose images calibrate the quantisation (:func:`engines.quantize.calibration_set`)."""
    calibrate_images: int | None = None
    """int8: how many of its images (default :data:`engines.quantize.DEFAULT_CALIBRATION_IMAGES`)."""
    int8_files: dict[str, Path] | None = None
    """int8: ready int8 ONNX files of a bundled model (``{"model": path}``, or one per cascade part), used when
    no ``calibrate`` folder is given."""
    tta: str | None = None
    """A cascade's refiner test-time augmentation (``train.window.TTA_MODES``); ``None``: the cascade's own."""


def format_of(path: Path) -> str:
    """``onnx``, ``plan`` or ``checkpoint``, by the file's suffix (anything else is a checkpoint)."""
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in PLAN_SUFFIXES:
        return "plan"
    return "checkpoint"


def checkpoint_architecture(path: str | os.PathLike) -> str | None:
    """The ``config["model"]["name"]`` of the checkpoint ``path``; ``None`` for anything unreadable (the
    backend that loads it says what is wrong). Reads the config only (the weights are mmapped)."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, corrupt, pickled code...: not ours to report here
        return None
    config = payload.get("config") if isinstance(payload, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) else None


def model_source(path: Path, kind: str | None = None, name: str | None = None) -> ModelSource:
    """The :class:`ModelSource` of an existing file: its format from the suffix and, for a checkpoint,
    its architecture from its config. ``kind`` defaults to the format, ``name`` to the file's stem."""
    fmt = format_of(path)
    architecture = checkpoint_architecture(path) if fmt == "checkpoint" else None
    return ModelSource(kind=kind or fmt, format=fmt, path=path, name=name or path.stem, architecture=architecture)
