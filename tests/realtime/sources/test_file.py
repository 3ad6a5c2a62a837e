"""realtime.sources.file: the file source (count, timestamps, containers, truncation, real-time replay)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from realtime.sources import (
    SourceError,
    SourceLost,
    open_source,
)
from tests.realtime.sources._helpers import Factory, FakeCapture, write_video


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
