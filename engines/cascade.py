"""Cascade checkpoints (``train.cascade``) on every backend: two engines with numpy glue between them.

A cascade runs a *localiser* on the whole frame, finds the nerve's centre in its probabilities,
cuts a fixed window around it and runs a *refiner* on the window
(:class:`train.cascade.CascadeNet`). The centre is computed in numpy, so the cascade cannot be
one ONNX graph or TensorRT plan; :class:`CascadeEngine` holds one engine per network (same
backend, precision, device and threads) and does the glue with the very functions
``CascadeNet`` uses (:mod:`train.window`, torch-free: :func:`~train.window.find_centre`,
:func:`~train.window.crop_box`, :func:`~train.window.paste`), so both place the same window.

How the parts are built (:func:`load_cascade`, registered as the loader of the ``"cascade"``
composite by ``engines/__init__.py`` and called by :func:`engines.registry.load_engine` for a
checkpoint whose ``config["model"]["name"]`` is ``"cascade"``): each network is written
as an ordinary checkpoint into the engine cache (:func:`part_checkpoints`: ``model`` = the part's
spec, ``preprocessing.size`` = the frame for the localiser and the window for the refiner, the
``localiser.`` / ``refiner.`` weights without their prefix), named after the cascade file's
sha256 so an edited cascade never gets stale parts, and written atomically; each part is then
loaded by the backend like any checkpoint, so the ONNX export cache and the TensorRT plan cache
work unchanged. Outside the window the probability is 0.0. With the test-time augmentation ``hflip`` (the
cascade's config ``tta``, or ``LoadOptions.tta`` / ``--tta`` over it) each window is refined as it is and
mirrored, and the two maps are averaged (:func:`train.window.flip_average`), as ``CascadeNet(tta="hflip")`` does.

int8 (onnxruntime only, :mod:`engines.quantize`): each part is an int8 ONNX, either shipped with a
bundled cascade (``LoadOptions.int8_files``) or quantised here from a calibration folder
(:func:`int8_part_files`): the localiser on the calibration frames, the refiner on the windows the
cascade cuts from them, placed by the fp32 localiser with the cascade's own rule.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from engines.base import Engine, EngineError, EngineInfo
from engines.cache import atomic_write_bytes, file_sha256
from engines.cache import cache_dir as resolve_cache_dir
from engines.model_source import LoadOptions, ModelSource, checkpoint_architecture
from engines.quantize import INT8
from train.window import (
    TTA_MODES,
    candidate_boxes,
    candidate_masses,
    choose_candidates,
    crop_box,
    flip_average,
    paste,
    window_boxes,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engines.quantize import CalibrationSet
    from engines.registry import Backend

log = logging.getLogger(__name__)

CASCADE_NAME = "cascade"
"""``config["model"]["name"]`` of a cascade checkpoint (``train.cascade.CascadeNet.name``)."""
PARTS: tuple[str, ...] = ("localiser", "refiner")
WINDOW_THRESHOLD = 0.5
"""The localiser probability that counts as nerve when the window is placed (:class:`CascadeEngine`'s default)."""
REBUILD_HINT = "rebuild it with python -m train.cascade --localiser LOC.pt --refiner REF.pt --out CASCADE.pt"


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------


class CascadeEngine(Engine):
    """A localiser engine (frame in, frame probabilities out) and a refiner engine (windows in).

    :meth:`infer` takes the frame batch ``float32 [N, 1, H, W]`` and returns full-frame
    probabilities: the refiner's window pasted at the box the localiser's centre gives, 0.0
    elsewhere. Both parts must accept the same batch (both static N, or both dynamic).

    Args:
        localiser: an engine with input ``[N, 1, H, W]`` (the frame).
        refiner: an engine with input ``[N, 1, ch, cw]`` (the window ``crop = (cw, ch)``).
        info: this engine's description (default: built from the parts).
        threshold: the localiser probability that counts as nerve when finding the centre.
        candidates: windows refined per frame (``K`` largest localiser components; the refined window
            with the largest probability mass wins, :func:`train.cascade.choose_candidates`), as
            ``CascadeNet(candidates=K)``.
        tta: the refiner's test-time augmentation (:data:`train.window.TTA_MODES`): ``"hflip"`` refines every
            window and its left-right mirror and averages the probabilities (:func:`train.window.flip_average`),
            as ``CascadeNet(tta="hflip")``: one refiner call of ``2N`` windows where the refiner takes that batch,
            else two.

    Raises:
        EngineError: parts whose shapes do not fit each other, or an unknown ``tta``.
    """

    def __init__(self, localiser: Engine, refiner: Engine, info: EngineInfo | None = None, *,
                 threshold: float = WINDOW_THRESHOLD, candidates: int = 1, tta: str = "none") -> None:
        n, _, h, w = localiser.input_shape
        rn, _, ch, cw = refiner.input_shape
        if cw > w or ch > h:
            raise EngineError(f"the refiner's window {cw}x{ch} does not fit the localiser's {w}x{h} frame")
        if rn != n or refiner.info.max_batch != localiser.info.max_batch:
            raise EngineError(f"the cascade's parts take different batches (localiser {n}, refiner {rn}); "
                              "load both with the same batch options")
        if info is None:
            info = EngineInfo(name=CASCADE_NAME, backend=localiser.backend, precision=localiser.precision,
                              device=localiser.device, input_shape=localiser.input_shape,
                              max_batch=localiser.info.max_batch)
        super().__init__(info)
        self.localiser = localiser
        self.refiner = refiner
        self.crop = (int(cw), int(ch))
        self.threshold = float(threshold)
        if int(candidates) < 1:
            raise EngineError(f"a cascade needs at least one candidate window, got {candidates}")
        self.candidates = int(candidates)
        if tta not in TTA_MODES:
            raise EngineError(f"unknown test-time augmentation {tta!r} for the cascade's refiner; use one of "
                              f"{', '.join(TTA_MODES)}")
        self.tta = tta

    window_hints = True

    def infer_hinted(self, batch: np.ndarray, centres: Sequence[tuple[float, float] | None],
                     verify: Sequence[bool] | None = None) -> tuple[np.ndarray, list[str | None]]:
        """Full-frame probabilities with the window of frame ``i`` centred on ``centres[i]`` (network-input
        pixels; clamped inside the frame as :func:`~train.window.crop_box` does) where given, placed by the
        localiser elsewhere; the localiser does not run when every frame has a centre and none is to be
        verified. ``verify[i]`` (default: none) checks frame ``i``'s hint against the localiser: the hinted
        window is kept when the localiser's own window is within the refiner's training jitter of it
        (:data:`REFINER_JITTER`: the refiner sees the same nerve in both), or, further away, when the two
        windows' refined outlines are the same structure (:func:`outlines_agree`, one more refiner pass);
        the localiser's window is taken otherwise. Returns the probabilities and each frame's window
        source: ``"tracked"`` (the hint), ``"confirmed"`` (the hint, verified) or ``"localiser"``."""
        if len(centres) != len(batch):
            raise EngineError(f"{len(centres)} window centres for a batch of {len(batch)} frames")
        parts = self.infer_parts(batch, centres, verify)
        return parts["prob"], parts["window_source"]

    def boxes(self, loc_prob: np.ndarray) -> list[tuple[int, int]]:
        """Window corners ``(x0, y0)`` for localiser probabilities ``[N, 1, H, W]`` (as ``CascadeNet.boxes``)."""
        return window_boxes(loc_prob, self.crop, self.threshold)

    def near(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        """Whether windows at corners ``a`` and ``b`` are within :data:`REFINER_JITTER` of each other."""
        (cw, ch), jitter = self.crop, REFINER_JITTER
        return abs(a[0] - b[0]) <= jitter * cw / 2.0 and abs(a[1] - b[1]) <= jitter * ch / 2.0

    def infer_parts(self, batch: np.ndarray, centres: Sequence[tuple[float, float] | None] | None = None,
                    verify: Sequence[bool] | None = None) -> dict[str, Any]:
        """``prob`` (full frame, as :meth:`infer`), the ``localiser`` probabilities (None when it did not run),
        the window ``boxes``, each frame's ``window_source`` and ``compared`` (whether a verified frame's two
        outlines were compared, at the cost of one more refiner pass); ``centres`` and ``verify`` as in
        :meth:`infer_hinted`."""
        if self._closed:
            raise EngineError(f"engine {self.name} ({self.backend}) is closed")
        self.check_input(batch)
        batch = np.ascontiguousarray(batch)
        if centres is None or all(c is None for c in centres):
            return self._run(batch)
        n, (h, w) = len(batch), batch.shape[-2:]
        verify = [False] * n if verify is None else [bool(v) for v in verify]
        if len(verify) != n:
            raise EngineError(f"{len(verify)} verify flags for a batch of {n} frames")
        hinted = [None if c is None else crop_box((float(c[0]), float(c[1])), self.crop, (w, h)) for c in centres]
        used = [i for i, b in enumerate(hinted) if b is not None]
        # the hinted windows (a refiner of static batch refines all N; frames without a hint repeat a hinted box)
        rows = list(range(n)) if self.refiner.input_shape[0] > 0 else used
        refine_boxes = [hinted[i] if hinted[i] is not None else hinted[used[0]] for i in rows]
        tracked = paste(self.refine(self._windows(batch[rows], refine_boxes)), refine_boxes, (h, w),
                        fill=0.0)
        kept = ["confirmed" if v else "tracked" for v in verify]  # each hinted frame's source if its hint is kept
        everyone = len(used) == n
        if everyone and not any(verify):
            return {"prob": tracked, "localiser": None, "boxes": list(hinted), "window_source": kept,
                    "compared": [False] * n}
        loc = self.localiser.infer(batch)
        placed = self.boxes(loc)
        compare = [hinted[i] is not None and verify[i] and not self.near(hinted[i], placed[i]) for i in range(n)]
        if everyone and not any(compare):  # every check within the jitter: the hints stand, no more refining
            return {"prob": tracked, "localiser": loc, "boxes": list(hinted), "window_source": kept,
                    "compared": compare}
        # the localiser's windows refined (its candidates included) for the frames without a hint and the far checks
        own = self._place(batch, loc, placed)
        row = {i: k for k, i in enumerate(rows)}
        prob, boxes, sources = own["prob"].copy(), list(own["boxes"]), ["localiser"] * n
        for i in used:
            mine = tracked[row[i]]
            if not compare[i] or outlines_agree(mine[0], own["prob"][i, 0]):
                prob[i], boxes[i], sources[i] = mine, hinted[i], kept[i]
        return {"prob": prob, "localiser": loc, "boxes": boxes, "window_source": sources, "compared": compare}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)["prob"]

    def _windows(self, batch: np.ndarray, boxes: list[tuple[int, int]]) -> np.ndarray:
        cw, ch = self.crop
        windows = np.empty((batch.shape[0], 1, ch, cw), dtype=np.float32)  # the only copy of the input
        for i, (x0, y0) in enumerate(boxes):
            windows[i] = batch[i, :, y0:y0 + ch, x0:x0 + cw]
        return windows

    def refine(self, windows: np.ndarray) -> np.ndarray:
        """The refiner's probabilities for ``windows`` ``[N, 1, ch, cw]``, with the cascade's test-time augmentation."""
        if self.tta == "none":
            return self.refiner.infer(windows)
        mirrored = np.ascontiguousarray(windows[..., ::-1])
        n, static = len(windows), self.refiner.input_shape[0]
        limit = self.refiner.info.max_batch
        if static < 0 and (limit is None or 2 * n <= limit):  # a dynamic batch: both views in one call
            both = self.refiner.infer(np.concatenate([windows, mirrored]))
            return flip_average(both[:n], both[n:])
        return flip_average(self.refiner.infer(windows), self.refiner.infer(mirrored))

    def _run(self, batch: np.ndarray) -> dict[str, Any]:
        return self._place(batch, self.localiser.infer(batch))

    def _place(self, batch: np.ndarray, loc: np.ndarray, boxes: list[tuple[int, int]] | None = None
               ) -> dict[str, Any]:
        """The refined windows the localiser's probabilities ``loc`` place (its candidates included);
        ``boxes``: :meth:`boxes` of ``loc`` when already known."""
        if self.candidates == 1:
            boxes = self.boxes(loc) if boxes is None else boxes
            refined = self.refine(self._windows(batch, boxes))
            return {"prob": paste(refined, boxes, batch.shape[-2:], fill=0.0), "localiser": loc, "boxes": boxes,
                    "window_source": ["localiser"] * len(boxes), "compared": [False] * len(boxes)}
        cands = candidate_boxes(loc, self.crop, self.candidates, self.threshold)
        slots = max(len(c) for c in cands)
        per_slot = []  # refiner output of candidate j of every image (an image without one repeats its first)
        for j in range(slots):
            boxes_j = [c[j] if j < len(c) else c[0] for c in cands]
            per_slot.append(self.refine(self._windows(batch, boxes_j)))
        flat = np.stack([per_slot[j][i] for i, c in enumerate(cands) for j in range(len(c))])
        masses, _ = candidate_masses(cands, flat, self.candidates)
        chosen = choose_candidates(masses)
        boxes = [cands[i][int(k)] for i, k in enumerate(chosen)]
        refined = np.stack([per_slot[int(k)][i] for i, k in enumerate(chosen)])
        return {"prob": paste(refined, boxes, batch.shape[-2:], fill=0.0), "localiser": loc, "boxes": boxes,
                "candidates": cands, "masses": masses, "window_source": ["localiser"] * len(boxes),
                "compared": [False] * len(boxes)}

    def describe(self) -> dict[str, Any]:
        """The usual description plus ``cascade``: the window and both parts' own descriptions."""
        d = super().describe()
        d["cascade"] = {"crop": list(self.crop), "threshold": self.threshold, "candidates": self.candidates,
                        "tta": self.tta,
                        "localiser": self.localiser.describe(), "refiner": self.refiner.describe()}
        return d

    def close(self) -> None:
        """Close both parts (idempotent)."""
        try:
            self.localiser.close()
        finally:
            self.refiner.close()
            super().close()


# ---------------------------------------------------------------------------------------------
# the cascade checkpoint and its parts
# ---------------------------------------------------------------------------------------------


REFINER_JITTER = 0.25
"""The most a refiner's training windows were shifted from the nerve, as a share of the half window
(``mn-train --crop-jitter``'s default, with which the shipped refiners were trained): two windows closer
than that show the refiner the same nerve where it has learnt to outline it."""

AGREE_OVERLAP = 0.5
"""Two outlines are the same structure when they share at least this fraction of the smaller one."""


def outlines_agree(a: np.ndarray, b: np.ndarray, threshold: float = 0.5, overlap: float = AGREE_OVERLAP) -> bool:
    """Whether probability maps ``a`` and ``b`` (same shape) outline the same structure: their masks
    (``>= threshold``) overlap by at least ``overlap`` of the smaller mask's area. Two windows on one nerve
    give slightly different outlines that still overlap by far more than half; a window on a neighbouring
    structure gives an outline that barely touches the other. False when either mask is empty."""
    ma, mb = a >= threshold, b >= threshold
    smaller = min(int(np.count_nonzero(ma)), int(np.count_nonzero(mb)))
    return smaller > 0 and int(np.count_nonzero(ma & mb)) >= overlap * smaller


def is_cascade(path: str | os.PathLike) -> bool:
    """Whether the checkpoint ``path`` holds a cascade; ``False`` for anything unreadable (the
    backend that loads it says what is wrong). Reads the config only (the weights are mmapped)."""
    return checkpoint_architecture(path) == CASCADE_NAME


def read_cascade(path: str | os.PathLike) -> tuple[str, dict]:
    """``(sha256, payload)`` of a cascade checkpoint, both from one read of the file.

    Raises:
        EngineError: an unreadable file or one that is not a cascade checkpoint.
    """
    import torch

    from train.checkpoint import FORMAT

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read the cascade checkpoint {path}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EngineError(f"cannot read the cascade checkpoint {path} ({type(exc).__name__}); {REBUILD_HINT}") from None
    config = payload.get("config") if isinstance(payload, dict) else None
    if (not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(config, dict)
            or (config.get("model") or {}).get("name") != CASCADE_NAME
            or not isinstance(payload.get("state_dict"), dict)):
        raise EngineError(f"{path} is not a cascade checkpoint with weights; {REBUILD_HINT}")
    return digest, payload


def cascade_geometry(config: dict, path: str | os.PathLike = "the cascade") -> dict[str, Any]:
    """``{"frame": (W, H), "crop": (cw, ch), "localiser": spec, "refiner": spec}`` of a cascade config.

    Raises:
        EngineError: a missing part spec or size, a window larger than the frame, or a frame the
            localiser cannot take.
    """
    import train.ensemble_net  # noqa: F401  a refiner may be an ensemble (a composite: registers when imported)
    from train.models import check_input_size

    kwargs = (config.get("model") or {}).get("kwargs") or {}
    missing = [k for k in (*PARTS, "crop") if not kwargs.get(k)]
    try:
        frame = tuple(int(v) for v in config["preprocessing"]["size"])
    except (KeyError, TypeError, ValueError):
        missing.append("preprocessing.size")
        frame = ()
    if missing:
        raise EngineError(f"{path} is a cascade without {', '.join(missing)} in its config; {REBUILD_HINT}")
    crop = tuple(int(v) for v in kwargs["crop"])
    for part in PARTS:
        if not isinstance(kwargs[part], dict) or not isinstance(kwargs[part].get("name"), str):
            raise EngineError(f"{path}: the cascade's {part} must be {{'name', 'kwargs'}}; {REBUILD_HINT}")
    if len(frame) != 2 or len(crop) != 2 or crop[0] > frame[0] or crop[1] > frame[1]:
        raise EngineError(f"{path}: the cascade's window {list(crop)} does not fit its frame {list(frame)}; "
                          f"{REBUILD_HINT}")
    check_input_size(kwargs["localiser"]["name"], frame)
    check_input_size(kwargs["refiner"]["name"], crop)
    candidates = kwargs.get("candidates", 1)
    if not isinstance(candidates, int) or candidates < 1:
        raise EngineError(f"{path}: the cascade's candidates must be a positive integer, got {candidates!r}; "
                          f"{REBUILD_HINT}")
    tta = kwargs.get("tta", "none")
    if tta not in TTA_MODES:
        raise EngineError(f"{path}: the cascade's tta must be one of {', '.join(TTA_MODES)}, got {tta!r}; "
                          f"{REBUILD_HINT}")
    return {"frame": frame, "crop": crop, "localiser": kwargs["localiser"], "refiner": kwargs["refiner"],
            "candidates": candidates, "tta": tta}


def part_paths(digest: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Where the parts of the cascade file with sha256 ``digest`` live in the engine cache."""
    folder = resolve_cache_dir(cache_dir)
    return {part: folder / f"cascade-{digest[:16]}-{part}.pt" for part in PARTS}


def part_checkpoints(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
                     ) -> tuple[dict[str, Path], dict]:
    """The two part checkpoints of cascade ``path`` in the engine cache, written on first use.

    Returns ``({"localiser": path, "refiner": path}, cascade config)``. The file names carry the
    cascade's sha256 (a changed cascade gets new parts); each is written atomically, so a
    concurrent loader sees a whole part or none.
    """
    import torch

    from train.checkpoint import FORMAT, FORMAT_VERSION

    digest, payload = read_cascade(path)
    config = payload["config"]
    geometry = cascade_geometry(config, path)
    paths = part_paths(digest, cache_dir)
    if all(p.is_file() for p in paths.values()):
        log.debug("using the cached cascade parts %s", ", ".join(str(p) for p in paths.values()))
        return paths, config
    state = payload["state_dict"]
    sizes = {"localiser": geometry["frame"], "refiner": geometry["crop"]}
    for part, out in paths.items():
        prefix = part + "."
        weights = {k[len(prefix):]: v.clone() for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            raise EngineError(f"{path} holds no {part} weights ('{prefix}*' keys); {REBUILD_HINT}")
        part_config = {
            "model": geometry[part],
            "preprocessing": {**(config.get("preprocessing") or {}), "size": list(sizes[part])},
            "code_version": config.get("code_version"),
            "metrics": {},
            "cascade_part": {"part": part, "cascade": os.fspath(Path(path).resolve()), "cascade_sha256": digest,
                             "frame": list(geometry["frame"]), "crop": list(geometry["crop"])},
        }
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "config": part_config,
                    "state_dict": weights}, buffer)
        atomic_write_bytes(out, buffer.getbuffer())
        log.info("wrote the cascade's %s (%s, %dx%d) to %s", part, geometry[part]["name"], *sizes[part], out)
    return paths, config


def load_cascade(source: ModelSource, backend: "Backend", options: LoadOptions) -> CascadeEngine:
    """A :class:`CascadeEngine` for the cascade checkpoint ``source`` on ``backend``.

    Both parts get ``options`` (precision, device, threads, batch, dynamic batch, cache...) with
    ``size`` set to the frame (localiser) and the window (refiner).

    Raises:
        EngineError: a ``size`` other than the cascade's frame size (the window geometry is tied
            to it), an unusable backend, or a malformed cascade.
    """
    backend.require(options.precision)
    paths, config = part_checkpoints(source.path, options.cache_dir)
    geometry = cascade_geometry(config, source.path)
    frame, crop = geometry["frame"], geometry["crop"]
    if options.size is not None and tuple(options.size) != frame:
        raise EngineError(f"{source.path} is a cascade made for {frame[0]}x{frame[1]} frames (its {crop[0]}x"
                          f"{crop[1]} window was trained at that scale), not {options.size[0]}x{options.size[1]}; "
                          f"drop --size or pass --size {frame[0]}x{frame[1]}")
    int8 = int8_part_files(source, paths, geometry, backend, options) if options.precision == INT8 else None
    parts: dict[str, Engine] = {}
    try:
        for part, size in (("localiser", frame), ("refiner", crop)):
            if int8 is not None:
                part_source = ModelSource(kind="onnx", format="onnx", path=int8[part], name=f"{source.name}-{part}")
            else:
                part_source = ModelSource(kind="checkpoint", format="checkpoint", path=paths[part],
                                          name=f"{source.name}-{part}")
            parts[part] = backend.load(part_source, replace(options, size=size, notes=[]))
    except BaseException:
        for engine in parts.values():
            engine.close()
        raise
    loc, ref = parts["localiser"], parts["refiner"]
    notes = list(options.notes) + [
        f"cascade: {part} {geometry[part]['name']} on {size[0]}x{size[1]} ({e.backend} {e.precision}, {e.device}) "
        f"from {int8[part] if int8 else paths[part]}" for part, size, e in (("localiser", frame, loc),
                                                                            ("refiner", crop, ref))]
    if int8 is not None:
        origin = (f"calibrated on {options.calibrate}" if options.calibrate is not None else
                  f"shipped with {source.name}")
        notes.append(f"cascade int8 parts {origin}")
        notes.extend(f"{part}: {n}" for part, e in (("localiser", loc), ("refiner", ref))
                     for n in e.info.notes if n.startswith("int8 ("))
    tta = options.tta if options.tta is not None else geometry["tta"]
    if tta != "none":
        origin = "asked for" if options.tta is not None else "the model's own"
        notes.append(f"cascade: refiner test-time augmentation {tta} ({origin}; twice the refiner's work)")
    info = EngineInfo(name=CASCADE_NAME, backend=loc.backend, precision=loc.precision, device=loc.device,
                      input_shape=loc.input_shape, source=os.fspath(source.path), config=config, notes=notes,
                      max_batch=loc.info.max_batch)
    try:
        return CascadeEngine(loc, ref, info, candidates=int(geometry.get("candidates", 1)), tta=tta)
    except BaseException:
        loc.close()
        ref.close()
        raise


def int8_part_files(source: ModelSource, paths: dict[str, Path], geometry: dict[str, Any], backend: "Backend",
                    options: LoadOptions) -> dict[str, Path]:
    """The int8 ONNX of each part: quantised (and cached) from the images of ``options.calibrate``, else the files
    shipped with a bundled cascade (``options.int8_files``).

    With a calibration folder, the localiser is calibrated on its frames (preprocessed at the cascade's frame
    size) and the refiner on the windows the cascade would cut from them: the fp32 localiser (on ``backend``)
    places up to ``candidates`` windows per frame with :func:`train.window.candidate_boxes` (the first is
    :func:`~train.window.window_boxes`'). The refiner's calibration identity records that rule and the
    localiser's sha256, so a changed localiser re-calibrates the refiner.

    Raises:
        EngineError: neither a calibration folder nor shipped int8 parts (says how to get them).
    """
    from engines.quantize import calibration_set

    if options.calibrate is None:
        files = options.int8_files or {}
        if not files:
            raise EngineError(f"int8 needs a calibration for the cascade {source.path}: pass --calibrate DIR (a "
                              "dataset folder with Images/ or a folder of frames like those the model will see; "
                              "calibrate=DIR in load_engine); bundled cascades may ship int8 parts instead (python "
                              "-m tools.bundle int8 NAME --data DIR makes them)")
        missing = [p for p in PARTS if p not in files]
        if missing:
            raise EngineError(f"the int8 files shipped with {source.name} lack the {' and '.join(missing)}; pass "
                              "--calibrate DIR to quantise the cascade here, or reinstall mn-seg")
        return {p: Path(files[p]) for p in PARTS}
    return quantize_parts(source, paths, geometry, backend, options,
                          calibration_set(options.calibrate, options.calibrate_images))


def quantize_parts(source: ModelSource, paths: dict[str, Path], geometry: dict[str, Any], backend: "Backend",
                   options: LoadOptions, calibration: "CalibrationSet", **settings: str) -> dict[str, Path]:
    """The int8 ONNX of each part (:func:`int8_part_files`) calibrated on ``calibration``, from the engine cache,
    quantised on first use (``options``: batch, dynamic batch, threads and cache of the exports; ``settings``:
    ``method`` and ``float_nodes`` of :func:`engines.quantize.cached_int8_onnx`, its defaults otherwise)."""
    from engines.quantize import cached_int8_onnx, preprocessed

    frame, crop, candidates = geometry["frame"], geometry["crop"], int(geometry.get("candidates", 1))
    memo: dict[str, np.ndarray] = {}

    def frames(size: tuple[int, int]) -> np.ndarray:
        if "frames" not in memo:
            memo["frames"] = preprocessed(calibration.read(), frame)
        return memo["frames"]

    def windows(size: tuple[int, int]) -> np.ndarray:
        from train.window import candidate_boxes

        x = frames(frame)
        fp32 = ModelSource(kind="checkpoint", format="checkpoint", path=paths["localiser"],
                           name=f"{source.name}-localiser")
        with backend.load(fp32, replace(options, precision="fp32", size=frame, batch=1, dynamic_batch=False,
                                        notes=[])) as localiser:
            prob = np.concatenate([localiser.infer(x[i:i + 1]) for i in range(len(x))])
        cw, ch = crop
        boxes = candidate_boxes(prob, crop, candidates, WINDOW_THRESHOLD)
        log.info("calibrating the refiner on %d windows cut by the fp32 localiser from %d frames",
                 sum(len(b) for b in boxes), len(x))
        return np.stack([x[i, :, y0:y0 + ch, x0:x0 + cw] for i, per in enumerate(boxes) for (x0, y0) in per])

    common = {"batch": options.batch, "dynamic_batch": options.dynamic_batch, "cache_dir": options.cache_dir,
              **settings}
    localiser, _ = cached_int8_onnx(paths["localiser"], calibration, frames, size=frame, **common)
    placement = {"localiser_sha256": file_sha256(paths["localiser"]), "frame": list(frame), "crop": list(crop),
                 "threshold": WINDOW_THRESHOLD, "candidates": candidates,
                 "rule": "fp32 localiser, train.window.candidate_boxes"}
    refiner, _ = cached_int8_onnx(paths["refiner"], calibration, windows, size=crop, windows=placement, **common)
    return {"localiser": localiser, "refiner": refiner}
