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


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "The overlay video and the raw recording")
# ---------------------------------------------------------------------------------------------
import logging  # noqa: E402
import re  # noqa: E402
import struct  # noqa: E402
from fractions import Fraction  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from realtime.sinks.base import RunControl, RunInfo  # noqa: E402
from realtime.sinks.overlay import OverlayRenderer  # noqa: E402
from realtime.sinks.video import VideoSink  # noqa: E402
from tests.realtime.sinks._helpers import record  # noqa: E402


def _x264_options(path: Path) -> dict[str, str]:
    """The settings x264 writes into the stream (its SEI user data): ``crf=20.0 keyint=30 bframes=0 ...``."""
    options = re.search(rb"x264 - core .*? options: ([^\x00]*)", path.read_bytes()).group(1).decode()
    return dict(item.split("=", 1) for item in options.split() if "=" in item)


def _boxes(path: Path) -> list[str]:
    data, pos, boxes = path.read_bytes(), 0, []
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        boxes.append(kind.decode())
        pos += size
    return boxes


def test_h264_at_crf_20_veryfast_a_keyframe_a_second_no_b_frames_in_fragments(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    import av

    path = tmp_path / "a" / "b" / "o.mp4"  # its folder made, with its parents
    writer = VideoWriter(path, fps=30000 / 1001)  # NTSC's 29.97
    with caplog.at_level(logging.INFO, logger="realtime.sinks.video"):
        for _ in range(70):
            writer.write(np.full((48, 64, 3), 90, np.uint8))  # no scene cut: keyframes only where asked for
        writer.close()
        writer.close()  # once only
    options = _x264_options(path)
    assert (options["crf"], options["keyint"], options["bframes"]) == ("20.0", "30", "0")
    assert (options["subme"], options["rc_lookahead"], options["ref"]) == ("2", "10", "1")  # x264's veryfast
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == Fraction(30000, 1001) and stream.codec_context.pix_fmt == "yuv420p"
        assert [i for i, f in enumerate(c.decode(video=0)) if f.key_frame] == [0, 30, 60]
    boxes = _boxes(path)  # fragmented: the index (moov) first, then a fragment (moof + mdat) per keyframe
    assert boxes[:3] == ["ftyp", "moov", "moof"] and boxes.count("moof") == 3
    assert [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.video"] == [
        f"wrote 70 frames to {path}"]


def test_a_keyframe_every_keyframe_s_and_another_quality(tmp_path: Path) -> None:
    import av

    writer = VideoWriter(tmp_path / "o.mkv", fps=10, crf=30, keyframe_s=0.5)
    for _ in range(12):
        writer.write(np.full((48, 64, 3), 90, np.uint8))
    writer.close()
    options = _x264_options(tmp_path / "o.mkv")
    assert (options["crf"], options["keyint"]) == ("30.0", "5")
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert c.format.name == "matroska,webm"
        assert [i for i, f in enumerate(c.decode(video=0)) if f.key_frame] == [0, 5, 10]
    writer = VideoWriter(tmp_path / "slow.mp4", fps=0.4)  # a keyframe every frame at least
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 90, np.uint8))
    writer.close()
    assert _x264_options(tmp_path / "slow.mp4")["keyint"] == "1"


def test_an_odd_frame_is_padded_with_its_edge(tmp_path: Path) -> None:
    import av

    img = np.zeros((47, 63, 3), np.uint8)
    img[:, -8:] = 255  # a white right edge: the added column is white too, not black
    img[-8:, :] = 255
    writer = VideoWriter(tmp_path / "o.mp4", fps=24)
    writer.write(img)
    writer.close()
    with av.open(str(tmp_path / "o.mp4")) as c:
        (frame,) = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert frame.shape == (48, 64) and frame[:, 63].min() > 230 and frame[47, :].min() > 230
    assert frame[:30, :40].max() < 25


def _run(fps: float = 24.0) -> RunInfo:
    return RunInfo(source=None, engine=None, tracker=SimpleNamespace(calibration=None), control=RunControl(), fps=fps,
                   calibrated=False)


def test_the_sink_at_the_runs_rate_or_its_own_drawn_once(tmp_path: Path) -> None:
    import av

    renderer = OverlayRenderer()
    sink = VideoSink(tmp_path / "o.mp4", renderer)
    assert sink.name == f"overlay video {tmp_path / 'o.mp4'}" and sink.paths == {"video": tmp_path / "o.mp4"}
    sink.open(_run(12.0))
    assert sink._writer._queue.maxsize == 32  # the loop waits when 32 frames wait for the encoder
    records = [record(i) for i in range(3)]
    for r in records:
        sink.write(r)
        assert "write" in r.timings_ms and r.timings_ms["render"] >= 0
    sink.close()
    sink.close()  # once only
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.streams.video[0].average_rate == 12
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 3
    assert np.abs(frames[2].astype(int) - renderer.draw(records[2])).mean() < 6  # the overlay, lossy
    own = VideoSink(tmp_path / "own.mp4", OverlayRenderer(), fps=5.0, maxsize=4)
    own.open(_run(12.0))
    assert own._writer._queue.maxsize == 4
    own.write(record(0))
    own.close()
    with av.open(str(tmp_path / "own.mp4")) as c:
        assert c.streams.video[0].average_rate == 5


