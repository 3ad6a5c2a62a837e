"""The live window (OpenCV HighGUI): shows the overlay; keys q/Esc quit, space pause, b baseline
now, r find the image area again (``--roi auto``), s snapshot PNG. :class:`WindowSink` hands the keys to the run's
:class:`~realtime.sinks.base.RunControl`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np

from realtime.record import FrameRecord, timed
from realtime.sinks.base import RunControl, RunInfo, Sink
from realtime.sinks.overlay import OverlayRenderer, run_warning

log = logging.getLogger(__name__)

KEY_ACTIONS = {ord("q"): "quit", 27: "quit", ord(" "): "pause", ord("b"): "baseline", ord("r"): "roi",
               ord("s"): "snapshot"}


def display_available() -> bool:
    """Whether a window can be opened (an X11/Wayland display on Linux; assumed elsewhere)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class LiveWindow:
    """A HighGUI window. :meth:`show` returns the action of a key pressed since the last frame."""

    def __init__(self, title: str = "mn-seg", snapshot_dir: str | os.PathLike = ".") -> None:
        import cv2

        self._cv2 = cv2
        self.title = title
        self.snapshot_dir = Path(snapshot_dir)
        self.snapshots = 0
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, bgr: np.ndarray, wait_ms: int = 1) -> str | None:
        self._cv2.imshow(self.title, bgr)
        action = KEY_ACTIONS.get(self._cv2.waitKey(wait_ms) & 0xFF)
        if action == "snapshot":
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            path = self.snapshot_dir / f"snapshot-{self.snapshots:04d}.png"
            self._cv2.imwrite(str(path), bgr)
            self.snapshots += 1
            log.info("saved %s", path)
        return action

    def wait_key(self, wait_ms: int = 50) -> str | None:
        return KEY_ACTIONS.get(self._cv2.waitKey(wait_ms) & 0xFF)

    def close(self) -> None:
        try:
            self._cv2.destroyWindow(self.title)
        except Exception:  # the window may already be gone (closed by the user)
            pass


class WindowSink(Sink):
    """Shows each record's overlay (drawn by ``renderer``, shared with the video) in ``window`` and passes
    the key pressed to the run's control: stop, pause, baseline now (the window saves snapshots itself)."""

    def __init__(self, window: LiveWindow, renderer: OverlayRenderer) -> None:
        self.window = window
        self.renderer = renderer
        self.name = f"window {window.title}"
        self.control: RunControl | None = None

    def open(self, run: RunInfo) -> None:
        self.control = run.control
        self.renderer.warning = run_warning(run.metadata)

    def write(self, record: FrameRecord) -> None:
        bgr = self.renderer.draw(record)
        with timed(record.timings_ms, "write"):
            action = self.window.show(bgr)
        if action is not None and self.control is not None:
            self.control.key(action, lambda: self.window.wait_key(50))

    def close(self) -> None:
        self.window.close()
