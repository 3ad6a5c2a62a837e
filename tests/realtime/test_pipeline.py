"""The streaming loop with stand-in engines: geometry round trip, outputs, failures, live policy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from realtime.frame import Frame
from realtime.outputs import Outputs, output_sinks
from realtime.pipeline import (
    EXIT_ENGINE_FAILED,
    EXIT_OK,
    Pipeline,
    PipelineConfig,
    Prefetcher,
)
from realtime.sinks.base import Callback
from realtime.sinks.csv_sink import read_csv
from realtime.sources import open_source
from realtime.fusion import TemporalFusion
from realtime.tracker import Tracker
from tests.realtime._helpers import MODEL, TruthEngine, ellipse_mask, frames


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
    assert pause["resumed_t_s"] == pytest.approx(4 / 24)  # the time of the frame it resumed at
    assert pause["duration_s"] == s["paused_s"]
    assert (snapshot["event"], snapshot["frame"], snapshot["file"]) == ("snapshot", 3,
                                                                        str(tmp_path / "snapshot-0000.png"))
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


# ---------------------------------------------------------------------------------------------
# the loop's contracts, one at a time (pinned for mutation testing: docs/mutation-testing.md)
# ---------------------------------------------------------------------------------------------


class Recorder(Callback):
    """A sink that keeps what it is told (``events``) and can fail on open, on the n-th write or on close."""

    def __init__(self, name: str = "rec", events: list | None = None, fail_open: Exception | None = None,
                 fail_write_at: int | None = None, fail_close: Exception | None = None) -> None:
        super().__init__(lambda r: None)
        self.name, self.events = name, events if events is not None else []
        self.fail_open, self.fail_write_at, self.fail_close = fail_open, fail_write_at, fail_close
        self.records: list = []
        self.run_info = None

    def open(self, run) -> None:
        self.events.append((self.name, "open"))
        if self.fail_open is not None:
            raise self.fail_open
        self.run_info = run

    def write(self, record) -> None:
        self.events.append((self.name, "write", record.frame))
        if self.fail_write_at is not None and record.frame >= self.fail_write_at:
            raise OSError(28, f"{self.name} is full")
        self.records.append((record.frame, record.image is not None))

    def close(self) -> None:
        self.events.append((self.name, "close"))
        if self.fail_close is not None:
            raise self.fail_close


class CountingEngine(TruthEngine):
    """TruthEngine that keeps the size of every batch it is given."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.batches: list[int] = []

    def _infer(self, batch):
        self.batches.append(len(batch))
        return super()._infer(batch)


class FailingSource:
    """A source object: its frames, then ``failed`` (with or without an error), and a ``close`` to count."""

    def __init__(self, n: int, error: str | None, close_error: Exception | None = None, fails: bool = True) -> None:
        self.frames, self.error, self.failed, self.closed = frames(n), error, False, 0
        self.close_error, self.fails = close_error, fails

    def __iter__(self):
        yield from self.frames
        self.failed = self.fails

    def close(self) -> None:
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error


def pipeline(*sinks, engine=None, **cfg) -> Pipeline:
    return Pipeline(engine or TruthEngine(), Tracker(None, fps=24.0), list(sinks), PipelineConfig(**cfg))


def test_ctrl_c_inside_the_loop_ends_the_run_cleanly() -> None:
    def interrupted():
        yield from frames(3)
        raise KeyboardInterrupt

    rec = Recorder()
    result = pipeline(rec).run(interrupted())
    assert (result.exit_code, result.reason, result.interrupted) == (EXIT_OK, "stopped by the user (Ctrl-C)", True)
    assert [f for f, _ in rec.records] == [0, 1, 2] and rec.events[-1] == ("rec", "close")
    assert pipeline(Recorder()).run(frames(2)).interrupted is False
    assert rec.run_info.exit_code == 0 and rec.run_info.reason == "stopped by the user (Ctrl-C)"


