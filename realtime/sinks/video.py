"""The overlay video: H.264 through PyAV, written on a thread behind a bounded queue
(:class:`VideoSink`; :class:`VideoWriter` and :class:`ThreadedWriter` are its parts).

Crash-safe: an .mp4 / .m4v / .mov is a *fragmented* MP4 (``movflags frag_keyframe+empty_moov+
default_base_moof``: the index is written up front and each fragment carries its own), with a keyframe
every second and each fragment handed to the OS as it is muxed (``flush_packets``), so a SIGKILL or a
power cut leaves a file that plays up to the last whole fragment (at most about a second plus the
frames still queued or inside the encoder are lost). An .mkv is Matroska, playable as written.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from realtime.record import FrameRecord, timed
from realtime.sinks.base import RunInfo, Sink
from realtime.sinks.overlay import OverlayRenderer

log = logging.getLogger(__name__)


#: Container options of the MP4 family: fragmented, index first, every packet handed to the OS. The
#: encoder makes no B-frames (``bf=0`` in :class:`VideoWriter`): a fragmented file has no edit list to
#: hide their reordering delay, which shifted every timestamp by two frames; without them fewer frames
#: wait inside the encoder too (more survive a crash), for a file a few per cent larger.
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
#: Matroska: a cluster (written whole) every second at most.
MATROSKA = {"cluster_time_limit": "1000", "flush_packets": "1"}
MP4_SUFFIXES = (".mp4", ".m4v", ".mov")


class AvWriter:
    """What the PyAV writers share: the container opened at ``path`` (``open_kwargs`` go to ``av.open``; a
    :class:`UserError` naming ``what`` and ``hint`` when it cannot be), frames encoded and muxed as they come
    (:meth:`_mux`), and :meth:`close` flushing the encoder and closing the file on every way out."""

    def __init__(self, path: str | os.PathLike, fps: float, what: str, hint: str = "", **open_kwargs: Any) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.frames = 0
        self._stream: Any = None
        try:
            self._container = av.open(str(self.path), mode="w", **open_kwargs)
        except av.error.FFmpegError as exc:
            raise UserError(f"cannot write {what} {self.path}: {exc}{hint}") from None

    def _mux(self, frame: Any) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def _log_closed(self) -> None:
        log.info("wrote %d frames to %s", self.frames, self.path)

    def close(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            finish_container(container, self._stream)
        finally:
            self._log_closed()


class VideoWriter(AvWriter):
    """Encode BGR frames to H.264 (libx264, yuv420p) at a constant frame rate: a fragmented MP4 for .mp4,
    .m4v and .mov, Matroska for .mkv (the module docstring says why).

    Odd frame sizes are padded by one pixel (yuv420p needs even sizes). A keyframe starts every
    ``keyframe_s`` seconds (and with it a fragment). :meth:`close` flushes the encoder and the last
    fragment; it is called on every way out of a run, but the file plays without it.
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 20, keyframe_s: float = 1.0) -> None:
        mp4 = Path(path).suffix.lower() in MP4_SUFFIXES
        super().__init__(path, fps, "video", " (the overlay video must be .mp4, .m4v, .mov or .mkv in a writable "
                         "folder)", options=dict(FRAGMENTED_MP4 if mp4 else MATROSKA))
        self._gop = max(1, round(float(self.fps) * keyframe_s))
        self._crf = crf
        self._size: tuple[int, int] | None = None

    def _open_stream(self, w: int, h: int) -> None:
        self._size = (w + w % 2, h + h % 2)
        self._stream = self._container.add_stream("libx264", rate=self.fps)
        self._stream.width, self._stream.height = self._size
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self._crf), "preset": "veryfast", "g": str(self._gop), "bf": "0"}

    def write(self, bgr: np.ndarray) -> None:
        import av

        h, w = bgr.shape[:2]
        if self._stream is None:
            self._open_stream(w, h)
        pw, ph = self._size
        if (w, h) != (pw, ph):
            bgr = np.pad(bgr, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        self._mux(av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24"))


def finish_container(container: Any, stream: Any) -> None:
    """Encode what ``stream`` (None: never opened) still holds into ``container`` and close it, even when
    encoding fails (the frames muxed so far stay readable)."""
    try:
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()


class ThreadedWriter:
    """Runs ``write(item)`` of a sink on its own thread behind a bounded queue.

    ``put`` blocks when the queue is full (back-pressure rather than unbounded memory), unless
    ``drop_when_full`` is set, in which case the item is counted in ``dropped`` and skipped (the
    live loop must never wait for the disk). ``close`` drains the queue and closes the sink; an
    exception in the sink is re-raised there.
    """

    _STOP = object()

    def __init__(self, sink, maxsize: int = 64, drop_when_full: bool = False, name: str = "writer") -> None:
        self.sink = sink
        self.drop_when_full = drop_when_full
        self.dropped = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self.error is None:
                try:
                    self.sink.write(item)
                except BaseException as exc:  # kept and re-raised on close; the queue keeps draining
                    self.error = exc
                    log.error("writer %s failed: %s", self._thread.name, exc)

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        if self.drop_when_full:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1
        else:
            self._queue.put(item)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        self.sink.close()
        if self.error is not None:
            raise self.error


class VideoSink(Sink):
    """The overlay video of a run at the source's frame rate (``fps`` overrides it): each record drawn by
    ``renderer`` (shared with the window: drawn once) and encoded on a writer thread. :meth:`close`
    drains the queue and finalises the file so it plays."""

    def __init__(self, path: str | os.PathLike, renderer: OverlayRenderer, fps: float | None = None,
                 maxsize: int = 32) -> None:
        self.path = Path(path)
        self.paths = {"video": self.path}
        self.name = f"overlay video {self.path}"
        self.renderer = renderer
        self.fps = fps
        self.maxsize = maxsize
        self._writer: ThreadedWriter | None = None

    def open(self, run: RunInfo) -> None:
        self.renderer.set_run(run)  # the random-weights warning, the scale bar
        self._writer = ThreadedWriter(VideoWriter(self.path, fps=self.fps or run.fps), maxsize=self.maxsize,
                                      name="video-writer")

    def write(self, record: FrameRecord) -> None:
        bgr = self.renderer.draw(record)
        with timed(record.timings_ms, "write"):
            self._writer.put(bgr)

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
