"""What ``mn-live`` and ``mn-segment`` share: engine, calibration, tracker and output flags, the
signal handling that finalises every file, and the run metadata written into every output.

A light module: building the parsers imports neither numpy nor torch (``mn-live --help`` and a bad
argument answer at once); what a run needs (the engine, the tracker) is imported by the function
that makes it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from common.errors import UserError
from common.tta import TTA_MODES
from engines.registry import BUNDLED_MODELS, bundled_default, bundled_error, list_backends
from realtime.calibration import Calibration, calibration_text, describe_calibration, parse_calibration
from realtime.presence import PRESENCE_MODES
from realtime.fusion import DEFAULT_MOTION, DEFAULT_WEIGHT, MOTIONS, fusion_weight
from realtime.window_policy import WINDOW_MODES

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engines.base import Engine
    from realtime.tracker import Tracker

log = logging.getLogger(__name__)

SMOOTHING_CHOICES: tuple[str, ...] = ("none", "ema", "median")
"""``--smoothing``: :data:`realtime.tracker.SMOOTHING_METHODS` (a test pins that they agree; the
tracker module imports numpy, which the parser does without)."""
CONFIRM_DEFAULT = 2
AREA_STEP_DEFAULT = 0.25
"""``--area-step``'s default: :data:`realtime.tracker.DEFAULT_AREA_STEP` (a test pins that they agree)."""
"""``--confirm``'s default: :data:`realtime.tracker.DEFAULT_CONFIRM_FRAMES` (a test pins that they agree)."""
PRESENCE_CHOICES: tuple[str, ...] = PRESENCE_MODES
"""``--presence``: :data:`realtime.presence.PRESENCE_MODES` (the module is light: no numpy, no OpenCV)."""

#: The model used when --model is not given: the shipped real-time model once one is bundled
#: (the bundled manifest's "default" takes precedence: :func:`default_model`).
DEFAULT_MODEL = "mn-realtime"


def default_model() -> str:
    """The manifest's default bundled model when there is one, else :data:`DEFAULT_MODEL`."""
    return bundled_default() or DEFAULT_MODEL


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help=f"a bundled model name (default {default_model()}; see mn-live --list-models), a checkpoint "
                        "(.pt), an .onnx, a TensorRT plan, or an architecture name (random weights: speed only)")
    p.add_argument("--backend", default="auto", choices=["auto", *list_backends()],
                   help="inference backend; auto = TensorRT FP16 with a GPU, else torch CUDA FP16, else "
                        "onnxruntime on the CPU (the choice is logged and recorded in every output)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                   help="default: the backend's choice; int8 runs on onnxruntime only (a bundled model's int8 files, "
                        "or --calibrate DIR)")
    p.add_argument("--calibrate", default=None, metavar="DIR",
                   help="int8: frames to calibrate the quantisation on (a dataset folder's Images/ or a folder of "
                        "images)")
    p.add_argument("--calibrate-images", type=int, default=None, metavar="N",
                   help="int8 with --calibrate: how many of its frames, spread evenly (default 64; fewer for a large "
                        "network when memory is short: the quantiser holds every frame's activations)")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="network input size for architecture names (default 384x288); checkpoints use theirs")
    p.add_argument("--tta", choices=TTA_MODES, default=None,
                   help="a cascade's refiner test-time augmentation (default: the model's own; none for the bundled "
                        "models): hflip refines each window and its mirror image and averages them, slightly more "
                        "accurate (README: Test-time flip) for twice the refiner's time: live at 24 fps on 2 cores "
                        "with int8, not with fp32")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: all cores)")
    p.add_argument("--cache-dir", default=None, help="engine cache (default $MN_SEG_CACHE or ~/.cache/mn-seg/engines)")