def test_a_frame_the_encoder_cannot_take_fails_at_close_named_by_its_writer(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    sink = VideoSink(tmp_path / "o.mp4", OverlayRenderer())
    sink.open(_run())
    sink.write(record(0))  # 48 x 64: the stream's size
    big = record(1)
    big.image = np.zeros((96, 128), np.uint8)  # larger than the stream: it cannot be padded to it
    big.mask, big.contours = None, ()
    with caplog.at_level(logging.ERROR, logger="realtime.sinks.video"):
        sink.write(big)
        with pytest.raises(ValueError):
            sink.close()
    (message,) = [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.video"]
    assert message.startswith("writer video-writer failed: ")


def test_after_an_error_the_writer_takes_nothing_more_and_says_so_at_once() -> None:
    written: list[int] = []
    go = threading.Event()

    class FailsOnce:
        closed = 0

        def write(self, item):
            if item == 1:
                go.wait()
                raise OSError("disk full")
            written.append(item)

        def close(self):
            self.closed += 1

    sink = FailsOnce()
    w = ThreadedWriter(sink, name="t")
    assert w._thread.name == "t" and w._thread.daemon and w._queue.maxsize == 64
    w.put(0)
    w.put(1)  # fails once let go
    w.put(2)  # queued before the failure is known: drained, never written
    go.set()
    for _ in range(30_000):  # until the writer thread has failed (a guard, not a timing)
        if w.error is not None:
            break
        w._thread.join(0.001)
    with pytest.raises(OSError, match="disk full"):
        w.put(3)  # the error, at once
    with pytest.raises(OSError, match="disk full"):
        w.close()
    assert written == [0] and sink.closed == 1 and not w._thread.is_alive()


def test_the_frame_handed_to_the_encoder_is_the_picture_with_its_last_row_and_column_repeated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    handed: list[tuple[np.ndarray, str]] = []
    from_ndarray = av.VideoFrame.from_ndarray

    def spy(array, format="rgb24", **kw):  # type: ignore[no-untyped-def]
        handed.append((array.copy(), format))
        return from_ndarray(array, format=format, **kw)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", spy)
    img = np.arange(47 * 63 * 3, dtype=np.uint32).reshape(47, 63, 3).astype(np.uint8)
    writer = VideoWriter(tmp_path / "o.mp4", fps=24)
    writer.write(img)
    writer.write(np.zeros((48, 64, 3), np.uint8))  # already even: as it is
    writer.close()
    (first, fmt), (second, _) = handed
    assert fmt == "bgr24" and first.shape == (48, 64, 3) and second.shape == (48, 64, 3)
    assert np.array_equal(first[:47, :63], img) and np.array_equal(first[47, :63], img[46])
    assert np.array_equal(first[:47, 63], img[:, 62]) and np.array_equal(first[47, 63], img[46, 62])


def test_colours_are_read_as_bgr(tmp_path: Path) -> None:
    import av

    writer = VideoWriter(tmp_path / "o.mp4", fps=24)
    writer.write(np.full((48, 64, 3), (200, 40, 20), np.uint8))  # blue, in OpenCV's order
    writer.close()
    with av.open(str(tmp_path / "o.mp4")) as c:
        (frame,) = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    b, g, r = frame[24, 32].tolist()
    assert b > 170 and r < 50


def test_a_writer_waits_for_its_sink_unless_told_to_drop(caplog: pytest.LogCaptureFixture) -> None:
    entered, release = threading.Event(), threading.Event()
    written: list[int] = []

    class Stuck:
        def write(self, item):
            entered.set()
            release.wait()
            written.append(item)

        def close(self):
            pass

    w = ThreadedWriter(Stuck(), maxsize=1)  # the default: never drop (the raw recording, the video)
    assert w._thread.name == "writer" and not w.drop_when_full
    w.put(0)
    assert entered.wait(30)  # 0 in write(), held; the queue empty
    w.put(1)  # the queue full now
    putter = threading.Thread(target=w.put, args=(2,), daemon=True)
    putter.start()  # waits for room: 2 is not dropped
    release.set()
    putter.join(30)
    w.close()
    assert written == [0, 1, 2] and w.dropped == 0

    class Failing:
        def write(self, item):
            raise OSError("disk full")

        def close(self):
            pass

    failing = ThreadedWriter(Failing(), name="t")
    with caplog.at_level(logging.ERROR, logger="realtime.sinks.video"):
        failing.put(1)
        with pytest.raises(OSError):
            failing.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.video"]
    assert messages == ["writer t failed: disk full"]


def test_a_sink_never_opened_closes_quietly(tmp_path: Path) -> None:
    VideoSink(tmp_path / "o.mp4", OverlayRenderer()).close()
    assert not (tmp_path / "o.mp4").exists()
