"""Tracker: scripted sequences of synthetic masks with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from realtime.calibration import Calibration
from realtime.morphometry import measure_mask
from realtime.postprocess import PostprocessResult, postprocess
from realtime.tracker import (
    SMOOTHED_FIELDS,
    TrackedMeasurement,
    Tracker,
    TrackState,
    TrackStatus,
    parse_baseline_range,
)
from train.errors import UserError

W, H = 200, 150
OK, NO, LOST, REACQ = TrackStatus.OK, TrackStatus.NO_DETECTION, TrackStatus.LOST, TrackStatus.REACQUIRED


def frame(*shapes: tuple, prob: float = 0.9) -> PostprocessResult:
    """A post-processed frame from shapes: ("disc", cx, cy, r) or ("rect", x, y, w, h)."""
    mask = np.zeros((H, W), np.float32)
    for shape in shapes:
        if shape[0] == "disc":
            cv2.circle(mask, (int(shape[1]), int(shape[2])), int(shape[3]), prob, -1)
        elif shape[0] == "rect":
            x, y, w, h = shape[1:]
            mask[y:y + h, x:x + w] = prob
        else:
            raise ValueError(shape)
    return postprocess(mask, (W, H), min_area_px=20)


def run(tracker: Tracker, frames: list[PostprocessResult], start: int = 0,
        fps: float = 10.0) -> list[TrackedMeasurement]:
    return [tracker.update(post, start + i, (start + i) / fps) for i, post in enumerate(frames)]


# -------------------------------------------------------------------------------------- motion

def test_nerve_moving_one_pixel_per_frame() -> None:
    cal = Calibration(0.1, 0.1, "test")
    tracker = Tracker(cal, fps=10.0)
    results = run(tracker, [frame(("disc", 40 + i, 70, 15)) for i in range(40)])
    assert all(r.status is OK for r in results)
    # baseline: median of the first second (10 frames at 10 fps): centroid x 40..49 -> 44.5
    b = tracker.baseline
    assert b is not None and b.n_frames == 10 and (b.first_frame, b.last_frame) == (0, 9)
    assert b.centroid_x_px == pytest.approx(44.5) and b.centroid_y_px == pytest.approx(70.0)
    assert b.centroid_x_mm == pytest.approx(4.45)
    assert all(r.displacement_px is None for r in results[:9])  # no baseline yet
    for i, r in enumerate(results[9:], start=9):
        assert r.displacement_dx_px == pytest.approx(i - 4.5)
        assert r.displacement_dy_px == pytest.approx(0.0)
        assert r.displacement_px == pytest.approx(abs(i - 4.5))
        assert r.displacement_mm == pytest.approx(0.1 * abs(i - 4.5))
        assert r.csa_change_pct == pytest.approx(0.0)
    assert tracker.state is TrackState.TRACKING


def test_anisotropic_displacement_in_mm() -> None:
    tracker = Tracker(Calibration(0.05, 0.2, "test"), fps=2.0)  # baseline: 2 frames
    results = run(tracker, [frame(("disc", 60, 60, 12))] * 2 + [frame(("disc", 63, 64, 12))])
    r = results[-1]
    assert (r.displacement_dx_px, r.displacement_dy_px) == pytest.approx((3.0, 4.0))
    assert r.displacement_px == pytest.approx(5.0)
    assert (r.displacement_dx_mm, r.displacement_dy_mm) == pytest.approx((0.15, 0.8))
    assert r.displacement_mm == pytest.approx(math.hypot(0.15, 0.8))


# ----------------------------------------------------------------------------------- distractors

def test_distractor_far_away_is_ignored_while_tracking() -> None:
    tracker = Tracker(None, fps=10.0, gate_px=30.0)
    nerve = ("disc", 50, 75, 12)
    frames = [frame(nerve)] * 5 + [frame(nerve, ("disc", 150, 75, 25))] * 10  # a bigger blob appears far away
    results = run(tracker, frames)
    assert all(r.status is OK for r in results)
    for r in results:
        assert r.measurement is not None
        assert r.measurement.centroid_x_px == pytest.approx(50.0)
        assert r.measurement.n_components == 1
    assert [r.n_detections for r in results] == [1] * 5 + [2] * 10
    assert results[-1].nerve_labels == (2,)  # the distractor is the larger component, label 1


def test_acquisition_takes_the_largest_most_confident() -> None:
    tracker = Tracker(None, fps=10.0)
    r = tracker.update(frame(("disc", 50, 75, 12), ("disc", 150, 75, 20)), 0, 0.0)
    assert r.measurement is not None and r.measurement.centroid_x_px == pytest.approx(150.0)
    # probability mass: a larger but much less confident region loses
    mask = np.zeros((H, W), np.float32)
    cv2.circle(mask, (50, 75), 15, 1.0, -1)
    cv2.circle(mask, (150, 75), 17, 0.55, -1)
    r = Tracker(None, fps=10.0).update(postprocess(mask, (W, H)), 0, 0.0)
    assert r.measurement is not None and r.measurement.centroid_x_px == pytest.approx(50.0)
    assert r.measurement.confidence == pytest.approx(1.0)


def test_nearest_within_gate_wins_and_gate_is_in_mm_when_calibrated() -> None:
    # 0.2 mm/px: a gate of 8 mm is 40 px
    tracker = Tracker(Calibration(0.2, 0.2, "test"), fps=10.0, lost_after_frames=2)
    run(tracker, [frame(("disc", 50, 75, 10))] * 3)
    r = tracker.update(frame(("disc", 85, 75, 10), ("disc", 150, 75, 20)), 3, 0.3)  # 35 px = 7 mm away
    assert r.status is OK and r.measurement.centroid_x_px == pytest.approx(85.0)  # type: ignore[union-attr]
    r = tracker.update(frame(("disc", 130, 75, 10)), 4, 0.4)  # 45 px = 9 mm: outside the gate
    assert r.status is NO and r.measurement is None and r.n_detections == 1


# ------------------------------------------------------------------------------ lost and found

def test_disappearing_nerve_is_lost_then_reacquired() -> None:
    tracker = Tracker(None, fps=10.0, lost_after_frames=3)
    nerve = frame(("disc", 60, 70, 14))
    empty = frame()
    frames = [nerve] * 10 + [empty] * 6 + [nerve] * 4
    statuses = [r.status for r in run(tracker, frames)]
    assert statuses == [OK] * 10 + [NO] * 3 + [LOST] * 3 + [REACQ] + [OK] * 3
    assert [str(s) for s in statuses[9:14]] == ["ok", "no_detection", "no_detection", "no_detection", "lost"]


def test_statuses_and_counters_around_a_gap() -> None:
    tracker = Tracker(None, fps=10.0, lost_after_frames=3)
    nerve, empty = frame(("disc", 60, 70, 14)), frame()
    rs = run(tracker, [empty, empty, nerve, empty, nerve])
    assert [r.status for r in rs] == [NO, NO, OK, NO, OK]  # never tracked -> no_detection; short gap tolerated
    assert [r.frames_since_seen for r in rs] == [None, None, 0, 1, 0]
    assert rs[3].measurement is None and rs[3].nerve_mask is None
    assert rs[4].nerve_mask is not None and rs[4].nerve_mask.shape == (H, W)


def test_detections_outside_the_gate_for_more_than_k_frames() -> None:
    tracker = Tracker(None, fps=10.0, gate_px=30.0, lost_after_frames=2)
    rs = run(tracker, [frame(("disc", 40, 70, 12))] * 3 + [frame(("disc", 150, 70, 12))] * 5)
    assert [r.status for r in rs] == [OK] * 3 + [NO, NO, LOST, REACQ, OK]
    assert rs[6].measurement.centroid_x_px == pytest.approx(150.0)  # type: ignore[union-attr]


def test_dropped_frames_count_as_misses() -> None:
    tracker = Tracker(None, fps=10.0, lost_after_frames=3)
    nerve, empty = frame(("disc", 60, 70, 14)), frame()
    assert tracker.update(nerve, 0, 0.0).status is OK
    assert tracker.update(empty, 2, 0.2).status is NO
    assert tracker.update(empty, 4, 0.4).status is LOST  # 4 frames since the last ok
    assert tracker.update(nerve, 9, 0.9).status is REACQ
    with pytest.raises(ValueError, match="increase"):
        tracker.update(nerve, 9, 0.9)


def test_lost_resets_smoothing() -> None:
    tracker = Tracker(None, fps=10.0, lost_after_frames=1, smoothing="ema", smoothing_window=3)
    rs = run(tracker, [frame(("rect", 20, 20, 20, 20))] * 3 + [frame()] * 2 + [frame(("rect", 20, 20, 10, 20))])
    assert rs[-1].status is REACQ
    assert rs[-1].smooth["area_px"] == 200.0  # starts afresh, not blended with the 400 px before


# ----------------------------------------------------------------------------------- baseline

def test_baseline_is_the_median_of_the_first_second_and_change_is_relative() -> None:
    tracker = Tracker(Calibration(0.1, 0.1, "test"), fps=5.0)  # one second = 5 frames
    heights = [20, 25, 21, 30, 25]  # 20 px wide rectangles: areas 400, 500, 420, 600, 500 -> median 500
    frames = [frame(("rect", 50, 50, 20, h)) for h in heights] + [frame(("rect", 50, 50, 20, 20))] * 3
    rs = run(tracker, frames)
    b = tracker.baseline
    assert b is not None and b.area_px == 500.0 and b.area_mm2 == pytest.approx(5.0) and b.n_frames == 5
    assert b.source == "auto: first 1 s"
    assert [r.csa_change_pct for r in rs[:4]] == [None] * 4
    assert rs[4].csa_change_pct == pytest.approx(0.0)
    assert [r.csa_change_pct for r in rs[5:]] == pytest.approx([-20.0] * 3)  # 400 vs 500: -20 %
    assert rs[-1].to_row()["baseline_area_mm2"] == pytest.approx(5.0)


def test_baseline_counts_only_measured_frames_in_the_first_second() -> None:
    tracker = Tracker(None, fps=4.0, lost_after_frames=5)
    nerve = lambda h: frame(("rect", 50, 50, 20, h))  # noqa: E731
    rs = run(tracker, [frame(), nerve(20), frame(), nerve(30), nerve(40), nerve(50), nerve(60)])
    b = tracker.baseline
    # window starts at the first measured frame (1) and spans 4 frame indices: 1..4; frame 2 missed
    assert b is not None and (b.first_frame, b.last_frame, b.n_frames) == (1, 4, 3)
    assert b.area_px == 600.0  # median of 400, 600, 800
    assert rs[3].csa_change_pct is None and rs[4].csa_change_pct == pytest.approx(100 * (800 - 600) / 600)


def test_explicit_baseline_range() -> None:
    tracker = Tracker(None, fps=10.0, baseline_range=(5, 8))
    rs = run(tracker, [frame(("rect", 50, 50, 10, 10 + i)) for i in range(12)])  # areas 100, 110, ...
    b = tracker.baseline
    assert b is not None and (b.first_frame, b.last_frame, b.n_frames) == (5, 7, 3)
    assert b.area_px == 160.0 and b.source == "--baseline 5:8"
    assert all(r.csa_change_pct is None for r in rs[:7])
    assert rs[7].csa_change_pct == pytest.approx(100 * (170 - 160) / 160)
    assert rs[11].csa_change_pct == pytest.approx(100 * (210 - 160) / 160)
    assert tracker.describe()["baseline"] == "frames 5:8"


def test_explicit_baseline_range_without_a_nerve_leaves_it_unset(caplog: pytest.LogCaptureFixture) -> None:
    tracker = Tracker(None, fps=10.0, baseline_range=(0, 3))
    run(tracker, [frame()] * 3 + [frame(("rect", 50, 50, 10, 10))] * 3)
    assert tracker.baseline is None
    assert "no frame with a measured nerve" in caplog.text


def test_set_baseline_now() -> None:
    tracker = Tracker(None, fps=5.0)
    big, small = frame(("rect", 50, 50, 20, 25)), frame(("rect", 50, 50, 20, 20))
    rs = run(tracker, [big] * 5 + [small] * 3)
    assert tracker.baseline is not None and tracker.baseline.area_px == 500.0
    assert rs[-1].csa_change_pct == pytest.approx(-20.0)
    tracker.set_baseline_now()
    assert tracker.baseline is None
    rs = run(tracker, [small] * 6, start=8)
    assert [r.csa_change_pct for r in rs[:4]] == [None] * 4  # collecting the next second (5 frames)
    b = tracker.baseline
    assert b is not None and (b.first_frame, b.last_frame, b.area_px) == (8, 12, 400.0)
    assert b.source == "set at frame 7"
    assert [r.csa_change_pct for r in rs[4:]] == pytest.approx([0.0, 0.0])


def test_parse_baseline_range() -> None:
    assert parse_baseline_range("10:34") == (10, 34)
    assert parse_baseline_range(" 0 : 24 ") == (0, 24)
    for bad in ("34:10", "5:5", "a:b", "5", "-1:4", "1:2:3"):
        with pytest.raises(UserError, match="--baseline"):
            parse_baseline_range(bad)


# -------------------------------------------------------------------------------------- bifid

def test_bifid_nerve_is_kept_as_one() -> None:
    cal = Calibration(0.1, 0.1, "test")
    tracker = Tracker(cal, fps=10.0)
    parts = (("disc", 60, 75, 12), ("disc", 90, 75, 12))  # gap 30 - 25 = 5 px < 0.5 * 25 px
    far = ("disc", 170, 40, 12)
    rs = run(tracker, [frame(*parts, far)] * 3)
    for r in rs:
        m = r.measurement
        assert m is not None and r.status is OK
        assert m.n_components == 2 and len(r.nerve_labels) == 2
        assert m.centroid_x_px == pytest.approx(75.0)
        alone = measure_mask(frame(*parts).mask, cal)
        assert m.area_px == alone.area_px and m.perimeter_px == pytest.approx(alone.perimeter_px)
        assert r.n_detections == 3
    # a part farther than the gap rule allows is not merged
    apart = Tracker(cal, fps=10.0).update(frame(("disc", 40, 75, 12), ("disc", 100, 75, 12)), 0, 0.0)
    assert apart.measurement is not None and apart.measurement.n_components == 1
    single = Tracker(cal, fps=10.0, max_parts=1).update(frame(*parts), 0, 0.0)
    assert single.measurement is not None and single.measurement.n_components == 1


def test_bifid_nerve_tracked_while_moving() -> None:
    tracker = Tracker(None, fps=10.0, gate_px=40.0)
    rs = run(tracker, [frame(("disc", 50 + 2 * i, 75, 10), ("disc", 75 + 2 * i, 75, 10), ("disc", 170, 75, 14))
                       for i in range(10)])
    assert all(r.status is OK and r.measurement.n_components == 2 for r in rs)  # type: ignore[union-attr]
    xs = [r.measurement.centroid_x_px for r in rs]  # type: ignore[union-attr]
    assert xs == pytest.approx([62.5 + 2 * i for i in range(10)])


# ---------------------------------------------------------------------------------- smoothing

def test_median_smoothing_adds_columns_and_keeps_raw_values() -> None:
    tracker = Tracker(None, fps=10.0, smoothing="median", smoothing_window=3)
    heights = [20, 20, 40, 20, 20, 22]  # a one-frame spike
    frames = [frame(("rect", 50, 50, 10, h)) for h in heights]
    rs = run(tracker, frames)
    raw = [r.measurement.area_px for r in rs]  # type: ignore[union-attr]
    assert raw == [10 * h for h in heights]
    assert raw == [measure_mask(f.mask).area_px for f in frames]  # unchanged by smoothing
    assert [r.smooth["area_px"] for r in rs] == [200, 200, 200, 200, 200, 200]
    row = rs[2].to_row()
    assert row["area_px"] == 400 and row["area_px_smooth"] == 200
    assert all(f"{name}_smooth" in row for name in SMOOTHED_FIELDS)
    assert list(row) == tracker.columns()
    assert row["area_mm2_smooth"] is None  # uncalibrated


def test_ema_smoothing() -> None:
    tracker = Tracker(None, fps=10.0, smoothing="ema", smoothing_window=3)  # alpha = 0.5
    rs = run(tracker, [frame(("rect", 50, 50, 10, h)) for h in (20, 40, 40)] + [frame()])
    assert [r.smooth["area_px"] for r in rs] == [200.0, 300.0, 350.0, None]
    assert rs[-1].to_row()["area_px_smooth"] is None and rs[-1].to_row()["area_px"] is None


def test_no_smoothing_no_smooth_columns() -> None:
    tracker = Tracker(None, fps=10.0)
    r = tracker.update(frame(("disc", 60, 60, 10)), 0, 0.0)
    assert r.smooth == {}
    assert list(r.to_row()) == tracker.columns()
    assert not any(c.endswith("_smooth") for c in tracker.columns())


# ---------------------------------------------------------------------------------- settings

def test_uncalibrated_fields_and_description() -> None:
    tracker = Tracker(None, fps=24.0)
    assert tracker.baseline_frames == 24 and tracker.lost_after_frames == 12
    assert (tracker.gate, tracker.gate_unit) == (60.0, "px")
    rs = run(tracker, [frame(("disc", 60, 60, 10))] * 25)
    r = rs[-1]
    assert r.measurement is not None and r.measurement.area_mm2 is None
    assert r.displacement_px == pytest.approx(0.0) and r.displacement_mm is None
    d = tracker.describe()
    assert d["calibration"] == "uncalibrated" and d["gate_unit"] == "px"
    cal = Tracker(Calibration(0.08, 0.08, "test"), fps=24.0)
    assert (cal.gate, cal.gate_unit) == (8.0, "mm")


@pytest.mark.parametrize("kwargs", [
    {"fps": 0.0}, {"fps": float("nan")}, {"gate_mm": -1.0}, {"smoothing": "kalman"}, {"smoothing_window": 0},
    {"baseline_range": (5, 5)}, {"max_parts": 0}, {"lost_after_frames": -1},
])
def test_bad_settings(kwargs: dict) -> None:
    args = {"fps": 10.0, **kwargs}
    with pytest.raises(UserError):
        Tracker(None, **args)


def test_unknown_smoothing_lists_the_choices() -> None:
    with pytest.raises(UserError, match="none, ema, median"):
        Tracker(None, fps=10.0, smoothing="kalman")


def test_deterministic_and_reset() -> None:
    frames = [frame(("disc", 50 + i, 70, 12), ("disc", 150, 70, 12 + i % 3)) for i in range(12)] + [frame()] * 3
    a = Tracker(None, fps=5.0, lost_after_frames=2, smoothing="median")
    rows_a = [r.to_row() for r in run(a, frames)]
    a.reset()
    assert a.state is TrackState.SEARCHING and a.baseline is None
    assert [r.to_row() for r in run(a, frames)] == rows_a
    b = Tracker(None, fps=5.0, lost_after_frames=2, smoothing="median")
    assert [r.to_row() for r in run(b, frames)] == rows_a
