"""realtime.sinks.raw: the raw recording is lossless (bit-exact pixels back through mn-segment's file
source, grey, 16-bit and BGR), plays after a crash, and an mn-live run re-analysed with mn-segment gives
the same measurements."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from realtime import live_cli, segment_cli
from realtime.sinks.csv_sink import read_csv
from realtime.sinks.raw import RawSink, RawWriter
from realtime.sources import open_source
from realtime.sources.file import FileSource
from tests.realtime._helpers import TruthEngine


def decode(path: Path) -> list:
    source = FileSource(path)
    try:
        return [(f.image, f.pts) for f in source]
    finally:
        source.close()


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (47, 61)), (np.uint16, (47, 61)), (np.uint8, (47, 61, 3))])
def test_bit_exact_round_trip(tmp_path: Path, dtype, shape) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype) for _ in range(5)]  # noise: no mercy
    writer = RawWriter(tmp_path / "raw.mkv", fps=24)
    for i, f in enumerate(frames):
        writer.write((f, 0.5 + i / 24))
    writer.close()
    got = decode(tmp_path / "raw.mkv")
    assert len(got) == 5
    for original, (image, _) in zip(frames, got):
        assert image.dtype == original.dtype and image.shape == original.shape and np.array_equal(image, original)
    assert [round(t, 3) for _, t in got] == [round(0.5 + i / 24, 3) for i in range(5)]  # the rows' t_s, in ms


def test_a_copy_taken_before_close_decodes(tmp_path: Path) -> None:
    """What a crash leaves: Matroska clusters of at most a second, each written as it is muxed."""
    path, copy = tmp_path / "raw.mkv", tmp_path / "copy.mkv"
    writer = RawWriter(path, fps=24)
    frames = [np.full((48, 64), 3 * i, np.uint8) for i in range(60)]
    for i, f in enumerate(frames):
        writer.write((f, i / 24))
    shutil.copy(path, copy)  # the process "dies" here
    writer.close()
    got = decode(copy)
    assert len(got) >= 24
    assert all(np.array_equal(image, frames[i]) for i, (image, _) in enumerate(got))


def test_other_frame_types_and_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"\.mkv"):
        RawSink(tmp_path / "raw.mp4")
    writer = RawWriter(tmp_path / "raw.mkv", fps=24)
    writer.write((np.zeros((8, 8), np.uint8), 0.0))
    with pytest.raises(ValueError, match="one frame size"):
        writer.write((np.zeros((8, 10), np.uint8), 0.1))
    with pytest.raises(ValueError, match="losslessly"):
        RawWriter(tmp_path / "f.mkv", fps=24).write((np.zeros((8, 8), np.float32), 0.0))
    writer.close()


def test_live_recording_reanalysed_by_mn_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mn-live on the phantom with --record-raw, then mn-segment on the recording: the pixels are the
    phantom's, bit for bit, and every measurement of every row is the same."""
    monkeypatch.setattr(live_cli, "open_engine", lambda args, batch=1, live=False: TruthEngine())
    monkeypatch.setattr(segment_cli, "open_engine", lambda args, batch=1: TruthEngine())
    flags = ["--presence", "off", "--mm-per-px", "0.08", "--no-video", "-q"]
    live = tmp_path / "live"
    assert live_cli.cli(["--source", "synthetic", "--no-drop", "--frames", "10", "--headless", "--out", str(live),
                         "--record-raw", str(live / "raw.mkv"), *flags]) == 0
    phantom = open_source("synthetic", realtime=False)
    try:
        expected = [f.image for _, f in zip(range(10), phantom)]
    finally:
        phantom.close()
    got = decode(live / "raw.mkv")
    assert len(got) == 10 and all(np.array_equal(image, e) for (image, _), e in zip(got, expected))

    again = tmp_path / "again"
    assert segment_cli.cli([str(live / "raw.mkv"), "--out", str(again), "--batch", "1", *flags]) == 0
    rows_live, rows_again = read_csv(live / "measurements.csv"), read_csv(again / "raw" / "measurements.csv")
    assert len(rows_live) == len(rows_again) == 10
    assert any(r["status"] == "ok" for r in rows_live)
    for a, b in zip(rows_live, rows_again):
        for column in ("frame", "status", "area_px", "area_mm2", "perimeter_px", "flattening_ratio", "circularity",
                       "centroid_x_px", "centroid_y_px", "n_components", "confidence"):
            assert a[column] == b[column], (column, a["frame"])
        assert abs(float(a["t_s"]) - float(b["t_s"])) <= 0.0005  # Matroska keeps the time in ms


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "The overlay video and the raw recording")
# ---------------------------------------------------------------------------------------------
import logging  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from realtime.sinks.raw import ffv1_formats  # noqa: E402
from tests.realtime.sinks._helpers import record  # noqa: E402


