"""Stand-ins the source tests share: a short video file, a list source, a fake OpenCV capture."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from realtime.frame import Frame
from realtime.sources import (
    Source,
    SourceOptions,
    parse_roi,
)


def write_video(path: Path, n: int = 24, fps: int = 24, size: tuple[int, int] = (96, 64), faststart: bool = True,
                codec: str = "libx264", pix_fmt: str = "yuv420p", fmt: str = "bgr24") -> Path:
    """A clip whose frame i is a flat grey of level 7 * i (so the order can be checked)."""
    import av

    w, h = size
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            s.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(n):
            level = (7 * i) % 256
            if fmt == "bgr24":
                img = np.full((h, w, 3), level, np.uint8)
            elif fmt == "gray":
                img = np.full((h, w), level, np.uint8)
            else:
                img = np.full((h, w), level * 257, np.uint16)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format=fmt)):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


class ListSource(Source):
    """A test source yielding given images (not registered)."""

    def __init__(self, images: list[np.ndarray], roi: Any = None) -> None:
        super().__init__("list", SourceOptions(roi=parse_roi(roi)), name="list source")
        self.images = images

    @classmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kw: Any) -> "ListSource":
        raise NotImplementedError

    def _frames(self) -> Iterator[Frame]:
        for i, img in enumerate(self.images):
            yield Frame(i, time.monotonic(), i / 24, img, 0, None)


class FakeCapture:
    """Stands in for cv2.VideoCapture: frame k is a uint16 image filled with k (its grab number)."""

    def __init__(self, period: float = 0.0, fail_after: int | None = None, opened: bool = True,
                 start: int = 0, make=None) -> None:
        self.period, self.fail_after, self.opened = period, fail_after, opened
        self.k, self.start = 0, start
        self.props: dict[int, float] = {}
        self.released = False
        self.make = make or (lambda k: np.full((6, 8), k, np.uint16))

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.period:
            time.sleep(self.period)  # the camera's frame interval
        if self.fail_after is not None and self.k >= self.fail_after:
            return False, None
        img = self.make(self.start + self.k)
        self.k += 1
        return True, img

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def release(self) -> None:
        self.released = True


class Factory:
    """Hands out the captures given, then closed ones; records the calls."""

    def __init__(self, *caps: FakeCapture) -> None:
        self.caps = list(caps)
        self.calls: list[Any] = []
        self.made: list[FakeCapture] = []

    def __call__(self, target: Any) -> FakeCapture:
        self.calls.append(target)
        cap = self.caps.pop(0) if self.caps else FakeCapture(opened=False)
        self.made.append(cap)
        return cap
