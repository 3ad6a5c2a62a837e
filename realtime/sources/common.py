"""What every frame source shares: the :class:`Source` base class, its errors, the registry of
source kinds, the ROI / frame-format guard, the thread hand-off buffers and real-time pacing.

A concrete source implements :meth:`Source._frames` (a generator of native-size
:class:`~realtime.frame.Frame` objects) and, when it owns threads or handles, :meth:`Source._release`.
The base class applies the ROI crop and the frame-size check the same way for every source, keeps
the counters (``frames_delivered``, ``frames_dropped``) and the failure state (``error``,
``failed``), and makes every source a context manager.

How a source reports a failure (the choice documented here, relied on by the live loop):

* An input that cannot be used at all (a missing file, a device that does not open, a bad ROI)
  raises a :class:`~train.errors.UserError` subclass when the source is opened or at the first
  frame: exit code 2.
* A stream that stops part-way (a device that stops delivering and does not come back within
  ``reconnect_s``, a truncated or corrupt file) *ends the iteration cleanly*: the frames decoded so
  far are delivered, then ``source.failed`` is ``True`` and ``source.error`` holds the reason. The
  caller decides: :meth:`Source.raise_if_failed` raises :class:`SourceLost`, whose ``exit_code``
  is 3 (:data:`EXIT_SOURCE_LOST`), so ``run_cli`` maps it to exit code 3.
* A frame whose size differs from the first frame's raises :class:`SourceError` from the iterator
  (the pipeline's measurements would silently change scale otherwise).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generic, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from realtime.calibration import Calibration, describe_calibration
from realtime.frame import Frame
from train.errors import UserError

log = logging.getLogger(__name__)

EXIT_SOURCE_LOST = 3
"""Exit code of a command whose source failed mid-stream (see :class:`SourceLost`)."""
AUTO_ROI = "auto"
"""``--roi auto``: the ROI is the scanner's image area found in the first frame
(:func:`realtime.sources.screen_roi.find_image_area`)."""

T = TypeVar("T")


# --------------------------------------------------------------------------- errors


class SourceError(UserError):
    """A source that cannot be opened or read as asked (names the source and how to fix it)."""


class SourceLost(SourceError):
    """The source stopped delivering mid-stream and did not come back: exit code 3."""

    exit_code = EXIT_SOURCE_LOST


class RoiError(UserError):
    """A region of interest that does not fit the frames (the message gives the frame size)."""


# --------------------------------------------------------------------------- options and registry


@dataclass(frozen=True)
class SourceOptions:
    """The options :func:`realtime.sources.open_source` passes to every source kind.

    ``realtime``: live semantics (keep only the newest frame, pace at the native rate) rather than
    every frame as fast as possible. ``roi``: ``(x, y, w, h)`` crop in native pixels, or
    :data:`AUTO_ROI` (found in the first frame). ``fps``:
    requested rate (device) or generated rate (synthetic, animate). ``size``: requested
    ``(width, height)`` (device only). ``reconnect_s``: how long a device may be silent before the
    stream ends as failed. ``seed``: generated sources. ``frames``: stop after this many frames
    (``None``: the source's natural length).
    """

    realtime: bool = False
    roi: tuple[int, int, int, int] | str | None = None
    fps: float | None = None
    size: tuple[int, int] | None = None
    reconnect_s: float = 5.0
    seed: int | None = None
    frames: int | None = None


SOURCE_KINDS: dict[str, type["Source"]] = {}
"""kind name -> Source class; filled by :func:`register_source`."""


def register_source(kind: str) -> Callable[[type["Source"]], type["Source"]]:
    """Class decorator: make a :class:`Source` subclass available under ``kind``."""

    def deco(cls: type[Source]) -> type[Source]:
        if kind in SOURCE_KINDS and SOURCE_KINDS[kind] is not cls:
            raise ValueError(f"source kind {kind!r} is already registered by {SOURCE_KINDS[kind].__name__}")
        cls.kind = kind
        SOURCE_KINDS[kind] = cls
        return cls

    return deco


def source_class(kind: str) -> type["Source"]:
    """The class registered under ``kind``; a ``KeyError`` listing the valid kinds otherwise."""
    try:
        return SOURCE_KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown source kind {kind!r}; valid kinds: {', '.join(sorted(SOURCE_KINDS))}") from None


# --------------------------------------------------------------------------- ROI and frame format


_ROI_RE = re.compile(r"^\s*(-?\d+)\s*[, ]\s*(-?\d+)\s*[, ]\s*(-?\d+)\s*[, ]\s*(-?\d+)\s*$")


def parse_roi(text: str | Sequence[int] | None) -> tuple[int, int, int, int] | str | None:
    """``"x,y,w,h"`` (or a 4-sequence) -> ``(x, y, w, h)`` ints; ``"auto"`` -> :data:`AUTO_ROI`; ``None``
    stays ``None``.

    Only the form is checked here; whether it fits the frames is checked at the first frame.
    """
    if text is None:
        return None
    if isinstance(text, str) and text.strip().lower() == AUTO_ROI:
        return AUTO_ROI
    if isinstance(text, str):
        m = _ROI_RE.match(text)
        if not m:
            raise RoiError(f"ROI {text!r} is not of the form x,y,w,h (pixels, e.g. 40,30,520,400) or auto")
        values = tuple(int(g) for g in m.groups())
    else:
        try:
            values = tuple(int(v) for v in text)
        except (TypeError, ValueError):
            raise RoiError(f"ROI must be four integers (x, y, w, h), got {text!r}") from None
        if len(values) != 4:
            raise RoiError(f"ROI must be four integers (x, y, w, h), got {text!r}")
    x, y, w, h = values
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise RoiError(f"ROI x={x}, y={y}, w={w}, h={h}: x and y must be >= 0, w and h > 0")
    return values  # type: ignore[return-value]


def image_size(image: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of an image array."""
    return int(image.shape[1]), int(image.shape[0])


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Accept BGR, BGRA, grey (2-D or ``[H, W, 1]``), 8- or 16-bit as they are; squeeze a single
    channel axis. Anything that is not an image raises :class:`SourceError`."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        shape = getattr(image, "shape", None)
        raise SourceError(f"the source delivered something that is not an image (shape {shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


class FrameGuard:
    """Applies the ROI crop and checks that the frame size never changes, for every source alike.

    The ROI is validated against the first frame (:class:`RoiError` naming the frame size); a later
    frame of another native size raises :class:`SourceError` naming both sizes and the frame index.
    The truth mask, when there is one, is cropped with the image. With :data:`AUTO_ROI` the ROI is
    found in the first frame (:func:`realtime.sources.screen_roi.find_image_area`), and again in the
    next frame after :attr:`redetect` is set (the window's ``r``): a new area of the same size
    replaces the old one; one of another size is logged and not used (a run keeps one frame size).
    Every detection is kept in :attr:`detections`.
    """

    def __init__(self, roi: tuple[int, int, int, int] | str | None, source_name: str) -> None:
        self.auto = roi == AUTO_ROI
        self.roi: tuple[int, int, int, int] | None = None if self.auto else roi  # type: ignore[assignment]
        self.source_name = source_name
        self.native_size: tuple[int, int] | None = None
        self.detections: list[dict[str, Any]] = []
        self.redetect = False

    def detect(self, image: np.ndarray, index: int) -> None:
        """Find the image area in ``image`` (frame ``index``) and use it as the ROI (see the class docstring)."""
        from realtime.sources.screen_roi import find_image_area

        self.redetect = False
        area = find_image_area(image)
        entry = {"frame": int(index), **area.describe()}
        if self.roi is None:
            self.roi = area.roi
            entry["used"] = True
            log.info("%s: --roi auto: the image area is %s; check it once (summary.json source_info.roi_auto), or give "
                     "it with --roi %s", self.source_name, area.text(), ",".join(str(v) for v in area.roi))
        elif area.roi[2:] == self.roi[2:]:
            entry["used"] = True
            log.info("%s: image area found again at frame %d: %s", self.source_name, index, area.text())
            self.roi = area.roi
        else:
            entry["used"] = False
            log.warning("%s: image area found again at frame %d: %s, of another size than the %dx%d in use; a run "
                        "keeps one frame size, so it is not used: restart with --roi auto (or --roi %s)",
                        self.source_name, index, area.text(), self.roi[2], self.roi[3],
                        ",".join(str(v) for v in area.roi))
        self.detections.append(entry)

    def check_roi(self, size: tuple[int, int]) -> None:
        """Raise :class:`RoiError` if the ROI does not fit a frame of ``size`` (W, H)."""
        if self.roi is None:
            return
        x, y, w, h = self.roi
        fw, fh = size
        if x + w > fw or y + h > fh:
            raise RoiError(
                f"ROI x={x}, y={y}, w={w}, h={h} does not fit the {fw}x{fh} (width x height) frames of "
                f"{self.source_name}: it needs x+w <= {fw} and y+h <= {fh} (it has x+w = {x + w}, y+h = {y + h})")

    def __call__(self, frame: Frame) -> Frame:
        image = normalise_image(frame.image)
        size = image_size(image)
        if self.native_size is None:
            if self.auto:
                self.detect(image, frame.index)
            self.check_roi(size)
            self.native_size = size
        elif self.redetect and size == self.native_size:
            self.detect(image, frame.index)
        elif size != self.native_size:
            ow, oh = self.native_size
            raise SourceError(
                f"{self.source_name}: the frame size changed from {ow}x{oh} to {size[0]}x{size[1]} at frame "
                f"{frame.index}; a stream must keep one size (restart with the new size, or split the recording)")
        truth = frame.truth
        if self.roi is not None:
            x, y, w, h = self.roi
            image = np.ascontiguousarray(image[y:y + h, x:x + w])
            if truth is not None:
                truth = np.ascontiguousarray(truth[y:y + h, x:x + w])
        if image is not frame.image or truth is not frame.truth:
            frame = dataclasses.replace(frame, image=image, truth=truth)
        return frame


# --------------------------------------------------------------------------- thread hand-off


class LatestSlot(Generic[T]):
    """A one-item hand-off between a producer thread and a consumer that keeps only the newest.

    ``put`` replaces an item the consumer has not taken yet and counts it as dropped; ``get`` waits
    (on a condition, no polling) for an item or for ``close``, and returns the item with the number
    of items dropped since the previous ``get``. After ``close`` a pending item is still delivered,
    then ``get`` returns ``None``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has = False
        self._dropped = 0
        self._closed = False

    def put(self, item: T) -> None:
        with self._cond:
            if self._has:
                self._dropped += 1
            self._item, self._has = item, True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> tuple[T, int] | None:
        """The newest item and how many were dropped before it; ``None`` once closed and empty (or
        on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._has or self._closed, timeout)
            if not self._has:
                return None
            item, dropped = self._item, self._dropped
            self._item, self._has, self._dropped = None, False, 0
            return item, dropped  # type: ignore[return-value]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class ClosableQueue(Generic[T]):
    """A bounded FIFO between a producer thread and a consumer, closable from either side.

    ``put`` blocks while the queue is full (back-pressure: a file is never decoded far ahead of
    the pipeline) and returns ``False`` once the queue is closed; ``get`` blocks until an item is
    there and returns ``None`` once the queue is closed and drained. Waits use a condition.
    """

    def __init__(self, maxsize: int = 8) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self.maxsize or self._closed)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> T | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items) or self._closed)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self, drain: bool = False) -> None:
        """Close: producers stop; the consumer gets what is queued, then ``None``. ``drain=True``
        also discards what is queued (the consumer is gone)."""
        with self._cond:
            self._closed = True
            if drain:
                self._items.clear()
            self._cond.notify_all()


