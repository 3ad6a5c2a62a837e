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
    monkeypatch.setattr(live_cli, "open_engine", lambda args, batch=1: TruthEngine())
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
