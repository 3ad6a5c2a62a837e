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


# --- found by mutation testing (docs/mutation-testing.md)

import cv2

from realtime.morphometry import measure_mask
from realtime.sinks.truth import TruthScore


def _rect(x: int, y: int, w: int, h: int) -> np.ndarray:
    m = np.zeros((60, 80), np.uint8)
    m[y:y + h, x:x + w] = 1
    return m


def test_truth_score_errors_against_known_answers() -> None:
    """A 20x10 prediction against a 20x20 truth, shifted by (3, 4): every error is known."""
    truth = _rect(10, 10, 20, 20) * 255
    pred_mask = _rect(13, 14, 20, 10)
    pred, true = measure_mask(pred_mask), measure_mask(truth > 0)
    score = TruthScore()
    score.add(pred_mask, truth, pred)
    d = score.to_dict()
    overlap = 17 * 10
    assert d["frames"] == 1 and d["dice_mean"] == d["dice_min"] == pytest.approx(2 * overlap / (200 + 400))
    assert d["csa_rel_error_median"] == pytest.approx(abs(pred.area_px - true.area_px) / true.area_px)
    assert d["csa_rel_error_median"] == d["csa_rel_error_p95"]
    assert d["fr_abs_error_median"] == pytest.approx(abs(pred.flattening_ratio - true.flattening_ratio))
    assert d["fr_abs_error_median"] > 0.5
    assert d["centroid_error_px_median"] == pytest.approx(
        np.hypot(pred.centroid_x_px - true.centroid_x_px, pred.centroid_y_px - true.centroid_y_px))
    assert d["centroid_error_px_median"] == pytest.approx(np.hypot(3.0, -1.0), abs=0.01)
    moved = _rect(16, 14, 20, 12)  # the next frame: the prediction grows and moves, the truth stays
    score.add(moved, truth, measure_mask(moved))
    d, m = score.to_dict(), measure_mask(moved)
    assert d["frames"] == 2 and d["truth_jitter"]["area_rel"] == {"n": 1, "median": 0.0, "p95": 0.0, "max": 0.0}
    assert d["truth_jitter"]["centroid_px"]["max"] == 0.0 and d["truth_jitter"]["flattening_abs"]["max"] == 0.0
    assert d["jitter"]["area_rel"]["n"] == 1 and d["jitter"]["area_rel"]["max"] == pytest.approx(
        abs(m.area_px - pred.area_px) / pred.area_px, rel=1e-3)
    assert d["jitter"]["flattening_abs"]["max"] == pytest.approx(abs(m.flattening_ratio - pred.flattening_ratio),
                                                                 rel=1e-3)
    assert d["jitter"]["centroid_px"]["max"] == pytest.approx(
        np.hypot(m.centroid_x_px - pred.centroid_x_px, m.centroid_y_px - pred.centroid_y_px), rel=1e-3)


def test_truth_score_without_a_prediction_and_without_a_truth() -> None:
    truth = _rect(10, 10, 20, 20) * 255
    score = TruthScore()
    score.add(None, truth, None)  # nothing predicted: CSA all wrong, no FR or centroid error
    d = score.to_dict()
    assert (d["dice_mean"], d["dice_min"], d["csa_rel_error_median"]) == (0.0, 0.0, 1.0)
    assert d["fr_abs_error_median"] is None and d["centroid_error_px_median"] is None
    empty = TruthScore()
    assert empty.to_dict()["dice_min"] is None and empty.to_dict()["frames"] == 0
    pred_mask = _rect(10, 10, 20, 20)
    empty.add(pred_mask, np.zeros((60, 80), np.uint8), measure_mask(pred_mask))  # an empty truth: Dice only
    d = empty.to_dict()
    assert d["frames"] == 1 and d["csa_rel_error_median"] is None and d["centroid_error_px_median"] is None
    empty.add(pred_mask, np.zeros((60, 80), np.uint8), measure_mask(pred_mask))
    d = empty.to_dict()
    assert d["jitter"]["area_rel"]["n"] == 1 and d["truth_jitter"]["area_rel"]["n"] == 0
    assert d["jitter"]["centroid_px"]["n"] == 1 and d["truth_jitter"]["centroid_px"]["n"] == 0
    missed = TruthScore()
    missed.add(None, truth, None)
    missed.add(pred_mask, truth, measure_mask(pred_mask))
    d = missed.to_dict()
    assert d["jitter"]["area_rel"]["n"] == 0 and d["truth_jitter"]["area_rel"]["n"] == 1  # unmeasured: no change
    assert d["csa_rel_error_p95"] == pytest.approx(0.95)  # between 1.0 (missed) and 0.0


def test_truth_sink_without_open_leaves_nothing() -> None:
    sink = TruthSink()
    hit = record(0)
    hit.truth = hit.mask * 255
    sink.write(hit)
    sink.close()  # never opened: no run to leave the section in, and no error
    assert sink.score is not None and sink.score.dice.n == 1
    assert cv2.countNonZero(hit.truth) > 0


def test_truth_score_medians_of_two_frames() -> None:
    truth = _rect(10, 10, 20, 20)  # a 0/1 truth counts like a 0/255 one
    a, b = _rect(10, 10, 20, 10), _rect(14, 12, 10, 10)
    ma, mb, mt = measure_mask(a), measure_mask(b), measure_mask(truth)
    score = TruthScore()
    score.add(a, truth, ma)
    score.add(b, truth, mb)
    d = score.to_dict()
    assert d["dice_min"] == pytest.approx(2 * 100 / (100 + 400)) and d["dice_mean"] > d["dice_min"]
    assert d["csa_rel_error_median"] == pytest.approx((abs(ma.area_px - 400) + abs(mb.area_px - 400)) / 2 / 400)
    assert d["fr_abs_error_median"] == pytest.approx(
        (abs(ma.flattening_ratio - mt.flattening_ratio) + abs(mb.flattening_ratio - mt.flattening_ratio)) / 2)
    ca = np.hypot(ma.centroid_x_px - mt.centroid_x_px, ma.centroid_y_px - mt.centroid_y_px)
    cb = np.hypot(mb.centroid_x_px - mt.centroid_x_px, mb.centroid_y_px - mt.centroid_y_px)
    assert d["centroid_error_px_median"] == pytest.approx((ca + cb) / 2) and ca != cb


def test_truth_score_one_pixel_and_empty_masks() -> None:
    dot = np.zeros((60, 80), np.uint8)
    dot[5, 5] = 1
    score = TruthScore()
    score.add(dot, dot, measure_mask(dot))  # a 1-pixel truth and prediction are measured
    score.add(dot, dot, measure_mask(dot))
    d = score.to_dict()
    assert d["csa_rel_error_median"] == 0.0 and d["dice_min"] == 1.0
    assert d["jitter"]["area_rel"]["n"] == 1 and d["truth_jitter"]["area_rel"]["n"] == 1
    gone = TruthScore()
    truth = _rect(10, 10, 20, 20)
    gone.add(truth, truth, measure_mask(truth))
    empty = np.zeros((60, 80), np.uint8)
    gone.add(empty, empty, measure_mask(empty))  # nothing predicted, nothing true: not a change of the area
    d = gone.to_dict()
    assert d["jitter"]["area_rel"]["n"] == 0 and d["truth_jitter"]["area_rel"]["n"] == 0
