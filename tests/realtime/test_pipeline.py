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
