"""The streaming loop: wires a source, an engine, post-processing, the tracker and the sinks.

::

    Source --Frame--> preprocess --> Engine.infer --> postprocess --> Tracker --FrameRecord--> sinks

Threads: the source captures (device grabber thread, or a decoding/prefetch thread for files),
inference and measurement run on the calling thread, the overlay video is encoded on a writer
thread behind a bounded queue. Every stage is timed per frame with ``perf_counter_ns``
(:data:`realtime.record.STAGES`); ``latency_ms`` runs from the frame's capture to the end of its
measurement (tracking).

Nothing is lost on the way out: :meth:`Pipeline.run` finalises every sink (CSV flushed, MP4
closed so it plays, summary and plot written) whether the source ended, the user stopped the run
(``request_stop``, e.g. from a SIGINT handler), the source failed (exit code 3) or the engine
failed (exit code 4).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from realtime.frame import Frame
from realtime.morphometry import measure_mask
from realtime.postprocess import postprocess
from realtime.record import FrameRecord
from realtime.sinks.csv_sink import CsvSink
from realtime.sinks.overlay import OverlayRenderer
from realtime.sinks.summary import SummaryBuilder, plot_series, write_json
from realtime.sinks.video import ThreadedWriter, VideoWriter
from realtime.tracker import Tracker
from train.metrics import dice_hard
from train.preprocess import preprocess_image

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOURCE_FAILED = 3
EXIT_ENGINE_FAILED = 4


@dataclass
class Outputs:
    """Where a run's results go; any of them may be ``None``."""

    csv: Path | None = None
    video: Path | None = None
    summary: Path | None = None
    plot: Path | None = None
    masks: Path | None = None  # folder for per-frame nerve masks (PNG), mn-segment --masks


@dataclass
class RunResult:
    exit_code: int
    summary: dict[str, Any]
    reason: str = "end of source"


class TruthScore:
    """Per-frame agreement with a known truth (synthetic sources, ``--truth``)."""

    def __init__(self) -> None:
        self.dice: list[float] = []
        self.csa_rel: list[float] = []
        self.fr_abs: list[float] = []
        self.centroid_px: list[float] = []

    def add(self, pred_mask: np.ndarray | None, truth: np.ndarray, pred_values: dict[str, Any]) -> None:
        truth_b = truth > 0
        pred_b = pred_mask > 0 if pred_mask is not None else np.zeros_like(truth_b)
        self.dice.append(dice_hard(pred_b, truth_b))
        t = measure_mask(truth_b.astype(np.uint8))
        if t.area_px > 0:
            area = pred_values.get("area_px") or 0.0
            self.csa_rel.append(abs(area - t.area_px) / t.area_px)
            if pred_values.get("flattening_ratio") is not None and t.flattening_ratio is not None:
                self.fr_abs.append(abs(pred_values["flattening_ratio"] - t.flattening_ratio))
            if pred_values.get("centroid_x_px") is not None:
                self.centroid_px.append(math.hypot(pred_values["centroid_x_px"] - t.centroid_x_px,
                                                   pred_values["centroid_y_px"] - t.centroid_y_px))

    def to_dict(self) -> dict[str, Any]:
        med = lambda v: float(np.median(v)) if v else None  # noqa: E731
        return {
            "frames": len(self.dice),
            "dice_mean": float(np.mean(self.dice)) if self.dice else None,
            "dice_min": float(np.min(self.dice)) if self.dice else None,
            "csa_rel_error_median": med(self.csa_rel),
            "csa_rel_error_p95": float(np.percentile(self.csa_rel, 95)) if self.csa_rel else None,
            "fr_abs_error_median": med(self.fr_abs),
            "centroid_error_px_median": med(self.centroid_px),
        }


