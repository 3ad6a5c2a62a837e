"""The raw recording (``mn-live --record-raw PATH.mkv``): every processed input frame, lossless, so a run
can be analysed again (``mn-segment PATH.mkv``) on exactly the pixels it measured.

FFV1 (lossless, every frame a keyframe) in Matroska through PyAV, in the frame's own format: grey
stays grey (``gray``), 16-bit grey stays 16-bit (``gray16le``), BGR is stored as ``bgr0`` (the same
bytes with a padding byte). The frames are the ones the pipeline measured, after the ``--roi`` crop,
one per CSV row and in the same order: frame *k* of the file is the *k*-th row of measurements.csv,
with the row's ``t_s`` as its timestamp (milliseconds, Matroska's clock); the CSV's ``frame`` column
keeps the source's own numbers (with gaps where the live policy dropped frames). Decoded again
(:class:`~realtime.sources.file.FileSource` keeps grey as grey), the pixels are bit-exact, so the
measurements of a re-analysis with the same model and flags are the same.

Crash-safe as the overlay video is: Matroska written cluster by cluster (a cluster every second at
most, each handed to the OS as it is muxed), so a killed run leaves a file that plays and decodes
up to about the last second. Encoding runs on a writer thread behind a bounded queue
(:class:`~realtime.sinks.video.ThreadedWriter`); a full queue makes the loop wait rather than lose a
frame (the recording is every processed frame). An encoder or disk error stops the run with exit
code 5, naming the file (:class:`~realtime.pipeline.Pipeline`).
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from common.errors import UserError
from realtime.record import FrameRecord, timed
from realtime.sinks.base import RunInfo, Sink
from realtime.sinks.video import MATROSKA, AvWriter, ThreadedWriter

log = logging.getLogger(__name__)

#: The raw recording's container: Matroska only (FFV1 has no place in MP4).
RAW_SUFFIXES = (".mkv",)


def ffv1_formats(image: np.ndarray) -> tuple[str, str]:
    """``(PyAV ndarray format, FFV1 pixel format)`` that store ``image`` without loss.

    Raises:
        ValueError: a frame type the recording cannot keep exactly (the message says which).
    """
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] == 1):
        return "gray", "gray"
    if image.dtype == np.uint16 and (image.ndim == 2 or image.shape[2] == 1):
        return "gray16le", "gray16le"
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return "bgr24", "bgr0"
    raise ValueError(f"cannot record frames of {image.dtype} with shape {list(image.shape)} losslessly (grey 8/16-bit "
                     "or 8-bit BGR)")


class RawWriter(AvWriter):
    """Encodes frames to FFV1 in Matroska; the stream is made from the first frame (size and format),
    and a later frame of another size or format is an error (a run keeps one frame size)."""

    def __init__(self, path: str | os.PathLike, fps: float, metadata: dict[str, str] | None = None) -> None:
        super().__init__(path, fps, "the raw recording", format="matroska", options=dict(MATROSKA))
        for key, value in (metadata or {}).items():
            self._container.metadata[key] = value
        self._shape: tuple[int, ...] | None = None
        self._formats: tuple[str, str] | None = None
        self._last_pts = -1

    def write(self, item: tuple[np.ndarray, float]) -> None:
        import av

        image, t_s = item
        if self._stream is None:
            self._formats = ffv1_formats(image)
            self._shape = image.shape
            self._stream = self._container.add_stream("ffv1", rate=self.fps)
            self._stream.width, self._stream.height = int(image.shape[1]), int(image.shape[0])
            self._stream.pix_fmt = self._formats[1]
            self._stream.time_base = Fraction(1, 1000)
            # the encoder's clock in ms too: on its default 1/fps grid a frame's ms were rounded to it (two
            # frames 1 ms apart could share a timestamp)
            self._stream.codec_context.time_base = Fraction(1, 1000)
            # level 3: sliced, with a CRC per slice (a damaged slice is detected, not decoded as garbage)
            self._stream.options = {"level": "3", "slicecrc": "1", "g": "1"}
        elif image.shape != self._shape or ffv1_formats(image) != self._formats:
            raise ValueError(f"frame {self.frames}: {list(image.shape)} {image.dtype} after {list(self._shape)} "
                             "frames; a recording keeps one frame size and format")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image.reshape(image.shape[0], image.shape[1], -1)
                                                                if image.ndim == 3 else image),
                                           format=self._formats[0])
        # the frame's stream time in ms, strictly increasing (Matroska's clock)
        pts = max(int(round(t_s * 1000.0)), self._last_pts + 1)
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self._last_pts = pts
        self._mux(frame)

    def _log_closed(self) -> None:
        if self.frames:
            log.info("wrote %d raw frames to %s", self.frames, self.path)
        else:  # the container writes nothing before its first packet
            log.warning("no frame reached the raw recording: %s was not written", self.path)


class RawSink(Sink):
    """Every processed frame, lossless, to ``path`` (a .mkv); see the module docstring."""

    def __init__(self, path: str | os.PathLike, maxsize: int = 32) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in RAW_SUFFIXES:
            raise UserError(f"--record-raw {self.path}: the raw recording is FFV1 in Matroska, the file name must end "
                            "in .mkv")
        self.paths = {"raw": self.path}
        self.name = f"raw recording {self.path}"
        self.maxsize = maxsize
        self._writer: ThreadedWriter | None = None

    def open(self, run: RunInfo) -> None:
        meta = {"title": f"mn-seg raw recording of {run.metadata.get('source', '?')}",
                "comment": "every processed frame, lossless (FFV1); frame k is row k of the run's measurements.csv"}
        self._writer = ThreadedWriter(RawWriter(self.path, fps=run.fps, metadata=meta), maxsize=self.maxsize,
                                      name="raw-writer")

    def write(self, record: FrameRecord) -> None:
        if record.image is None:
            raise ValueError(f"frame {record.frame} has no image to record")
        with timed(record.timings_ms, "write"):
            # a copy: the writer thread encodes it later, and a source may reuse its buffers
            self._writer.put((record.image.copy(), record.t_s))

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