class Prefetcher(Generic[T]):
    """Iterates ``items`` on a thread into a :class:`ClosableQueue`, so producing them (decoding a
    generated frame) overlaps their consumption; an exception raised by ``items`` is re-raised by
    the consumer after the items before it. :meth:`close` stops the thread. (A video file's
    reader already decodes ahead this way; this is for any other iterable of frames.)"""

    def __init__(self, items: Iterable[T], maxsize: int = 8) -> None:
        self._queue: ClosableQueue[T] = ClosableQueue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(iter(items),), name="prefetch", daemon=True)
        self._thread.start()

    def _run(self, it: Iterator[T]) -> None:
        try:
            for item in it:
                if not self._queue.put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            self._queue.close()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is None:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._queue.close(drain=True)
        self._thread.join(timeout=5)


class Pacer:
    """Real-time pacing against the monotonic clock.

    ``start()`` fixes time zero; ``wait_until(t)`` sleeps until ``t`` seconds after it, on an
    :class:`threading.Event` so that ``close`` (setting the event) interrupts the wait at once.
    Returns ``False`` when interrupted. ``elapsed()`` is the time since ``start``.
    """

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self.t0: float | None = None

    def start(self, t0: float | None = None) -> float:
        self.t0 = time.monotonic() if t0 is None else t0
        return self.t0

    def elapsed(self) -> float:
        if self.t0 is None:
            self.start()
        return time.monotonic() - self.t0  # type: ignore[operator]

    def wait_until(self, t: float) -> bool:
        if self.t0 is None:
            self.start()
        delay = self.t0 + t - time.monotonic()  # type: ignore[operator]
        if delay > 0:
            return not self._stop.wait(delay)
        return not self._stop.is_set()


