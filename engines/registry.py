"""Choosing and loading an engine: the backend registry, model sources and ``auto`` selection.

:func:`load_engine` is the one entry point::

    with load_engine("runs/lunet/best.pt", backend="auto") as engine:
        prob = engine.infer(preprocess_batch(frames, engine.size))

``model`` is a checkpoint (``.pt``), an ``.onnx`` export, a TensorRT plan (``.engine``/``.plan``)
or the name of a bundled model (:func:`bundled`: the package's :class:`~engines.catalogue.Catalogue`,
read on first use, never at import). Backends are registered by name in
:data:`BACKENDS`; each is a small :class:`Backend` record whose availability probe and loader
live in its own module under :mod:`engines.backends` and are imported only when used, so
``import engines`` needs neither onnxruntime nor TensorRT (TensorRT's loader, which chains the
cached ONNX export and :func:`~engines.backends.tensorrt_backend.build_plan`, is
:func:`tensorrt_plan` here). This module is the only place that knows the list of backends.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Callable

from engines.catalogue import BUNDLED_DIR, MANIFEST_FORMAT, MANIFEST_NAME, Catalogue  # noqa: F401 (re-exported)
from engines.catalogue import read_manifest as _read_manifest
from engines.errors import EngineError
from engines.model_source import (
    CHECKPOINT_SUFFIXES,
    ONNX_SUFFIXES,
    PLAN_SUFFIXES,
    LoadOptions,
    ModelSource,
    model_source,
)

if TYPE_CHECKING:  # pragma: no cover - typing only (engines.base imports numpy)
    from engines.base import Engine

log = logging.getLogger(__name__)

INT8 = "int8"
"""The CPU-only precision of statically quantised ONNX files (:mod:`engines.quantize`)."""

TENSORRT_INSTALL_HINT = "pip install 'mn-seg[tensorrt]' on a machine with an NVIDIA GPU and its CUDA driver"
"""How to get the TensorRT backend; added to the error when it is requested and unavailable."""

# -- bundled models -----------------------------------------------------------------------------
# The catalogue is data (engines.catalogue); the registry only remembers which folder's catalogue is
# the active one, read on first use (never at import).
_active: list[Catalogue] = []


def bundled() -> Catalogue:
    """The active catalogue of bundled models: the package's (:data:`BUNDLED_DIR`), read on first use,
    unless :func:`load_bundled` made another folder's the active one."""
    if not _active:
        _active.append(Catalogue.load(BUNDLED_DIR))
        if _active[0].error:
            log.debug("no bundled models: %s", _active[0].error)
    return _active[0]


def load_bundled(folder: str | os.PathLike | None = None) -> "MutableMapping[str, Path]":
    """(Re)read ``folder``'s manifest (default :data:`BUNDLED_DIR`) and make it the active catalogue; returns
    :data:`BUNDLED_MODELS`. Never raises: a broken manifest leaves no bundled models, and its error is
    repeated wherever a bundled model is asked for (:func:`bundled_error`)."""
    catalogue = Catalogue.load(Path(folder) if folder is not None else BUNDLED_DIR)
    _active[:] = [catalogue]
    if catalogue.error:
        log.debug("no bundled models: %s", catalogue.error)
    return BUNDLED_MODELS


def read_manifest(folder: str | os.PathLike | None = None) -> dict:
    """The checked manifest of ``folder`` (default: the active catalogue's folder).

    Raises:
        EngineError: the manifest is missing, not JSON, newer than this mn-seg, or malformed.
    """
    return _read_manifest(folder if folder is not None else bundled().folder)


def bundled_dir() -> Path:
    """The folder of the active catalogue (:data:`BUNDLED_DIR` unless :func:`load_bundled` chose another)."""
    return bundled().folder


def bundled_default() -> str | None:
    """The manifest's default model when it is bundled, else ``None``."""
    return bundled().default