@pytest.mark.parametrize("error, reason", [("cable pulled", "source failed: cable pulled"),
                                           (None, "source failed: stopped delivering frames")])
def test_a_source_that_failed_is_exit_3_with_its_error(error, reason) -> None:
    from realtime.pipeline import EXIT_SOURCE_FAILED

    source, rec = FailingSource(4, error), Recorder()
    result = pipeline(rec).run(source)
    assert (result.exit_code, result.reason) == (EXIT_SOURCE_FAILED, reason) and EXIT_SOURCE_FAILED == 3
    assert source.closed == 1 and len(rec.records) == 4 and rec.run_info.exit_code == 3


def test_an_engine_failure_outranks_the_source_and_a_source_that_cannot_close_is_only_logged(caplog) -> None:
    source = FailingSource(6, "gone", close_error=OSError("device busy"))
    result = pipeline(Recorder(), engine=TruthEngine(fail_at=2)).run(source)
    assert result.exit_code == EXIT_ENGINE_FAILED and result.reason == "engine failed: GPU fell off the bus"
    assert source.closed == 1 and "the source could not be finalised: device busy" in caplog.text

    ok_source = FailingSource(2, None, close_error=OSError("device busy"), fails=False)
    assert pipeline(Recorder()).run(ok_source).exit_code == EXIT_OK  # a close error alone is not a failure


def test_an_output_that_cannot_open_is_named_and_the_ones_opened_are_closed() -> None:
    from common.errors import OutputError

    events: list = []
    first, broken = Recorder("first", events), Recorder("csv /ro/m.csv", events,
                                                        fail_open=PermissionError(13, "Permission denied"))
    last = Recorder("last", events)
    source = FailingSource(2, None)
    with pytest.raises(OutputError) as err:
        pipeline(first, broken, last).run(source)
    assert str(err.value) == "cannot write csv /ro/m.csv: Permission denied" and err.value.exit_code == 5
    assert events == [("first", "open"), ("csv /ro/m.csv", "open"), ("first", "close")]  # 'last' never opened
    with pytest.raises(RuntimeError, match="not an OSError"):  # other errors pass through as they are
        pipeline(Recorder("a", events), Recorder("b", fail_open=RuntimeError("not an OSError"))).run(frames(1))
    assert events[-1] == ("a", "close")


def test_failing_outputs_the_first_one_names_the_failure_the_others_get_the_frame_in_flight(caplog) -> None:
    events: list = []
    a, b, c = Recorder("a", events, fail_write_at=2), Recorder("b", events, fail_write_at=2), Recorder("c", events)
    pipe = pipeline(a, b, c)
    result = pipe.run(frames(6))
    assert result.exit_code == 5 and result.reason == "output failed: a: [Errno 28] a is full"
    assert pipe.output_failure == "a: [Errno 28] a is full" and pipe.processed == 3
    assert [f for f, _ in c.records] == [0, 1, 2]  # the frame in flight reaches every output, then the run stops
    assert [e for e in events if e[1] == "write"] == [(n, "write", f) for f in range(3) for n in "abc"]
    assert [e for e in events if e[1] == "close"] == [("a", "close"), ("b", "close"), ("c", "close")]
    assert "b failed too at frame 2" in caplog.text and caplog.text.count("output failed at frame 2") == 1
    assert all(seen for _, seen in c.records)  # every sink sees the frame's pixels


def test_the_pixels_are_released_once_every_sink_has_the_record() -> None:
    kept = []
    pipeline(Callback(kept.append), Recorder()).run(frames(2))
    assert [r.frame for r in kept] == [0, 1]
    assert all(r.image is None and r.mask is None and r.truth is None for r in kept)


