"""The one interface of every output: :class:`Sink` (``open(run)``, ``write(record)``, ``close()``), what a
sink is told about its run (:class:`RunInfo`), and what a person can do to a running pipeline
(:class:`RunControl`: stop, pause, baseline now, and the run's events; the window's keys and the signal
handlers call it).

A new output is a new :class:`Sink` subclass in its own module, added to the list the command line
assembles (:func:`realtime.outputs.output_sinks`); the loop does not change.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from realtime.record import FrameRecord

log = logging.getLogger(__name__)


class RunControl:
    """Stop, pause and re-baseline a running pipeline, and have an automatic ROI found again; safe to call
    from a signal handler or another thread. It also keeps the run's events (:meth:`note`: pauses,
    baselines asked for, snapshots), which the summary writes out.

    Pausing: :meth:`request_pause` (the window's space key) asks the loop to hold after the frame in
    flight; the loop then calls :meth:`hold`, which keeps calling ``poll`` (the window registers one
    that shows the paused frame and handles its keys, 50 ms at a time) until :meth:`resume`, or
    :meth:`stop`. The time held is not the run's: it is added up in ``paused_s`` (the summary's fps
    and ``--duration`` leave it out) and the loop marks the first frame after it
    (:attr:`realtime.record.FrameRecord.paused_s`, ``paused_before``).
    """

    def __init__(self, tracker: Any = None, source: Any = None) -> None:
        self.tracker = tracker
        self.source = source
        self.reason = ""
        self.events: list[dict[str, Any]] = []
        self.paused_s = 0.0
        self.poll: Callable[[], None] | None = None
        self.last_pause: dict[str, Any] | None = None  # the latest pause event
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._resumed = threading.Event()
        self._lock = threading.Lock()

    def stop(self, reason: str = "stopped by the user") -> None:
        """Finish the frame in flight, then finalise everything (also ends a pause)."""
        self.reason = reason
        self._stop.set()
        self._resumed.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def note(self, event: str, **fields: Any) -> dict[str, Any]:
        """Add ``{"event": event, **fields}`` to the run's events and return it (the caller may complete it)."""
        entry = {"event": event, **fields}
        with self._lock:
            self.events.append(entry)
        return entry

    def baseline_now(self, frame: int | None = None, t_s: float | None = None) -> None:
        """Take a new baseline from the next measured frames (:meth:`realtime.tracker.Tracker.set_baseline_now`);
        noted as a ``baseline_requested`` event at ``frame`` (the frame on screen)."""
        if self.tracker is not None:
            self.tracker.set_baseline_now()
        self.note("baseline_requested", frame=frame, t_s=t_s)

    def find_roi_again(self) -> None:
        """With ``--roi auto``, find the image area again in the next frame
        (:meth:`realtime.sources.Source.redetect_roi`)."""
        redetect = getattr(self.source, "redetect_roi", None)
        if redetect is not None:
            redetect()

    # ---------------------------------------------------------------------------------------- pause
    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def request_pause(self, frame: int | None = None, t_s: float | None = None) -> dict[str, Any] | None:
        """Hold the run after the frame in flight (``frame``: the one on screen); returns the ``pause`` event,
        which :meth:`hold` completes with ``duration_s`` and the loop with the frame it resumed at."""
        if self.paused or self.stopping:
            return None
        self._resumed.clear()
        self._paused.set()
        log.info("paused at frame %s: press space to resume, q to quit (s snapshot, b baseline still work)", frame)
        self.last_pause = self.note("pause", frame=frame, t_s=t_s)
        return self.last_pause

    def resume(self) -> None:
        """End a pause (the loop goes on with the source's newest frame)."""
        if self.paused:
            self._paused.clear()
            self._resumed.set()

    def hold(self) -> float:
        """While paused (called by the loop between frames): keep calling ``poll`` (or wait) until
        :meth:`resume` or :meth:`stop`; returns the seconds held, added to ``paused_s`` and to the
        pause event's ``duration_s``."""
        t0 = time.monotonic()
        while self.paused and not self.stopping:
            if self.poll is not None:
                self.poll()
            else:
                self._resumed.wait(0.05)
        held = time.monotonic() - t0
        self._paused.clear()
        self.paused_s += held
        pause = self.last_pause
        if pause is not None:
            pause["duration_s"] = round(held, 3)
            if self.stopping:
                pause["ended_run"] = True
        if not self.stopping:
            log.info("resumed after %.1f s paused", held)
        return held


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
