"""realtime.sinks.video: a playable video with every frame; the threaded writer's errors and dropping."""

from __future__ import annotations

import threading
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
    """A sink stuck in write() (a stalled disk): put() returns at once for every item, the queue keeps the
    first ones, the rest are counted as dropped; nothing waits on the clock."""
    entered, release = threading.Event(), threading.Event()
    written: list[int] = []

    class Stuck:
        def write(self, item):
            entered.set()
            release.wait()  # held until the test lets it go
            written.append(item)

        def close(self):
            pass

    w = ThreadedWriter(Stuck(), maxsize=2, drop_when_full=True)
    w.put(0)
    assert entered.wait(30)  # item 0 is in write(), held there; the queue is empty
    done: list[int] = []
    putter = threading.Thread(target=lambda: [w.put(i) or done.append(i) for i in range(1, 20)], daemon=True)
    putter.start()
    putter.join(30)  # a guard against a hang: a blocking put() would never return while write() is held
    blocked = putter.is_alive()
    release.set()
    assert not blocked, "put() blocked on a full queue with drop_when_full"
    assert done == list(range(1, 20))
    w.close()
    assert written == [0, 1, 2] and w.dropped == 17  # the queue held two; the other 17 were dropped


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
