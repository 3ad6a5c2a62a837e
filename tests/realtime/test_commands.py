"""mn-live and mn-segment end to end: outputs, live policy, shutdown by signal, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from realtime.live_cli import cli as live_cli
from realtime.outputs import Outputs, output_sinks
from realtime.pipeline import Pipeline, PipelineConfig
from realtime.sinks.base import Callback
from realtime.segment_cli import cli as segment_cli
from realtime.sinks.csv_sink import read_csv
from realtime.sources import open_source
from realtime.synth_cli import cli as synth_cli
from realtime.tracker import Tracker
from tests.realtime.test_pipeline import TruthEngine

REPO = Path(__file__).resolve().parents[2]
FAST = ["--model", "lunet", "--size", "64x48", "-q"]  # random weights, tiny input: the plumbing, not accuracy


def _decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("engine-cache"))
    os.environ["MN_SEG_CACHE"] = path
    return path


def test_live_synthetic_headless_writes_all_outputs(tmp_path: Path, cache: str) -> None:
    out = tmp_path / "live"
    assert live_cli(["--source", "synthetic:1", "--headless", "--frames", "12", "--out", str(out), *FAST]) == 0
    rows = read_csv(out / "measurements.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == summary["frames_processed"] == 12
    assert _decoded_frames(out / "overlay.mp4") == 12
    assert (out / "plot.png").stat().st_size > 0
    assert summary["calibration"] == "uncalibrated" and summary["backend"] == "onnxruntime"
    assert "random weights" in summary["engine_notes"] and "truth" in summary


def test_live_calibrated_depth(tmp_path: Path, cache: str) -> None:
    out = tmp_path / "live"
    assert live_cli(["--source", "synthetic", "--headless", "--frames", "5", "--depth-mm", "46.8", "--no-video",
                     "--out", str(out), *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration_detail"]["mm_per_px_y"] == pytest.approx(0.1)  # 46.8 mm over 468 rows
    assert summary["units"]["area"] == "mm2" and summary["latency_ms"]["n"] == 5
    assert not (out / "overlay.mp4").exists()


def test_live_policy_slow_engine_drops_and_stays_bounded(tmp_path: Path) -> None:
    """A paced 24 fps phantom and an engine taking 100 ms a frame: stale frames are dropped and
    counted, no frame is processed twice, and latency stays bounded instead of growing."""
    source = open_source("synthetic", realtime=True)
    records = []
    pipe = Pipeline(TruthEngine(delay_s=0.1), Tracker(None, fps=24.0),
                    output_sinks(Outputs(csv=tmp_path / "m.csv"), extra=[Callback(records.append)]),
                    PipelineConfig(max_frames=15))
    result = pipe.run(source)
    frames = [r.frame for r in records]
    assert frames == sorted(set(frames)), "a frame was processed twice or out of order"
    assert result.summary["frames_dropped"] > 15  # ~2 of every 3 frames at 100 ms vs 41.7 ms
    assert sum(r.dropped_before for r in records) == result.summary["frames_dropped"]
    assert max(r.latency_ms for r in records[3:]) < 300  # ~ one frame period + inference, not growing
    assert frames[-1] >= 2 * len(frames)


def test_sigint_leaves_csv_playable_mp4_and_summary(tmp_path: Path, cache: str) -> None:
    out = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-m", "realtime.live_cli", "--source", "synthetic", "--headless",
                             "--out", str(out), *FAST], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), "MN_SEG_CACHE": cache})
    csv_path = out / "measurements.csv"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not csv_path.exists() or len(read_csv(csv_path)) < 10):
        time.sleep(0.25)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    rows = read_csv(csv_path)
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) >= 10 and summary["frames_processed"] == len(rows)
    assert _decoded_frames(out / "overlay.mp4") == len(rows)
    assert "SIGINT" in summary["ended_because"]


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
    assert _decoded_frames(folder / "overlay.mp4") == 10


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


@pytest.mark.parametrize("argv, needle", [
    (["--source", "/dev/video97"], "/dev/video97"),
    (["--source", "no-such-file.mp4"], "no-such-file.mp4"),
    (["--source", "synthetic", "--roi", "0,0,9999,10"], "roi"),
    (["--source", "synthetic", "--mm-per-px", "-1"], "mm-per-px"),
    (["--source", "synthetic", "--model", "nope.pt"], "nope.pt"),
])
def test_live_bad_input_one_line_exit_2(argv: list[str], needle: str, tmp_path: Path, cache: str,
                                        capsys: pytest.CaptureFixture) -> None:
    base = ["--headless", "--frames", "3", "--out", str(tmp_path / "o"), "-q"]
    if "--model" not in argv:
        base += ["--model", "lunet", "--size", "64x48"]
    code = live_cli([*argv, *base])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle.lower() in err.lower() and "Traceback" not in err and err.count("\n") == 1


def test_segment_unreadable_file_exit_2(tmp_path: Path, cache: str, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    code = segment_cli([str(bad), "--out", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "bad.mp4" in err and "Traceback" not in err