def test_closing_a_failed_output_again_is_quiet_and_a_close_failure_does_not_mask_another_exit_code() -> None:
    a = Recorder("a", fail_write_at=1, fail_close=OSError("again"))
    result = pipeline(a).run(frames(3))
    assert result.reason == "output failed: a: [Errno 28] a is full"  # not the close's error

    late = Recorder("late", fail_close=OSError(5, "Input/output error"))
    result = pipeline(late, engine=TruthEngine(fail_at=1)).run(frames(3))
    assert result.exit_code == EXIT_ENGINE_FAILED  # the engine failure stays the reason
    result = pipeline(late).run(frames(2))
    assert (result.exit_code, result.reason) == (5, "output failed: late: [Errno 5] Input/output error")


def test_batches_are_filled_up_to_the_frame_limit() -> None:
    engine = CountingEngine()
    pipe = pipeline(Recorder(), engine=engine, batch=4, max_frames=6)
    result = pipe.run(frames(20))
    assert engine.batches == [4, 2] and pipe.processed == 6 and result.reason == "6 frames processed"
    engine = CountingEngine()
    result = pipeline(Recorder(), engine=engine, batch=4).run(frames(6))
    assert engine.batches == [4, 2] and result.reason == "end of source"
    engine = CountingEngine()
    assert pipeline(Recorder(), engine=engine, max_frames=0).run(frames(3)).reason == "0 frames processed"
    assert engine.batches == []


def test_duration_ends_the_run_and_names_it() -> None:
    rec = Recorder()
    result = pipeline(rec, duration_s=0.0).run(frames(3))
    assert result.reason == "duration 0 s reached" and rec.records == []
    result = pipeline(Recorder(), duration_s=2.5).run(frames(3))
    assert result.reason == "end of source"  # three frames take far less than 2.5 s
    result = pipeline(Recorder(), duration_s=1e-9).run(iter(lambda: time.sleep(0.01) or frames(1)[0], None))
    assert result.reason == "duration 1e-09 s reached"


def test_a_stop_while_a_batch_is_captured_ends_it_there() -> None:
    engine = CountingEngine()

    def source():
        for i, f in enumerate(frames(8)):
            if i == 2:
                pipe.request_stop("stop at capture")
            yield f

    rec = Recorder()
    pipe = pipeline(rec, engine=engine, batch=4)
    result = pipe.run(source())
    assert engine.batches == [3] and result.reason == "stop at capture"
    assert [f for f, _ in rec.records] == [0]  # the frame in flight is finished, the rest of the batch is not


def test_per_frame_stage_times_are_the_batch_time_shared(monkeypatch) -> None:
    """A clock that advances 8 ms on every reading: each timed block lasts 8 ms, shared by a batch of 4."""
    import realtime.record as record

    clock = {"t": 0}

    def tick() -> int:
        clock["t"] += 8_000_000
        return clock["t"]

    monkeypatch.setattr(record.time, "perf_counter_ns", tick)
    rec = []
    pipeline(Callback(rec.append), batch=4).run(frames(4))
    assert [r.timings_ms["preprocess"] for r in rec] == [2.0] * 4
    assert [r.timings_ms["infer"] for r in rec] == [2.0] * 4
    assert all(r.timings_ms["postprocess"] == 8.0 and r.timings_ms["track"] == 8.0 for r in rec)
    assert [r.timings_ms["capture_wait"] for r in rec] == [8.0] * 4  # each frame's own wait, not shared


def test_the_record_carries_the_frame_and_the_measurement() -> None:
    from realtime.calibration import Calibration

    source = frames(2)
    source[1].dropped_before, source[1].t_source = 3, 12.5
    rec = []
    pipe = Pipeline(TruthEngine(), Tracker(Calibration(0.1, 0.1, "test"), fps=24.0), [Callback(rec.append)],
                    PipelineConfig())
    pipe.run(source)
    r = rec[1]
    assert (r.frame, r.t_s, r.dropped_before, r.t_source, r.t_wall) == (1, 1 / 24, 3, 12.5, source[1].t_wall)
    assert r.calibrated is True and r.window is None and r.measured
    assert len(r.contours) == 1 and r.contours[0].shape[1:] == (1, 2)
    assert 0 <= r.latency_ms < 60_000
    rec2 = []
    pipeline(Callback(rec2.append)).run(frames(1))
    assert rec2[0].calibrated is False


