"""The one interface of every output: :class:`Sink` (``open(run)``, ``write(record)``, ``close()``), what a
sink is told about its run (:class:`RunInfo`), and what a person can do to a running pipeline
(:class:`RunControl`: stop, pause, baseline now; the window's keys and the signal handlers call it).

A new output is a new :class:`Sink` subclass in its own module, added to the list the command line
assembles (:func:`realtime.outputs.output_sinks`); the loop does not change.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from realtime.record import FrameRecord

log = logging.getLogger(__name__)


class RunControl:
    """Stop, pause and re-baseline a running pipeline, and have an automatic ROI found again; safe to call
    from a signal handler or another thread."""

    def __init__(self, tracker: Any = None, source: Any = None) -> None:
        self.tracker = tracker
        self.source = source
        self.reason = ""
        self._stop = threading.Event()

    def stop(self, reason: str = "stopped by the user") -> None:
        """Finish the frame in flight, then finalise everything."""
        self.reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def baseline_now(self) -> None:
        """Take a new baseline from the next measured frames (:meth:`realtime.tracker.Tracker.set_baseline_now`)."""
        if self.tracker is not None:
            self.tracker.set_baseline_now()

    def find_roi_again(self) -> None:
        """With ``--roi auto``, find the image area again in the next frame (:meth:`realtime.sources.Source.redetect_roi`)."""
        redetect = getattr(self.source, "redetect_roi", None)
        if redetect is not None:
            redetect()

    def pause(self, next_key: Callable[[], str | None]) -> None:
        """Hold the run until ``next_key()`` (polled, e.g. the window's keys) says ``pause`` again, or ``quit``."""
        log.info("paused: press space to resume, q to quit")
        while not self.stopping:
            key = next_key()
            if key == "pause":
                return
            if key == "quit":
                self.stop("quit from the window")

    def key(self, action: str | None, next_key: Callable[[], str | None]) -> None:
        """Do what a key asks (:data:`realtime.sinks.window.KEY_ACTIONS`; ``snapshot`` is the window's own)."""
        if action == "quit":
            self.stop("quit from the window")
        elif action == "baseline":
            self.baseline_now()
        elif action == "roi":
            self.find_roi_again()
        elif action == "pause":
            self.pause(next_key)


@dataclass
class RunInfo:
    """What the sinks are told about a run: its parts when it opens, how it ended before they close.

    ``fps``: the source's frame rate (or the configured hint); ``calibrated``: whether the tracker
    has a pixel spacing; ``metadata``: the run's description (model, backend, calibration...);
    ``outputs``: kind -> file of every sink's files (for the summary). Set as the run ends:
    ``exit_code``, ``reason``, ``wall_s``. Sinks closing early in the list leave sections for the
    summary in ``extras`` (e.g. ``truth``); the summary sink puts the run summary in ``summary``.
    """

    source: Any
    engine: Any
    tracker: Any
    control: RunControl
    fps: float
    calibrated: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    exit_code: int = 0
    reason: str = ""
    wall_s: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class Sink:
    """One output of a run. The pipeline calls :meth:`open` once before the first frame, :meth:`write`
    with every record, and :meth:`close` once on every way out of the run (end, stop, failure), in
    the order of its list. ``name`` says which output it is in logs; ``paths`` are the files it
    writes (kind -> path) for the summary. A sink only reads the record, except for adding the time
    it spends drawing or writing the frame to ``record.timings_ms`` (:class:`realtime.record.timed`).
    """

    name = "sink"
    paths: dict[str, Path] = {}

    def open(self, run: RunInfo) -> None:
        """Get ready for ``run`` (create the file...); an error here stops the run before its first frame."""

    def write(self, record: FrameRecord) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finalise (flush, close the container, write the file)."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Callback(Sink):
    """Calls ``fn(record)`` for every record (a progress bar, a test, mn-bench's per-frame samples)."""

    name = "callback"

    def __init__(self, fn: Callable[[FrameRecord], Any]) -> None:
        self.fn = fn

    def write(self, record: FrameRecord) -> None:
        self.fn(record)
