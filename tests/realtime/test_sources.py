"""Frame sources: spec parsing and registry, the file source (count, timestamps, truncation,
real-time replay), the device source with a fake capture (newest frame, drops, reconnect, errors),
and the shared ROI / format / size guard."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest

from realtime.frame import Frame
from realtime.sources import (
    SOURCE_KINDS,
    RoiError,
    Source,
    SourceError,
    SourceLost,
    SourceOptions,
    open_source,
    parse_roi,
    parse_spec,
    source_class,
)
from realtime.sources import device as device_mod
from realtime.sources.common import ClosableQueue, LatestSlot
from train.errors import UserError

# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- spec and registry


@pytest.mark.parametrize("spec,kind,arg", [
    ("synthetic", "synthetic", ""),
    ("synthetic:7", "synthetic", "7"),
    ("animate:a.png", "animate", "a.png"),
    ("animate:a.png:b.png", "animate", "a.png:b.png"),
    ("0", "device", "0"),
    (3, "device", "3"),
    ("/dev/video2", "device", "/dev/video2"),
    ("device:1", "device", "1"),
    ("clip.mp4", "file", "clip.mp4"),
    ("dir/synthetic.mp4", "file", "dir/synthetic.mp4"),
    ("file:synthetic", "file", "synthetic"),
])
def test_parse_spec(spec: Any, kind: str, arg: str) -> None:
    assert parse_spec(spec) == (kind, arg)


def test_registry_lists_kinds() -> None:
    assert {"device", "file", "synthetic", "animate"} <= set(SOURCE_KINDS)
    with pytest.raises(KeyError, match="animate, device, file, synthetic"):
        source_class("webcam")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.mp4 does not exist"):
        open_source(str(tmp_path / "nope.mp4"), realtime=False)
    with pytest.raises(UserError, match="is a directory"):
        open_source(str(tmp_path), realtime=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match="cannot open .*bad.mp4"):
        open_source(str(bad), realtime=False)


def test_bad_options() -> None:
    with pytest.raises(UserError, match="fps"):
        open_source("synthetic", realtime=False, fps=0)
    with pytest.raises(RoiError, match="x,y,w,h"):
        parse_roi("1,2,3")
    with pytest.raises(RoiError, match="w and h > 0"):
        parse_roi((0, 0, 0, 10))
    assert parse_roi("10, 20, 300, 200") == (10, 20, 300, 200)


# --------------------------------------------------------------------------- the shared guard


def test_roi_crop_and_bad_roi() -> None:
    img = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64)
    with ListSource([img, img], roi="4,2,10,6") as src:
        frames = list(src)
    assert frames[0].image.shape == (6, 10)
    np.testing.assert_array_equal(frames[0].image, img[2:8, 4:14])
    assert src.frame_size == (10, 6) and src.native_size == (64, 48)
    assert src.describe()["roi"] == [4, 2, 10, 6]
    with ListSource([img], roi=(60, 0, 10, 10)) as src, pytest.raises(RoiError, match="64x48"):
        list(src)


def test_roi_applies_to_truth_too() -> None:
    with open_source("synthetic:1", realtime=False, frames=2, roi=(100, 20, 400, 200)) as src:
        frames = list(src)
    assert frames[0].image.shape == (200, 400) and frames[0].truth.shape == (200, 400)
    with open_source("synthetic", realtime=False, frames=1, roi=(500, 0, 200, 100)) as src:
        with pytest.raises(RoiError, match="606x468"):
            next(iter(src))


@pytest.mark.parametrize("image", [
    np.zeros((12, 16, 3), np.uint8),
    np.zeros((12, 16), np.uint8),
    np.full((12, 16), 40000, np.uint16),
    np.zeros((12, 16, 1), np.uint8),
])
def test_formats_pass_through(image: np.ndarray) -> None:
    with ListSource([image]) as src:
        (frame,) = list(src)
    assert frame.image.dtype == image.dtype
    assert frame.image.shape[:2] == (12, 16)
    assert frame.image.ndim == (3 if image.ndim == 3 and image.shape[2] == 3 else 2)
    assert frame.image.max() == image.max()


def test_frame_size_change_is_an_error() -> None:
    imgs = [np.zeros((48, 64), np.uint8)] * 3 + [np.zeros((60, 80), np.uint8)]
    src = ListSource(imgs)
    got = []
    with pytest.raises(SourceError, match=r"from 64x48 to 80x60 at frame 3"):
        for f in src:
            got.append(f)
    assert len(got) == 3 and src.failed
    src.close()


def test_one_pass_only() -> None:
    src = ListSource([np.zeros((4, 4), np.uint8)])
    list(src)
    with pytest.raises(SourceError, match="already iterated"):
        iter(src)


# --------------------------------------------------------------------------- hand-off buffers


def test_latest_slot_keeps_newest_and_counts() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get() == (4, 4)
    slot.put(5)
    slot.close()
    assert slot.get() == (5, 0)
    assert slot.get() is None


def test_closable_queue_backpressure_and_close() -> None:
    q: ClosableQueue[int] = ClosableQueue(2)
    assert q.put(1) and q.put(2)
    blocked = threading.Event()

    def producer() -> None:
        blocked.set()
        assert q.put(3) is False  # woken by close, not by space

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    blocked.wait(1)
    q.close(drain=True)
    t.join(2)
    assert not t.is_alive()
    assert q.get() is None


# --------------------------------------------------------------------------- file source


def test_file_every_frame_count_and_pts(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", n=30, fps=24)
    with open_source(str(path), realtime=False) as src:
        assert src.fps == pytest.approx(24)
        frames = list(src)
    assert len(frames) == 30 and src.frames_delivered == 30 and src.frames_dropped == 0
    assert [f.index for f in frames] == list(range(30))
    np.testing.assert_allclose(np.diff([f.pts for f in frames]), 1 / 24, atol=1e-3)
    assert frames[0].pts == pytest.approx(0, abs=1e-3)
    levels = [int(f.image.mean()) for f in frames]
    assert levels == sorted(levels) and levels[-1] > levels[0] + 150  # decoded in order
    assert frames[0].image.shape == (64, 96, 3) and frames[0].image.dtype == np.uint8
    assert not src.failed and src.error is None
    d = src.describe()
    assert d["kind"] == "file" and d["size"] == [96, 64] and d["frames_declared"] == 30


@pytest.mark.parametrize("name,codec", [("clip.avi", "mpeg4"), ("clip.mov", "libx264")])
def test_file_other_containers(tmp_path: Path, name: str, codec: str) -> None:
    path = write_video(tmp_path / name, n=10, fps=25, codec=codec, faststart=False)
    with open_source(str(path), realtime=False) as src:
        frames = list(src)
    assert len(frames) == 10 and not src.failed
    np.testing.assert_allclose(np.diff([f.pts for f in frames]), 1 / 25, atol=1e-3)


def test_describe_is_json(tmp_path: Path) -> None:
    import json

    path = write_video(tmp_path / "clip.mp4", n=3)
    specs = [str(path), "synthetic:1"]
    for spec in specs:
        with open_source(spec, realtime=False, frames=2, roi=(0, 0, 32, 32)) as src:
            list(src)
            info = json.loads(json.dumps(src.describe()))
        assert info["spec"] == spec and info["roi"] == [0, 0, 32, 32] and info["size"] == [32, 32]
    with open_source("0", realtime=True, frames=1, capture_factory=Factory(FakeCapture())) as src:
        list(src)
        assert json.loads(json.dumps(src.describe()))["kind"] == "device"


def test_file_frame_limit_stops_reader(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", n=30)
    src = open_source(str(path), realtime=False, frames=5)
    assert len(list(src)) == 5
    src.close()
    assert src._thread is not None and not src._thread.is_alive()
    assert not src.failed


def test_file_truncated_is_decoded_as_far_as_it_goes(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", n=48, size=(96, 64))
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with open_source(str(cut), realtime=False) as src:
        frames = list(src)  # no exception escapes
    assert 0 < len(frames) < 48
    assert src.failed and src.error and "48" in src.error
    assert src.frames_delivered == len(frames)
    with pytest.raises(SourceLost) as info:
        src.raise_if_failed()
    assert info.value.exit_code == 3


def test_file_without_index_cannot_open(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", n=24, faststart=False)  # moov at the end: cut away
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SourceError, match="cannot open"):
        open_source(str(cut), realtime=False)


@pytest.mark.parametrize("fmt,pix_fmt,dtype", [("gray", "gray", np.uint8), ("gray16le", "gray16le", np.uint16)])
def test_file_grey_and_16_bit(tmp_path: Path, fmt: str, pix_fmt: str, dtype: type) -> None:
    path = write_video(tmp_path / "clip.mkv", n=6, codec="ffv1", pix_fmt=pix_fmt, fmt=fmt, faststart=False)
    with open_source(str(path), realtime=False) as src:
        frames = list(src)
    assert len(frames) == 6
    assert frames[1].image.dtype == dtype and frames[1].image.ndim == 2
    expected = 7 if dtype == np.uint8 else 7 * 257
    assert int(frames[1].image[0, 0]) == expected


def test_file_realtime_drops_for_a_slow_consumer(tmp_path: Path) -> None:
    n, fps = 36, 60
    path = write_video(tmp_path / "clip.mp4", n=n, fps=fps)
    t0 = time.monotonic()
    with open_source(str(path), realtime=True) as src:
        frames = []
        for f in src:
            frames.append(f)
            time.sleep(0.05)  # three frame periods
    elapsed = time.monotonic() - t0
    idx = [f.index for f in frames]
    assert all(b > a for a, b in zip(idx, idx[1:]))  # strictly increasing, never twice
    assert src.frames_dropped > 0 and sum(f.dropped_before for f in frames) == src.frames_dropped
    for a, b in zip(frames, frames[1:]):
        assert b.index == a.index + b.dropped_before + 1
    assert src.frames_delivered + src.frames_dropped == n  # every decoded frame accounted for
    assert idx[-1] == n - 1
    assert elapsed >= 0.8 * (n - 1) / fps  # replayed at the native pace, not faster
    levels = [int(f.image.mean()) for f in frames]
    assert levels == sorted(levels)


def test_file_realtime_fast_consumer_gets_everything_paced(tmp_path: Path) -> None:
    n, fps = 12, 60
    path = write_video(tmp_path / "clip.mp4", n=n, fps=fps)
    with open_source(str(path), realtime=True) as src:
        frames = list(src)
    assert len(frames) + src.frames_dropped == n
    span = frames[-1].t_capture - frames[0].t_capture
    assert span >= 0.8 * (frames[-1].pts - frames[0].pts)


# --------------------------------------------------------------------------- device source


def test_device_newest_frame_and_drop_counting() -> None:
    cam = FakeCapture(period=0.004)
    factory = Factory(cam)
    with open_source("0", realtime=True, capture_factory=factory, fps=30, size=(8, 6)) as src:
        assert src.kind == "device"
        frames = []
        for f in src:
            frames.append(f)
            time.sleep(0.03)
            if len(frames) == 8:
                break
    assert factory.calls == [0]
    assert cam.props[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert cam.props[cv2.CAP_PROP_FRAME_WIDTH] == 8 and cam.props[cv2.CAP_PROP_FPS] == 30
    for f in frames:
        assert int(f.image[0, 0]) == f.index  # the frame is the one grabbed under that index
        assert f.image.dtype == np.uint16  # 16-bit passes through
    for a, b in zip(frames, frames[1:]):
        assert b.index == a.index + b.dropped_before + 1
    assert sum(f.dropped_before for f in frames[1:]) > 0 and src.frames_dropped > 0
    assert cam.released and not src.failed


def test_device_stops_delivering_then_gives_up() -> None:
    factory = Factory(FakeCapture(fail_after=5))
    src = open_source("/dev/video0", realtime=True, reconnect_s=0.3, capture_factory=factory, retry_interval_s=0.05)
    t0 = time.monotonic()
    with src:
        frames = list(src)  # ends cleanly, no exception
    assert time.monotonic() - t0 >= 0.25
    assert 1 <= len(frames) <= 5 and frames[-1].index == 4  # the newest frame before the loss
    assert src.failed and "could not be reopened within 0.3 s" in src.error
    assert len(factory.calls) >= 3  # reopen attempts
    with pytest.raises(SourceLost) as info:
        src.raise_if_failed()
    assert info.value.exit_code == 3


def test_device_reconnects() -> None:
    first = FakeCapture(fail_after=3, period=0.002)
    again = FakeCapture(fail_after=3, period=0.002, start=100)
    factory = Factory(first, FakeCapture(opened=False), again)
    src = open_source("device:0", realtime=True, reconnect_s=0.4, capture_factory=factory, retry_interval_s=0.02)
    with src:
        frames = []
        for f in src:
            frames.append(f)
            time.sleep(0.001)
    assert src.reconnects == 1
    values = [int(f.image[0, 0]) for f in frames]
    assert any(v >= 100 for v in values) and any(v < 100 for v in values)  # frames from both captures
    idx = [f.index for f in frames]
    assert all(b > a for a, b in zip(idx, idx[1:]))
    assert src.failed and first.released and again.released


def test_device_missing_lists_present_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod.glob, "glob", lambda pattern: ["/dev/video5", "/dev/video2"])
    with pytest.raises(SourceError) as info:
        open_source("/dev/video0", realtime=True, capture_factory=Factory(FakeCapture(opened=False)))
    msg = str(info.value)
    assert "/dev/video0" in msg and "does not exist" in msg and "present: /dev/video2, /dev/video5" in msg
    assert "\n" not in msg
    monkeypatch.setattr(device_mod.glob, "glob", lambda pattern: ["/dev/video0"])
    with pytest.raises(SourceError, match="busy"):
        open_source("0", realtime=True, capture_factory=Factory(FakeCapture(opened=False)))
    monkeypatch.setattr(device_mod.glob, "glob", lambda pattern: [])
    with pytest.raises(UserError, match=r"no /dev/video\* device is present"):
        open_source("1", realtime=True, capture_factory=Factory(FakeCapture(opened=False)))


def test_device_colour_frames_and_roi() -> None:
    cam = FakeCapture(period=0.002, make=lambda k: np.full((20, 30, 3), k % 256, np.uint8))
    with open_source("0", realtime=True, capture_factory=Factory(cam), roi=(5, 4, 10, 8), frames=3) as src:
        frames = list(src)
    assert len(frames) == 3
    assert frames[0].image.shape == (8, 10, 3) and frames[0].image.dtype == np.uint8
    assert src.describe()["native_size"] == [30, 20]


def test_device_size_change_mid_stream() -> None:
    cam = FakeCapture(period=0.002, make=lambda k: np.zeros((6, 8) if k < 3 else (10, 12), np.uint8))
    with open_source("0", realtime=True, capture_factory=Factory(cam)) as src:
        with pytest.raises(SourceError, match=r"from 8x6 to 12x10 at frame \d+"):
            for f in src:
                time.sleep(0.002)


def test_device_close_stops_grabber() -> None:
    cam = FakeCapture(period=0.002)
    src = open_source("0", realtime=True, capture_factory=Factory(cam))
    it = iter(src)
    next(it)
    src.close()
    assert not src._thread.is_alive() and cam.released