def test_the_summary_says_how_windows_were_placed(tmp_path: Path) -> None:
    from realtime.window_policy import WindowPolicy
    from tests.realtime.test_window_policy import HintedEngine

    def summary(engine, **cfg) -> dict:
        pipe = pipeline(*output_sinks(Outputs(summary=tmp_path / "s.json")), engine=engine, **cfg)
        pipe.run(iter([Frame(index=i, pts=i / 24, t_capture=0.0, image=frames(1)[0].image) for i in range(3)]))
        return json.loads((tmp_path / "s.json").read_text())["window"]

    assert summary(TruthEngine()) == {"mode": None}
    assert summary(HintedEngine()) == {"mode": "localiser"}
    got = summary(HintedEngine(), window=WindowPolicy(relocalise_every=5))
    assert got["mode"] == "tracked" and sum(got["windows"].values()) == 3


def test_hints_need_a_frame_by_frame_engine() -> None:
    from realtime.window_policy import WindowPolicy
    from tests.realtime.test_window_policy import HintedEngine

    def hinting(n: int) -> bool:
        engine = HintedEngine()
        engine.input_shape = (n, *HintedEngine.input_shape[1:])
        return pipeline(engine=engine, window=WindowPolicy())._hinting

    assert hinting(-1) and hinting(1) and not hinting(4)
    assert not pipeline(engine=HintedEngine())._hinting and not pipeline(window=WindowPolicy())._hinting


class FlickerEngine(TruthEngine):
    """A steady nerve and a flickering network: the nerve's disc at probability 1.0 on even calls and 0.55 on
    odd ones, which also show a spurious blob at 0.55 far from it."""

    def _infer(self, batch):
        import cv2

        out = np.zeros((len(batch), 1, MODEL[1], MODEL[0]), np.float32)
        for i in range(len(batch)):
            odd = (self.calls + i) % 2
            cv2.circle(out[i, 0], (150, 120), 30, 0.55 if odd else 1.0, -1)
            if odd:
                cv2.circle(out[i, 0], (320, 40), 12, 0.55, -1)
        self.calls += 1
        return out


def test_fusion_cuts_the_mask_from_the_fused_map_and_reads_confidence_from_the_frame(tmp_path: Path) -> None:
    """The fused map on odd frames is 0.775 on the nerve and 0.275 on the blob: the blob is gone from the
    mask (one detection), while the confidence is still the frame's own 0.55."""
    from realtime.fusion import TemporalFusion

    def source(n: int) -> list[Frame]:
        return [Frame(index=i, t_capture=time.monotonic(), pts=i / 24, image=ellipse_mask(250, 150)) for i in range(n)]

    rec = []
    pipe = pipeline(Callback(rec.append), *output_sinks(Outputs(csv=tmp_path / "m.csv", summary=tmp_path / "s.json")),
                    engine=FlickerEngine(), fusion=TemporalFusion(weight=0.5))
    pipe.run(source(5))
    assert [r.fused for r in rec] == [False, True, True, True, True]
    assert [r.tracked.n_detections for r in rec] == [1] * 5
    # the frame's own (the bilinear edge pulls it down a little; fused it would be 0.775)
    assert [r.measurement.confidence for r in rec] == pytest.approx([1.0, 0.55, 1.0, 0.55, 1.0], abs=0.015)
    assert [r["fused"] for r in read_csv(tmp_path / "m.csv")] == ["0", "1", "1", "1", "1"]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["fusion"] == {"weight": 0.5, "motion": "shift", "max_shift": 0.1, "max_area_change": 0.5,
                           "frames": {"fused": 4, "own": 1}}

    rec.clear()  # without fusion the blob is a second detection on odd frames
    pipeline(Callback(rec.append), engine=FlickerEngine()).run(source(4))
    assert [r.tracked.n_detections for r in rec] == [1, 2, 1, 2] and all(r.fused is None for r in rec)
    assert json.loads((tmp_path / "s.json").read_text())["fusion"] is not None


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "The streaming loop and temporal fusion")
# ---------------------------------------------------------------------------------------------


