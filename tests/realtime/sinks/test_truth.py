"""realtime.sinks.truth: the truth score of records that carry a truth mask, left for the summary."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.sinks.base import RunControl, RunInfo
from realtime.sinks.truth import TruthSink
from tests.realtime.sinks._helpers import record


def _run() -> RunInfo:
    return RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=24.0, calibrated=False)


def test_perfect_and_missed_frames() -> None:
    run, sink = _run(), TruthSink()
    sink.open(run)
    hit = record(0)
    hit.truth = hit.mask * 255
    missed = record(1, status="no_detection", area=None)
    missed.truth = hit.truth.copy()
    sink.write(hit)
    sink.write(missed)
    sink.write(record(2))  # no truth: not scored
    sink.close()
    truth = run.extras["truth"]
    assert truth["frames"] == 2 and truth["dice_min"] == 0.0 and truth["dice_mean"] == pytest.approx(0.5)
    assert truth["centroid_error_px_median"] == pytest.approx(0.0, abs=0.5)  # the helper's centroid is (32, 24)


def test_no_truth_no_section() -> None:
    run, sink = _run(), TruthSink()
    sink.open(run)
    sink.write(record(0))
    sink.close()
    assert "truth" not in run.extras and np.isfinite(record(0).latency_ms)
