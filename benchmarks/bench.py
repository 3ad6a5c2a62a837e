"""The whole-pipeline benchmark behind ``mn-bench``: combinations, runs, statistics, the table.

Each combination (model x backend x precision x size x mode, and batch in the offline mode) runs
the real :class:`~realtime.pipeline.Pipeline` (source -> preprocess -> ``Engine.infer`` ->
postprocess -> track -> render) with no output files, ``warmup`` frames first (left out of every
number), then ``frames`` measured frames, ``repeats`` times (a fresh source and tracker each time,
the same engine).

Two modes:

* ``offline``: every frame, as fast as possible (the source opened with ``realtime=False``);
  headline: throughput (measured frames / their wall time) and per-frame latency.
* ``realtime``: the source paced at its frame rate with the latest-frame policy
  (``realtime=True``; frames the pipeline was too slow for are dropped and counted); the run is
  bounded by processed frames (``max_frames = warmup + frames``) and the source has no frame limit,
  so a live phantom never runs dry (a file ends at its end: the frames actually processed are
  reported). Headline: end-to-end latency, frames dropped, the processing rate achieved.

The baseline row (per model, size and mode) is the loop a researcher would write: PyTorch eager
fp32 on the CPU, the default contiguous layout, batch 1, no prefetch, same source and mode. Every
other row's ``speedup_vs_baseline`` is ``fps / baseline fps`` in the offline mode and
``baseline e2e p50 / e2e p50`` in the realtime mode (higher is better in both).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from benchmarks.engines_bench import NAIVE
from benchmarks.system import system_info
from engines import load_engine
from engines.base import Engine
from engines.random_model import RANDOM_WEIGHTS_NOTE, is_architecture_name, random_checkpoint
from engines.registry import BUNDLED_MODELS, resolve_model
from realtime.cli_common import default_model as cli_default_model
from realtime.fusion import DEFAULT_MOTION as FUSION_MOTION_DEFAULT
from realtime.fusion import DEFAULT_WEIGHT as FUSION_DEFAULT
from realtime.fusion import make_fusion
from realtime.pipeline import EXIT_OK, Pipeline, PipelineConfig
from realtime.presence import gated_model_file, make_presence_gate
from realtime.record import STAGES, FrameRecord, format_cell
from realtime.sinks.base import Callback
from realtime.sinks.overlay import RenderSink
from realtime.sinks.summary import latency_stats
from realtime.sources import open_source
from realtime.tracker import DEFAULT_AREA_STEP, DEFAULT_CONFIRM_FRAMES, Tracker
from realtime.window_policy import make_window_policy
from train.errors import UserError
from train.models import check_input_size
from train.preprocess import DEFAULT_SIZE

log = logging.getLogger(__name__)

MODES = ("offline", "realtime")
DEFAULT_SOURCE_FPS = 24.0
"""The pace of the realtime mode when the source has no rate of its own (the phantom's rate)."""

INFER_TIMING = ("Engines return host numpy arrays, so 'infer' includes all device work and the copy back (GPU "
                "work is complete, i.e. CUDA-synchronised, when infer returns).")
TIMING = ("perf_counter_ns around each stage on the pipeline thread, per frame. " + INFER_TIMING
          + " e2e = the source's capture timestamp (time.monotonic when the frame was grabbed, decoded or "
          "rendered) -> end of tracking (the measurement), so it includes any time the frame waited in a "
          "decode-ahead queue; render and write follow it. capture_wait = time the pipeline waited for its "
          "next frame (in the realtime mode it includes waiting for the next frame to be due). With batch > 1, "
          "preprocess and infer are the batch's time divided by its frames. Warm-up frames are excluded from "
          "every statistic.")
SPEEDUP = ("speedup_vs_baseline: offline = fps / baseline fps; realtime = baseline e2e p50 / e2e p50; "
           "baseline = PyTorch eager fp32 on the CPU, contiguous layout, batch 1, no prefetch (the naive loop), "
           "same model, size, source and mode, measured in the same run")


# --------------------------------------------------------------------------------- statistics
def summary_stats(values_ms: Iterable[float] | np.ndarray) -> dict[str, float | None]:
    """:func:`~realtime.sinks.summary.latency_stats` (p50/p90/p95/p99/max/mean/std/n) plus ``p10``,
    ``tail_ms`` (max - p95: how far the worst frames stray above the 95th percentile) and
    ``flatness_ms`` (p90 - p10: the spread of the typical frames). ``None`` for an empty input."""
    v = np.asarray(list(values_ms) if not isinstance(values_ms, np.ndarray) else values_ms, dtype=np.float64)
    out: dict[str, Any] = latency_stats(v)
    v = v[np.isfinite(v)]
    if v.size == 0:
        out.update(p10=None, tail_ms=None, flatness_ms=None)
        return out
    out["p10"] = float(np.percentile(v, 10))
    out["tail_ms"] = out["max"] - out["p95"]
    out["flatness_ms"] = out["p90"] - out["p10"]
    return out


# --------------------------------------------------------------------------------- combinations
@dataclass(frozen=True)
class Combo:
    """One row of the benchmark. ``backend`` may be ``auto`` and ``precision`` ``None`` (the backend's
    choice): the row then records what was chosen. ``size`` is ``(W, H)`` or ``None`` (a checkpoint's
    own). ``baseline``: the naive PyTorch loop (backend ``torch-naive``)."""

    model: str
    backend: str
    precision: str | None
    size: tuple[int, int] | None
    mode: str
    batch: int = 1
    baseline: bool = False

    @property
    def size_text(self) -> str:
        return "default" if self.size is None else f"{self.size[0]}x{self.size[1]}"

    def label(self) -> str:
        return (f"{self.model} {self.backend} {self.precision or 'default'} {self.size_text} {self.mode}"
                + (f" b{self.batch}" if self.batch != 1 else ""))


@dataclass
class Settings:
    """What every combination shares: the source, the frame counts and the engine options."""

    source: str = "synthetic"
    frames: int = 1000
    warmup: int = 20
    repeats: int = 1
    fps: float | None = None
    threads: int | None = None
    cache_dir: str | None = None
    prefetch: bool = False
    roi: str | None = None
    cuda_graph: bool = False
    window: str = "tracked"
    presence: str = "on"
    fusion: float = FUSION_DEFAULT  # --fusion: the current frame's weight (1: off)
    fusion_motion: str = FUSION_MOTION_DEFAULT  # --fusion-motion: how the previous map is moved
    calibrate: str | None = None  # int8 of a model that ships no int8 files: frames to calibrate on
    calibrate_images: int | None = None  # how many of them (default: engines.quantize's)
    tta: str | None = None  # a cascade's refiner test-time augmentation (None: the model's own)

    def check(self) -> None:
        """Raise :class:`UserError` for counts that cannot make a benchmark."""
        if self.frames < 1:
            raise UserError(f"--frames must be at least 1, got {self.frames}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be >= 0, got {self.warmup}")
        if self.repeats < 1:
            raise UserError(f"--repeats must be at least 1, got {self.repeats}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise UserError(f"--fps must be a positive number, got {self.fps}")


def default_model() -> str:
    """The bundled default model (the manifest's), else the ``lunet`` architecture (random weights)."""
    name = cli_default_model()
    return name if name in BUNDLED_MODELS else "lunet"


def plan(models: Sequence[str], backends: Sequence[str], precisions: Sequence[str | None],
         sizes: Sequence[tuple[int, int] | None], modes: Sequence[str], batches: Sequence[int] = (1,),
         baseline: bool = True) -> list[Combo]:
    """Every combination, grouped by model, size and mode, the baseline first in each group.

    Batches other than 1 apply to the offline mode only (the realtime mode processes the newest
    frame, one at a time)."""
    combos: list[Combo] = []
    for model in models:
        for size in sizes:
            if size is None and is_architecture_name(model):
                size = DEFAULT_SIZE  # what random_checkpoint builds, so the rows say it
            for mode in modes:
                if baseline:
                    combos.append(Combo(model, NAIVE[0], NAIVE[1], size, mode, 1, baseline=True))
                mode_batches = sorted(set(batches)) if mode == "offline" else [1]
                for backend in backends:
                    for precision in precisions:
                        for batch in mode_batches:
                            combos.append(Combo(model, backend, precision, size, mode, batch))
    return combos


def check_models(models: Sequence[str], sizes: Sequence[tuple[int, int] | None]) -> None:
    """Refuse, before anything runs, a model that is neither an architecture name, a bundled model nor
    an existing file, and a size an architecture cannot take (the message names the nearest valid size)."""
    for model in models:
        if is_architecture_name(model):
            for size in sizes:
                check_input_size(model, size or DEFAULT_SIZE)
        else:
            resolve_model(model)  # EngineError (a UserError) saying what is accepted


def check_source(settings: Settings) -> None:
    """Open the source once so a wrong ``--source`` fails before any engine is built (exit 2)."""
    with open_source(settings.source, realtime=False, roi=settings.roi, fps=settings.fps, frames=1) as source:
        first = next(iter(source), None)
        if first is None:
            source.raise_if_failed()
            raise UserError(f"source {settings.source} delivered no frame; give a video file, a device "
                            "(0 or /dev/video0) or synthetic")


# --------------------------------------------------------------------------------- engines
EngineFactory = Callable[[Combo, Settings], Engine]


def ships_int8(model: str) -> bool:
    """Whether ``model`` is a bundled model (by name or file) that ships its int8 files (then ``--calibrate``
    is not used for it: the shipped, verified files are what a user runs)."""
    from engines.registry import bundled, resolve_model

    try:
        source = resolve_model(model)
        return bool(bundled().int8_files(source.name if source.kind == "bundled" else None,
                                         source.path if source.format == "checkpoint" else None))
    except Exception:  # not resolvable here: load_engine says why
        return False


def load_bench_engine(combo: Combo, settings: Settings) -> Engine:
    """The engine of ``combo``: an architecture name gets random weights (and a note saying so); the
    baseline is torch fp32 on the CPU in the contiguous layout."""
    model, notes, size = combo.model, [], combo.size
    if is_architecture_name(model):
        model = random_checkpoint(model, size or DEFAULT_SIZE, cache_dir=settings.cache_dir)
        notes.append(RANDOM_WEIGHTS_NOTE)
        size = None
    if combo.baseline:
        engine = load_engine(model, backend="torch", precision="fp32", device="cpu", channels_last=False,
                             threads=settings.threads, size=size, cache_dir=settings.cache_dir, tta=settings.tta)
        notes.append("baseline: PyTorch eager fp32 on the CPU, contiguous layout, batch 1, no prefetch")
    else:
        engine = load_engine(model, backend=combo.backend, precision=combo.precision, threads=settings.threads,
                             size=size, batch=combo.batch, dynamic_batch=combo.batch > 1,
                             cache_dir=settings.cache_dir, cuda_graph=settings.cuda_graph,
                             calibrate=settings.calibrate if combo.precision == "int8" and not ships_int8(model)
                             else None, calibrate_images=settings.calibrate_images, tta=settings.tta)
    engine.info.notes.extend(notes)
    return engine


# --------------------------------------------------------------------------------- one run
@dataclass
class FrameSample:
    """One processed frame's numbers (the CSV row and the statistics are made of these)."""

    repeat: int
    seq: int              # processing order within the repeat (0-based; < warmup: warm-up)
    frame: int            # source frame index
    e2e_ms: float
    stages_ms: dict[str, float]
    dropped_before: int
    warmup: bool
    t_done: float         # perf_counter seconds when the pipeline finished the frame


@dataclass
class BenchRun:
    """A combination's result: the JSON row and the measured frames' samples (for the CSV and plot)."""

    combo: Combo
    row: dict[str, Any]
    samples: list[FrameSample] = field(default_factory=list)

    @property
    def measured(self) -> list[FrameSample]:
        return [s for s in self.samples if not s.warmup]


class Runner:
    """Runs combinations one after another; :meth:`request_stop` (e.g. from a SIGINT handler) stops
    the run in flight and the ones after it."""

    def __init__(self, settings: Settings, engine_factory: EngineFactory | None = None,
                 on_run: Callable[[BenchRun], None] | None = None) -> None:
        self.settings = settings
        self.engine_factory = engine_factory or load_bench_engine
        self.on_run = on_run
        self.stop_reason: str | None = None
        self._pipe: Pipeline | None = None

    def request_stop(self, reason: str = "stopped by the user") -> None:
        """Stop the run in flight after its current frame, and every run after it. Safe from a
        signal handler (no lock: it sets the reason first, and :meth:`_run_once` checks it after
        publishing its pipeline)."""
        self.stop_reason = reason
        pipe = self._pipe
        if pipe is not None:
            pipe.request_stop(reason)

    def run(self, combos: Sequence[Combo]) -> list[BenchRun]:
        """Every combination (a failure keeps its row), then the speed-ups."""
        runs: list[BenchRun] = []
        bar = tqdm(combos, desc="mn-bench", unit="combo", disable=not log.isEnabledFor(logging.INFO))
        for combo in bar:
            if self.stop_reason:
                break
            bar.set_postfix_str(combo.label())
            run = self.run_combo(combo)
            runs.append(run)
            if self.on_run:
                self.on_run(run)
        add_speedups([r.row for r in runs])
        return runs

    def run_combo(self, combo: Combo) -> BenchRun:
        """Load the engine, run ``repeats`` passes, and summarise them into the row."""
        s = self.settings
        run = BenchRun(combo, new_row(combo, s))
        row = run.row
        try:
            engine = self.engine_factory(combo, s)
        except Exception as exc:  # a combination that cannot run keeps its row, with the reason
            row.update(status="failed", reason=reason_text(exc))
            log.warning("%s: failed: %s", combo.label(), row["reason"])
            log.debug("engine load failure", exc_info=True)
            return run
        wall: list[float] = []
        with engine:
            info = engine.describe()
            row.update(size=f"{engine.size[0]}x{engine.size[1]}", device=engine.device, notes=list(info["notes"]),
                       engine=info, precision=engine.precision)
            if not combo.baseline and engine.backend != combo.backend:  # auto: record the choice
                row.update(backend=engine.backend, backend_requested=combo.backend)
            for repeat in range(s.repeats):
                elapsed = self._run_once(engine, run, repeat)
                if elapsed is not None:
                    wall.append(elapsed)
                if row["status"] != "ok" or self.stop_reason:
                    break
        finish_row(run, wall)
        log.info("%s: %s", combo.label(), row_text(row))
        return run

    def _run_once(self, engine: Engine, run: BenchRun, repeat: int) -> float | None:
        """One pass over ``warmup + frames`` frames into ``run``; returns the measured frames' wall time
        (s), or ``None`` when none was measured. A failure sets the row's status and reason; the
        frames processed before it are kept."""
        s, combo, row = self.settings, run.combo, run.row
        realtime = combo.mode == "realtime"
        total = s.warmup + s.frames
        samples: list[FrameSample] = []

        def on_record(r: FrameRecord) -> None:
            seq = len(samples)
            samples.append(FrameSample(repeat, seq, r.frame, r.latency_ms, dict(r.timings_ms), r.dropped_before,
                                       seq < s.warmup, time.perf_counter()))

        try:
            # realtime: no frame limit (an endless live phantom; a file ends at its end), the run is
            # bounded by processed frames, because dropped frames consume stream frames too
            source = open_source(s.source, realtime=realtime, roi=s.roi, fps=s.fps,
                                 frames=None if realtime else total)
        except Exception as exc:
            row.update(status="failed", reason=reason_text(exc))
            return None
        fps = source.fps or s.fps or DEFAULT_SOURCE_FPS
        config = PipelineConfig(batch=combo.batch, prefetch=s.prefetch and not realtime and not combo.baseline,
                                max_frames=total, fps_hint=fps, window=make_window_policy(s.window),
                                fusion=make_fusion(s.fusion, motion=s.fusion_motion))
        # the overlay is drawn (and timed) as for a window, shown to no one; every record is sampled; the
        # tracker gates presence and confirms new tracks, and the cascade's window follows the nerve as live
        # (--presence, --window)
        gate = make_presence_gate(s.presence, model_file=gated_model_file(engine))
        pipe = Pipeline(engine, Tracker(None, fps, presence=gate,
                                        confirm_frames=DEFAULT_CONFIRM_FRAMES, area_step=DEFAULT_AREA_STEP),
                        [RenderSink(), Callback(on_record)], config)
        self._pipe = pipe
        if self.stop_reason:
            pipe.request_stop(self.stop_reason)
        t_start = time.perf_counter()
        try:
            result = pipe.run(source)
            code, ended = result.exit_code, result.reason
        except Exception as exc:  # e.g. a frame-size change: the source raised from its iterator
            code, ended = -1, reason_text(exc)
            log.debug("pipeline failure", exc_info=True)
        finally:
            self._pipe = None
        run.samples.extend(samples)
        row.update(source_fps=fps, prefetch=config.prefetch, ended_because=ended)
        if code != EXIT_OK:
            row.update(status="failed", reason=ended)
        elif self.stop_reason:
            row.update(status="stopped", reason=self.stop_reason)
        measured = [x for x in samples if not x.warmup]
        if not measured:
            if row["status"] == "ok":
                row.update(status="failed", reason=f"the source ended after {len(samples)} frames, no more than "
                                                   f"the {s.warmup} warm-up frames; lower --warmup or use a "
                                                   "longer source")
            return None
        if len(samples) < total and row["status"] == "ok":
            note = (f"the source ended after {len(samples)} of {total} frames ({ended}): the frames processed "
                    "are reported")
            log.warning("%s: %s", combo.label(), note)
            if note not in row["notes"]:
                row["notes"].append(note)
        t_ref = samples[s.warmup - 1].t_done if s.warmup > 0 else t_start
        elapsed = measured[-1].t_done - t_ref
        return elapsed if elapsed > 0 else None


# --------------------------------------------------------------------------------- rows
def new_row(combo: Combo, settings: Settings) -> dict[str, Any]:
    """A row with every key of the JSON contract, before the combination has run."""
    return {
        "model": combo.model, "backend": combo.backend, "precision": combo.precision or "default",
        "size": combo.size_text,
        "mode": combo.mode, "batch": combo.batch, "baseline": combo.baseline, "status": "ok", "reason": None,
        "repeats": 0, "warmup": settings.warmup, "frames": 0, "dropped": 0, "fps": None,
        "speedup_vs_baseline": None, "latency_ms": {}, "tail_ms": None, "flatness_ms": None, "notes": [],
    }


def finish_row(run: BenchRun, wall_s: list[float]) -> None:
    """Fill the row's counts, rates and statistics from the measured samples."""
    row, measured = run.row, run.measured
    row["repeats"] = len({x.repeat for x in run.samples})
    row["frames"] = len(measured)
    row["dropped"] = int(sum(x.dropped_before for x in measured))
    row["frames_seen"] = row["frames"] + row["dropped"]
    if wall_s:
        per_repeat = [n / t for n, t in zip(_count_by_repeat(measured), wall_s)]
        row["fps_per_repeat"] = per_repeat
        row["fps"] = row["frames"] / sum(wall_s)
    if not measured:
        return
    latency = {"e2e": summary_stats([x.e2e_ms for x in measured])}
    for stage in STAGES:
        values = [x.stages_ms.get(stage, math.nan) for x in measured]
        if any(math.isfinite(v) for v in values):
            latency[stage] = summary_stats(values)
    row["latency_ms"] = latency
    row["tail_ms"] = latency["e2e"]["tail_ms"]
    row["flatness_ms"] = latency["e2e"]["flatness_ms"]
    if run.combo.mode == "realtime":
        row["budget_ms"] = 1000.0 / row["source_fps"]


def _count_by_repeat(samples: list[FrameSample]) -> list[int]:
    counts: dict[int, int] = {}
    for x in samples:
        counts[x.repeat] = counts.get(x.repeat, 0) + 1
    return [counts[k] for k in sorted(counts)]


def _p50(row: dict[str, Any], key: str = "e2e") -> float | None:
    return (row.get("latency_ms") or {}).get(key, {}).get("p50")


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_baseline`` of every row against the baseline of its model, size and mode
    (offline: fps / baseline fps; realtime: baseline e2e p50 / e2e p50). ``None`` when either side
    failed."""
    base = {(r["model"], r["size"], r["mode"]): r for r in rows if r["baseline"] and r["status"] == "ok"}
    for r in rows:
        b = base.get((r["model"], r["size"], r["mode"]))
        r["speedup_vs_baseline"] = None
        if b is None or r["status"] != "ok":
            continue
        if r["mode"] == "offline":
            if r["fps"] and b["fps"]:
                r["speedup_vs_baseline"] = r["fps"] / b["fps"]
        elif _p50(r) and _p50(b):
            r["speedup_vs_baseline"] = _p50(b) / _p50(r)


def reason_text(exc: BaseException) -> str:
    """One line for a failed row: a UserError's message as is, anything else with its type."""
    text = str(exc).strip().strip("'\"")
    if isinstance(exc, (UserError, KeyError)):
        return text
    return f"{type(exc).__name__}: {text}"


def row_text(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}"
    return (f"{row['frames']} frames, {_fmt(row['fps'], 1)} fps, e2e p50 {_fmt(_p50(row), 1)} ms, "
            f"dropped {row['dropped']}")


# --------------------------------------------------------------------------------- system
def gpu_driver() -> str | None:
    """The NVIDIA driver version (``nvidia-smi``), or ``None`` without one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def bench_system(threads: int | None) -> dict[str, Any]:
    """:func:`benchmarks.system.system_info` plus the GPU driver and every thread setting that matters."""
    import cv2
    import torch

    info = system_info()
    info["gpu_driver"] = gpu_driver() if info.get("gpu") else None
    info["threads"] = {
        "requested": threads,
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "onnxruntime_intra_op": threads or info["cores"],
        "opencv": cv2.getNumThreads(),
        **{var: os.environ.get(var) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    return info


def system_header(info: dict[str, Any]) -> str:
    """The lines printed above the table: the machine and the libraries."""
    v = info.get("versions", {})
    t = info.get("threads", {})
    gpu = f"{info['gpu']} (driver {info.get('gpu_driver') or '?'})" if info.get("gpu") else "none"
    return "\n".join([
        f"host {info.get('host')}: {info.get('cpu')}, {info.get('cores')} cores; GPU {gpu}",
        "torch {} | onnxruntime {} | TensorRT {} | OpenCV {} | PyAV {} | mn-seg {}".format(
            *(v.get(k) or "-" for k in ("torch", "onnxruntime", "tensorrt", "opencv-python", "av", "mn-seg"))),
        f"threads: torch {t.get('torch_intra_op')} intra-op / {t.get('torch_inter_op')} inter-op, onnxruntime "
        f"{t.get('onnxruntime_intra_op')}, OpenCV {t.get('opencv')}, OMP_NUM_THREADS {t.get('OMP_NUM_THREADS') or '-'}",
    ])


# --------------------------------------------------------------------------------- table and CSV
def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """One line per combination; a failed one shows its reason. Footnotes: the speed-up's definition
    and the engine notes (``[1]`` random weights, ...) the rows carry."""
    head = (f"{'model':<14} {'backend':<12} {'prec':<5} {'size':<8} {'mode':<9} {'b':>2} {'status':<7} "
            f"{'fps':>7} {'e2e p50':>8} {'p95':>8} {'p99':>8} {'infer p50':>9} {'dropped':>7} {'speed-up':>8}")
    lines = [head, "-" * len(head)]
    notes: list[str] = []
    for r in rows:
        marks = []
        for note in r.get("notes") or []:
            if note.startswith("baseline:"):  # the backend column says it
                continue
            if note not in notes:
                notes.append(note)
            marks.append(str(notes.index(note) + 1))
        mark = f"[{','.join(sorted(marks, key=int))}]" if marks else ""
        name = r["model"] if len(r["model"]) + len(mark) <= 14 else "..." + r["model"][-(11 - len(mark)):]
        start = (f"{name + mark:<14} {r['backend']:<12} {r['precision']:<5} {r['size']:<8} {r['mode']:<9} "
                 f"{r['batch']:>2} {r['status']:<7} ")
        if r["status"] == "failed" or not r["latency_ms"]:
            lines.append(start + (r.get("reason") or ""))
            continue
        lat = r["latency_ms"]
        sp = r["speedup_vs_baseline"]
        lines.append(start + f"{_fmt(r['fps']):>7} {_fmt(lat['e2e']['p50']):>8} {_fmt(lat['e2e']['p95']):>8} "
                             f"{_fmt(lat['e2e']['p99']):>8} {_fmt(_p50(r, 'infer')):>9} {r['dropped']:>7} "
                             f"{'-' if sp is None else f'{sp:.2f}x':>8}")
    lines.append("")
    lines.append(textwrap.fill("times in ms; fps = measured frames / their wall time; " + SPEEDUP, width=120))
    lines += [textwrap.fill(f"[{i + 1}] {note}", width=120, subsequent_indent="    ") for i, note in enumerate(notes)]
    return "\n".join(lines)


CSV_ID_COLUMNS = ["run", "model", "backend", "precision", "size", "mode", "batch", "baseline", "repeat"]
CSV_COLUMNS = [*CSV_ID_COLUMNS, "seq", "frame", "warmup", "e2e_ms", *[f"{s}_ms" for s in STAGES], "dropped_before"]


class FrameCsv:
    """Every processed frame's stage times, one row per frame (warm-up frames included, marked)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", newline="")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(CSV_COLUMNS)
        self._runs = 0

    def write(self, run: BenchRun) -> None:
        r = run.row
        ids = [self._runs, r["model"], r["backend"], r["precision"], r["size"], r["mode"], r["batch"],
               int(r["baseline"])]
        for x in run.samples:
            self._writer.writerow([format_cell(v) for v in (
                *ids, x.repeat, x.seq, x.frame, int(x.warmup), x.e2e_ms,
                *[x.stages_ms.get(s) for s in STAGES], x.dropped_before)])
        self._runs += 1
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