def machine_default(probes: "Probes | None" = None) -> tuple[str | None, str | None]:
    """``(name, why)``: the bundled model to run when none is named. The manifest's ``default``, unless this
    machine would run it in float32 on the CPU (what :func:`choose_auto` picks without a GPU, or without VNNI
    for its int8 files) and the manifest names an ``fp32_default`` that keeps real time there; ``why`` says
    so (``None`` when the default stands). ``(None, None)`` without bundled models."""
    catalogue = bundled()
    name = catalogue.default
    other = catalogue.fp32_default
    if name is None or other is None or other == name:
        return name, None
    files = catalogue.int8_files(name)
    backend, precision, reason = choose_auto(probes, "checkpoint",
                                             int8_model=f"the bundled {name}'s int8 files" if files else None)
    if (backend, precision) != ("onnxruntime", "fp32"):
        return name, None
    return other, (f"the default model {name} would run in float32 on this CPU, too slow for 24 fps on a few "
                   f"cores ({reason}); running {other}, the default for such a machine, instead. --model {name} "
                   "runs it anyway")


def bundled_error() -> str | None:
    """Why the active manifest could not be read (``None`` when it was)."""
    return bundled().error


class _BundledModels(MutableMapping):
    """A live view of the active catalogue's models (name -> file): what ``BUNDLED_MODELS`` always shows."""

    def __getitem__(self, name: str) -> Path:
        return bundled().models[name]

    def __setitem__(self, name: str, path: Path) -> None:
        bundled().models[name] = path

    def __delitem__(self, name: str) -> None:
        del bundled().models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(bundled().models)

    def __len__(self) -> int:
        return len(bundled().models)

    def __repr__(self) -> str:
        return repr(bundled().models)


BUNDLED_MODELS: MutableMapping[str, Path] = _BundledModels()
"""Named models shipped with the package (name -> checkpoint file): a view of :func:`bundled`'s catalogue,
read on first use."""


# -- model sources ------------------------------------------------------------------------------
def resolve_model(model: str | os.PathLike, catalogue: Catalogue | None = None) -> ModelSource:
    """Say what ``model`` is: an existing file (by suffix) or a bundled model's name; for a checkpoint, also
    the architecture its config names (:class:`ModelSource`), so a composite is known from here on.

    Raises:
        EngineError: a path that does not exist, or a name that is not bundled (the message lists
            the bundled names and says a path is accepted too).
    """
    catalogue = catalogue if catalogue is not None else bundled()
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_file():
        return model_source(path)
    if text in catalogue.renamed and text not in catalogue.models:
        new, why = catalogue.renamed[text]
        log.warning("bundled model %r is now called %r%s; use --model %s", text, new, f" ({why})" if why else "", new)
        text = new
    if text in catalogue.models:
        file = Path(catalogue.models[text])
        if not file.is_file():
            raise EngineError(f"bundled model {text!r} is missing its file {file}; reinstall mn-seg")
        return model_source(file, kind="bundled", name=text)
    if path.exists():
        raise EngineError(f"{path} is not a file; pass a checkpoint (.pt), an .onnx or a TensorRT plan (.engine)")
    looks_like_path = path.suffix.lower() in (*CHECKPOINT_SUFFIXES, *ONNX_SUFFIXES, *PLAN_SUFFIXES) or any(
        sep in text for sep in ("/", os.sep))
    if looks_like_path:
        raise EngineError(f"model file {path} does not exist (mn-train writes RUN_DIR/best.pt; mn-export writes "
                          ".onnx / .engine files)")
    names = ", ".join(sorted(catalogue.models)) or "none yet"
    broken = f" ({catalogue.error})" if catalogue.error else ""
    raise EngineError(f"unknown model {text!r}: not a file and not a bundled model (bundled: {names}){broken}; "
                      "pass a checkpoint (.pt), an .onnx or a TensorRT plan (.engine) path instead")


# -- backends ------------------------------------------------------------------------------------
def _lazy(module: str, attr: str) -> Callable:
    """A function that imports ``module`` on first call and calls its ``attr``."""

    def call(*args: object, **kwargs: object) -> object:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = f"{module}.{attr}"
    return call


