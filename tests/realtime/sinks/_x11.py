"""A virtual X display for the window tests: Xvfb, and what a person does to a window on it (xdotool for
keys, Xlib through ctypes for a window manager's close and for a screenshot). No window manager runs:
the close is the ``WM_DELETE_WINDOW`` message a window manager sends when its close button is pressed."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np


def missing() -> str | None:
    """Why the real HighGUI cannot be tested here (``None``: it can)."""
    for tool, package in (("Xvfb", "xvfb"), ("xdotool", "xdotool")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install {package})"
    if ctypes.util.find_library("X11") is None:
        return "libX11 is not installed"
    import cv2

    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    if not gui or gui[0].split(":", 1)[1].strip() in ("", "NONE"):
        return "this OpenCV has no GUI backend (opencv-python-headless)"
    return None


@contextmanager
def xvfb(size: str = "1280x1024x24") -> Iterator[str]:
    """A fresh Xvfb for the block; yields its DISPLAY (``:N``)."""
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", size, "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        number = b""
        while not number.endswith(b"\n"):
            chunk = os.read(read, 16)
            if not chunk:
                raise RuntimeError("Xvfb did not start")
            number += chunk
        yield f":{int(number)}"
    finally:
        os.close(read)
        proc.terminate()
        proc.wait(timeout=10)


def find_window(display: str, name: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None,
                log_path: Path | None = None) -> int:
    """The id of the window called ``name`` on ``display``, once it is there (then :func:`manage`-d); fails
    at once, with the process's stderr (``log_path``), when ``proc`` (the program that should open it) has
    exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = log_path.read_text() if log_path is not None and log_path.exists() else ""
            raise RuntimeError(f"the program exited with {proc.returncode} before its window {name!r} appeared:\n{err}")
        out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name], capture_output=True, text=True,
                             env={**os.environ, "DISPLAY": display}).stdout.split()
        if out:
            window = int(out[-1])
            manage(display, window)
            return window
        time.sleep(0.25)
    raise TimeoutError(f"no window {name!r} on {display}")


def manage(display: str, window: int) -> None:
    """Unmap and map ``window`` again, as a window manager does when it takes a new window in. Without it,
    Qt's HighGUI window on this display with no window manager stayed black for good in 4 to 8 of 12 runs
    of a bare window (and in about 1 in 4 runs of mn-live's test, whose screenshot then never matched):
    Qt had missed the window's first expose. Exposed again, it draws (0 of 12 black)."""
    env = {**os.environ, "DISPLAY": display}
    for action in ("windowunmap", "windowmap"):
        subprocess.run(["xdotool", action, "--sync", str(window)], check=True, capture_output=True, env=env)


def key(display: str, window: int, name: str) -> None:
    """Press and release key ``name`` (xdotool's names: space, s, b, q, Escape) in ``window``."""
    subprocess.run(["xdotool", "key", "--window", str(window), name], check=True, capture_output=True,
                   env={**os.environ, "DISPLAY": display})


def geometry(display: str, window: int) -> tuple[int, int]:
    """The window's ``(width, height)``."""
    out = subprocess.run(["xdotool", "getwindowgeometry", str(window)], capture_output=True, text=True, check=True,
                         env={**os.environ, "DISPLAY": display}).stdout
    size = next(line for line in out.splitlines() if "Geometry:" in line).split(":")[1].strip()
    w, h = size.split("x")
    return int(w), int(h)


class _ClientMessage(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                ("format", ctypes.c_int), ("l", ctypes.c_long * 5)]


class _XEvent(ctypes.Union):
    _fields_ = [("xclient", _ClientMessage), ("pad", ctypes.c_long * 24)]


class _XImage(ctypes.Structure):
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.c_void_p), ("byte_order", ctypes.c_int),
                ("bitmap_unit", ctypes.c_int), ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int),
                ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int), ("bits_per_pixel", ctypes.c_int)]


@functools.lru_cache(maxsize=None)
def _xlib():  # type: ignore[no-untyped-def]
    x = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11"))
    x.XOpenDisplay.restype, x.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    x.XInternAtom.restype, x.XInternAtom.argtypes = ctypes.c_ulong, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.POINTER(_XEvent)]
    x.XGetImage.restype = ctypes.POINTER(_XImage)
    x.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                            ctypes.c_ulong, ctypes.c_int]
    x.XFlush.argtypes = x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    return x


@contextmanager
def _connection(display: str) -> Iterator[tuple]:
    x = _xlib()
    d = x.XOpenDisplay(display.encode())
    if not d:
        raise RuntimeError(f"cannot open display {display}")
    try:
        yield x, d
    finally:
        x.XCloseDisplay(d)


def connects(display: str) -> bool:
    """Whether one new client connects to ``display`` (the connection is closed again at once)."""
    x = _xlib()
    d = x.XOpenDisplay(display.encode())
    if d:
        x.XCloseDisplay(d)
    return bool(d)


def wm_close(display: str, window: int) -> None:
    """What a window manager does when the window's close button is pressed: ``WM_DELETE_WINDOW``."""
    with _connection(display) as (x, d):
        ev = _XEvent()
        ev.xclient.type = 33  # ClientMessage
        ev.xclient.window = window
        ev.xclient.message_type = x.XInternAtom(d, b"WM_PROTOCOLS", 0)
        ev.xclient.format = 32
        ev.xclient.l[0] = x.XInternAtom(d, b"WM_DELETE_WINDOW", 0)
        x.XSendEvent(d, window, 0, 0, ctypes.byref(ev))
        x.XFlush(d)


def screenshot(display: str, window: int) -> np.ndarray:
    """What the window shows, as BGR (24-bit TrueColor display)."""
    w, h = geometry(display, window)
    with _connection(display) as (x, d):
        img = x.XGetImage(d, window, 0, 0, w, h, ~0 & 0xFFFFFFFF, 2)  # AllPlanes, ZPixmap
        if not img:
            raise RuntimeError("XGetImage failed")
        im = img.contents
        raw = ctypes.string_at(im.data, im.bytes_per_line * im.height)
        rows = np.frombuffer(raw, np.uint8).reshape(im.height, im.bytes_per_line)
        return rows[:, :im.width * 4].reshape(im.height, im.width, 4)[..., :3].copy()
