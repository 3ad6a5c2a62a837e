"""``mn-segment``: every frame of recorded videos (a folder too), scored against known truth; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realtime.segment_cli import cli as segment_cli
from realtime.sinks.csv_sink import read_csv
from realtime.synth_cli import cli as synth_cli
from tests.realtime._helpers import FAST, decoded_frames


def test_synth_then_segment_with_truth(tmp_path: Path, cache: str) -> None:
    clip, truth = tmp_path / "clip.mp4", tmp_path / "truth.npz"
    assert synth_cli(["--phantom", "--frames", "10", "--seed", "2", "--out", str(clip), "--truth", str(truth),
                      "-q"]) == 0
    out = tmp_path / "seg"
    assert segment_cli([str(clip), "--truth", str(truth), "--out", str(out), "--batch", "4", "--masks", *FAST]) == 0
    folder = out / "clip"
    rows = read_csv(folder / "measurements.csv")
    assert [int(r["frame"]) for r in rows] == list(range(10))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["truth"]["frames"] == 10 and 0.0 <= summary["truth"]["dice_mean"] <= 1.0
    assert decoded_frames(folder / "overlay.mp4") == 10


def test_segment_folder_input_takes_every_video(tmp_path: Path, cache: str) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in (1, 2):
        assert synth_cli(["--phantom", "--frames", "4", "--seed", str(seed), "--out", str(videos / f"s{seed}.mp4"),
                          "--truth", str(tmp_path / f"t{seed}.npz"), "-q"]) == 0
    out = tmp_path / "seg"
    assert segment_cli([str(videos), "--out", str(out), "--no-video", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s1", "s2"]
    assert len(read_csv(out / "s2" / "measurements.csv")) == 4


def test_segment_unreadable_file_exit_2(tmp_path: Path, cache: str, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    code = segment_cli([str(bad), "--out", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "bad.mp4" in err and "Traceback" not in err