def test_what_the_sinks_are_told_about_the_run() -> None:
    from realtime.calibration import Calibration

    source = FailingSource(2, None, fails=False)
    source.fps = 30.0
    rec = Recorder()
    pipe = Pipeline(TruthEngine(), Tracker(Calibration(0.1, 0.1), fps=24.0), [rec], PipelineConfig(fps_hint=12.0))
    pipe.run(source)
    run = rec.run_info
    assert run.source is source and pipe.control.source is source and run.engine is pipe.engine
    assert run.fps == 30.0 and run.calibrated is True and run.tracker is pipe.tracker
    rec = Recorder()
    pipeline(rec, fps_hint=12.0).run(frames(1))  # a source without a frame rate: the hint
    assert rec.run_info.fps == 12.0 and rec.run_info.calibrated is False


def test_a_stop_without_a_reason_and_the_default_reason() -> None:
    def endless():
        i = 0
        while True:
            yield frames(1)[0]
            i += 1

    stop = Callback(lambda r: pipe.request_stop() if r.frame == 0 else None)
    pipe = pipeline(stop)
    assert pipe.run(endless()).reason == "stopped by the user"
    stop = Callback(lambda r: pipe.request_stop("") if r.frame == 0 else None)
    pipe = pipeline(stop)
    assert pipe.run(endless()).reason == "stopped"


def test_duration_leaves_paused_time_out() -> None:
    """90 s already paused and a 60 s duration: the run is not over (the pause is not the run's time)."""
    pipe = pipeline(Recorder(), duration_s=60.0)
    pipe.control.paused_s = 90.0
    assert pipe.run(frames(3)).reason == "end of source"


def test_what_is_logged_when_things_fail(caplog) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="realtime.pipeline")
    a = Recorder("a", fail_write_at=1, fail_close=OSError("again"))
    b = Recorder("b", fail_write_at=1)
    pipe = pipeline(a, b)
    pipe.run(frames(3))
    assert pipe.control.reason == "output failed: a: [Errno 28] a is full"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "realtime.pipeline"]
    assert messages == [
        ("ERROR", "output failed at frame 1: a: [Errno 28] a is full; the run stops and the files written so far "
                  "are finalised"),
        ("ERROR", "b failed too at frame 1: [Errno 28] b is full"),
        ("DEBUG", "a (failed earlier) on close: again"),  # its close error again is no news
    ]
    caplog.clear()
    pipeline(Recorder("late", fail_close=OSError(5, "Input/output error"))).run(frames(1))
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "realtime.pipeline"] == [
        ("ERROR", "late could not be finalised: [Errno 5] Input/output error")]
    caplog.clear()
    pipeline(Recorder(), engine=TruthEngine(fail_at=2)).run(frames(4))
    assert ("ERROR", "engine failed on frame 2: GPU fell off the bus") in [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "realtime.pipeline"]


