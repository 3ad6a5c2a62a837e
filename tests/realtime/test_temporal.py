"""Frame-to-frame jitter with known answers."""

from __future__ import annotations

import pytest

from realtime.temporal import absolute_changes, jitter, position_changes, relative_changes


def test_relative_changes_skip_gaps_and_non_positive() -> None:
    assert relative_changes([100, 110, 99, None, 50, 0, 10]) == pytest.approx([0.1, 0.1, 1.0])
    assert relative_changes([]) == [] and relative_changes([5.0]) == []


def test_absolute_and_position_changes() -> None:
    assert absolute_changes([2.0, 2.5, None, 3.0, 2.0]) == pytest.approx([0.5, 1.0])
    assert position_changes([(0, 0), (3, 4), None, (1, 1), (1, 2)]) == pytest.approx([5.0, 1.0])


def test_jitter_summary() -> None:
    area = [100.0, 102.0, 101.98, 100.0, 110.0]
    j = jitter(area, [3.0, 3.1, 3.1, 3.0, 3.0], [(0, 0), (0, 1), (0, 3), (0, 3), (4, 6)])
    rel = [0.02, 0.02 / 102.0, 1.98 / 101.98, 0.1]
    assert j["area_rel"]["n"] == 4
    assert j["area_rel"]["median"] == pytest.approx(sorted(rel)[1] / 2 + sorted(rel)[2] / 2)
    assert j["area_rel"]["max"] == pytest.approx(0.1)
    assert j["flattening_abs"]["median"] == pytest.approx(0.05)
    assert j["centroid_px"] == {"n": 4, "median": pytest.approx(1.5), "p95": pytest.approx(4.55), "max": 5.0}
    assert jitter([None, None])["area_rel"] == {"n": 0, "median": None, "p95": None, "max": None}


def test_truth_score_reports_jitter_next_to_the_truth() -> None:
    import cv2
    import numpy as np

    from realtime.morphometry import measure_mask
    from realtime.sinks.truth import TruthScore

    score = TruthScore()
    for k, (r_true, r_pred) in enumerate([(20, 20), (20, 22), (21, 21), (21, None)]):
        truth = np.zeros((100, 100), np.uint8)
        cv2.circle(truth, (50, 50), r_true, 1, -1)
        pred_mask = None
        if r_pred is not None:
            pred_mask = np.zeros_like(truth)
            cv2.circle(pred_mask, (50 + k, 50), r_pred, 1, -1)
        score.add(pred_mask, truth, measure_mask(pred_mask) if pred_mask is not None else None)
    d = score.to_dict()
    a = [float((cv2.circle(np.zeros((100, 100), np.uint8), (50, 50), r, 1, -1) > 0).sum()) for r in (20, 22, 21)]
    assert d["jitter"]["area_rel"]["n"] == 2  # the unmeasured last frame breaks the chain
    assert d["jitter"]["area_rel"]["max"] == pytest.approx(max(abs(a[1] - a[0]) / a[0], abs(a[2] - a[1]) / a[1]))
    assert d["truth_jitter"]["area_rel"]["n"] == 3
    assert d["jitter"]["centroid_px"]["median"] == pytest.approx(1.0, abs=0.05)


def test_running_jitter_equals_the_whole_series() -> None:
    import numpy as np

    from realtime.temporal import RunningJitter, jitter

    rng = np.random.default_rng(1)
    area = [None if rng.random() < 0.1 else float(rng.uniform(800, 1200)) for _ in range(300)]
    fr = [None if a is None else float(rng.uniform(1.2, 2.0)) for a in area]
    cen = [None if a is None else (float(rng.uniform(0, 50)), float(rng.uniform(0, 50))) for a in area]
    running = RunningJitter()
    for a, f, c in zip(area, fr, cen):
        running.add(a, f, c)
    assert running.to_dict() == jitter(area, fr, cen)
