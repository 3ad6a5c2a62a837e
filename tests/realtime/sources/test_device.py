"""realtime.sources.device with a fake capture: newest frame, drops, reconnect, errors."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from realtime.sources import (
    SourceError,
    SourceLost,
    open_source,
)
from realtime.sources import device as device_mod
from tests.realtime.sources._helpers import Factory, FakeCapture
from train.errors import UserError


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
    assert len(factory.calls) >= 2  # the first open and at least one reopen (how many fit in 0.3 s is the load's)
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