@dataclass(frozen=True)
class Backend:
    """A registered backend: its name, precisions, availability probe and loader.

    ``probe() -> (ok, reason)`` and ``loader(source, options) -> Engine`` come from the backend's
    module; ``install_hint`` says how to get the backend when the probe fails.
    """

    name: str
    precisions: tuple[str, ...]
    description: str
    probe: Callable[[], tuple[bool, str]]
    loader: Callable[["ModelSource", LoadOptions], Engine]
    install_hint: str = ""

    def available(self) -> tuple[bool, str]:
        """``(ok, reason)``; never raises (a probe that fails counts as unavailable)."""
        try:
            ok, reason = self.probe()
        except Exception as exc:  # an optional module that fails to import or initialise
            return False, f"{type(exc).__name__}: {exc}"
        return bool(ok), str(reason)

    def require(self, precision: str | None = None) -> None:
        """Raise :class:`EngineError` (saying how to fix it) unless the backend is usable at ``precision``."""
        if precision == INT8 and INT8 not in self.precisions:
            raise EngineError(f"int8 is an onnxruntime-only precision (static int8 quantisation for the CPU); the "
                              f"{self.name} backend runs {', '.join(self.precisions)}. Use --backend onnxruntime "
                              f"--precision int8, or --precision {self.precisions[0]} on {self.name}")
        if precision is not None and precision not in self.precisions:
            raise EngineError(f"backend {self.name} runs precisions {', '.join(self.precisions)}, not {precision!r}")
        ok, reason = self.available()
        if not ok:
            hint = f"; {self.install_hint}" if self.install_hint and "pip install" not in reason else ""
            raise EngineError(f"backend {self.name} is not available: {reason}{hint}")

    def load(self, source: ModelSource, options: LoadOptions) -> Engine:
        """Load ``source``; refuse an unsupported precision or an unavailable backend with how to fix it."""
        self.require(options.precision)
        return self.loader(source, options)


def _tensorrt_probe() -> tuple[bool, str]:
    try:
        module = importlib.import_module("engines.backends.tensorrt_backend")
    except ImportError as exc:
        return False, f"the TensorRT backend cannot be imported ({exc})"
    return module.tensorrt_available()


DEFAULT_MAX_BATCH = 8
"""Largest batch of a dynamic-batch TensorRT profile when none is given."""


def tensorrt_plan(source: ModelSource, options: LoadOptions) -> Path:
    """The TensorRT plan for ``source``: the plan itself, or one built (and cached) from an ONNX / checkpoint.

    A checkpoint is exported to a cached ONNX of the requested precision first (TensorRT FP16 comes
    from a strongly typed network whose ONNX is already FP16). With ``dynamic_batch`` the plan's
    profile is batch ``1..max_batch`` optimised for ``batch``.
    """
    from engines.backends import tensorrt_backend as trt
    from engines.export import META_CONFIG, META_PRECISION, cached_onnx, onnx_input_shape, read_onnx_metadata

    if source.format == "plan":
        return source.path
    if source.format == "checkpoint":
        precision = options.precision or "fp16"
        onnx_path, config = cached_onnx(source.path, precision=precision, size=options.size, batch=options.batch,
                                        dynamic_batch=options.dynamic_batch, cache_dir=options.cache_dir)
        width, height = options.size or tuple(config["preprocessing"]["size"])
        dynamic, checkpoint = options.dynamic_batch, source.path
    else:
        onnx_path, checkpoint = source.path, None
        meta = read_onnx_metadata(onnx_path)
        n, _, height, width = onnx_input_shape(onnx_path)
        dynamic, config = n < 0, meta.get(META_CONFIG) or {}
        precision = meta.get(META_PRECISION, "fp32")  # a strongly typed network keeps the ONNX's precision
        if precision == INT8:
            raise EngineError(f"{onnx_path} is an int8 (QDQ) ONNX for onnxruntime on the CPU; int8 is an "
                              "onnxruntime-only precision. Run it with --backend onnxruntime, or build a TensorRT "
                              "plan from the checkpoint (mn-export --format engine --precision fp16)")
        if options.precision not in (None, precision):
            raise EngineError(f"{onnx_path} is a {precision} export, not {options.precision}; re-export it "
                              f"with mn-export --precision {options.precision}")
        if options.size is not None and tuple(options.size) != (width, height):
            raise EngineError(f"{onnx_path} takes {width}x{height} input, not the {options.size[0]}x"
                              f"{options.size[1]} asked for; re-export with mn-export --size WxH")
        if not dynamic and n != options.batch:
            log.info("%s has a static batch of %d; building the plan for it", onnx_path.name, n)
            options = replace(options, batch=n)
    max_batch = max(options.max_batch or DEFAULT_MAX_BATCH, options.batch) if dynamic else None
    return trt.build_plan(onnx_path, precision=precision, input_shape=(options.batch, 1, height, width),
                          max_batch=max_batch, workspace_mb=options.workspace_mb, cache_dir=options.cache_dir,
                          checkpoint_config=config, checkpoint_path=checkpoint)


