"""Each frame's nerve mask as a PNG (``mn-segment --masks``): ``FOLDER/NNNNNN.png``, 255 inside the
nerve, written only for frames where the nerve was measured."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from realtime.record import FrameRecord, timed
from realtime.sinks.base import RunInfo, Sink


class MaskSink(Sink):
    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.paths = {"masks": self.folder}
        self.name = f"masks {self.folder}"

    def open(self, run: RunInfo) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, record: FrameRecord) -> None:
        if record.mask is None:
            return
        with timed(record.timings_ms, "write"):
            path = self.folder / f"{record.frame:06d}.png"
            if not cv2.imwrite(str(path), record.mask.astype(np.uint8) * 255):
                raise OSError(f"cannot write {path}")
