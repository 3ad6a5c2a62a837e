"""A live capture device (a frame grabber such as ``/dev/video0``) through OpenCV.

The device is opened with the V4L2 backend on Linux, a one-frame driver buffer
(``CAP_PROP_BUFFERSIZE`` 1; OpenCV's default of 4 V4L2 buffers adds about 100 ms of latency) and
the requested size and rate. A daemon grabber thread reads continuously and keeps only the newest
frame in a :class:`~realtime.sources.common.LatestSlot`; frames the consumer was too slow for are
counted and reported as ``Frame.dropped_before``.

A device that stops delivering is reopened for up to ``reconnect_s`` seconds; if it does not come
back the stream ends cleanly with ``source.failed`` set and ``source.error`` saying why (see
:mod:`realtime.sources.common`; ``raise_if_failed()`` gives exit code 3). The capture object comes
from an injectable factory, so the logic runs in tests without a camera.
"""

from __future__ import annotations

import glob
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from realtime.frame import Frame
from realtime.sources.common import ReceivingSource, SourceError, SourceOptions, register_source

log = logging.getLogger(__name__)

VIDEO_DEVICE_GLOB = "/dev/video*"
RETRY_INTERVAL_S = 0.5
"""Pause between two attempts to reopen a device that stopped delivering."""

_DEV_RE = re.compile(r"^/dev/video\d+$")