def _load_tensorrt(source: ModelSource, options: LoadOptions) -> Engine:
    """A :class:`TensorRTEngine` for a plan, or for an ONNX / checkpoint built into a cached plan first."""
    from engines.backends.tensorrt_backend import TensorRTEngine

    if options.device not in (None, "cuda", "cuda:0"):
        raise EngineError(f"the tensorrt backend runs on the first CUDA GPU (cuda:0), not {options.device!r}")
    engine = TensorRTEngine(tensorrt_plan(source, options), cuda_graph=options.cuda_graph)
    engine.info.notes.extend(options.notes)
    return engine


BACKENDS: dict[str, Backend] = {
    "tensorrt": Backend(
        name="tensorrt",
        precisions=("fp16", "fp32"),
        description="NVIDIA TensorRT plan on a CUDA GPU (fastest on NVIDIA hardware)",
        probe=_tensorrt_probe,
        loader=_load_tensorrt,
        install_hint=TENSORRT_INSTALL_HINT,
    ),
    "torch": Backend(
        name="torch",
        precisions=("fp32", "fp16"),
        description="PyTorch eager on CPU or CUDA (fp16 and CUDA graphs on CUDA only)",
        probe=_lazy("engines.backends.torch_backend", "available"),
        loader=_lazy("engines.backends.torch_backend", "load"),
    ),
    "onnxruntime": Backend(
        name="onnxruntime",
        precisions=("fp32", "fp16", INT8),
        description="ONNX Runtime on the CPU (the fastest CPU option; int8 with a calibration)",
        probe=_lazy("engines.backends.onnxruntime_backend", "available"),
        loader=_lazy("engines.backends.onnxruntime_backend", "load"),
        install_hint="pip install onnxruntime",
    ),
}
"""Registered backends by name; add one entry to add a backend."""


Composite = Callable[[ModelSource, Backend, LoadOptions], "Engine"]
"""A composite's loader: ``loader(source, backend, options) -> Engine`` (e.g. a cascade: one engine per part)."""

COMPOSITES: dict[str, Composite] = {}
"""Architectures that are not one network but several with glue between them, by the name a checkpoint's
config gives (``config["model"]["name"]``). Registered from above (:func:`register_composite`, called by
``engines/__init__.py``): this module never imports a composite."""


def register_composite(name: str, loader: Composite | str) -> None:
    """Load checkpoints of architecture ``name`` with ``loader`` instead of one backend call; ``loader`` may be
    ``"module:function"``, imported on first use (so registering costs no import)."""
    if isinstance(loader, str):
        module, _, attr = loader.partition(":")
        loader = _lazy(module, attr)
    COMPOSITES[name] = loader


def list_backends() -> list[str]:
    """Names accepted by :func:`get_backend` (and ``auto``, which picks one of them)."""
    return list(BACKENDS)


def get_backend(name: str) -> Backend:
    """The registered backend ``name``.

    Raises:
        KeyError: unknown ``name``; the message lists the valid names.
    """
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; valid backends: auto, {', '.join(BACKENDS)}") from None


# -- auto ----------------------------------------------------------------------------------------
def _cuda_probe() -> tuple[bool, str]:
    import torch

    if torch.cuda.is_available():
        return True, f"CUDA GPU {torch.cuda.get_device_name(0)}"
    return False, f"no CUDA GPU visible to PyTorch {torch.__version__}"


@dataclass(frozen=True)
class Probes:
    """The availability checks ``auto`` relies on (injectable for tests): each returns ``(ok, reason)``.
    ``vnni``: whether the CPU has int8 dot products (:func:`engines.quantize.cpu_vnni`)."""

    tensorrt: Callable[[], tuple[bool, str]] = _tensorrt_probe
    cuda: Callable[[], tuple[bool, str]] = _cuda_probe
    vnni: Callable[[], tuple[bool, str]] = _lazy("engines.quantize", "cpu_vnni")


