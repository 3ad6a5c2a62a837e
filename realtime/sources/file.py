"""A video file (.mp4, .avi, .mov, ... anything PyAV opens), decoded with PyAV on a reader thread.

Two pacing modes:

* ``realtime=False`` (mn-segment): every frame, in order, as fast as the consumer takes them. The
  reader decodes ahead into a bounded queue (:class:`~realtime.sources.common.ClosableQueue`), so
  decoding overlaps the consumer's work without reading the whole file into memory.
* ``realtime=True`` (mn-live replaying a recording): the reader decodes at the stream's own pace
  (each frame is released at its timestamp) and keeps only the newest
  (:class:`~realtime.sources.common.LatestSlot`): frames the consumer was too slow for are dropped
  and counted in ``Frame.dropped_before``, exactly as with a live device.

``Frame.pts`` is the frame's timestamp in seconds (``frame.time``, i.e. ``pts * time_base``; the
decode index divided by the nominal rate when the container has none). Colour streams are
delivered as BGR uint8, grey streams as grey uint8, 9- to 16-bit grey streams as uint16.

A truncated or corrupt file is decoded as far as it goes: packets that fail to decode are skipped
and logged, a read error ends the stream; either way the iteration ends cleanly, ``source.error``
holds the message and ``source.failed`` is ``True``. A file whose container declares more frames
than could be decoded is reported the same way ("file ended after N of M frames").
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from realtime.frame import Frame
from realtime.sources.common import (
    ClosableQueue,
    LatestSlot,
    Pacer,
    Source,
    SourceError,
    SourceOptions,
    join_thread,
    register_source,
)
from train.errors import UserError

log = logging.getLogger(__name__)

QUEUE_FRAMES = 8
"""Frames the reader may decode ahead of the consumer in the every-frame mode."""
MAX_CONSECUTIVE_DECODE_ERRORS = 25
"""Packets in a row that fail to decode before the file is given up as corrupt."""

_GREY16 = {"gray9le", "gray9be", "gray10le", "gray10be", "gray12le", "gray12be", "gray14le", "gray14be",
           "gray16le", "gray16be"}


@dataclass
class _Decoded:
    index: int
    t_capture: float
    pts: float
    image: np.ndarray


def _ndarray_format(pix_fmt: str | None) -> str:
    """The PyAV ``to_ndarray`` format that keeps a stream's content: grey stays grey."""
    if pix_fmt in ("gray", "gray8", "y8"):
        return "gray"
    if pix_fmt in _GREY16:
        return "gray16le"
    return "bgr24"