def test_the_frame_goes_through_at_the_engines_size_threshold_and_minimum_area() -> None:
    class SmallTruthEngine(TruthEngine):
        def __init__(self) -> None:
            super().__init__()
            self.info.input_shape = (-1, 1, 96, 128)

    rec = []
    pipeline(Callback(rec.append), engine=SmallTruthEngine()).run(frames(2))
    assert [r.measured for r in rec] == [True, True]
    truth = float((frames(1)[0].truth > 0).sum())
    assert rec[0].measurement.area_px == pytest.approx(truth, rel=0.05)

    class HalfEngine(TruthEngine):  # the nerve at probability 0.6
        def _infer(self, batch):
            return super()._infer(batch) * np.float32(0.6)

    rec.clear()
    pipeline(Callback(rec.append), engine=HalfEngine()).run(frames(1))
    assert rec[0].measured  # 0.6 >= the default 0.5
    rec.clear()
    pipeline(Callback(rec.append), engine=HalfEngine(), threshold=0.7).run(frames(1))
    assert not rec[0].measured

    class CalibratedHalfEngine(HalfEngine):  # a model that carries its mask threshold (mn-cv --final)
        def __init__(self) -> None:
            super().__init__()
            self.info.config = {**self.info.config, "postprocess": {"threshold": 0.65}}

    for threshold, measured in ((None, False), (0.55, True)):  # the model's 0.65 unless --threshold says
        rec.clear()
        pipe = pipeline(Callback(rec.append), engine=CalibratedHalfEngine(), threshold=threshold,
                        fusion=TemporalFusion(weight=0.5))
        pipe.run(frames(1))
        assert rec[0].measured is measured
        assert pipe.threshold == pipe.config.fusion.threshold == (threshold or 0.65)
    with pytest.raises(UserError, match="between 0 and 1"):
        pipeline(engine=HalfEngine(), threshold=1.5)
    rec.clear()
    pipeline(Callback(rec.append), min_area_px=int(truth * 2)).run(frames(1))
    assert not rec[0].measured and rec[0].tracked.n_detections == 0


def test_the_tracker_sees_the_frame_and_the_latency_runs_from_capture(monkeypatch) -> None:
    import realtime.pipeline as pipeline_mod

    seen = []

    class SpyTracker(Tracker):
        def update(self, post, frame_index, t_s, image=None):
            seen.append(image)
            return super().update(post, frame_index, t_s, image=image)

    monkeypatch.setattr(pipeline_mod.time, "monotonic", lambda: 1000.0)
    source = frames(2)
    for f in source:
        f.t_capture = 999.75
    rec = []
    Pipeline(TruthEngine(), SpyTracker(None, fps=24.0), [Callback(rec.append)], PipelineConfig()).run(source)
    assert [id(i) for i in seen] == [id(f.image) for f in source]
    assert [r.latency_ms for r in rec] == [250.0, 250.0]


def spy_fusion():
    """A TemporalFusion that records what the pipeline hands it: ``images`` (apply), ``calls`` (observe)."""
    from realtime.fusion import TemporalFusion

    class SpyFusion(TemporalFusion):
        def __init__(self) -> None:
            super().__init__()
            self.images: list = []
            self.calls: list = []

        def apply(self, prob, image=None):
            self.images.append(image)
            return super().apply(prob, image)

        def observe(self, measured, centre=None):
            self.calls.append((measured, centre))
            super().observe(measured, centre)

    return SpyFusion()


def test_the_fusion_is_told_where_the_tracked_nerve_is_in_the_maps_pixels() -> None:
    fusion, rec = spy_fusion(), []
    source = frames(3)
    source[1].image = np.zeros_like(source[1].image)  # nothing on the second frame
    pipeline(Callback(rec.append), fusion=fusion).run(source)
    assert [m for m, _ in fusion.calls] == [True, False, True] and fusion.calls[1][1] is None
    for (_, centre), r in zip(fusion.calls[::2], rec[::2]):
        m = r.measurement
        expected = ((m.centroid_x_px + 0.5) * MODEL[0] / 606 - 0.5, (m.centroid_y_px + 0.5) * MODEL[1] / 468 - 0.5)
        assert centre == pytest.approx(expected, abs=1e-9)