def choose_auto(probes: Probes | None = None, source_format: str = "checkpoint",
                int8_model: str | None = None) -> tuple[str, str, str]:
    """Pick ``(backend, precision, reason)`` for ``backend="auto"``.

    TensorRT FP16 when TensorRT and a CUDA GPU are present, else torch on CUDA in FP16, else
    onnxruntime on the CPU: int8 when the CPU has VNNI (``probes.vnni``) and an int8 model exists for a
    checkpoint (``int8_model`` says which: the bundled model's int8 parts, or a calibration folder), else
    fp32. A TensorRT plan can only run on TensorRT; an ``.onnx`` cannot run on torch, so it goes to
    TensorRT or onnxruntime. ``reason`` says what was found, for the log and for :attr:`EngineInfo.notes`.
    """
    probes = probes or Probes()
    cuda_ok, cuda_why = probes.cuda()
    trt_ok, trt_why = probes.tensorrt()
    found = f"TensorRT: {'yes' if trt_ok else 'no'} ({trt_why}); CUDA: {'yes' if cuda_ok else 'no'} ({cuda_why})"
    if source_format == "plan":
        return "tensorrt", "fp16", f"auto chose tensorrt: the model is a TensorRT plan. {found}"
    if trt_ok and cuda_ok:
        return "tensorrt", "fp16", f"auto chose tensorrt fp16. {found}"
    if cuda_ok and source_format == "checkpoint":
        return "torch", "fp16", f"auto chose torch fp16 on CUDA (TensorRT unavailable). {found}"
    why = "no CUDA GPU" if not cuda_ok else "TensorRT unavailable and torch cannot run an .onnx"
    fallback = f"auto fell back to onnxruntime fp32 on the CPU ({why})."
    if source_format != "checkpoint":
        return "onnxruntime", "fp32", f"{fallback} {found}"
    if int8_model is None:
        return "onnxruntime", "fp32", (f"{fallback} int8 not considered: no int8 model (a bundled model's int8 files, "
                                       f"or --calibrate DIR). {found}")
    vnni_ok, vnni_why = probes.vnni()
    if vnni_ok:
        return "onnxruntime", INT8, (f"auto chose onnxruntime int8 on the CPU ({why}): {vnni_why} and {int8_model} "
                                     f"gives an int8 model; --precision fp32 forces float. {found}")
    return "onnxruntime", "fp32", (f"{fallback} int8 not chosen although {int8_model} gives an int8 model: "
                                   f"{vnni_why} (int8 is chosen only with VNNI; --precision int8 forces it). {found}")


def _onnx_precision(path: Path) -> str:
    """The precision an mn-seg ``.onnx`` records (fp32 when it records none)."""
    from engines.export import META_PRECISION, read_onnx_metadata

    return str(read_onnx_metadata(path).get(META_PRECISION, "fp32"))


