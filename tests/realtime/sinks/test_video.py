"""realtime.sinks.video: a playable video with every frame; the threaded writer's errors and dropping."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.sinks.video import ThreadedWriter, VideoWriter


def test_video_plays_with_every_frame(tmp_path: Path) -> None:
    import av

    path = tmp_path / "o.mp4"
    writer = ThreadedWriter(VideoWriter(path, fps=24))
    for i in range(30):
        img = np.zeros((47, 63, 3), np.uint8)  # odd size: padded to even
        cv2.putText(img, str(i), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.put(img)
    writer.close()
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 30 and (frames[0].width, frames[0].height) == (64, 48)
    assert [f.time for f in frames] == pytest.approx([i / 24 for i in range(30)])  # fragmented, no shift


def test_threaded_writer_reraises_sink_errors() -> None:
    class Failing:
        def write(self, item):
            raise OSError("disk full")

        def close(self):
            pass

    w = ThreadedWriter(Failing())
    w.put(1)
    with pytest.raises(OSError, match="disk full"):
        w.close()


def test_threaded_writer_drop_when_full_never_blocks() -> None:
    class Slow:
        def write(self, item):
            time.sleep(0.05)

        def close(self):
            pass

    w = ThreadedWriter(Slow(), maxsize=2, drop_when_full=True)
    t0 = time.perf_counter()
    for i in range(20):
        w.put(i)
    assert time.perf_counter() - t0 < 0.5
    w.close()
    assert w.dropped > 0


@pytest.mark.parametrize("name", ["o.mp4", "o.mkv"])
def test_video_plays_before_it_is_closed(tmp_path: Path, name: str) -> None:
    """What a crash leaves: a copy of the file taken before close() decodes every frame of its whole
    fragments (a keyframe and a fragment every second: fragmented MP4, Matroska clusters); a plain MP4 decodes
    none until finalised."""
    import shutil

    import av

    path, copy = tmp_path / name, tmp_path / f"copy-{name}"
    writer = VideoWriter(path, fps=24)
    for i in range(60):
        writer.write(np.full((48, 64, 3), 4 * i, np.uint8))
    shutil.copy(path, copy)  # the process "dies" here
    writer.close()
    with av.open(str(copy)) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) >= 24  # the whole one-second fragments (clusters) that left the encoder
    assert [round(float(np.median(f)) / 4) for f in frames[:24:4]] == [0, 4, 8, 12, 16, 20]  # the right ones, in order
