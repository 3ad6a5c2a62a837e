"""The streaming loop with stand-in engines: geometry round trip, outputs, failures, live policy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from realtime.frame import Frame
from realtime.outputs import Outputs, output_sinks
from realtime.pipeline import EXIT_ENGINE_FAILED, EXIT_OK, Pipeline, PipelineConfig, Prefetcher
from realtime.sinks.base import Callback
from realtime.sinks.csv_sink import read_csv
from realtime.sources import open_source
from realtime.tracker import Tracker
from tests.realtime._helpers import TruthEngine, ellipse_mask, frames


def run(tmp_path: Path, source, engine=None, **cfg) -> tuple:
    outputs = Outputs(csv=tmp_path / "m.csv", video=tmp_path / "o.mp4", summary=tmp_path / "s.json",
                      plot=tmp_path / "p.png")
    pipe = Pipeline(engine or TruthEngine(), Tracker(None, fps=24.0), output_sinks(outputs), PipelineConfig(**cfg))
    return pipe, pipe.run(source)


def test_geometry_round_trip_through_the_full_pipeline(tmp_path: Path) -> None:
    """An engine returning the resized true mask reproduces the native mask (Dice >= 0.95):
    catches half-pixel shifts and W/H swaps anywhere between preprocess and measurement."""
    _, result = run(tmp_path, frames(12), batch=4)
    assert result.exit_code == EXIT_OK
    truth = result.summary["truth"]
    assert truth["frames"] == 12 and truth["dice_min"] >= 0.95
    assert truth["csa_rel_error_median"] < 0.03 and truth["centroid_error_px_median"] < 1.0


def test_outputs_csv_video_summary_plot(tmp_path: Path) -> None:
    import av

    _, result = run(tmp_path, frames(10), prefetch=True)
    rows = read_csv(tmp_path / "m.csv")
    assert [int(r["frame"]) for r in rows] == list(range(10))
    assert all(r["status"] in {"ok", "reacquired"} for r in rows)
    assert float(rows[0]["area_px"]) > 3000 and rows[0]["area_mm2"] == ""
    assert float(rows[-1]["latency_ms"]) >= 0
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 10
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames_processed"] == 10 and summary["engine"]["backend"] == "fake"
    assert summary["latency_ms"]["p95"] is not None and "infer" in summary["stage_ms"]
    assert (tmp_path / "p.png").stat().st_size > 0


def test_engine_failure_keeps_everything_measured(tmp_path: Path) -> None:
    _, result = run(tmp_path, frames(10), engine=TruthEngine(fail_at=4))
    assert result.exit_code == EXIT_ENGINE_FAILED and "GPU fell off" in result.reason
    assert len(read_csv(tmp_path / "m.csv")) == 4
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames_processed"] == 4 and summary["exit_code"] == EXIT_ENGINE_FAILED


def test_stop_request_finishes_the_frame_and_finalises(tmp_path: Path) -> None:
    def endless():
        i = 0
        while True:
            mask = ellipse_mask(250, 100)
            yield Frame(index=i, t_capture=time.monotonic(), pts=i / 24, image=mask)
            i += 1

    stop_at_6 = Callback(lambda r: pipe.request_stop("test") if r.frame == 6 else None)
    pipe = Pipeline(TruthEngine(), Tracker(None, fps=24.0), output_sinks(Outputs(csv=tmp_path / "m.csv",
                    summary=tmp_path / "s.json"), extra=[stop_at_6]), PipelineConfig())
    result = pipe.run(endless())
    assert result.exit_code == EXIT_OK and result.reason == "test"
    assert len(read_csv(tmp_path / "m.csv")) == 7


def test_max_frames_and_prefetch_error_propagates(tmp_path: Path) -> None:
    _, result = run(tmp_path, frames(10), max_frames=3)
    assert result.summary["frames_processed"] == 3

    def broken():
        yield from frames(2)
        raise ValueError("decoder exploded")

    with pytest.raises(ValueError, match="decoder exploded"):
        list(Prefetcher(broken()))


def test_live_policy_slow_engine_drops_and_stays_bounded(tmp_path: Path) -> None:
    """A paced 24 fps phantom and an engine taking 100 ms a frame: stale frames are dropped and
    counted, no frame is processed twice, and no backlog builds up (latency bounded instead of growing):
    each frame processed is the newest due when the loop asked, at least 2 frame periods (100 ms of
    inference) after the previous one, however slow the machine."""
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
    assert all(b - a >= 2 for a, b in zip(frames, frames[1:]))  # fresh frames: queued ones would come 1 apart
    assert frames[-1] + 1 == len(frames) + result.summary["frames_dropped"]  # every index processed or dropped


def test_disk_full_stops_the_run_with_exit_5_and_finalises_the_rest(tmp_path: Path, monkeypatch) -> None:
    """The CSV's write hits ENOSPC at the 5th row: the run stops after that frame with exit code 5 and
    a reason naming the file; the video and the summary are finalised with the same frames, and the
    summary carries the exit code and reason the command returns."""
    import errno
    import os

    import realtime.sinks.csv_sink as csv_sink

    calls = {"n": 0}
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 6:  # the header, then 4 rows, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(csv_sink.os, "write", write)
    _, result = run(tmp_path, frames(12))
    monkeypatch.undo()
    from common.errors import EXIT_OUTPUT_FAILED

    assert result.exit_code == EXIT_OUTPUT_FAILED == 5
    assert "m.csv" in result.reason and "No space left on device" in result.reason
    assert len(read_csv(tmp_path / "m.csv")) == 4
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["exit_code"] == 5 and summary["ended_because"] == result.reason
    assert summary["frames_processed"] == 5 and summary["partial"] is False  # the frame in flight is finished
    from tests.realtime._helpers import decoded_frames

    assert decoded_frames(tmp_path / "o.mp4") == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "o.mp4", "p.png", "s.json"]  # no .tmp


def test_a_sink_that_cannot_be_finalised_makes_exit_5_in_the_summary(tmp_path: Path) -> None:
    class Unfinalisable(Callback):
        name = "recording /mnt/gone/x.mp4"

        def close(self) -> None:
            raise OSError(5, "Input/output error")

    pipe = Pipeline(TruthEngine(), Tracker(None, fps=24.0),
                    output_sinks(Outputs(summary=tmp_path / "s.json"), extra=[Unfinalisable(lambda r: None)]),
                    PipelineConfig())
    result = pipe.run(frames(3))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert result.exit_code == summary["exit_code"] == 5
    assert "/mnt/gone/x.mp4" in summary["ended_because"] == result.reason


def test_a_pause_is_not_data(tmp_path: Path) -> None:
    """Space at frame 3 (the window, through a HighGUI stand-in); while paused, a snapshot; space again.
    The 5 frames the source produced meanwhile are counted as paused, not dropped; the first row after the
    pause marks the gap; the fps leaves the pause out; the summary lists the pause, the snapshot and the
    baseline set at frame 3 (1 s at 4 fps)."""
    from realtime.sinks.window import LiveWindow
    from tests.realtime.sinks._helpers import FakeGUI

    source = frames(8)
    source[4].dropped_before = 5  # produced while paused
    source[6].dropped_before = 2  # dropped by the live policy
    gui = FakeGUI([None, None, None, "pause", None, "snapshot", "pause"], sleep=True)
    outputs = Outputs(csv=tmp_path / "m.csv", summary=tmp_path / "s.json", plot=tmp_path / "p.png")
    sinks = output_sinks(outputs, window=LiveWindow("t", snapshot_dir=tmp_path, gui=gui))
    pipe = Pipeline(TruthEngine(), Tracker(None, fps=4.0), sinks, PipelineConfig())
    result = pipe.run(source)
    assert result.exit_code == EXIT_OK
    rows = read_csv(tmp_path / "m.csv")
    assert [r["paused_before"] for r in rows] == ["0", "0", "0", "0", "5", "0", "0", "0"]
    assert [r["dropped_before"] for r in rows] == ["0", "0", "0", "0", "0", "0", "2", "0"]
    assert float(rows[4]["paused_s"]) >= 0.1 and all(float(r["paused_s"]) == 0 for i, r in enumerate(rows) if i != 4)
    s = result.summary
    assert (s["frames_processed"], s["frames_dropped"], s["frames_paused"], s["frames_seen"]) == (8, 2, 5, 15)
    assert s["paused_s"] == round(pipe.control.paused_s, 3) >= 0.1
    assert s["processing_fps"] == pytest.approx(8 / (s["wall_time_s"] - pipe.control.paused_s), rel=1e-2)
    pause, snapshot, baseline = s["events"]
    assert (pause["event"], pause["frame"], pause["resumed_frame"], pause["frames_skipped"]) == ("pause", 3, 4, 5)
    assert pause["duration_s"] == s["paused_s"]
    assert (snapshot["event"], snapshot["frame"], snapshot["file"]) == ("snapshot", 3, str(tmp_path / "snapshot-0000.png"))
    assert (baseline["event"], baseline["frame"], baseline["frames"]) == ("baseline_set", 3, [0, 3])
    assert s["baseline"]["area_px"] == baseline["area_px"] and (tmp_path / "snapshot-0000.png").is_file()
    assert json.loads((tmp_path / "s.json").read_text())["events"] == s["events"]


def test_a_plot_that_cannot_be_written_is_exit_5_in_the_summary_too(tmp_path: Path) -> None:
    """The plot's folder vanishes during the run: the command's exit code (5) and summary.json agree."""
    import shutil

    plots = tmp_path / "plots"
    plots.mkdir()
    gone = Callback(lambda r: shutil.rmtree(plots, ignore_errors=True) if r.frame == 2 else None)
    pipe = Pipeline(TruthEngine(), Tracker(None, fps=24.0),
                    output_sinks(Outputs(summary=tmp_path / "s.json", plot=plots / "p.png"), extra=[gone]),
                    PipelineConfig())
    result = pipe.run(frames(4))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert result.exit_code == summary["exit_code"] == 5
    assert str(plots / "p.png") in summary["ended_because"] == result.reason