def test_the_fusion_gets_each_frame_as_the_network_saw_it() -> None:
    """The motion comes from the network's input (same size as the map), frame by frame, in order."""
    from train.preprocess import preprocess_image

    fusion, source = spy_fusion(), frames(3)
    source[2].image = np.ascontiguousarray(source[2].image[:, ::-1])  # a different frame last
    pipeline(Callback(lambda r: None), fusion=fusion).run(source)
    assert len(fusion.images) == 3
    for image, frame in zip(fusion.images, source):
        assert image.shape == (MODEL[1], MODEL[0])
        np.testing.assert_allclose(image, preprocess_image(frame.image, MODEL), atol=1e-6)


@pytest.mark.parametrize("error, code, reason", [
    (ValueError("decoder exploded"), 1, "failed: unexpected ValueError: decoder exploded"),
    (UserError("the clip ends in a 3-D volume"), 2, "failed: the clip ends in a 3-D volume"),
    (PermissionError(13, "Permission denied", "/x/y.mp4"), 2, "failed: Permission denied: /x/y.mp4"),
])
def test_an_unexpected_error_goes_on_to_the_command_and_the_summary_says_so(tmp_path: Path, error, code,
                                                                             reason) -> None:
    """The exception reaches the command (which reports it in one line and exits with ``code``, as
    common.errors.run_cli does); the outputs are finalised first and the summary carries the same code."""
    def broken():
        yield from frames(3)
        raise error

    rec = Recorder()
    pipe = pipeline(rec, *output_sinks(Outputs(csv=tmp_path / "m.csv", summary=tmp_path / "s.json")))
    with pytest.raises(type(error)):
        pipe.run(broken())
    assert (rec.run_info.exit_code, rec.run_info.reason) == (code, reason)
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["exit_code"], s["ended_because"], s["frames_processed"]) == (code, reason, 3)
    assert len(read_csv(tmp_path / "m.csv")) == 3 and rec.events[-1] == ("rec", "close")


def test_the_frames_given_are_the_ones_processed_and_the_wall_time() -> None:
    source, rec = FailingSource(5, None, fails=False), Recorder()
    pipe = pipeline(rec)
    pipe.run(source, frames=iter(frames(2)))  # e.g. mn-live's first frame chained back in front
    assert [f for f, _ in rec.records] == [0, 1] and source.closed == 1
    assert 0.0 <= rec.run_info.wall_s < 600.0 and pipe.control.tracker is pipe.tracker


def test_a_source_marked_failed_without_an_error_attribute() -> None:
    class Bare:
        failed = False

        def __iter__(self):
            yield from frames(2)
            self.failed = True

    assert pipeline(Recorder()).run(Bare()).reason == "source failed: stopped delivering frames"


def test_the_window_section_of_an_engine_without_the_attribute(tmp_path: Path) -> None:
    class Duck:  # an engine-like object that never heard of windows
        size, input_shape = MODEL, (-1, 1, MODEL[1], MODEL[0])

        def __init__(self) -> None:
            self.inner = TruthEngine()

        def infer(self, x):
            return self.inner.infer(x)

    rec = Recorder()
    pipeline(rec, engine=Duck()).run(frames(1))
    assert rec.run_info.extras["window"] == {"mode": None} and rec.run_info.extras["fusion"] is None


def test_close_failures_while_opening_and_of_the_source_are_named(caplog) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="realtime.pipeline")
    first = Recorder("first", fail_close=OSError("stuck"))
    with pytest.raises(RuntimeError):
        pipeline(first, Recorder("second", fail_open=RuntimeError("no"))).run(frames(1))
    source = FailingSource(1, None, close_error=OSError("device busy"), fails=False)
    pipeline(Recorder()).run(source)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "realtime.pipeline"] == [
        ("ERROR", "first could not be finalised: stuck"), ("ERROR", "the source could not be finalised: device busy")]


def test_an_os_error_without_a_file_name() -> None:
    from realtime.pipeline import _failure

    assert _failure(PermissionError(13, "Permission denied")) == (2, "failed: Permission denied")
    assert _failure(OSError("no errno")) == (2, "failed: no errno")
