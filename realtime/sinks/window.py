"""The live window (OpenCV HighGUI): shows the overlay at the frame's size; keys q/Esc quit, space pause
and resume, b baseline now, r find the image area again (``--roi auto``), s snapshot PNG. Closing the
window (its close button, or the window destroyed) is a quit: the run finalises every file and exits 0.

:class:`LiveWindow` is the HighGUI window itself (any object with OpenCV's ``namedWindow``, ``imshow``,
``waitKey``, ``getWindowProperty``... may stand in for ``cv2``); :class:`WindowSink` is what a person
does with it: every key works whether the run goes on or is paused, each action is logged and shown
for a moment in a banner over the picture (the window only: the overlay video does not show them),
and pauses, baselines and snapshots go into the run's events (:class:`~realtime.sinks.base.RunControl`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from realtime.record import FrameRecord, timed
from realtime.sinks.base import RunControl, RunInfo, Sink
from realtime.sinks.overlay import OverlayRenderer, put_text, text_scale, text_width

log = logging.getLogger(__name__)

KEY_ACTIONS = {ord("q"): "quit", 27: "quit", ord(" "): "pause", ord("b"): "baseline", ord("r"): "roi",
               ord("s"): "snapshot"}
#: How long a banner stays up, seconds.
BANNER_S = 2.5
#: How often the keys are read while paused, ms.
PAUSED_POLL_MS = 50


def display_available() -> bool:
    """Whether a window can be opened (an X11/Wayland display on Linux; assumed elsewhere). An X display
    that is named (``DISPLAY``) but cannot be reached is none (logged): HighGUI's Qt would abort the
    process on it. One that answers keeps the connection open (:func:`x_display_reachable`). Then a
    window is opened and closed in a child process (:func:`highgui_opens`): where that fails (Qt's
    platform plugin or a library it needs missing, an OpenCV built without a GUI), there is none either
    (logged, with the reason)."""
    if not sys.platform.startswith("linux"):
        return True
    wayland = os.environ.get("WAYLAND_DISPLAY")
    display = wayland or os.environ.get("DISPLAY")
    if not display:
        return False
    if not wayland and not x_display_reachable(display):
        log.warning("the display %s cannot be opened (DISPLAY is set, but no X server answers there)", display)
        return False
    why = highgui_opens()
    if why is not None:
        log.warning("a window cannot be opened on the display %s: %s (QT_DEBUG_PLUGINS=1 shows what Qt misses; "
                    "--headless skips the window and this check)", display, why)
        return False
    return True


#: What :func:`highgui_opens` runs in a child process: open a HighGUI window, let it draw, close it.
HIGHGUI_CHECK = ("import cv2; cv2.namedWindow('mn-seg display check', cv2.WINDOW_NORMAL); cv2.waitKey(1); "
                 "cv2.destroyAllWindows(); cv2.waitKey(1)")
#: How long the child of :func:`highgui_opens` may take, seconds.
HIGHGUI_CHECK_TIMEOUT_S = 30.0


def highgui_opens(timeout_s: float = HIGHGUI_CHECK_TIMEOUT_S, python: str | None = None) -> str | None:
    """``None`` when a HighGUI window opens and closes in a child process; else why not, in one line.

    Qt, behind OpenCV's HighGUI, aborts the whole process when it cannot start (its platform plugin or a
    library the plugin needs missing, a display it cannot use): asked in a child first, the run can go on
    without a window instead of dying with what it measured."""
    import subprocess

    try:
        done = subprocess.run([python or sys.executable, "-c", HIGHGUI_CHECK], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"opening a window did not finish within {timeout_s:g} s"
    except OSError as e:
        return f"could not start {python or sys.executable} to try opening a window: {e}"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in (done.stderr or "").splitlines() if line.strip()]
    told = next((line for line in lines if "plugin" in line.lower()), lines[-1] if lines else "")
    how = f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
    return f"{told} ({how})" if told else how


#: X connections opened by :func:`x_display_reachable`, kept open for the rest of the process.
_held_x_connections: list[tuple[Any, int]] = []


def x_display_reachable(display: str, attempts: int = 5, wait_s: float = 0.1) -> bool:
    """Whether the X server of ``display`` accepts a connection (``True`` when libX11 is not there to ask).

    The connection that answered is kept open for the rest of the process (:func:`release_x_connections`
    closes it): an X server that resets when its last client leaves (Xvfb's default, without
    ``-noreset``) would otherwise reset just as HighGUI's Qt connects, and Qt aborts the process when its
    connection fails. A server in the middle of such a reset (another client just left) refuses
    connections for a moment, so a refusal is tried again, ``attempts`` times in all, ``wait_s`` apart."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("X11")
    if name is None:
        return True
    x = ctypes.cdll.LoadLibrary(name)
    x.XOpenDisplay.restype, x.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    for attempt in range(attempts):
        if attempt:
            time.sleep(wait_s)
        d = x.XOpenDisplay(display.encode())
        if d:
            _held_x_connections.append((x, d))
            return True
    return False