def add_measure_args(p: argparse.ArgumentParser) -> None:
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--mm-per-px", default=None, metavar="F[,FY]",
                     help="pixel spacing in mm (one value, or x,y); without calibration mm columns stay empty")
    cal.add_argument("--depth-mm", type=float, default=None,
                     help="imaging depth in mm shown over the image height (pixel spacing = depth / height)")
    p.add_argument("--roi", default=None, metavar="x,y,w,h|auto",
                   help="crop the scanner's image area (exclude its UI text) before anything else; 'auto' finds it in "
                        "the first frame of a whole-screen grab (again with r in the window), logged and written "
                        "into summary.json; a DICOM file's ultrasound region is used when --roi is not given")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="probability threshold of the nerve mask (default: the model's, calibrated by patient "
                        "cross-validation when it carries one, else 0.5)")
    p.add_argument("--min-area", type=int, default=100, help="drop components smaller than this (px, native)")
    p.add_argument("--baseline", default=None, metavar="START:END",
                   help="frames whose median is the baseline (default: the first second of ok frames)")
    p.add_argument("--smoothing", choices=list(SMOOTHING_CHOICES), default="none",
                   help="extra smoothed columns (raw values are always kept)")
    p.add_argument("--gate-mm", type=float, default=8.0, help="tracking gate when calibrated (mm)")
    p.add_argument("--gate-px", type=float, default=60.0, help="tracking gate when uncalibrated (px)")
    p.add_argument("--presence", choices=list(PRESENCE_CHOICES), default="on",
                   help="on: a detection is measured only when it is plausible as a median nerve (size relative to "
                        "the frame and in mm² when calibrated, flattening, circularity, confidence, not anechoic "
                        "like a vessel) and looks like one (a bright rim around it, a sharp outline); otherwise the "
                        "frame is no_detection and the 'rejected' column says why. shape: size, shape and echo "
                        "checks only. off: measure every detection")
    p.add_argument("--appearance", default=None, metavar="FILE",
                   help="presence gate: the appearance model (default: the one fit on the model's outlines, "
                        "MODEL.appearance.json beside the model file; python -m tools.presence_fit writes it)")
    p.add_argument("--min-confidence", type=float, default=None, metavar="P",
                   help="presence gate: least mean nerve probability inside the mask (default 0.5)")
    p.add_argument("--area-step", type=area_step, default=AREA_STEP_DEFAULT, metavar="FRAC",
                   help="while tracking, a nerve whose area differs by more than FRAC from the median of the last 5 "
                        "measured frames is not measured (half the nerve, or the nerve with its neighbour: a nerve "
                        "does not change by a quarter in one frame); 3 frames in a row at the new size make it real. "
                        f"Default {AREA_STEP_DEFAULT}; 0 turns the check off")
    p.add_argument("--presence-refresh", type=refresh_seconds, default=None, metavar="S",
                   help="presence gate with two thresholds: a tracked nerve that passes only the lower hold threshold "
                        "is measured only if a frame of the last S seconds passed the entry threshold, so that a "
                        "structure taken up by chance is not held on the hold threshold alone (0, the default: "
                        "held as long as it passes the hold threshold)")
    p.add_argument("--confirm", type=confirm_frames, default=CONFIRM_DEFAULT, metavar="N",
                   help="a new track starts only when the nerve is found in N frames in a row, each near the last "
                        "(a detection in one frame alone, as other anatomy gives now and then, is not measured; "
                        "such frames are no_detection or lost, 'unconfirmed' in the rejected column). 1 measures "
                        "from the first frame; a single image always is (default %(default)s)")
    p.add_argument("--window", choices=list(WINDOW_MODES), default="tracked",
                   help="a cascade's window: tracked = centred on the tracked nerve while tracking is confident "
                        "(the localiser is skipped, checks it every 12 frames and places it after any miss; the "
                        "CSV's window column says which), localiser = placed by the localiser on every frame")
    p.add_argument("--fusion", type=fusion_weight, default=DEFAULT_WEIGHT, metavar="W",
                   help="temporal fusion: while the nerve is tracked, the mask is cut from W x this frame's "
                        "probabilities + (1 - W) x the previous frames', moved by the nerve's motion (steadier "
                        "outlines; a change of shape shows (1 - W) / W frames later on average; the CSV's fused "
                        "column says which frames). 1 turns it off (default %(default)s)")
    p.add_argument("--fusion-motion", choices=MOTIONS, default=DEFAULT_MOTION,
                   help="how fusion moves the previous frames' map onto this one: shift = by the translation of "
                        "the nerve's surroundings; affine = by their affine motion (also the squeeze, widening and "
                        "tilt of compression, so a change of shape is not carried late; about 1-2 ms a frame); "
                        "shape = the same with areas kept (the outline's shape follows at once, its area is "
                        "averaged over frames) (default %(default)s)")


#: Flags whose value may start with a minus sign (``--roi -10,0,100,100``: its check then says what is wrong).
SIGNED_VALUE_FLAGS = ("--roi", "--mm-per-px", "--depth-mm")