class Prefetcher:
    """Iterates ``source`` on a thread into a bounded queue, so decoding overlaps inference.

    Exceptions raised by the source are re-raised by the consumer at the point they happened.
    """

    _END = object()

    def __init__(self, source: Iterable[Frame], maxsize: int = 8) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iter(source),), name="prefetch", daemon=True)
        self._thread.start()

    def _run(self, it: Iterator[Frame]) -> None:
        try:
            for item in it:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_end(self._END)
        except BaseException as exc:  # handed to the consumer
            self._put_end(exc)

    def _put_end(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class PipelineConfig:
    threshold: float = 0.5
    min_area_px: int = 100
    batch: int = 1
    prefetch: bool = False          # decode on a thread (offline file sources)
    max_frames: int | None = None
    duration_s: float | None = None
    warmup: int = 0                  # frames left out of the latency statistics
    fps_hint: float = 24.0
    render: bool = False             # draw the overlay even with no video or window (mn-bench times it)
    metadata: dict[str, Any] = field(default_factory=dict)   # into summary.json
    csv_header: dict[str, Any] | None = None                 # CSV comment lines (default: metadata)


class Pipeline:
    """One run: ``Pipeline(engine, tracker, outputs, config).run(source)``."""

    def __init__(self, engine, tracker: Tracker, outputs: Outputs, config: PipelineConfig,
                 window=None, calibrated: bool = False,
                 on_record: Callable[[FrameRecord], None] | None = None) -> None:
        self.engine = engine
        self.tracker = tracker
        self.outputs = outputs
        self.config = config
        self.window = window
        self.on_record = on_record
        self.renderer = OverlayRenderer(calibrated=calibrated)
        self.summary = SummaryBuilder(warmup=config.warmup)
        self.truth: TruthScore | None = None
        self._stop = threading.Event()
        self._stop_reason = ""
        self._paused = False
        self._fps_times: list[float] = []

    # -------------------------------------------------------------------------- control
    def request_stop(self, reason: str = "stopped by the user") -> None:
        """Finish the frame in flight, then finalise everything (safe from a signal handler)."""
        self._stop_reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -------------------------------------------------------------------------- run
    def run(self, source, frames: Iterable[Frame] | None = None) -> RunResult:
        """Process ``frames`` (default: iterate ``source``) until the end, a stop or a failure; the
        source is closed and every output finalised before returning."""
        cfg = self.config
        csv_sink = CsvSink(self.outputs.csv, metadata=cfg.csv_header if cfg.csv_header is not None else cfg.metadata,
                           extra_columns=self._extra_columns()) if self.outputs.csv else None
        video = ThreadedWriter(VideoWriter(self.outputs.video, fps=getattr(source, "fps", None) or cfg.fps_hint),
                               maxsize=32, name="video-writer") if self.outputs.video else None
        if self.outputs.masks:
            Path(self.outputs.masks).mkdir(parents=True, exist_ok=True)
        frames = source if frames is None else frames
        if cfg.prefetch:
            frames = Prefetcher(frames)
        exit_code, reason = EXIT_OK, "end of source"
        t_start = time.monotonic()
        try:
            exit_code, reason = self._loop(frames, csv_sink, video, t_start)
        except KeyboardInterrupt:
            reason = "stopped by the user (Ctrl-C)"
        finally:
            if isinstance(frames, Prefetcher):
                frames.close()
            _close_quietly(source)
            if csv_sink:
                csv_sink.close()
            if video:
                try:
                    video.close()
                except Exception as exc:  # the measurements are kept; the video is reported broken
                    log.error("overlay video %s could not be finalised: %s", self.outputs.video, exc)
            if self.window:
                self.window.close()
            if getattr(source, "failed", False) and exit_code == EXIT_OK:
                exit_code = EXIT_SOURCE_FAILED
                reason = f"source failed: {getattr(source, 'error', None) or 'stopped delivering frames'}"
            summary = self._summary(source, reason, exit_code, time.monotonic() - t_start)
            if self.outputs.summary:
                write_json(self.outputs.summary, summary)
            if self.outputs.plot and self.summary.processed:
                plot_series(self.outputs.plot, self.summary, title=str(cfg.metadata.get("source", "")))
        return RunResult(exit_code, summary, reason)

    def _extra_columns(self) -> list[str]:
        contract = {"frame_index", "t_s", "status"}
        from realtime.record import CSV_COLUMNS

        return [c for c in self.tracker.columns() if c not in contract and c not in CSV_COLUMNS]

    def _loop(self, frames: Iterable[Frame], csv_sink, video, t_start: float) -> tuple[int, str]:
        cfg = self.config
        it = iter(frames)
        while not self._stop.is_set():
            if cfg.max_frames is not None and self.summary.processed >= cfg.max_frames:
                return EXIT_OK, f"{cfg.max_frames} frames processed"
            if cfg.duration_s is not None and time.monotonic() - t_start >= cfg.duration_s:
                return EXIT_OK, f"duration {cfg.duration_s:g} s reached"
            want = cfg.batch if cfg.max_frames is None else min(cfg.batch, cfg.max_frames - self.summary.processed)
            batch, waits = self._next_batch(it, max(want, 1))
            if not batch:
                return EXIT_OK, "end of source"
            try:
                probs, pre_ms, infer_ms = self._infer(batch)
            except Exception as exc:
                log.error("engine failed on frame %d: %s", batch[0].index, exc)
                return EXIT_ENGINE_FAILED, f"engine failed: {exc}"
            for frame, wait_ms, prob in zip(batch, waits, probs):
                record = self._measure(frame, prob, {"capture_wait": wait_ms, "preprocess": pre_ms,
                                                     "infer": infer_ms})
                self._emit(record, csv_sink, video)
                if self._stop.is_set():
                    break
        return EXIT_OK, self._stop_reason or "stopped"

    def _next_batch(self, it: Iterator[Frame], n: int) -> tuple[list[Frame], list[float]]:
        batch, waits = [], []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            try:
                frame = next(it)
            except StopIteration:
                break
            waits.append((time.perf_counter_ns() - t0) / 1e6)
            batch.append(frame)
            if self._stop.is_set():
                break
        return batch, waits

    def _infer(self, batch: list[Frame]) -> tuple[np.ndarray, float, float]:
        """Probabilities for a batch; preprocess and inference times per frame (ms, batch time / n)."""
        t0 = time.perf_counter_ns()
        x = np.stack([preprocess_image(f.image, self.engine.size) for f in batch])[:, None]
        t1 = time.perf_counter_ns()
        probs = self.engine.infer(x)[:, 0]
        t2 = time.perf_counter_ns()
        n = len(batch)
        return probs, (t1 - t0) / 1e6 / n, (t2 - t1) / 1e6 / n

    def _measure(self, frame: Frame, prob: np.ndarray, timings: dict[str, float]) -> FrameRecord:
        t0 = time.perf_counter_ns()
        post = postprocess(prob, (frame.width, frame.height), threshold=self.config.threshold,
                           min_area_px=self.config.min_area_px)
        t1 = time.perf_counter_ns()
        tracked = self.tracker.update(post, frame.index, frame.pts)
        t2 = time.perf_counter_ns()
        timings.update(postprocess=(t1 - t0) / 1e6, track=(t2 - t1) / 1e6)
        values = tracked.to_row()
        return FrameRecord(frame=frame.index, t_s=frame.pts, status=tracked.status.value, values=values,
                           latency_ms=(time.monotonic() - frame.t_capture) * 1000.0,
                           dropped_before=frame.dropped_before, timings_ms=timings, image=frame.image,
                           mask=tracked.nerve_mask, truth=frame.truth)

    def _emit(self, record: FrameRecord, csv_sink, video) -> None:
        now = time.monotonic()
        self._fps_times = [t for t in self._fps_times if now - t < 1.0] + [now]
        fps = len(self._fps_times) / max(now - self._fps_times[0], 1e-3) if len(self._fps_times) > 1 else None
        t0 = time.perf_counter_ns()
        bgr = self.renderer.render(record, fps) if (self.config.render or video or self.window) else None
        t1 = time.perf_counter_ns()
        if video:
            video.put(bgr)
        if self.window:
            self._handle_key(self.window.show(bgr))
        if self.outputs.masks and record.mask is not None:
            import cv2

            cv2.imwrite(str(Path(self.outputs.masks) / f"{record.frame:06d}.png"), record.mask.astype(np.uint8) * 255)
        t2 = time.perf_counter_ns()
        record.timings_ms.update(render=(t1 - t0) / 1e6, write=(t2 - t1) / 1e6)
        if record.truth is not None:
            if self.truth is None:
                self.truth = TruthScore()
            self.truth.add(record.mask, record.truth, record.values)
        if csv_sink:
            csv_sink.write(record)
        self.summary.add(record)
        if self.on_record:
            self.on_record(record)
        record.image = record.mask = record.truth = None  # release the frame's memory

    def _handle_key(self, action: str | None) -> None:
        if action == "quit":
            self.request_stop("quit from the window")
        elif action == "baseline":
            self.tracker.set_baseline_now()
        elif action == "pause":
            log.info("paused: press space to resume, q to quit")
            while not self._stop.is_set():
                key = self.window.wait_key(50)
                if key == "pause":
                    break
                if key == "quit":
                    self.request_stop("quit from the window")

    def _summary(self, source, reason: str, exit_code: int, wall_s: float) -> dict[str, Any]:
        meta: dict[str, Any] = dict(self.config.metadata)
        meta.update(
            exit_code=exit_code,
            ended_because=reason,
            wall_time_s=round(wall_s, 3),
            processing_fps=(self.summary.processed / wall_s) if wall_s > 0 else None,
            source_info=_describe(source),
            source_error=getattr(source, "error", None),
            engine=self.engine.describe(),
            tracker=self.tracker.describe(),
            outputs={k: str(v) for k, v in vars(self.outputs).items() if v is not None},
        )
        if self.truth is not None:
            meta["truth"] = self.truth.to_dict()
        return self.summary.to_dict(**meta)


def _describe(source) -> dict[str, Any] | None:
    try:
        return source.describe()
    except Exception:  # a source without describe() (tests, plain iterables)
        return None


def _close_quietly(source) -> None:
    close = getattr(source, "close", None)
    if close:
        try:
            close()
        except Exception as exc:
            log.warning("closing the source: %s", exc)
