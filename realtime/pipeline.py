"""The streaming loop: read frames, infer, measure, time the stages, hand each record to every sink.

::

    Source --Frame--> preprocess --> Engine.infer --> (fusion) --> postprocess --> Tracker --FrameRecord--> sinks

``Pipeline(engine, tracker, sinks, config).run(source)``. The sinks (:mod:`realtime.sinks`: CSV,
overlay video, window, masks, truth score, summary and plot...) are assembled by the command line
(:func:`realtime.outputs.output_sinks`); the loop knows none of them. Threads: the source captures
(device grabber thread, a file's decoding thread, or :class:`~realtime.sources.common.Prefetcher`
with ``prefetch``), inference and measurement run on the calling thread, sinks may keep their own
writer threads. Every stage is timed per frame with ``perf_counter_ns``
(:data:`realtime.record.STAGES`; temporal fusion, :mod:`realtime.fusion`, is timed with post-processing);
``latency_ms`` runs from the frame's capture to the end of its
measurement (tracking). A pause (the window's space key, :meth:`~realtime.sinks.base.RunControl.request_pause`)
holds the loop between frames (:meth:`~realtime.sinks.base.RunControl.hold`), outside every timed stage; the
first record after it carries the pause (``paused_s``) and the frames the source produced meanwhile
(``paused_before``, not counted as dropped), and ``--duration`` leaves paused time out.

Nothing is lost on the way out: :meth:`Pipeline.run` closes every sink (CSV flushed, MP4 closed so
it plays, summary and plot written) whether the source ended, the user stopped the run
(:meth:`Pipeline.request_stop`, e.g. from a SIGINT handler, or the window's keys through
:class:`~realtime.sinks.base.RunControl`), the source failed (exit code 3), the engine failed
(exit code 4), an output failed (exit code 5) or something else raised (the exception goes on to the
command, and the summary already carries the exit code and reason the command reports for it).
An output that fails (disk full, permission lost,
the folder removed) is reported with its file and why, dropped, and stops the run after the frame in
flight: the other outputs are finalised with the same frames (CSV rows = summary frames = video
frames), and the summary, closed last, carries the exit code and reason the command returns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from common.errors import (
    EXIT_ENGINE_FAILED,
    EXIT_OK,
    EXIT_OUTPUT_FAILED,
    EXIT_SOURCE_FAILED,
    EXIT_USAGE,
    OutputError,
    UserError,
    error_outcome,
)
from realtime.frame import Frame
from realtime.fusion import TemporalFusion
from realtime.postprocess import postprocess, upsample
from realtime.record import FrameRecord, timed
from realtime.sinks.base import RunControl, RunInfo, Sink
from realtime.sources.common import Prefetcher
from realtime.tracker import Tracker
from realtime.window_policy import WindowPolicy, scale_point
from train.preprocess import preprocess_image

log = logging.getLogger(__name__)

__all__ = ["EXIT_ENGINE_FAILED", "EXIT_OK", "EXIT_OUTPUT_FAILED", "EXIT_SOURCE_FAILED", "EXIT_USAGE", "Pipeline",
           "PipelineConfig", "Prefetcher", "RunResult"]


def mask_threshold(given: float | None, engine) -> float:
    """The nerve mask's probability threshold: ``given`` (``--threshold``), else the one the model carries
    (``postprocess.threshold`` in its config, calibrated by ``mn-cv --final``: :mod:`train.threshold`), else 0.5."""
    from train.threshold import choose_threshold

    try:
        return choose_threshold(given, getattr(getattr(engine, "info", None), "config", None))
    except ValueError as e:
        raise UserError(str(e)) from None


@dataclass
class PipelineConfig:
    threshold: float | None = None  # None: the model's (mask_threshold)
    min_area_px: int = 100
    batch: int = 1
    prefetch: bool = False          # produce frames on a thread (generated sources, offline)
    max_frames: int | None = None
    duration_s: float | None = None
    fps_hint: float = 24.0           # the frame rate when the source does not say (video files, the tracker)
    metadata: dict[str, Any] = field(default_factory=dict)   # the run's description, for the sinks
    window: WindowPolicy | None = None  # --window tracked: the tracked nerve places a cascade's next window
    fusion: TemporalFusion | None = None  # --fusion W: each frame's probabilities fused with the previous frames'


@dataclass
class RunResult:
    exit_code: int
    summary: dict[str, Any]
    reason: str = "end of source"
    interrupted: bool = False
    """Ctrl-C (``KeyboardInterrupt``) ended the run: for a command that runs several, a stop of them all."""


class Pipeline:
    """One run: ``Pipeline(engine, tracker, sinks, config).run(source)``."""

    def __init__(self, engine, tracker: Tracker, sinks: Sequence[Sink], config: PipelineConfig | None = None) -> None:
        self.engine = engine
        self.tracker = tracker
        self.sinks = list(sinks)
        self.config = config or PipelineConfig()
        self.threshold = mask_threshold(self.config.threshold, engine)
        if self.config.fusion is not None:
            self.config.fusion.threshold = self.threshold  # the fused map is cut where each frame's mask is
        self.control = RunControl(tracker)
        self.processed = 0
        self.output_failure: str | None = None  # "<output> <file>: <why>" of the first output that failed
        # (seconds held, its event) until the next record
        self._pause: tuple[float, dict[str, Any] | None] | None = None
        self._failed: list[Sink] = []

    def request_stop(self, reason: str = "stopped by the user") -> None:
        """Finish the frame in flight, then finalise everything (safe from a signal handler)."""
        self.control.stop(reason)

    @property
    def stopping(self) -> bool:
        return self.control.stopping

    # ------------------------------------------------------------------------------ the run
    def run(self, source, frames: Iterable[Frame] | None = None) -> RunResult:
        """Process ``frames`` (default: iterate ``source``) until the end, a stop or a failure; the
        source and every sink are closed before returning."""
        cfg = self.config
        self.control.source = source
        run = RunInfo(source=source, engine=self.engine, tracker=self.tracker, control=self.control,
                      fps=getattr(source, "fps", None) or cfg.fps_hint, calibrated=self.tracker.calibration is not None,
                      metadata=dict(cfg.metadata))
        for sink in self.sinks:
            run.outputs.update(sink.paths)
        active = self._open(run)
        frames = source if frames is None else frames
        if cfg.prefetch:
            frames = Prefetcher(frames)
        exit_code, reason, interrupted = EXIT_OK, "end of source", False
        t_start = time.monotonic()
        try:
            exit_code, reason = self._loop(iter(frames), active, t_start)
        except KeyboardInterrupt:
            reason, interrupted = "stopped by the user (Ctrl-C)", True
        except Exception as exc:  # the command reports it and exits with this code: the summary says the same
            exit_code, reason = _failure(exc)
            raise
        finally:
            if isinstance(frames, Prefetcher):
                frames.close()
            _close_quietly(source, "the source")
            if getattr(source, "failed", False) and exit_code == EXIT_OK:
                exit_code = EXIT_SOURCE_FAILED
                reason = f"source failed: {getattr(source, 'error', None) or 'stopped delivering frames'}"
            if self.output_failure and exit_code == EXIT_OK:
                exit_code, reason = EXIT_OUTPUT_FAILED, f"output failed: {self.output_failure}"
            run.exit_code, run.reason, run.wall_s = exit_code, reason, time.monotonic() - t_start
            run.extras["window"] = (cfg.window.describe() if self._hinting else
                                    {"mode": "localiser" if getattr(self.engine, "window_hints", False) else None})
            run.extras["fusion"] = cfg.fusion.describe() if cfg.fusion is not None else None
            self._close_sinks(run)
        return RunResult(run.exit_code, run.summary, run.reason, interrupted)

    def _close_sinks(self, run: RunInfo) -> None:
        """Close every sink in order (the summary, last, reads what the others left, the exit code too); one
        that cannot be finalised makes the run an output failure (exit code 5) unless it already failed."""
        for sink in self.sinks:
            if sink in self._failed:  # already reported; close what it holds, its error again is no news
                try:
                    sink.close()
                except Exception as exc:
                    log.debug("%s (failed earlier) on close: %s", sink.name, exc)
                continue
            try:
                sink.close()
            except Exception as exc:
                log.error("%s could not be finalised: %s", sink.name, exc)
                if run.exit_code == EXIT_OK:
                    run.exit_code, run.reason = EXIT_OUTPUT_FAILED, f"output failed: {sink.name}: {exc}"

    def _open(self, run: RunInfo) -> list[Sink]:
        opened: list[Sink] = []
        try:
            for sink in self.sinks:
                try:
                    sink.open(run)
                except OSError as exc:  # e.g. an output file that cannot be created: name it
                    raise OutputError(f"cannot write {sink.name}: {exc.strerror or exc}") from None
                opened.append(sink)
        except BaseException:  # close what was opened
            for sink in opened:
                _close_quietly(sink, sink.name)
            raise
        return opened

    def _loop(self, it: Iterator[Frame], sinks: list[Sink], t_start: float) -> tuple[int, str]:
        cfg = self.config
        while not self.control.stopping:
            if cfg.max_frames is not None and self.processed >= cfg.max_frames:
                return EXIT_OK, f"{cfg.max_frames} frames processed"
            if cfg.duration_s is not None and time.monotonic() - t_start - self.control.paused_s >= cfg.duration_s:
                return EXIT_OK, f"duration {cfg.duration_s:g} s reached"
            want = 1 if self._hinting else cfg.batch  # a tracked window needs the previous frame's result
            want = want if cfg.max_frames is None else min(want, cfg.max_frames - self.processed)
            batch, waits = self._next_batch(it, max(want, 1))
            if not batch:
                return EXIT_OK, "end of source"
            try:
                probs, images, sources, pre_ms, infer_ms = self._infer(batch)
            except Exception as exc:
                log.error("engine failed on frame %d: %s", batch[0].index, exc)
                return EXIT_ENGINE_FAILED, f"engine failed: {exc}"
            for frame, wait_ms, prob, image, window in zip(batch, waits, probs, images, sources):
                record = self._measure(frame, prob, {"capture_wait": wait_ms, "preprocess": pre_ms,
                                                     "infer": infer_ms}, window, image)
                if self._hinting:
                    cfg.window.observe(record.tracked, window)
                self._after_pause(record)
                self._emit(record, sinks)
                if self.control.stopping:
                    break
            if self.control.paused:  # the window's space key: hold between frames, the pause is not data
                self._pause = (self.control.hold(), self.control.last_pause)
        return EXIT_OK, self.control.reason or "stopped"

    def _after_pause(self, record: FrameRecord) -> None:
        """Mark the first record after a pause: how long it was (``paused_s``) and the frames the source
        produced meanwhile (``paused_before``: skipped, not dropped); complete the pause event."""
        if self._pause is None:
            return
        held, event = self._pause
        self._pause = None
        record.paused_s, record.paused_before, record.dropped_before = held, record.dropped_before, 0
        if event is not None and event.get("event") == "pause":
            event.update(resumed_frame=record.frame, resumed_t_s=record.t_s, frames_skipped=record.paused_before)

    def _next_batch(self, it: Iterator[Frame], n: int) -> tuple[list[Frame], list[float]]:
        batch: list[Frame] = []
        waits: list[float] = []
        for _ in range(n):
            wait: dict[str, float] = {}
            with timed(wait, "capture_wait"):
                frame = next(it, None)
            if frame is None:
                break
            waits.append(wait["capture_wait"])
            batch.append(frame)
            if self.control.stopping:
                break
        return batch, waits

    @property
    def _hinting(self) -> bool:
        """Whether the next windows come from the tracker (``--window tracked`` and an engine with a window)."""
        return (self.config.window is not None and getattr(self.engine, "window_hints", False)
                and self.engine.input_shape[0] in (-1, 1))  # frame by frame: a dynamic batch or one of 1

    def _infer(self, batch: list[Frame]) -> tuple[np.ndarray, np.ndarray, list[str | None], float, float]:
        """Probabilities, the network's input images and window sources for a batch; preprocess and inference
        times per frame (ms, batch time / n)."""
        t: dict[str, float] = {}
        with timed(t, "preprocess"):
            x = np.stack([preprocess_image(f.image, self.engine.size) for f in batch])[:, None]
        with timed(t, "infer"):
            if self._hinting:
                hints = [self.config.window.next_window((f.width, f.height), self.engine.size) for f in batch]
                probs, sources = self.engine.infer_hinted(x, [c for c, _ in hints], [v for _, v in hints])
            else:
                probs, sources = self.engine.infer(x), [None] * len(batch)
        return probs[:, 0], x[:, 0], sources, t["preprocess"] / len(batch), t["infer"] / len(batch)

    def _measure(self, frame: Frame, prob: np.ndarray, timings: dict[str, float],
                 window: str | None = None, image: np.ndarray | None = None) -> FrameRecord:
        fusion, fused = self.config.fusion, None
        with timed(timings, "postprocess"):
            own = prob
            if fusion is not None:
                prob, fused = fusion.apply(prob, image)
            post = postprocess(prob, (frame.width, frame.height), threshold=self.threshold,
                               min_area_px=self.config.min_area_px)
            if fused:  # the confidence and the presence gate read the frame's own probabilities
                post.prob = upsample(own, (frame.width, frame.height))
        with timed(timings, "track"):
            tracked = self.tracker.update(post, frame.index, frame.pts, image=frame.image)
        if fusion is not None:
            m = tracked.measurement
            centre = None
            if tracked.measured and m is not None:  # the nerve's centroid in the map's pixels
                ph, pw = np.shape(own)[-2:]
                centre = scale_point((m.centroid_x_px, m.centroid_y_px), (frame.width, frame.height), (pw, ph))
            fusion.observe(tracked.measured, centre)
        return FrameRecord(frame=frame.index, t_s=frame.pts, tracked=tracked,
                           calibrated=self.tracker.calibration is not None,
                           latency_ms=(time.monotonic() - frame.t_capture) * 1000.0,
                           dropped_before=frame.dropped_before, timings_ms=timings,
                           contours=tuple(post.component(label).contour for label in tracked.nerve_labels),
                           image=frame.image, mask=tracked.nerve_mask, truth=frame.truth, window=window,
                           t_wall=frame.t_wall, t_source=frame.t_source, fused=fused)

    def _emit(self, record: FrameRecord, sinks: list[Sink]) -> None:
        """Hand the record to every sink, in order; a sink that fails is dropped and stops the run after
        this frame (the others still get it, and are finalised)."""
        self.processed += 1
        for sink in list(sinks):
            try:
                sink.write(record)
            except Exception as exc:
                sinks.remove(sink)
                self._failed.append(sink)
                if self.output_failure is None:
                    self.output_failure = f"{sink.name}: {exc}"
                    log.error("output failed at frame %d: %s: %s; the run stops and the files written so far are "
                              "finalised", record.frame, sink.name, exc)
                    self.control.stop(f"output failed: {self.output_failure}")
                else:
                    log.error("%s failed too at frame %d: %s", sink.name, record.frame, exc)
        record.release()  # the frame's pixels are not kept


def _failure(exc: Exception) -> tuple[int, str]:
    """The exit code and reason of a run that raised ``exc``, as :func:`common.errors.run_cli` reports it."""
    code, message = error_outcome(exc)
    return code, f"failed: {message}"


def _close_quietly(thing: Any, what: str) -> None:
    close = getattr(thing, "close", None)
    if close:
        try:
            close()
        except Exception as exc:  # the other outputs are still finalised; this one is reported broken
            log.error("%s could not be finalised: %s", what, exc)