def _demuxed(path: Path) -> tuple[dict, list[int], object]:
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        info = SimpleNamespace(codec=stream.codec_context.name, pix_fmt=stream.codec_context.pix_fmt,
                               rate=stream.average_rate, format=c.format.name)
        return dict(c.metadata), [p.pts for p in c.demux(video=0) if p.pts is not None], info


def test_each_frame_keeps_its_time_in_ms_strictly_increasing(tmp_path: Path) -> None:
    """A real bug, found here: the encoder's clock was the default 1/fps grid, so a row's t_s was rounded to
    it (0.013 s stored as 0, 0.051 s and 0.052 s both as 42 ms at 24 fps)."""
    writer = RawWriter(tmp_path / "raw.mkv", fps=24)
    for t in (0.013, 0.051, 0.052, 0.052, 0.1234, 0.5):  # a repeated time: 1 ms later, never the same
        writer.write((np.zeros((8, 8), np.uint8), t))
    writer.close()
    _, pts, info = _demuxed(tmp_path / "raw.mkv")
    assert pts == [13, 51, 52, 53, 123, 500]
    assert [round(t, 3) for _, t in decode(tmp_path / "raw.mkv")] == [0.013, 0.051, 0.052, 0.053, 0.123, 0.5]
    assert (info.codec, info.format, info.rate) == ("ffv1", "matroska,webm", 24)


@pytest.mark.parametrize("shape, dtype, formats", [((4, 5), np.uint8, ("gray", "gray")),
                                                   ((4, 5, 1), np.uint8, ("gray", "gray")),
                                                   ((4, 5), np.uint16, ("gray16le", "gray16le")),
                                                   ((4, 5, 1), np.uint16, ("gray16le", "gray16le")),
                                                   ((4, 5, 3), np.uint8, ("bgr24", "bgr0"))])
def test_each_frame_type_in_its_own_pixel_format(tmp_path: Path, shape, dtype, formats) -> None:
    frame = np.arange(np.prod(shape), dtype=dtype).reshape(shape) * 3
    assert ffv1_formats(frame) == formats
    writer = RawWriter(tmp_path / "raw.mkv", fps=10)
    writer.write((frame, 0.0))
    writer.close()
    assert _demuxed(tmp_path / "raw.mkv")[2].pix_fmt == formats[1]
    (image, _), = decode(tmp_path / "raw.mkv")
    assert np.array_equal(image.reshape(shape), frame)


@pytest.mark.parametrize("shape, dtype", [((4, 5, 3), np.uint16), ((4, 5, 4), np.uint8), ((4, 5, 2), np.uint8),
                                          ((4, 5), np.float32), ((4, 5), np.int16)])
def test_frames_it_cannot_keep_exactly_are_named(shape, dtype) -> None:
    with pytest.raises(ValueError) as err:
        ffv1_formats(np.zeros(shape, dtype))
    assert str(err.value) == (f"cannot record frames of {np.dtype(dtype)} with shape {list(shape)} losslessly "
                              "(grey 8/16-bit or 8-bit BGR)")