# -- the entry point ------------------------------------------------------------------------------
def load_engine(
    model: str | os.PathLike,
    backend: str = "auto",
    precision: str | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    size: tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    cuda_graph: bool = False,
    cache_dir: str | os.PathLike | None = None,
    channels_last: bool = True,
    io_binding: bool | None = None,
    max_batch: int | None = None,
    workspace_mb: int | None = None,
    calibrate: str | os.PathLike | None = None,
    calibrate_images: int | None = None,
    tta: str | None = None,
    probes: Probes | None = None,
) -> Engine:
    """Load ``model`` on ``backend`` and return a ready :class:`Engine`.

    Args:
        model: checkpoint, ``.onnx``, TensorRT plan, or bundled model name (:func:`resolve_model`).
            A composite's checkpoint goes to its registered loader (:data:`COMPOSITES`): a cascade
            (``train.cascade``) gives a :class:`engines.cascade.CascadeEngine` (its two networks on
            ``backend``; ``size`` may only be its frame size).
        backend: ``auto`` or a name from :func:`list_backends`.
        precision: ``fp32``/``fp16``/``int8``; default: ``auto``'s choice, fp32 for torch and onnxruntime,
            fp16 for tensorrt, or what an exported file was made with. ``int8`` is onnxruntime only (static
            quantisation, :mod:`engines.quantize`): it needs ``calibrate`` or a bundled model that ships int8
            files; with ``backend="auto"`` it selects onnxruntime.
        device: ``cpu`` / ``cuda[:N]`` for torch (default: CUDA if present); onnxruntime is CPU only.
        threads: CPU intra-op threads (default: all cores for onnxruntime, PyTorch's for torch).
        size: ``(W, H)``; default the checkpoint's. An exported file made for another size is refused.
        batch: static batch size; ``dynamic_batch`` accepts any batch (up to ``max_batch`` for TensorRT).
        cuda_graph: torch/TensorRT on CUDA: capture a CUDA graph for the static shape.
        cache_dir: where exported ONNX files and plans are cached (:func:`engines.cache.cache_dir`).
        channels_last: torch: NHWC memory format.
        io_binding: onnxruntime: bind a preallocated output buffer (static shape only; default off:
            measured, it does not help these networks on a CPU).
        max_batch: tensorrt with ``dynamic_batch``: the profile's largest batch (default 8).
        workspace_mb: tensorrt: the builder's workspace memory limit in MiB.
        calibrate: int8: a folder of frames (a dataset's ``Images/``, or images) to calibrate the quantisation on;
            without it a bundled model's shipped int8 files are used.
        calibrate_images: int8: how many of its images, spread evenly (default
            :data:`engines.quantize.DEFAULT_CALIBRATION_IMAGES`).
        tta: a cascade's refiner test-time augmentation, ``none`` or ``hflip`` (each window and its mirror refined,
            the probabilities averaged; twice the refiner's work); default the cascade's own (its config's
            ``tta``). Other models take only ``none``.
        probes: ``auto``'s availability checks (tests inject them).

    Raises:
        KeyError: unknown backend name (lists the names).
        EngineError: a model or option the backend cannot run, with how to fix it.
    """
    source = resolve_model(model)
    notes: list[str] = []
    try:  # a bundled model's shipped int8 files: needed for int8, and for auto to know int8 is there
        int8_files = bundled().int8_files(source.name if source.kind == "bundled" else None,
                                          source.path if source.format == "checkpoint" else None)
    except EngineError as exc:  # listed but missing: an error only when int8 is asked for
        if precision == INT8:
            raise
        log.warning("%s", exc)
        int8_files = None
    if backend == "auto":
        probes = probes or Probes()
        if device is not None and device.startswith("cpu"):
            probes = Probes(tensorrt=probes.tensorrt, cuda=lambda: (False, "device cpu was requested"),
                            vnni=probes.vnni)
        if precision == INT8 or (source.format == "onnx" and _onnx_precision(source.path) == INT8):
            backend, reason = "onnxruntime", "auto chose onnxruntime: int8 runs on onnxruntime only"
        else:
            int8_model = (f"calibration folder {calibrate}" if calibrate is not None else
                          "the int8 files shipped with this bundled model" if int8_files else None)
            backend, auto_precision, reason = choose_auto(probes, source.format, int8_model)
            if source.format == "checkpoint":  # an exported file keeps the precision it was made with
                precision = precision or auto_precision
        if backend == "torch" and device is None:
            device = "cuda"
        log.info("%s", reason)
        notes.append(reason)
    chosen = get_backend(backend)
    options = LoadOptions(precision=precision, device=device, threads=threads, size=tuple(size) if size else None,
                          batch=batch, dynamic_batch=dynamic_batch, cuda_graph=cuda_graph, cache_dir=cache_dir,
                          channels_last=channels_last, io_binding=io_binding, max_batch=max_batch,
                          workspace_mb=workspace_mb, notes=notes, calibrate=calibrate,
                          calibrate_images=calibrate_images, int8_files=int8_files, tta=tta)
    if calibrate is not None and precision != INT8:
        log.warning("calibration folder %s ignored: it is for precision int8, not %s", calibrate,
                    precision or "the default")
    composite = COMPOSITES.get(source.architecture) if source.format == "checkpoint" else None
    if tta not in (None, "none") and composite is None:
        raise EngineError(f"test-time augmentation {tta!r} is the cascade's refiner's; {model} is a single network "
                          f"({source.architecture or source.format}): leave out --tta")
    if composite is not None:  # e.g. a cascade: two networks, numpy glue, one engine each
        engine = composite(source, chosen, options)
    else:
        engine = chosen.load(source, options)
    log.info("loaded %r", engine)
    return engine