def retry_until(attempt: Callable[[], T | None], stop: threading.Event, within_s: float, interval_s: float
                ) -> tuple[T | None, int, float]:
    """Call ``attempt`` until it returns something, ``within_s`` seconds pass or ``stop`` is set, waiting
    ``interval_s`` between tries (a live source reconnecting). Returns ``(result or None, attempts, seconds)``."""
    t0 = time.monotonic()
    deadline = t0 + within_s
    attempts = 0
    while not stop.is_set():
        attempts += 1
        result = attempt()
        if result is not None:
            return result, attempts, time.monotonic() - t0
        remaining = deadline - time.monotonic()
        if remaining <= 0 or stop.wait(min(interval_s, remaining)):
            break
    return None, attempts, time.monotonic() - t0


def join_thread(thread: threading.Thread | None, timeout: float, what: str) -> None:
    """Join a worker thread, logging (not hanging) when it does not stop within ``timeout``."""
    if thread is None or thread is threading.current_thread():
        return
    thread.join(timeout)
    if thread.is_alive():
        log.warning("%s did not stop within %.1f s (it is a daemon thread and will not keep the process alive)",
                    what, timeout)


# --------------------------------------------------------------------------- the base class


class Source(abc.ABC):
    """A stream of :class:`~realtime.frame.Frame` objects; iterate it once, then ``close()`` it.

    Attributes: ``kind`` (registry name), ``spec`` (as given), ``name`` (for messages), ``fps``
    (nominal frames per second, ``None`` if unknown), ``frame_size`` (``(W, H)`` of the delivered
    images, after the ROI, once the first frame is known), ``native_size`` (before the ROI),
    ``frames_delivered``, ``frames_dropped`` (skipped by the live policy), ``error`` (``None`` or
    the reason the stream ended early), ``failed`` (``True`` when it ended because of a failure),
    ``calibration`` (the pixel spacing the source itself carries, e.g. an OpenIGTLink image's matrix
    or a DICOM object's ultrasound region, as a :class:`~realtime.calibration.Calibration` of the
    delivered frames; ``None`` when it has none; known at the latest once the first frame came).
    Use it as a context manager so threads and handles are released on every way out.
    """

    kind: ClassVar[str] = "?"
    #: whether the bare kind name (``synthetic``) is a complete spec
    bare_spec_ok: ClassVar[bool] = False
    #: order in which :meth:`claims` is asked for a spec without a ``KIND:`` prefix (lower first)
    claim_order: ClassVar[int] = 50

    @classmethod
    def claims(cls, spec: str) -> bool:
        """Whether a spec without a ``KIND:`` prefix names a source of this kind."""
        return False

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kind_options: Any) -> "Source":
        """Open a source of this kind from the spec's argument (the part after ``KIND:``)."""

    def __init__(self, spec: str, options: SourceOptions, name: str | None = None) -> None:
        self.spec = spec
        self.options = options
        self.name = name or spec
        self.roi = options.roi
        self.realtime = options.realtime
        self.fps: float | None = options.fps
        self.frame_size: tuple[int, int] | None = None
        self.native_size: tuple[int, int] | None = None
        self.frames_delivered = 0
        self.frames_dropped = 0
        self.error: str | None = None
        self.failed = False
        self.calibration: Calibration | None = None
        self._iterated = False
        self._closed = False
        self._stop = threading.Event()
        self._guard: FrameGuard | None = None

    def redetect_roi(self) -> bool:
        """With ``--roi auto``: find the image area again in the next frame (the window's ``r`` key).
        Returns ``False`` (and does nothing) when the ROI is not automatic."""
        guard = self._guard
        if guard is None or not guard.auto:
            log.info("%s: the image area is found again only with --roi auto", self.name)
            return False
        guard.redetect = True
        return True

    # -- to implement

    @abc.abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yield native frames (before the ROI) until the stream ends or ``self._stop`` is set."""

    def _release(self) -> None:
        """Stop threads and release handles (called once by :meth:`close`)."""

    def _describe_extra(self) -> dict[str, Any]:
        """Kind-specific entries for :meth:`describe`."""
        return {}

    # -- the shared behaviour

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise SourceError(f"{self.name} was already iterated; a source is a one-pass stream (open it again)")
        if self._closed:
            raise SourceError(f"{self.name} is closed")
        self._iterated = True
        return self._guarded()

    def _guarded(self) -> Iterator[Frame]:
        guard = self._guard = FrameGuard(self.roi, self.name)
        limit = self.options.frames
        if limit is not None and limit <= 0:
            return
        frames = self._frames()
        try:
            for frame in frames:
                frame = guard(frame)
                if guard.auto:
                    self.roi = guard.roi
                if self.native_size is None:
                    self.native_size = guard.native_size
                    self.frame_size = image_size(frame.image)
                self.frames_delivered += 1
                self.frames_dropped += frame.dropped_before
                yield frame
                if limit is not None and self.frames_delivered >= limit:
                    break
        except SourceError as exc:
            if not self.failed:
                self.fail(str(exc), log_level=logging.DEBUG)
            raise
        finally:
            frames.close()  # run the source generator's clean-up now, not at garbage collection

    def fail(self, reason: str, log_level: int = logging.ERROR) -> None:
        """Record that the stream ended (or will end) because of ``reason``."""
        self.failed = True
        self.error = reason
        log.log(log_level, "%s: %s", self.name, reason)

    def raise_if_failed(self) -> None:
        """Raise :class:`SourceLost` (exit code 3) if the stream ended because of a failure."""
        if self.failed:
            raise SourceLost(f"{self.name}: {self.error} ({self.frames_delivered} frames delivered)")

    def close(self) -> None:
        """Stop the source's threads and release its handles; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """A JSON-able description: kind, spec, name, fps, sizes, ROI, mode, counters, failure."""
        info: dict[str, Any] = {
            "kind": self.kind,
            "spec": self.spec,
            "name": self.name,
            "fps": None if self.fps is None else float(self.fps),
            "size": None if self.frame_size is None else list(self.frame_size),
            "native_size": None if self.native_size is None else list(self.native_size),
            "roi": list(self.roi) if isinstance(self.roi, tuple) else self.roi,
            "realtime": bool(self.realtime),
            "frames_delivered": self.frames_delivered,
            "frames_dropped": self.frames_dropped,
            "failed": self.failed,
            "error": self.error,
        }
        if self.calibration is not None:
            info["calibration"] = describe_calibration(self.calibration)
        if self._guard is not None and self._guard.auto:
            info["roi_auto"] = list(self._guard.detections)
        info.update(self._describe_extra())
        return info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} fps={self.fps} size={self.frame_size}>"