def attach_signed_values(argv: Sequence[str] | None, flags: Sequence[str] = SIGNED_VALUE_FLAGS) -> list[str]:
    """``argv`` (default ``sys.argv[1:]``) with ``FLAG -VALUE`` written ``FLAG=-VALUE`` for ``flags``: argparse
    reads a value starting with ``-`` as the next flag and would say "expected one argument"."""
    import re
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in flags and i + 1 < len(argv) and re.match(r"-[\d.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def open_engine(args: argparse.Namespace, batch: int = 1, live: bool = False) -> Engine:
    """The engine the flags ask for; architecture names get random weights and a loud note.

    ``live``: frames come in real time (``mn-live``), so without ``--model`` (and with ``auto`` backend and
    precision) the machine's default runs (:func:`engines.registry.machine_default`: ``mn-fast`` where the
    default would run in float32 on the CPU, too slow for 24 fps); offline commands, which process every frame,
    keep the most accurate default."""
    from engines import load_engine
    from engines.random_model import RANDOM_WEIGHTS_NOTE, is_architecture_name, random_checkpoint
    from train.preprocess import parse_size

    model = args.model
    if model is None:
        model = default_model()
        if live and args.backend == "auto" and args.precision is None and not getattr(args, "calibrate", None):
            from engines.registry import machine_default

            chosen, why = machine_default()
            if chosen is not None and why:
                log.warning("%s", why)
                model = chosen
        if model not in BUNDLED_MODELS:
            raise UserError("no trained model is bundled with this version of mn-seg yet: pass --model with a "
                            "checkpoint from mn-train (RUN_DIR/best.pt), an .onnx, or an architecture name such "
                            "as lunet for a speed-only run" + (f" ({bundled_error()})" if bundled_error() else ""))
    notes = []
    size = parse_size(args.size) if args.size else None
    if is_architecture_name(model):
        log.warning("--model %s is an architecture name: random weights, for speed only (the masks are "
                    "meaningless)", model)
        model = random_checkpoint(model, size or (384, 288), cache_dir=args.cache_dir)
        notes.append(RANDOM_WEIGHTS_NOTE)
        size = None
    engine = load_engine(model, backend=args.backend, precision=args.precision, threads=args.threads, size=size,
                         batch=batch, dynamic_batch=batch > 1, cache_dir=args.cache_dir,
                         calibrate=getattr(args, "calibrate", None),
                         calibrate_images=getattr(args, "calibrate_images", None), tta=getattr(args, "tta", None))
    engine.info.notes.extend(notes)
    log.info("engine: %s", engine)
    for note in engine.info.notes:
        log.info("engine note: %s", note)
    return engine


def make_calibration(args: argparse.Namespace, image_height: int | None, source: Any = None) -> Calibration | None:
    """The run's pixel spacing: ``--mm-per-px`` / ``--depth-mm`` when given, else the one the source carries
    (``source.calibration``: an OpenIGTLink image's matrix, a DICOM object's ultrasound region), else
    ``None`` (uncalibrated). A flag that overrides the source's own spacing is logged with both values."""
    from_source = getattr(source, "calibration", None)
    if args.mm_per_px is None and args.depth_mm is None and from_source is not None:
        log.info("pixel spacing %s", from_source.text())
        return from_source
    given = parse_calibration(args.mm_per_px, args.depth_mm, image_height)
    if given is not None and from_source is not None:
        log.warning("the source gives the pixel spacing %s; the command line's %s is used instead",
                    from_source.text(), given.text())
    return given


def _zero_is_off(text: str, needs: str) -> float | None:
    """A finite number >= 0 from ``text``, None for 0 (off); otherwise argparse's error ``needs ..., got TEXT``."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"needs {needs}, got {text!r}")
    return value or None


def area_step(text: str) -> float | None:
    """``--area-step``: a fraction > 0, or 0 for off (None) (argparse type)."""
    return _zero_is_off(text, "a fraction >= 0 (0.25 = 25 %; 0 turns the check off)")


def refresh_seconds(text: str) -> float | None:
    """``--presence-refresh``: seconds > 0, or 0 for off (None) (argparse type)."""
    return _zero_is_off(text, "seconds >= 0 (0 turns the refresh off)")


def refresh_frames(seconds: float | None, fps: float) -> int | None:
    """``--presence-refresh`` seconds as the tracker's frames at ``fps`` (at least 1); None stays None."""
    return None if seconds is None else max(1, round(seconds * fps))


def confirm_frames(text: str) -> int:
    """``--confirm``: a whole number of frames, at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of frames >= 1 (1 = measure from the first frame), "
                                         f"got {text!r}")
    return value


def make_tracker(args: argparse.Namespace, calibration: Calibration | None, fps: float,
                 frames: int | None = None, engine: Engine | None = None) -> Tracker:
    """The run's tracker from the measuring flags; ``frames``: how many frames the input holds, when known
    (a single image is measured without confirmation: there is no next frame to confirm it); ``engine``: the
    run's engine, whose model's appearance model the presence gate reads."""
    from realtime.presence import gated_model_file, make_presence_gate
    from realtime.tracker import Tracker, parse_baseline_range

    confirm, step = args.confirm, args.area_step
    if frames == 1:  # no next frame to confirm a detection, no earlier one to compare its area with
        if confirm > 1:
            log.info("a single image: measured without --confirm (no next frame to confirm a detection)")
        confirm, step = 1, None
    return Tracker(calibration, fps, gate_mm=args.gate_mm, gate_px=args.gate_px, smoothing=args.smoothing,
                   baseline_range=parse_baseline_range(args.baseline) if args.baseline else None,
                   presence=make_presence_gate(args.presence, args.min_confidence, args.appearance,
                                               gated_model_file(engine)),
                   confirm_frames=confirm, area_step=step,
                   refresh_frames=refresh_frames(args.presence_refresh, fps))


def run_metadata(engine: Engine, calibration: Calibration | None, source_spec: str, threshold: float | None = None,
                 **extra: Any) -> dict[str, Any]:
    """Written at the top of the CSV and into summary.json; ``threshold`` is ``--threshold`` (None: the model's)."""
    from engines.versions import library_versions

    info = engine.describe()
    model = info.get("model") or {}
    from realtime.pipeline import mask_threshold

    meta = {
        "source": source_spec,
        "model": model.get("name") if isinstance(model, dict) else model,
        "model_file": info.get("source"),
        "backend": info["backend"],
        "precision": info["precision"],
        "device": info["device"],
        "input_size": f"{engine.size[0]}x{engine.size[1]}",
        "mask_threshold": mask_threshold(threshold, engine),
        "calibration": calibration_text(calibration),
        "calibration_detail": describe_calibration(calibration),
        "versions": library_versions(),
    }
    if "cascade" in info:  # the refiner's test-time augmentation (mn-live --tta, else the model's own)
        meta["tta"] = info["cascade"].get("tta", "none")
    if info.get("notes"):
        meta["engine_notes"] = "; ".join(info["notes"])
    meta.update(extra)
    return meta


def csv_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The flat subset of the run metadata that goes into the CSV's comment header."""
    keys = ("source", "model", "model_file", "backend", "precision", "device", "input_size", "mask_threshold",
            "calibration", "engine_notes")
    out = {k: meta[k] for k in keys if meta.get(k) is not None}
    out["mn-seg"] = meta["versions"]["mn-seg"]
    return out


@contextmanager
def stop_on_signals(stop: callable) -> Iterator[threading.Event]:
    """Route SIGINT and SIGTERM to ``stop(reason)`` while the block runs (a second Ctrl-C aborts)."""
    event = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        event.set()
        name = signal.Signals(signum).name
        log.warning("%s received: finishing the frame in flight and closing the files", name)
        stop(f"stopped by {name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def peek_first(source, frames: Iterator) -> Any:
    """The first frame of ``frames`` (its size is needed for --depth-mm), or a clear error."""
    first = next(frames, None)
    if first is None:
        source.raise_if_failed()
        raise UserError(f"source {source.spec} delivered no frame")
    return first


def output_paths(folder: Path, no_video: bool) -> dict[str, Path | None]:
    return {"csv": folder / "measurements.csv", "video": None if no_video else folder / "overlay.mp4",
            "summary": folder / "summary.json", "plot": folder / "plot.png", "report": folder / "report.html"}


MASK_FORMATS: tuple[str, ...] = ("png", "nrrd", "nifti")
"""``--masks FORMAT``: PNG files (:mod:`realtime.sinks.masks`), or one 2-D + time volume with the pixel spacing
(:data:`realtime.sinks.mask_volume.VOLUME_FORMATS`; a test pins that they agree)."""
#: Where each mask format goes in the output folder.
MASK_NAMES = {"png": "masks", "nrrd": "masks.seq.nrrd", "nifti": "masks.nii.gz"}


def add_mask_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", nargs="?", const="png", default=None, choices=list(MASK_FORMATS), metavar="FORMAT",
                   help="also write each frame's nerve mask: png (OUT/masks/NNNNNN.png, measured frames; the "
                        "default of a bare --masks), nrrd (OUT/masks.seq.nrrd, a 3D Slicer volume sequence with the "
                        "pixel spacing) or nifti (OUT/masks.nii.gz, spacing in the header): "
                        + ", ".join(MASK_FORMATS))


def mask_path(folder: Path, fmt: str) -> Path:
    """Where ``--masks fmt`` writes in ``folder``: a folder of PNGs, or one sequence file."""
    return folder / MASK_NAMES[fmt]


def port_number(text: str) -> int:
    """``--igtl-out PORT``: a TCP port, 1 to 65535 (argparse type)."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1 to 65535; OpenIGTLink's usual one is 18944)")
    return int(text)


def add_live_output_args(p: argparse.ArgumentParser) -> None:
    """mn-live's raw recording and OpenIGTLink output flags."""
    p.add_argument("--record-raw", default=None, metavar="MKV",
                   help="also record every processed input frame losslessly (FFV1 in Matroska, grey or as received, "
                        "after --roi), frame k = CSV row k; mn-segment MKV analyses it again")
    p.add_argument("--igtl-out", type=port_number, default=None, metavar="PORT",
                   help="serve each frame's mask (IMAGE, a labelmap with the pixel spacing) and measurements (STRING, "
                        "JSON) over OpenIGTLink on this port (3D Slicer: OpenIGTLinkIF, client, localhost:PORT)")
    p.add_argument("--igtl-bind", default="127.0.0.1", metavar="ADDR",
                   help="the interface --igtl-out listens on; the default serves this machine only (another address "
                        "sends patient images to whoever can reach it)")
    p.add_argument("--igtl-device", default="NerveMask", metavar="NAME",
                   help="OpenIGTLink device name of the mask IMAGE messages")
    p.add_argument("--igtl-text-device", default="NerveMeasurements", metavar="NAME",
                   help="OpenIGTLink device name of the measurement STRING messages")


def live_output_paths(args: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """The raw recording and mask outputs that mn-live's flags ask for (kind -> path)."""
    out: dict[str, Path] = {}
    if getattr(args, "record_raw", None):
        out["raw"] = Path(args.record_raw)
    if getattr(args, "masks", None):
        out["masks"] = mask_path(folder, args.masks)
    return out


def check_live_outputs(args: argparse.Namespace, paths: dict[str, Path | None]) -> None:
    """Before the engine loads and the first frame: the raw recording's name and folder, the OpenIGTLink
    device names and port (free on its interface). A clear error (exit 2) otherwise."""
    raw = paths.get("raw")
    if raw is not None:
        if raw.suffix.lower() != ".mkv":
            raise UserError(f"--record-raw {raw}: the raw recording is FFV1 in Matroska, "
                            "the file name must end in .mkv")
        if raw.is_dir():
            raise UserError(f"--record-raw {raw} is a folder: give a file name")
        try:
            raw.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--record-raw {raw}: cannot create {raw.parent}: {exc.strerror or exc}") from None
        if not os.access(raw.parent, os.W_OK):
            raise UserError(f"--record-raw {raw}: the folder {raw.parent} is not writable")
    if getattr(args, "igtl_out", None) is not None:
        from realtime.sinks.igtl_out import bind_server, check_device_name

        check_device_name(args.igtl_device, "--igtl-device")
        check_device_name(args.igtl_text_device, "--igtl-text-device")
        bind_server(args.igtl_bind, args.igtl_out).close()  # in use, or not an address here: said now


def igtl_options(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`realtime.sinks.igtl_out.IgtlOutSink`'s arguments from the flags (empty: no OpenIGTLink output)."""
    if getattr(args, "igtl_out", None) is None:
        return {}
    return {"port": args.igtl_out, "bind": args.igtl_bind, "device": args.igtl_device,
            "text_device": args.igtl_text_device}


def ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"the output folder {folder} is not writable")