def release_x_connections() -> None:
    """Close the connections :func:`x_display_reachable` kept open (only while their servers still run:
    Xlib ends the process when a connection it closes is already broken)."""
    while _held_x_connections:
        x, d = _held_x_connections.pop()
        x.XCloseDisplay(d)


class LiveWindow:
    """A HighGUI window that opens at the size of the first frame shown (or ``size``, ``(W, H)``) and
    keeps it: a resizable window (``WINDOW_NORMAL``, aspect ratio kept, no toolbar) sized once, so the
    picture is shown pixel for pixel unless the person resizes it.

    :meth:`show` and :meth:`poll` return the action of a key pressed (:data:`KEY_ACTIONS`), or
    ``"closed"`` once the window is gone (closed by the window manager or destroyed:
    ``getWindowProperty(WND_PROP_VISIBLE) < 1``, or an error asking for it); a closed window is never
    shown again (``imshow`` would open a new one). ``gui``: the HighGUI module, ``cv2`` by default.
    """

    def __init__(self, title: str = "mn-seg", snapshot_dir: str | os.PathLike = ".",
                 size: tuple[int, int] | None = None, gui: Any = None) -> None:
        if gui is None:
            import cv2 as gui
        self._gui = gui
        self.title = title
        self.snapshot_dir = Path(snapshot_dir)
        self.size = size
        self.snapshots = 0
        self.closed = False
        self._sized = False
        flags = gui.WINDOW_NORMAL | getattr(gui, "WINDOW_KEEPRATIO", 0) | getattr(gui, "WINDOW_GUI_NORMAL", 0)
        gui.namedWindow(title, flags)

    def show(self, bgr: np.ndarray, wait_ms: int = 1) -> str | None:
        """Show ``bgr`` (the first time: size the window) and read the keys for ``wait_ms``."""
        if self.closed or (self._sized and not self.is_open()):
            self.closed = True
            return "closed"
        self._gui.imshow(self.title, bgr)
        if not self._sized:
            w, h = self.size or (bgr.shape[1], bgr.shape[0])
            self._gui.resizeWindow(self.title, int(w), int(h))
            self._sized = True
            log.info("window %r opened at %dx%d", self.title, w, h)
        return self.poll(wait_ms)

    def poll(self, wait_ms: int = 1) -> str | None:
        """The action of a key pressed within ``wait_ms`` (``None``: none), ``"closed"`` when the window is gone."""
        if self.closed:
            return "closed"
        key = self._gui.waitKey(wait_ms)
        if not self.is_open():
            self.closed = True
            return "closed"
        return None if key is None or key < 0 else KEY_ACTIONS.get(key & 0xFF)

    def is_open(self) -> bool:
        """Whether the window is still there and shown."""
        try:
            return self._gui.getWindowProperty(self.title, self._gui.WND_PROP_VISIBLE) >= 1
        except Exception:  # Qt: "NULL guiReceiver" once the last window was closed
            return False

    def save(self, bgr: np.ndarray) -> Path:
        """Write ``bgr`` as the next free ``snapshot-NNNN.png`` of ``snapshot_dir``; :class:`OSError` if it cannot."""
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        while (path := self.snapshot_dir / f"snapshot-{self.snapshots:04d}.png").exists():
            self.snapshots += 1
        if not self._gui.imwrite(str(path), bgr):
            raise OSError(f"cannot write {path}")
        self.snapshots += 1
        return path

    def close(self) -> None:
        try:
            self._gui.destroyWindow(self.title)
            self._gui.waitKey(1)  # let the GUI take the window down now
        except Exception:  # the window may already be gone (closed by the user)
            pass