class CaptureLike(Protocol):
    """What the device source needs of a capture object (``cv2.VideoCapture`` or a test fake)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's names

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def set(self, prop: int, value: float) -> bool: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[Any], CaptureLike]
"""``factory(target) -> capture``; ``target`` is an int index or a device path."""


def opencv_capture(target: int | str) -> CaptureLike:
    """Open ``target`` with OpenCV: V4L2 on Linux, the default backend elsewhere."""
    import cv2

    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    # OpenCV prints its own warnings on stderr for a device it cannot open; our error says it better
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    return cv2.VideoCapture(target, api)


def list_video_devices() -> list[str]:
    """The ``/dev/video*`` nodes present, sorted by number."""
    def key(p: str) -> tuple[int, str]:
        m = re.search(r"(\d+)$", p)
        return (int(m.group(1)) if m else 1 << 30, p)

    return sorted(glob.glob(VIDEO_DEVICE_GLOB), key=key)


def _present_text() -> str:
    present = list_video_devices()
    return "present: " + ", ".join(present) if present else f"no {VIDEO_DEVICE_GLOB} device is present"


@dataclass
class _Grabbed:
    index: int
    t_capture: float
    image: np.ndarray


@register_source("device")
class DeviceSource(ReceivingSource[CaptureLike]):
    """Frames from a capture device, newest-frame policy, reconnect on loss.

    ``target``: an integer index or a device path. ``capture_factory``: how a capture object is
    made (default :func:`opencv_capture`); tests inject a fake. ``retry_interval_s``: pause between
    reopen attempts. ``stall_timeout_s``: how long the consumer waits for any frame before it
    declares the device hung (default ``reconnect_s + 10``; covers a ``read()`` that never returns).
    """

    claim_order = 10
    thread_name = "mn-device-grabber"
    thread_role = "grabber thread"

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec.isdigit() or bool(_DEV_RE.match(spec))

    @classmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kind_options: Any) -> "DeviceSource":
        arg = arg.strip()
        if arg.isdigit():
            target: int | str = int(arg)
        elif arg:
            target = arg
        else:
            raise SourceError("device: needs an index or a path, e.g. device:0 or /dev/video0")
        return cls(target, spec=spec, options=options, **kind_options)

    def __init__(self, target: int | str, *, spec: str | None = None, options: SourceOptions = SourceOptions(True),
                 capture_factory: CaptureFactory | None = None, retry_interval_s: float = RETRY_INTERVAL_S,
                 stall_timeout_s: float | None = None) -> None:
        name = f"/dev/video{target}" if isinstance(target, int) and sys.platform.startswith("linux") else str(target)
        super().__init__(spec or str(target), options, name=f"video device {name}")
        self._init_receiving(options, retry_interval_s, stall_timeout_s)
        self.target = target
        self.device_path = name
        self._factory: CaptureFactory = capture_factory or opencv_capture
        self.requested_fps = options.fps
        self.requested_size = options.size
        self.reported_fps: float | None = None
        self.reported_size: tuple[int, int] | None = None
        self._handle = self._open_handle(first=True)

    # -- opening

    def _open_handle(self, first: bool) -> CaptureLike | None:
        """Open and configure the capture; on the first open a failure raises, later it returns None."""
        try:
            cap = self._factory(self.target)
        except Exception as exc:  # a factory that raises is a device that does not open
            cap, why = None, f"{type(exc).__name__}: {exc}"
        else:
            why = ""
        if cap is None or not cap.isOpened():
            if cap is not None:
                self._discard(cap)
            if first:
                exists = self.device_path in list_video_devices()
                what = ("is busy (another program is using it), is not a video capture device, or cannot be read "
                        "(check permissions: the 'video' group)" if exists else "does not exist")
                raise SourceError(f"cannot open {self.name}: it {what}{'; ' + why if why else ''}; "
                                  f"{_present_text()}")
            return None
        self._configure(cap)
        return cap

    def _configure(self, cap: CaptureLike) -> None:
        import cv2

        def put(prop: int | None, value: float, what: str) -> None:
            if prop is None:
                return
            try:
                if not cap.set(prop, value):
                    log.debug("%s: the driver did not accept %s = %s", self.name, what, value)
            except Exception as exc:  # a fake or an odd backend
                log.debug("%s: setting %s failed: %s", self.name, what, exc)

        put(cv2.CAP_PROP_BUFFERSIZE, 1, "buffer size")
        if self.requested_size is not None:
            put(cv2.CAP_PROP_FRAME_WIDTH, self.requested_size[0], "width")
            put(cv2.CAP_PROP_FRAME_HEIGHT, self.requested_size[1], "height")
        if self.requested_fps is not None:
            put(cv2.CAP_PROP_FPS, self.requested_fps, "fps")
        timeout_prop = getattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC", None)
        put(timeout_prop, max(1000.0, self.reconnect_s * 1000.0), "read timeout")
        get = getattr(cap, "get", None)
        if callable(get):
            try:
                fps = float(get(cv2.CAP_PROP_FPS))
                w, h = int(get(cv2.CAP_PROP_FRAME_WIDTH)), int(get(cv2.CAP_PROP_FRAME_HEIGHT))
            except Exception:
                fps, w, h = 0.0, 0, 0
            self.reported_fps = fps if fps > 0 else None
            self.reported_size = (w, h) if w > 0 and h > 0 else None
        if self.reported_size and self.requested_size and self.reported_size != tuple(self.requested_size):
            log.warning("%s: asked for %dx%d, the driver gives %dx%d", self.name, *self.requested_size,
                        *self.reported_size)
        if self.reported_fps and self.requested_fps and abs(self.reported_fps - self.requested_fps) > 0.5:
            log.warning("%s: asked for %g fps, the driver reports %g", self.name, self.requested_fps, self.reported_fps)
        self.fps = self.reported_fps or self.requested_fps

    # -- the grabber thread

    def _receive(self) -> None:
        cap = self._handle
        index = 0
        try:
            while not self._stop.is_set() and cap is not None:
                try:
                    ok, image = cap.read()
                except Exception as exc:
                    ok, image = False, None
                    log.warning("%s: read raised %s: %s", self.name, type(exc).__name__, exc)
                t = time.monotonic()
                if ok and image is not None and getattr(image, "size", 0):
                    self._slot.put(_Grabbed(index, t, image))
                    index += 1
                    continue
                if self._stop.is_set():
                    break
                log.warning("%s: read failed after %d frames; reopening it for up to %.1f s",
                            self.name, index, self.reconnect_s)
                cap = self._reconnect(cap)
        finally:
            self._slot.close()

    def _close_handle(self, handle: CaptureLike) -> None:
        handle.release()

    def _lost_text(self, attempts: int) -> str:
        return (f"the device stopped delivering frames and could not be reopened within {self.reconnect_s:g} s "
                f"({attempts} attempts); {_present_text()}")

    def _stall_text(self) -> str:
        return f"no frame for {self.stall_timeout_s:g} s: the device is not responding"

    # -- Source

    def _frames(self) -> Iterator[Frame]:
        t_first: float | None = None
        for item, dropped in self._received():
            if t_first is None:
                t_first = item.t_capture
            yield Frame(item.index, item.t_capture, item.t_capture - t_first, item.image, dropped)

    def _describe_extra(self) -> dict[str, Any]:
        return {
            "device": self.device_path,
            "requested_fps": self.requested_fps,
            "requested_size": None if self.requested_size is None else list(self.requested_size),
            "reported_fps": self.reported_fps,
            "reported_size": None if self.reported_size is None else list(self.reported_size),
            "reconnect_s": self.reconnect_s,
            "reconnects": self.reconnects,
        }