def test_a_frame_of_another_size_or_format_is_named(tmp_path: Path) -> None:
    writer = RawWriter(tmp_path / "a" / "b" / "raw.mkv", fps=24)  # its folder made, with its parents
    writer.write((np.zeros((8, 8), np.uint8), 0.0))
    writer.write((np.zeros((8, 8), np.uint8), 0.1))
    with pytest.raises(ValueError) as err:
        writer.write((np.zeros((8, 10), np.uint8), 0.2))
    assert str(err.value) == ("frame 2: [8, 10] uint8 after [8, 8] frames; a recording keeps one frame size and "
                              "format")
    with pytest.raises(ValueError, match=r"^frame 2: \[8, 8\] uint16 after \[8, 8\] frames"):
        writer.write((np.zeros((8, 8), np.uint16), 0.2))
    writer.close()
    assert len(decode(tmp_path / "a" / "b" / "raw.mkv")) == 2


def test_the_sink_names_its_source_and_keeps_every_frame_as_it_was(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from realtime.sinks.base import RunControl, RunInfo

    sink = RawSink(tmp_path / "raw.MKV")  # the suffix in any case
    assert sink.name == f"raw recording {tmp_path / 'raw.MKV'}" and sink.paths == {"raw": tmp_path / "raw.MKV"}
    sink.open(RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=12.0, calibrated=False,
                      metadata={"source": "synthetic:3"}))
    assert sink._writer._queue.maxsize == 32 and sink._writer._thread.name == "raw-writer"
    records = [record(i) for i in range(3)]
    originals = [r.image.copy() for r in records]
    with caplog.at_level(logging.INFO, logger="realtime.sinks.raw"):
        for r in records:
            sink.write(r)
            assert "write" in r.timings_ms
            r.image[:] = 0  # the source reuses its buffer: the recording has the frame as it was measured
        sink.close()
        sink.close()  # once only
    got = decode(tmp_path / "raw.MKV")
    assert all(np.array_equal(image, o) for (image, _), o in zip(got, originals)) and len(got) == 3
    assert [round(t, 3) for _, t in got] == [round(i / 24, 3) for i in range(3)]
    metadata, _, info = _demuxed(tmp_path / "raw.MKV")
    assert info.rate == 12
    assert metadata["title"] == "mn-seg raw recording of synthetic:3"
    assert metadata["COMMENT"] == ("every processed frame, lossless (FFV1); frame k is row k of the run's "
                                   "measurements.csv")
    assert [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.raw"] == [
        f"wrote 3 raw frames to {tmp_path / 'raw.MKV'}"]
    unnamed = RawSink(tmp_path / "b.mkv", maxsize=2)
    unnamed.open(RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=12.0, calibrated=False))
    assert unnamed._writer._queue.maxsize == 2
    unnamed.write(record(3))
    no_image = record(4)
    no_image.image = None
    with pytest.raises(ValueError) as err:
        unnamed.write(no_image)
    assert str(err.value) == "frame 4 has no image to record"
    unnamed.close()
    assert _demuxed(tmp_path / "b.mkv")[0]["title"] == "mn-seg raw recording of ?"


def test_a_raw_recording_must_be_mkv(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        RawSink(tmp_path / "raw.mp4")
    assert str(err.value) == (f"--record-raw {tmp_path / 'raw.mp4'}: the raw recording is FFV1 in Matroska, the "
                              "file name must end in .mkv")


def test_every_frame_a_keyframe_in_matroska_whatever_the_name(tmp_path: Path) -> None:
    import av

    writer = RawWriter(tmp_path / "rec.bin", fps=24)  # Matroska even without its suffix
    for i in range(5):
        writer.write((np.full((8, 8), i, np.uint8), i / 24))
    writer.close()
    with av.open(str(tmp_path / "rec.bin")) as c:
        assert c.format.name == "matroska,webm"
        frames = list(c.decode(video=0))
        assert c.streams.video[0].codec_context.extradata  # FFV1 version 3: its configuration in the header
    assert [f.key_frame for f in frames] == [True] * 5  # each frame decodes alone (a damaged one spoils no other)


def test_a_writer_without_frames_closes_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="realtime.sinks.raw"):
        RawWriter(tmp_path / "raw.mkv", fps=24).close()
    # nothing is written before the first frame, and the log says so rather than "wrote 0 raw frames"
    assert not (tmp_path / "raw.mkv").exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"no frame reached the raw recording: {tmp_path / 'raw.mkv'} was not written"]
    RawSink(tmp_path / "raw.mkv").close()  # never opened