class WindowSink(Sink):
    """Shows each record's overlay (drawn by ``renderer``, shared with the video) in ``window`` and does
    what its keys ask, in every state of the run:

    * q / Esc, or closing the window: stop (every file is finalised, exit code 0);
    * space: pause (the loop holds after this frame, :meth:`RunControl.hold`; the window keeps the
      paused frame up with a PAUSED banner and reads the keys every 50 ms), space again: resume;
    * b: a new baseline from the next frames (a banner until it is set, then its value);
    * s: the picture on screen (the overlay without banners) as ``snapshot-NNNN.png``;
    * r: find the image area again (``--roi auto``).

    Each action is logged and shown for :data:`BANNER_S` seconds; pauses, baselines asked for and
    snapshots (with their files) are noted in the run's events. ``clock``: seconds (``time.monotonic``).
    """

    def __init__(self, window: LiveWindow, renderer: OverlayRenderer,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.renderer = renderer
        self.name = f"window {window.title}"
        self.control: RunControl | None = None
        self.clock = clock
        self.banners: list[tuple[str, float]] = []  # (text, until)
        self._shown: tuple[int, float, np.ndarray] | None = None  # frame, t_s, the overlay on screen
        self._baseline: Any = None
        self._collecting = False
        self._unit = "px"

    def open(self, run: RunInfo) -> None:
        self.control = run.control
        self.control.poll = self._poll_paused
        self.renderer.set_run(run)
        self._unit = "mm\u00b2" if run.calibrated else "px"

    # ------------------------------------------------------------------------------------ showing
    def write(self, record: FrameRecord) -> None:
        bgr = self.renderer.draw(record)
        self._shown = (record.frame, record.t_s, bgr)
        self._watch_baseline(record)
        with timed(record.timings_ms, "write"):
            action = self.window.show(self.with_banners(bgr))
        self.act(action)

    def _poll_paused(self) -> None:
        """While the run is paused: keep the paused frame up (with its banners) and do what the keys ask."""
        if self._shown is None:
            action = self.window.poll(PAUSED_POLL_MS)
        else:
            action = self.window.show(self.with_banners(self._shown[2]), wait_ms=PAUSED_POLL_MS)
        self.act(action)

    def banner(self, text: str) -> None:
        """Show ``text`` over the picture for :data:`BANNER_S` seconds."""
        self.banners = [b for b in self.banners if b[0] != text] + [(text, self.clock() + BANNER_S)]

    def current_banners(self) -> list[str]:
        """The lines shown over the picture now: PAUSED while paused, collecting the baseline, then the
        last actions' banners (newest last)."""
        now = self.clock()
        self.banners = [b for b in self.banners if b[1] > now]
        lines = []
        if self.control is not None and self.control.paused:
            lines.append("PAUSED: space resumes, q quits")
        if self._collecting:
            lines.append("collecting a new baseline...")
        return lines + [text for text, _ in self.banners]

    def with_banners(self, bgr: np.ndarray) -> np.ndarray:
        """``bgr`` with the current banners drawn in a box above the bottom third (a copy; ``bgr`` unchanged)."""
        lines = self.current_banners()
        if not lines:
            return bgr
        out = bgr.copy()
        h, w = out.shape[:2]
        k = text_scale(out)
        scale, lh = 0.55 * k, int(round(22 * k))
        box_w = min(w, max(text_width(s, scale) for s in lines) + int(16 * k))
        box_h = lh * len(lines) + int(8 * k)
        x0 = max(0, (w - box_w) // 2)
        y0 = max(0, int(h * 0.62) - box_h)
        sub = out[y0:y0 + box_h, x0:x0 + box_w]
        sub[:] = (sub * 0.25).astype(np.uint8)
        for i, text in enumerate(lines):
            put_text(out, text, (x0 + int(8 * k), y0 + int(18 * k) + i * lh), scale, (0, 235, 255))
        return out

    def _watch_baseline(self, record: FrameRecord) -> None:
        b = record.tracked.baseline
        if b is not None and b is not self._baseline:
            area = b.area_mm2 if self._unit != "px" and b.area_mm2 is not None else b.area_px
            self.banner(f"baseline set: {area:.{2 if self._unit != 'px' else 0}f} {self._unit} "
                        f"(frames {b.first_frame}-{b.last_frame})")
            self._collecting = False
        self._baseline = b

    # ------------------------------------------------------------------------------------ the keys
    def act(self, action: str | None) -> None:
        """Do what a key (or the window closing) asks; see the class docstring."""
        control = self.control
        if action is None or control is None:
            return
        frame, t_s = (self._shown[0], self._shown[1]) if self._shown is not None else (None, None)
        if action == "closed":
            log.info("the window was closed at frame %s: finishing the run", frame)
            control.stop("window closed")
        elif action == "quit":
            log.info("q pressed at frame %s: finishing the run", frame)
            control.stop("quit from the window")
        elif action == "pause":
            if control.paused:
                control.resume()
                self.banner("resumed")
            else:
                control.request_pause(frame, t_s)
        elif action == "baseline":
            log.info("b pressed at frame %s: a new baseline from the next frames", frame)
            control.baseline_now(frame, t_s)
            self._collecting = True
            self._baseline = None
        elif action == "roi":
            log.info("r pressed at frame %s: finding the image area again", frame)
            control.find_roi_again()
            control.note("roi_requested", frame=frame, t_s=t_s)
            self.banner("finding the image area again")
        elif action == "snapshot":
            self._snapshot(control, frame, t_s)

    def _snapshot(self, control: RunControl, frame: int | None, t_s: float | None) -> None:
        if self._shown is None:
            return
        try:
            path = self.window.save(self._shown[2])
        except OSError as exc:  # a snapshot that cannot be written does not stop the run
            log.error("snapshot at frame %s not saved: %s", frame, exc)
            self.banner("snapshot NOT saved (see the log)")
            return
        log.info("snapshot of frame %s saved: %s", frame, path)
        control.note("snapshot", frame=frame, t_s=t_s, file=str(path))
        self.banner(f"snapshot saved: {path.name}")

    def close(self) -> None:
        if self.control is not None and self.control.poll == self._poll_paused:
            self.control.poll = None
        self.window.close()