class GeneratedSource(Source):
    """A source that renders frame ``index`` on demand (``render(index) -> (image, truth)``).

    Live (``realtime``): paced at ``fps``, frames the consumer was too slow for are skipped and
    counted; otherwise every frame, as fast as the consumer takes them. ``length`` ``None`` is
    endless.
    """

    length: int | None = None

    @abc.abstractmethod
    def render(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The image and truth mask (or ``None``) of frame ``index``."""

    def _frames(self) -> Iterator[Frame]:
        if self.realtime:
            for index, dropped, _ in live_indices(self.fps, self._stop, Pacer(self._stop), end=self.length):
                image, truth = self.render(index)
                yield Frame(index, time.monotonic(), index / self.fps, image, dropped, truth)
        else:
            index = 0
            while (self.length is None or index < self.length) and not self._stop.is_set():
                image, truth = self.render(index)
                yield Frame(index, time.monotonic(), index / self.fps, image, 0, truth)
                index += 1


class ReceivingSource(Source, Generic[T]):
    """A live source fed by a background thread: a capture device's grabber, an OpenIGTLink receiver.

    The thread (:meth:`_receive`, started at the first frame asked for) puts each item it receives into a
    newest-frame :class:`LatestSlot` and closes the slot when it ends; the consumer (:meth:`_received`) takes the
    newest item with the number of items it was too slow for. When the connection is lost the thread calls
    :meth:`_reconnect`, which closes the handle and opens it again (:meth:`_open_handle`) every
    ``retry_interval_s`` for up to ``reconnect_s``; when that fails the stream ends cleanly with
    :meth:`_lost_text` as the failure. No item at all for ``stall_timeout_s`` (default ``reconnect_s + 10``: a
    read that never returns) ends it with :meth:`_stall_text`. The handle (``self._handle``, of type ``T``) is
    closed by :meth:`close` once the thread has stopped. A subclass implements the abstract methods below and
    :meth:`Source._frames` over :meth:`_received`.
    """

    #: the thread's name and what it is called in messages
    thread_name: ClassVar[str] = "mn-receiver"
    thread_role: ClassVar[str] = "receiver thread"
    #: what a successful :meth:`_reconnect` logs ("reopened", "reconnected")
    reopened: ClassVar[str] = "reopened"

    def _init_receiving(self, options: SourceOptions, retry_interval_s: float,
                        stall_timeout_s: float | None) -> None:
        """The receiving state; call from ``__init__`` after ``Source.__init__`` and before opening the handle."""
        self.realtime = True  # a device or a server is always live
        self.reconnect_s = options.reconnect_s
        self.retry_interval_s = retry_interval_s
        self.stall_timeout_s = stall_timeout_s if stall_timeout_s is not None else options.reconnect_s + 10.0
        self.reconnects = 0
        self._slot: LatestSlot[Any] = LatestSlot()
        self._thread: threading.Thread | None = None
        self._lost_reason: str | None = None
        self._handle: T | None = None

    # -- to implement

    @abc.abstractmethod
    def _receive(self) -> None:
        """The thread's body: receive from ``self._handle`` into ``self._slot`` until ``self._stop`` is set or the
        handle is lost for good; close the slot on every way out."""

    @abc.abstractmethod
    def _open_handle(self, first: bool) -> T | None:
        """Open the device or connection; the first time a failure raises :class:`SourceError`, later it returns
        ``None`` (and :meth:`_reconnect` tries again)."""

    @abc.abstractmethod
    def _close_handle(self, handle: T) -> None:
        """Release ``handle`` (it may raise: :meth:`_discard` is what calls it)."""

    @abc.abstractmethod
    def _lost_text(self, attempts: int) -> str:
        """The failure when the handle could not be reopened within ``reconnect_s`` (``attempts`` tries)."""

    @abc.abstractmethod
    def _stall_text(self) -> str:
        """The failure when nothing arrived for ``stall_timeout_s``."""

    # -- the shared behaviour

    def _discard(self, handle: T) -> None:
        """:meth:`_close_handle`, never raising: releasing a dead device or socket must not mask the real problem."""
        try:
            self._close_handle(handle)
        except Exception as exc:
            log.debug("%s: releasing %s failed: %s", self.name, type(handle).__name__, exc)

    def _reconnect(self, handle: T | None) -> T | None:
        """Close ``handle`` and open it again until it works or ``reconnect_s`` runs out (then ``None``, and the
        stream ends with :meth:`_lost_text` unless it is being stopped). Called from the thread."""
        if handle is not None:
            self._discard(handle)
        new, attempts, waited = retry_until(lambda: self._open_handle(first=False), self._stop, self.reconnect_s,
                                            self.retry_interval_s)
        if new is not None:
            self.reconnects += 1
            log.info("%s: %s after %.1f s (attempt %d)", self.name, self.reopened, waited, attempts)
        elif not self._stop.is_set():
            self._lost_reason = self._lost_text(attempts)
        self._handle = new
        return new

    def _received(self) -> Iterator[tuple[Any, int]]:
        """``(item, dropped_before)`` from the thread (started here), until the stream ends, fails or stops."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._receive, name=self.thread_name, daemon=True)
            self._thread.start()
        while not self._stop.is_set():
            got = self._slot.get(timeout=self.stall_timeout_s)
            if got is None:
                if self._stop.is_set():
                    return
                if self._lost_reason:
                    self.fail(self._lost_reason)
                elif not self._slot.closed:
                    self.fail(self._stall_text())
                    self._stop.set()
                return
            yield got

    def _release(self) -> None:
        """Stop the thread (waiting up to 2 s, or two reconnection pauses), then close the handle unless the
        thread still holds it."""
        self._slot.close()
        join_thread(self._thread, max(2.0, 2 * self.retry_interval_s), f"{self.name} {self.thread_role}")
        if self._thread is None or not self._thread.is_alive():
            handle, self._handle = self._handle, None
            if handle is not None:
                self._discard(handle)


def live_indices(fps: float, stop: threading.Event, pacer: Pacer, start: int = 0,
                 end: int | None = None) -> Iterator[tuple[int, int, float]]:
    """Indices of a generated stream played live at ``fps``.

    Yields ``(index, dropped_before, due_time_s)``: it sleeps until the next frame is due; when the
    consumer was slower than the frame period, it skips to the newest due frame and reports how
    many were skipped (the live policy of a device, without rendering the skipped frames).
    Stops when ``stop`` is set or ``end`` (exclusive) is reached.
    """
    period = 1.0 / fps
    pacer.start()
    last = start - 1
    while not stop.is_set():
        nxt = last + 1
        due_now = int(pacer.elapsed() / period) + start  # the newest frame that is due
        index = max(nxt, due_now)
        if end is not None:
            if nxt >= end:
                return
            index = min(index, end - 1)
        if not pacer.wait_until((index - start) * period):
            return
        yield index, index - nxt, (index - start) * period
        last = index
