"""Tracker: scripted sequences of synthetic masks with known answers."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest

from realtime.calibration import Calibration
from realtime.morphometry import empty_measurement, measure_mask
from realtime.postprocess import PostprocessResult, postprocess
from realtime.presence import PresenceGate
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


# --- found by mutation testing (docs/mutation-testing.md)

def test_describe_is_exactly_the_settings() -> None:
    tracker = Tracker(Calibration(0.1, 0.1, "test"), fps=25.0, gate_mm=6.0, gate_px=45.0, lost_after_frames=4,
                      baseline_s=2.0, bifid_gap=0.25, max_parts=3, smoothing="ema", smoothing_window=7,
                      presence=PresenceGate(), confirm_frames=3)
    assert tracker.describe() == {
        "calibration": "0.1000 x 0.1000 mm/px (from test)", "fps": 25.0, "gate": 6.0, "gate_unit": "mm",
        "lost_after_frames": 4, "baseline": "auto: first 2 s (50 frames)", "bifid_gap": 0.25, "max_parts": 3,
        "smoothing": "ema", "smoothing_window": 7,
        "presence_gate": {"min_area_frac": 0.002, "max_area_frac": 0.065, "min_area_mm2": 2.0, "max_area_mm2": 40.0,
                          "max_flattening": 11.0, "min_circularity": 0.2, "min_confidence": 0.5, "min_echo_ratio": 0.2,
                          "appearance": None},
        "confirm_frames": 3, "area_step": None, "refresh_frames": None,
    }
    assert Tracker(None, fps=24.0, area_step=0.3).describe()["area_step"] == 0.3
    assert Tracker(None, fps=24.0).describe() == {
        "calibration": "uncalibrated", "fps": 24.0, "gate": 60.0, "gate_unit": "px", "lost_after_frames": 12,
        "baseline": "auto: first 1 s (24 frames)", "bifid_gap": 0.5, "max_parts": 2, "smoothing": "none",
        "smoothing_window": None, "presence_gate": None, "confirm_frames": 1, "area_step": None, "refresh_frames": None,
    }


@pytest.mark.parametrize("kwargs, message", [
    ({"fps": 0.0}, "the frame rate must be a positive number of frames per second, got 0.0"),
    ({"gate_mm": 0.0}, "tracker gate_mm must be a positive number, got 0.0"),
    ({"gate_px": -1.0}, "tracker gate_px must be a positive number, got -1.0"),
    ({"baseline_s": float("inf")}, "tracker baseline_s must be a positive number, got inf"),
    ({"bifid_gap": -0.1}, "tracker bifid_gap must be >= 0, got -0.1"),
    ({"bifid_gap": float("inf")}, "tracker bifid_gap must be >= 0, got inf"),
    ({"max_parts": 0}, "tracker max_parts must be >= 1, got 0"),
    ({"smoothing_window": 0}, "the smoothing window must be at least 1 frame, got 0"),
    ({"lost_after_frames": -1}, "lost_after_frames must be >= 0, got -1"),
    ({"area_step": 0.0}, "the area step must be a positive fraction (0.25 = 25 %), got 0.0"),
    ({"area_step": float("nan")}, "the area step must be a positive fraction (0.25 = 25 %), got nan"),
    ({"baseline_range": (5, 5)}, "baseline range 5:5: need 0 <= START < END (END exclusive)"),
    ({"baseline_range": (-1, 3)}, "baseline range -1:3: need 0 <= START < END (END exclusive)"),
])
def test_bad_settings_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        Tracker(None, **{"fps": 10.0, **kwargs})
    assert str(err.value) == message


def test_settings_at_their_lowest_accepted_values() -> None:
    # below one frame per second is a frame rate; the derived frame counts never go below 1
    slow = Tracker(None, fps=0.5)
    assert (slow.fps, slow.lost_after_frames, slow.baseline_frames) == (0.5, 1, 1)
    assert (Tracker(None, fps=1.0).lost_after_frames, Tracker(None, fps=1.0).baseline_frames) == (1, 1)
    assert (Tracker(None, fps=2.0).lost_after_frames, Tracker(None, fps=2.0).baseline_frames) == (1, 2)
    assert Tracker(None, fps=10.0, baseline_range=(0, 1)).baseline_range == (0, 1)
    # K = 0: the first missed frame loses the track
    nerve, empty = frame(("disc", 60, 70, 14)), frame()
    rs = run(Tracker(None, fps=10.0, lost_after_frames=0), [nerve, empty, empty, nerve])
    assert [r.status for r in rs] == [OK, LOST, LOST, REACQ]
    # a window of 1 frame: the smoothed values are the raw ones, for both filters
    rects = [frame(("rect", 50, 50, 10, h)) for h in (20, 40, 30)]
    for method in ("median", "ema"):
        rs = run(Tracker(None, fps=10.0, smoothing=method, smoothing_window=1), rects)
        assert [r.smooth["area_px"] for r in rs] == [200.0, 400.0, 300.0]
    # bifid_gap 0: parts whose equivalent discs overlap are still one nerve (two 4 x 40 bars 6 px apart)
    bars = frame(("rect", 50, 50, 4, 40), ("rect", 56, 50, 4, 40))
    r = Tracker(None, fps=10.0, bifid_gap=0.0).update(bars, 0, 0.0)
    assert r.measurement is not None and r.measurement.n_components == 2 and r.nerve_labels == (1, 2)


def test_one_frame_baseline_of_a_one_pixel_nerve() -> None:
    # fps 1: the baseline is the first frame; a 1-pixel nerve is a valid (positive) baseline area
    def dots(w: int) -> PostprocessResult:
        mask = np.zeros((H, W), np.float32)
        mask[50:50 + w, 60:60 + w] = 0.9
        return postprocess(mask, (W, H), min_area_px=1)

    tracker = Tracker(None, fps=1.0)
    rs = run(tracker, [dots(1), dots(2)], fps=1.0)
    assert tracker.baseline is not None and tracker.baseline.area_px == 1.0
    assert rs[0].csa_change_pct == pytest.approx(0.0)
    assert rs[1].csa_change_pct == pytest.approx(300.0)  # 4 px vs 1 px


def test_median_smoothing_forgets_values_older_than_the_window() -> None:
    tracker = Tracker(None, fps=10.0, smoothing="median", smoothing_window=3)
    rs = run(tracker, [frame(("rect", 50, 50, 10, h)) for h in (20, 20, 20, 40, 40)])
    # last 3 values: (200, 200, 400) -> 200, then (200, 400, 400) -> 400 (all five would still give 200)
    assert [r.smooth["area_px"] for r in rs] == [200.0, 200.0, 200.0, 200.0, 400.0]


def test_uncalibrated_gate_is_isotropic_and_inclusive() -> None:
    tracker = Tracker(None, fps=10.0, gate_px=30.0)
    rs = run(tracker, [frame(("rect", 90, 20, 20, 20)),   # centroid y 29.5
                       frame(("rect", 90, 50, 20, 20)),   # 30 px down: exactly the gate, accepted
                       frame(("rect", 90, 81, 20, 20))])  # 31 px down: outside
    assert [r.status for r in rs] == [OK, OK, NO]
    assert rs[1].measurement.centroid_y_px == pytest.approx(59.5)  # type: ignore[union-attr]


def test_acquisition_tie_goes_to_the_lower_label() -> None:
    # two identical components (same mass, same area), far apart: label 1 (the left one) wins
    r = Tracker(None, fps=10.0).update(frame(("rect", 20, 60, 20, 20), ("rect", 150, 60, 20, 20)), 0, 0.0)
    assert r.nerve_labels == (1,) and r.measurement.centroid_x_px == pytest.approx(29.5)  # type: ignore[union-attr]


def test_partners_nearest_first_ties_by_label_and_at_most_max_parts() -> None:
    # P 20x20 (label 1) with two identical 10x20 parts 25 px to its left (label 2) and right (label 3)
    post = frame(("rect", 40, 60, 20, 20), ("rect", 20, 60, 10, 20), ("rect", 70, 60, 10, 20))
    r = Tracker(None, fps=10.0).update(post, 0, 0.0)  # max_parts 2: P and the lower-labelled of the tie
    assert r.nerve_labels == (1, 2) and r.measurement is not None and r.measurement.area_px == 600
    assert r.measurement.centroid_x_px == pytest.approx((400 * 49.5 + 200 * 24.5) / 600)
    r = Tracker(None, fps=10.0, max_parts=3).update(post, 0, 0.0)
    assert r.nerve_labels == (1, 2, 3) and r.measurement.area_px == 800  # type: ignore[union-attr]
    # nearest first, not lowest label: tracking P (20x20), a near small part N (label 3, gap 2.7 px) and a
    # farther larger one F (20x30, label 1, gap 7.9 px), both within the bifid rule
    tracker = Tracker(None, fps=10.0)
    p, n, f = ("rect", 90, 60, 20, 20), ("rect", 73, 60, 10, 20), ("rect", 123, 55, 20, 30)
    rs = run(tracker, [frame(p), frame(p, n, f)])
    assert rs[1].nerve_labels == (2, 3) and rs[1].measurement.area_px == 600  # type: ignore[union-attr]


def test_bifid_rule_is_inclusive_at_exactly_the_gap() -> None:
    # two 20 x 20 squares 34 px apart: gap = 34 - 2 r, r = sqrt(400 / pi); merged when gap <= bifid_gap * 2 r
    post = frame(("rect", 40, 60, 20, 20), ("rect", 74, 60, 20, 20))
    r = math.sqrt(400 / math.pi)
    gap = 34.0 - r - r
    g = float(np.nextafter(np.nextafter(gap / (2.0 * r), 0.0), 0.0))
    while g * 2.0 * r < gap:
        g = float(np.nextafter(g, 1.0))
    assert g * 2.0 * r == gap
    below = float(np.nextafter(g, 0.0))
    assert below * 2.0 * r < gap
    at = Tracker(None, fps=10.0, bifid_gap=g).update(post, 0, 0.0)
    assert at.nerve_labels == (1, 2) and at.measurement.n_components == 2  # type: ignore[union-attr]
    under = Tracker(None, fps=10.0, bifid_gap=below).update(post, 0, 0.0)
    assert under.nerve_labels == (1,) and under.measurement.n_components == 1  # type: ignore[union-attr]


def test_baseline_window_end_is_exclusive_across_dropped_frames() -> None:
    def rect(h: int) -> PostprocessResult:  # area 10 * h
        return frame(("rect", 50, 50, 10, h))

    # explicit 0:3, frame 2 dropped: frame 3 (past the window) closes it but is not in it
    tracker = Tracker(None, fps=10.0, baseline_range=(0, 3))
    rs = [tracker.update(rect(h), i, i / 10) for i, h in ((0, 10), (1, 20), (3, 90))]
    b = tracker.baseline
    assert b is not None and (b.first_frame, b.last_frame, b.n_frames, b.area_px) == (0, 1, 2, 150.0)
    assert rs[2].csa_change_pct == pytest.approx(500.0)
    # automatic, 2 frames at 2 fps: frame 1 dropped, frame 2 is past the window
    tracker = Tracker(None, fps=2.0)
    rs = [tracker.update(rect(h), i, i / 2) for i, h in ((0, 10), (2, 90))]
    b = tracker.baseline
    assert b is not None and (b.first_frame, b.last_frame, b.n_frames, b.area_px) == (0, 0, 1, 100.0)
    assert [r.status for r in rs] == [OK, OK] and rs[1].csa_change_pct == pytest.approx(800.0)


def test_set_baseline_before_the_first_frame() -> None:
    tracker = Tracker(None, fps=2.0)
    tracker.set_baseline_now()
    rs = run(tracker, [frame(("rect", 50, 50, 20, 20))] * 3, fps=2.0)
    b = tracker.baseline
    assert b is not None and b.source == "set at start" and (b.first_frame, b.last_frame) == (0, 1)
    assert [r.csa_change_pct for r in rs] == [None, 0.0, 0.0]


def test_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="realtime.tracker")
    tracker = Tracker(Calibration(0.1, 0.1, "test"), fps=5.0, lost_after_frames=1)
    nerve, empty = frame(("rect", 50, 50, 20, 25)), frame()
    run(tracker, [nerve] * 5 + [empty] * 2 + [nerve])
    tracker.set_baseline_now()
    run(tracker, [nerve] * 5, start=8)
    uncal = Tracker(None, fps=2.0)
    uncal.set_baseline_now()
    run(uncal, [frame(("rect", 50, 50, 20, 20))] * 2)
    run(Tracker(None, fps=10.0, baseline_range=(0, 3)), [empty] * 3)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "realtime.tracker"] == [
        ("INFO", "baseline (auto: first 1 s): 5 frames 0..4, area 500.0 px = 5.00 mm2"),
        ("INFO", "frame 6: nerve lost (no nerve for 2 frames)"),
        ("INFO", "frame 7: nerve reacquired"),
        ("INFO", "new baseline requested at frame 7: collecting the next 5 frames"),
        ("INFO", "baseline (set at frame 7): 5 frames 8..12, area 500.0 px = 5.00 mm2"),
        ("INFO", "new baseline requested at start: collecting the next 2 frames"),
        ("INFO", "baseline (set at start): 2 frames 0..1, area 400.0 px"),
        ("WARNING", ("baseline window --baseline 0:3 had no frame with a measured nerve: change from baseline "
                     "stays empty")),
    ]


def test_result_fields_and_row_cells() -> None:
    tracker = Tracker(Calibration(0.05, 0.2, "test"), fps=2.0)  # baseline: 2 frames
    rs = run(tracker, [frame(("disc", 60, 60, 12))] * 2 + [frame(("disc", 63, 64, 12))], fps=2.0)
    r = rs[-1]
    assert (r.frame_index, r.t_s, r.rejected, r.presence_checked) == (2, 1.0, None, False)
    row = r.to_row()
    b = tracker.baseline
    assert b is not None and row["baseline_area_px"] == b.area_px == r.measurement.area_px  # type: ignore[union-attr]
    assert row["baseline_area_mm2"] == pytest.approx(b.area_px * 0.01)
    assert row["csa_change_pct"] == pytest.approx(0.0)
    assert (row["displacement_dx_px"], row["displacement_dy_px"], row["displacement_px"]) == pytest.approx((3, 4, 5))
    assert (row["displacement_dx_mm"], row["displacement_dy_mm"]) == pytest.approx((0.15, 0.8))
    assert row["displacement_mm"] == pytest.approx(math.hypot(0.15, 0.8))
    # before the baseline: empty baseline cells; value() of a frame without a measurement
    first = rs[0].to_row()
    assert first["baseline_area_px"] is None and first["baseline_area_mm2"] is None
    empty = tracker.update(frame(), 3, 1.5)
    assert empty.value("area_px") is None and empty.value("centroid_x_mm") is None
    assert empty.value("frames_since_seen") == 1 and r.value("displacement_px") == pytest.approx(5.0)


def test_custom_measure_rejecting_the_mask() -> None:
    # a measure function that returns an empty measurement (area 0): no nerve measured on the frame
    tracker = Tracker(None, fps=10.0, measure=lambda mask, cal, prob: empty_measurement(cal))
    r = tracker.update(frame(("rect", 50, 50, 20, 20)), 0, 0.0)
    assert (r.status, r.measurement, r.nerve_mask, r.nerve_labels, r.n_detections) == (NO, None, None, (), 1)


def test_presence_gate_rejects_a_detection_as_a_miss() -> None:
    tracker = Tracker(None, fps=10.0, presence=PresenceGate())
    good, huge = frame(("rect", 50, 50, 20, 20)), frame(("rect", 40, 40, 50, 50))  # 400 px: 1.3 %; 2500 px: 8.3 %
    rs = run(tracker, [good, huge, good])
    assert [r.status for r in rs] == [OK, NO, OK]
    assert [r.rejected for r in rs] == [None, "area 8.33% of frame > 6.50%", None]
    assert all(r.presence_checked for r in rs)
    assert rs[1].measurement is None and rs[1].nerve_mask is None and rs[1].nerve_labels == ()
    row = rs[1].to_row()
    assert list(row) == tracker.columns() and row["rejected"] == "area 8.33% of frame > 6.50%"
    assert row["area_px"] is None and rs[0].to_row()["rejected"] is None


def test_presence_gate_gets_the_calibration_and_the_image(caplog: pytest.LogCaptureFixture) -> None:
    from realtime.appearance import FEATURES, AppearanceModel

    caplog.set_level(logging.DEBUG, logger="realtime.tracker")
    # calibrated: 10 x 15 px at 0.1 mm/px is 1.5 mm2, below the gate's 2 mm2 (0.5 % of the frame passes)
    small = frame(("rect", 50, 50, 10, 15))
    r = Tracker(Calibration(0.1, 0.1, "test"), fps=10.0, presence=PresenceGate()).update(small, 0, 0.0)
    assert (r.status, r.rejected) == (NO, "area 1.5 mm2 < 2 mm2")
    assert Tracker(None, fps=10.0, presence=PresenceGate()).update(small, 0, 0.0).status is OK
    # an appearance model that rejects everything: applied only when the frame's image is given
    n = len(FEATURES)
    never = AppearanceModel(features=FEATURES, mean=(0.0,) * n, scale=(1.0,) * n, weights=(0.0,) * n, bias=-60.0,
                            threshold=0.5)
    tracker = Tracker(None, fps=10.0, presence=PresenceGate(appearance=never))
    good = frame(("rect", 50, 50, 20, 20))
    image = np.zeros((H, W), np.uint8)
    image[50:70, 50:70] = 200
    assert tracker.update(good, 0, 0.0).status is OK  # no image: size and shape only
    r = tracker.update(good, 1, 0.1, image=image)
    assert (r.status, r.rejected) == (NO, "appearance 0.00 < 0.50")
    assert [m.getMessage() for m in caplog.records if m.levelno == logging.DEBUG and m.name == "realtime.tracker"] == [
        "frame 0: detection rejected (area 1.5 mm2 < 2 mm2)", "frame 1: detection rejected (appearance 0.00 < 0.50)"]


def test_presence_score_is_the_appearance_score_of_the_selected_region_measured_or_not() -> None:
    from realtime.appearance import FEATURES, AppearanceModel

    # known answer: a model that scores log_area alone, logit = log(area / frame area) + bias
    n = len(FEATURES)
    weights = tuple(1.0 if f == "log_area" else 0.0 for f in FEATURES)
    model = AppearanceModel(features=FEATURES, mean=(0.0,) * n, scale=(1.0,) * n, weights=weights, bias=5.0,
                            threshold=0.5)
    tracker = Tracker(None, fps=10.0, presence=PresenceGate(appearance=model))
    image = np.full((H, W), 60, np.uint8)
    big, small, huge = (frame(("rect", 50, 50, 40, 40)), frame(("rect", 50, 50, 12, 12)),
                        frame(("rect", 40, 40, 50, 50)))
    rs = [tracker.update(f, i, 0.1 * i, image=image) for i, f in enumerate((big, small, huge))]

    def expected(area: int) -> float:
        return 1.0 / (1.0 + math.exp(-(math.log(area / (H * W)) + 5.0)))

    assert expected(1600) > 0.5 > expected(144)
    assert rs[0].status is OK and rs[0].presence_score == pytest.approx(expected(1600))
    # below the threshold: not measured, but its score is still reported beside the reason
    assert rs[1].measurement is None and rs[1].presence_score == pytest.approx(expected(144))
    assert rs[1].rejected == f"appearance {expected(144):.2f} < 0.50"
    # a size bound turned it away before the appearance check: no score
    assert rs[2].rejected.startswith("area 8.33% of frame") and rs[2].presence_score is None
    cols = tracker.columns()
    assert cols[-2:] == ["presence_score", "rejected"]
    assert [list(r.to_row()) for r in rs] == [cols] * 3
    assert rs[0].to_row()["presence_score"] == pytest.approx(expected(1600))
    # without an appearance model there is no score, and no column for it
    plain = Tracker(None, fps=10.0, presence=PresenceGate())
    assert "presence_score" not in plain.columns()
    assert "presence_score" not in plain.update(big, 0, 0.0, image=image).to_row()


def _size_scored_gate(threshold: float, hold: float | None) -> PresenceGate:
    """A presence gate whose appearance score is the region's size alone: logit = log(area / frame area) + 5
    (a 40x40 square 0.89, 20x20 0.66, 12x12 0.42 in the 200x150 test frame)."""
    from realtime.appearance import FEATURES, AppearanceModel

    n = len(FEATURES)
    weights = tuple(1.0 if f == "log_area" else 0.0 for f in FEATURES)
    return PresenceGate(appearance=AppearanceModel(features=FEATURES, mean=(0.0,) * n, scale=(1.0,) * n,
                                                   weights=weights, bias=5.0, threshold=threshold,
                                                   hold_threshold=hold))


def test_refresh_ends_a_track_held_on_the_hold_threshold_alone() -> None:
    image = np.full((H, W), 60, np.uint8)
    strong, weak = frame(("rect", 50, 50, 40, 40)), frame(("rect", 60, 60, 20, 20))  # same centroid (70, 70)
    frames = [strong] + [weak] * 8 + [strong, weak, weak]

    def statuses(refresh: int | None) -> tuple[list, Tracker]:
        tracker = Tracker(None, fps=10.0, presence=_size_scored_gate(0.8, 0.5), refresh_frames=refresh,
                          lost_after_frames=2)
        return [tracker.update(f, i, 0.1 * i, image=image) for i, f in enumerate(frames)], tracker

    held, _ = statuses(None)
    assert [r.status for r in held] == [OK] * 12  # without a refresh the hold threshold keeps it throughout
    rs, tracker = statuses(3)
    # frames 1-2 are within 3 frames of the entry-level frame 0; 3-5 are misses, then the track is lost (K = 2);
    # a weak nerve cannot take it up again, the strong frame 9 does (reacquired) and refreshes it for 10 and 11
    assert [r.status for r in rs] == [OK, OK, OK, NO, NO, LOST, LOST, LOST, LOST, REACQ, OK, OK]
    assert rs[3].rejected == "appearance 0.66 < 0.80: held 3 frames without one at the entry threshold"
    assert rs[6].rejected == "appearance 0.66 < 0.80"  # lost: judged at the entry threshold again
    assert tracker.describe()["refresh_frames"] == 3
    # a one-threshold model has nothing to refresh
    one = Tracker(None, fps=10.0, presence=_size_scored_gate(0.5, None), refresh_frames=3)
    assert [one.update(f, i, 0.1 * i, image=image).status for i, f in enumerate(frames)] == [OK] * 12


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_refresh_needs_a_whole_number_of_frames(bad: object) -> None:
    with pytest.raises(UserError, match="refresh_frames must be a whole number"):
        Tracker(None, fps=10.0, refresh_frames=bad)  # type: ignore[arg-type]


def test_parse_baseline_range_rejects_a_non_string() -> None:
    for bad in (None, 24, (0, 24)):
        with pytest.raises(UserError, match="expected START:END"):
            parse_baseline_range(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# confirmation: a new track needs the nerve in C frames in a row
# ---------------------------------------------------------------------------------------------


def test_confirmation_needs_c_frames_in_a_row_near_each_other() -> None:
    """C = 2: a nerve alone in one frame is never measured (other anatomy's flicker), one in view is
    measured from its second frame on; a jump beyond the gate starts the count again; a miss breaks it."""
    tracker = Tracker(None, fps=10.0, gate_px=30.0, confirm_frames=2)
    here, there, empty = frame(("disc", 50, 70, 12)), frame(("disc", 150, 70, 12)), frame()
    rs = run(tracker, [here, empty, here, there, there, there])
    assert [r.status for r in rs] == [NO, NO, NO, NO, OK, OK]
    assert [r.rejected for r in rs] == ["unconfirmed: 1 of 2 frames", None, "unconfirmed: 1 of 2 frames",
                                        "unconfirmed: 1 of 2 frames", None, None]
    assert all(r.measurement is None and r.nerve_mask is None and r.nerve_labels == () for r in rs[:4])
    assert rs[4].measurement.centroid_x_px == pytest.approx(150.0)  # type: ignore[union-attr]
    assert rs[4].frames_since_seen == 0 and rs[3].frames_since_seen is None
    row = rs[0].to_row()
    assert list(row) == tracker.columns() and row["rejected"] == "unconfirmed: 1 of 2 frames"
    assert row["area_px"] is None
    # within the gate (30 px): 25 px apart still confirms
    tracker = Tracker(None, fps=10.0, gate_px=30.0, confirm_frames=3)
    rs = run(tracker, [frame(("disc", 50 + 25 * i, 70, 12)) for i in range(4)])
    assert [r.status for r in rs] == [NO, NO, OK, OK]
    assert [r.rejected for r in rs] == ["unconfirmed: 1 of 3 frames", "unconfirmed: 2 of 3 frames", None, None]


def test_confirmation_applies_to_reacquiring_not_to_a_track_that_holds() -> None:
    tracker = Tracker(None, fps=10.0, lost_after_frames=2, confirm_frames=2, baseline_s=0.2)
    nerve, empty = frame(("disc", 60, 70, 14)), frame()
    rs = run(tracker, [nerve, nerve, empty, nerve, empty, empty, empty, nerve, nerve, nerve])
    # a miss while tracking does not need confirming again; after the track is lost it does
    assert [r.status for r in rs] == [NO, OK, NO, OK, NO, NO, LOST, LOST, REACQ, OK]
    assert rs[7].rejected == "unconfirmed: 1 of 2 frames" and rs[3].rejected is None
    assert tracker.state is TrackState.TRACKING
    # the baseline starts at the first measured frame, not at the unconfirmed one before it
    assert tracker.baseline is not None and (tracker.baseline.first_frame, tracker.baseline.n_frames) == (1, 1)


def test_confirmation_counts_only_accepted_detections() -> None:
    """A detection the presence gate rejects breaks the count like an empty frame."""
    tracker = Tracker(None, fps=10.0, presence=PresenceGate(), confirm_frames=2)
    good, huge = frame(("rect", 50, 50, 20, 20)), frame(("rect", 40, 40, 50, 50))
    rs = run(tracker, [good, huge, good, good])
    assert [r.status for r in rs] == [NO, NO, NO, OK]
    assert [r.rejected for r in rs] == ["unconfirmed: 1 of 2 frames", "area 8.33% of frame > 6.50%",
                                        "unconfirmed: 1 of 2 frames", None]


def test_confirmation_settings() -> None:
    assert Tracker(None, fps=10.0).confirm_frames == 1  # the library measures at once; the commands ask for 2
    t = Tracker(None, fps=10.0, confirm_frames=2)
    assert t.describe()["confirm_frames"] == 2 and Tracker(None, fps=10.0).describe()["confirm_frames"] == 1
    assert t.columns()[-1] == "rejected" and "rejected" not in Tracker(None, fps=10.0).columns()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(UserError, match=r"confirm_frames must be a whole number of frames >= 1, got"):
            Tracker(None, fps=10.0, confirm_frames=bad)  # type: ignore[arg-type]
    t.update(frame(("disc", 60, 70, 14)), 0, 0.0)
    t.reset()  # forgets the unconfirmed detection too
    assert t.update(frame(("disc", 60, 70, 14)), 1, 0.1).status is NO


# ----------------------------------------------------------------------------------- area step

def test_an_area_step_while_tracking_is_a_miss_that_moves_nothing() -> None:
    """Half the nerve for a frame (area -50 %, centroid 10 px off) is not measured: the track, its position
    and the change from baseline stay with the whole nerve, which is measured again on the next frame."""
    whole, half = ("rect", 60, 60, 40, 20), ("rect", 60, 60, 20, 20)
    tracker = Tracker(None, fps=10.0, area_step=0.25)
    rs = run(tracker, [frame(whole)] * 4 + [frame(half)] + [frame(whole)])
    assert [r.status for r in rs] == [OK, OK, OK, OK, NO, OK]
    assert rs[4].measurement is None and rs[4].nerve_mask is None
    assert rs[4].rejected == "area step -50% in one frame (recent median 800 px)"
    assert rs[5].rejected is None and rs[5].measurement.area_px == 800
    assert "rejected" in rs[0].to_row()  # the check can reject: the column is there
    # without the check (the default), or before 3 measured frames, the half is measured
    assert [r.status for r in run(Tracker(None, fps=10.0), [frame(whole)] * 4 + [frame(half)])] == [OK] * 5
    early = run(Tracker(None, fps=10.0, area_step=0.25), [frame(whole)] * 2 + [frame(half)])
    assert [r.status for r in early] == [OK, OK, OK] and early[2].measurement.area_px == 400


def test_a_new_size_that_holds_for_three_frames_is_real() -> None:
    whole, half = ("rect", 60, 60, 40, 20), ("rect", 60, 60, 20, 20)
    tracker = Tracker(None, fps=10.0, area_step=0.25)
    rs = run(tracker, [frame(whole)] * 3 + [frame(half)] * 5)
    assert [r.status for r in rs] == [OK, OK, OK, NO, NO, OK, OK, OK]
    assert [r.measurement.area_px for r in rs[5:]] == [400] * 3
    # back to the old size: a step from the new one (3 halves measured since), rejected until it holds in turn;
    # the history then starts again from it, and is too short to judge the next frame
    rs = run(tracker, [frame(whole)] * 3 + [frame(half)], start=8)
    assert [r.status for r in rs] == [NO, NO, OK, OK]
    assert rs[0].rejected == "area step +100% in one frame (recent median 400 px)"


def test_steps_that_disagree_with_each_other_are_rejected_one_by_one() -> None:
    """Three rejected frames make a new size only when each is within the step of the one before."""
    whole, half, double = ("rect", 60, 60, 40, 20), ("rect", 60, 60, 20, 20), ("rect", 50, 50, 60, 28)
    tracker = Tracker(None, fps=10.0, area_step=0.25)
    rs = run(tracker, [frame(whole)] * 3 + [frame(half), frame(double), frame(half), frame(double)])
    assert [r.status for r in rs] == [OK, OK, OK, NO, NO, NO, NO]


def test_the_area_history_starts_again_after_the_track_is_lost() -> None:
    whole, half = ("rect", 60, 60, 40, 20), ("rect", 60, 60, 20, 20)
    tracker = Tracker(None, fps=10.0, area_step=0.25, lost_after_frames=1)
    rs = run(tracker, [frame(whole)] * 3 + [frame()] * 2 + [frame(half)])
    assert [r.status for r in rs] == [OK, OK, OK, NO, LOST, REACQ]