@register_source("file")
class FileSource(Source):
    """Frames decoded from a video file; see the module docstring for pacing and errors."""

    claim_order = 90  # the fallback: anything that is not another kind is a path

    @classmethod
    def claims(cls, spec: str) -> bool:
        return True

    @classmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kind_options: Any) -> "FileSource":
        return cls(arg, spec=spec, options=options, **kind_options)

    def __init__(self, path: str | Path, *, spec: str | None = None, options: SourceOptions = SourceOptions(),
                 queue_frames: int = QUEUE_FRAMES) -> None:
        import av

        self.path = Path(path).expanduser()
        super().__init__(spec or str(path), options, name=str(self.path))
        if not self.path.exists():
            raise UserError(f"video file {self.path} does not exist (a source is a video file, a device such as "
                            f"/dev/video0 or 0, synthetic[:SEED], or animate:IMAGE[:MASK])")
        if self.path.is_dir():
            raise UserError(f"{self.path} is a directory; give one video file (.mp4, .avi, .mov)")
        if options.size is not None:
            log.warning("%s: a requested size applies to devices only; the file's own size is used", self.name)
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise SourceError(f"cannot open {self.path} as a video: {exc}") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        ctx = self._stream.codec_context
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps = float(rate) if rate else options.fps
        self.codec = ctx.name
        self.pix_fmt = getattr(ctx, "pix_fmt", None) or (self._stream.format.name if self._stream.format else None)
        self._ndarray_format = _ndarray_format(self.pix_fmt)
        self.frames_declared = int(self._stream.frames or 0)
        self.declared_size = (int(ctx.width), int(ctx.height)) if ctx.width and ctx.height else None
        self.duration_s = float(self._stream.duration * self._stream.time_base) if (
            self._stream.duration and self._stream.time_base) else None
        self.frames_decoded = 0
        self.decode_errors = 0
        self._queue_frames = queue_frames
        self._buffer: ClosableQueue[_Decoded] | LatestSlot[_Decoded] | None = None
        self._thread: threading.Thread | None = None
        self._decode_error: str | None = None
        log.debug("%s: %s %s %s, %s fps, %d frames declared", self.name, self.codec, self.pix_fmt,
                  self.declared_size, self.fps, self.frames_declared)

    # -- the reader thread

    def _put(self, item: _Decoded) -> bool:
        buf = self._buffer
        if isinstance(buf, LatestSlot):
            buf.put(item)
            return not self._stop.is_set()
        return buf.put(item) and not self._stop.is_set()  # type: ignore[union-attr]

    def _decode_loop(self) -> None:
        import av

        index = 0
        consecutive = 0
        pacer = Pacer(self._stop) if self.realtime else None
        pts0: float | None = None
        stopped = False  # by the consumer (close, frame limit), not by the file
        try:
            for packet in self._container.demux(self._stream):
                if self._stop.is_set():
                    stopped = True
                    break
                try:
                    decoded = packet.decode()
                    consecutive = 0
                except (av.error.FFmpegError, ValueError) as exc:
                    self.decode_errors += 1
                    consecutive += 1
                    msg = f"cannot decode a packet after frame {index}: {exc}"
                    if self._decode_error is None:
                        self._decode_error = msg
                    log.warning("%s: %s", self.name, msg)
                    if consecutive >= MAX_CONSECUTIVE_DECODE_ERRORS:
                        self._decode_error = (f"gave up after {consecutive} packets in a row failed to decode, "
                                              f"after frame {index}: {exc}")
                        break
                    continue
                for av_frame in decoded:
                    image = av_frame.to_ndarray(format=self._ndarray_format)
                    t = av_frame.time
                    pts = float(t) if t is not None else index / (self.fps or 1.0)
                    if pacer is not None:
                        if pts0 is None:
                            pts0 = pts
                            pacer.start()
                        elif not pacer.wait_until(pts - pts0):
                            stopped = True
                            break
                    if not self._put(_Decoded(index, time.monotonic(), pts, image)):
                        stopped = True
                        break
                    index += 1
                if stopped:
                    break
        except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
            self._decode_error = f"reading stopped after frame {index}: {type(exc).__name__}: {exc}"
            log.error("%s: %s", self.name, self._decode_error)
        except Exception as exc:  # never let the thread die silently
            self._decode_error = f"decoding failed after frame {index}: {type(exc).__name__}: {exc}"
            log.exception("%s: %s", self.name, self._decode_error)
        finally:
            self.frames_decoded = index
            if not stopped:
                # a file cut short often ends in a partial packet: its decode error alone would not say that
                # most of the file is missing, so the declared count comes first and the error after it
                if index == 0 and self._decode_error is None:
                    self._decode_error = "no frame could be decoded (empty, truncated or corrupt file)"
                elif self.frames_declared and 0 < index < self.frames_declared:
                    cause = f"; {self._decode_error}" if self._decode_error else ""
                    self._decode_error = (f"the file ended after {index} of the {self.frames_declared} frames its "
                                          f"header declares (truncated?){cause}")
            self._buffer.close()  # type: ignore[union-attr]

    # -- Source

    def _frames(self) -> Iterator[Frame]:
        self._buffer = LatestSlot() if self.realtime else ClosableQueue(self._queue_frames)
        self._thread = threading.Thread(target=self._decode_loop, name="mn-file-reader", daemon=True)
        self._thread.start()
        while True:
            if isinstance(self._buffer, LatestSlot):
                got = self._buffer.get()
                if got is None:
                    break
                item, dropped = got
            else:
                item = self._buffer.get()
                if item is None:
                    break
                dropped = 0
            yield Frame(item.index, item.t_capture, item.pts, item.image, dropped)
        join_thread(self._thread, 5.0, f"{self.name} reader thread")
        if self._decode_error and not self._stop.is_set():
            self.fail(f"{self._decode_error} ({self.frames_decoded} frames decoded)")

    def _release(self) -> None:
        buf = self._buffer
        if isinstance(buf, ClosableQueue):
            buf.close(drain=True)
        elif buf is not None:
            buf.close()
        join_thread(self._thread, 5.0, f"{self.name} reader thread")
        if self._thread is None or not self._thread.is_alive():
            try:
                self._container.close()
            except Exception as exc:  # pragma: no cover - closing a broken container
                log.debug("closing %s: %s", self.name, exc)

    def _describe_extra(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "frames_declared": self.frames_declared or None,
            "duration_s": self.duration_s,
            "frames_decoded": self.frames_decoded,
            "decode_errors": self.decode_errors,
        }
