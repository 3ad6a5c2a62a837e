"""The streaming loop with stand-in engines: geometry round trip, outputs, failures, live policy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.base import Engine, EngineInfo
from realtime.frame import Frame
from realtime.outputs import Outputs, output_sinks
from realtime.pipeline import EXIT_ENGINE_FAILED, EXIT_OK, Pipeline, PipelineConfig, Prefetcher
from realtime.sinks.base import Callback
from realtime.sinks.csv_sink import read_csv
from realtime.tracker import Tracker

NATIVE = (606, 468)  # W, H
MODEL = (384, 288)


def ellipse_mask(cx: float, cy: float, ax: float = 45, ay: float = 28, angle: float = 20) -> np.ndarray:
    m = np.zeros((NATIVE[1], NATIVE[0]), np.uint8)
    cv2.ellipse(m, (int(cx), int(cy)), (int(ax), int(ay)), angle, 0, 360, 255, -1)
    return m


class TruthEngine(Engine):
    """Returns each frame's true mask resized to the model size, as a perfect network would.

    The frame's image *is* its mask here (bright nerve on black), so the engine sees only the
    preprocessed input: it un-z-scores nothing, it thresholds the z-scored input at its midpoint.
    """

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        super().__init__(EngineInfo(name="truth", backend="fake", precision="fp32", device="cpu",
                                    input_shape=(-1, 1, MODEL[1], MODEL[0])))
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.calls = 0

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise RuntimeError("GPU fell off the bus")
        time.sleep(self.delay_s)
        lo = batch.min(axis=(1, 2, 3), keepdims=True)
        hi = batch.max(axis=(1, 2, 3), keepdims=True)
        return ((batch - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)


def frames(n: int, fps: float = 24.0) -> list[Frame]:
    out = []
    for i in range(n):
        mask = ellipse_mask(200 + 3 * i, 90 + i)
        out.append(Frame(index=i, t_capture=time.monotonic(), pts=i / fps, image=mask.copy(), truth=mask))
    return out


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
