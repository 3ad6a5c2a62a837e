"""Property-based tests (hypothesis) of the pure measuring functions and the tracker's state machine:
what must hold for every drawn shape and every sequence of detections, not just the examples.

- morphometry: area, perimeter, flattening ratio and circularity under translation, 90-degree
  rotation, transposition with swapped pixel spacing, isotropic pixel spacing and integer upscaling;
- post-processing: the threshold, filled holes and the minimum area;
- the tracker: never a measurement without ``ok`` / ``reacquired``, and a baseline made only of
  measured frames.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.calibration import Calibration
from realtime.morphometry import measure_mask
from realtime.postprocess import postprocess
from realtime.tracker import TrackStatus, Tracker

H, W = 120, 160
# derandomize: every run (CI too) tries the same examples; drop it locally to explore new ones
PROPS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def shapes(draw: st.DrawFn) -> np.ndarray:
    """A filled ellipse (any size, flattening and angle) plus sometimes a second blob, away from the border."""
    mask = np.zeros((H, W), np.uint8)
    a, b = draw(st.integers(4, 30)), draw(st.integers(3, 20))
    cx, cy = draw(st.integers(40, W - 40)), draw(st.integers(40, H - 40))  # 8 px clear of the border
    cv2.ellipse(mask, (cx, cy), (a, b), draw(st.floats(0, 180)), 0, 360, 1, -1)
    if draw(st.booleans()):
        r = draw(st.integers(2, 6))
        cv2.circle(mask, (draw(st.integers(20, W - 20)), draw(st.integers(20, H - 20))), r, 1, -1)
    return mask


def close(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, rel_tol=rel,
                                                                                            abs_tol=1e-9))


@PROPS
@given(shapes(), st.integers(-8, 8), st.integers(-8, 8))
def test_translation_moves_the_centroid_and_changes_nothing_else(mask: np.ndarray, dx: int, dy: int) -> None:
    moved = np.roll(np.roll(mask, dy, axis=0), dx, axis=1)  # the shapes stay clear of the border
    a, b = measure_mask(mask), measure_mask(moved)
    assert b.area_px == a.area_px and b.n_components == a.n_components
    assert close(b.perimeter_px, a.perimeter_px) and close(b.flattening_ratio, a.flattening_ratio)
    assert close(b.circularity, a.circularity)
    assert (b.centroid_x_px == pytest.approx(a.centroid_x_px + dx)
            and b.centroid_y_px == pytest.approx(a.centroid_y_px + dy))


PERIMETER_TURN_PX = 4.0
"""OpenCV's contour tracing is not symmetric under a quarter turn: the same shape turned by 90 degrees can trace
a boundary up to ~3.5 px longer or shorter (found by these tests: up to 12 % of a shape under 200 px, under 1 %
of one over 1000 px, as a nerve is). Area, moments and flattening are exact."""


@PROPS
@given(shapes())
def test_a_quarter_turn_keeps_every_shape_measure(mask: np.ndarray) -> None:
    a, b = measure_mask(mask), measure_mask(np.ascontiguousarray(np.rot90(mask)))
    assert b.area_px == a.area_px and b.n_components == a.n_components
    assert abs(b.perimeter_px - a.perimeter_px) <= PERIMETER_TURN_PX
    assert close(b.flattening_ratio, a.flattening_ratio, 1e-6)
    if a.circularity is not None:  # 4 pi A / P^2: moves with the perimeter
        assert b.circularity == pytest.approx(a.circularity, rel=2.5 * PERIMETER_TURN_PX / a.perimeter_px)


@PROPS
@given(shapes(), st.floats(0.02, 0.3), st.floats(0.02, 0.3))
def test_transposing_with_swapped_spacing_gives_the_same_millimetres(mask: np.ndarray, sx: float, sy: float) -> None:
    a = measure_mask(mask, Calibration(sx, sy))
    b = measure_mask(np.ascontiguousarray(mask.T), Calibration(sy, sx))
    assert b.area_mm2 == pytest.approx(a.area_mm2, rel=1e-9)
    assert abs(b.perimeter_mm - a.perimeter_mm) <= PERIMETER_TURN_PX * max(sx, sy)  # a transposition is a turn
    assert close(b.flattening_ratio, a.flattening_ratio, 1e-6)
    assert b.centroid_x_mm == pytest.approx(a.centroid_y_mm) and b.centroid_y_mm == pytest.approx(a.centroid_x_mm)


@PROPS
@given(shapes(), st.floats(0.01, 0.5))
def test_square_pixels_scale_lengths_and_areas_and_leave_the_shape(mask: np.ndarray, s: float) -> None:
    px, mm = measure_mask(mask), measure_mask(mask, Calibration(s, s))
    assert mm.area_mm2 == pytest.approx(px.area_px * s * s, rel=1e-12)
    assert mm.perimeter_mm == pytest.approx(px.perimeter_px * s, rel=1e-6)  # scaled in float32 points
    assert close(mm.flattening_ratio, px.flattening_ratio, 1e-9) and close(mm.circularity, px.circularity, 1e-6)
    assert (mm.centroid_x_mm == pytest.approx(px.centroid_x_px * s)
            and mm.centroid_y_mm == pytest.approx(px.centroid_y_px * s))


@PROPS
@given(shapes(), st.integers(2, 3))
def test_upscaling_by_k_multiplies_the_area_by_k_squared_and_keeps_the_flattening(mask: np.ndarray, k: int) -> None:
    big = np.kron(mask, np.ones((k, k), np.uint8))
    a, b = measure_mask(mask), measure_mask(big)
    assert b.area_px == k * k * a.area_px and b.n_components == a.n_components
    assert b.centroid_x_px == pytest.approx((a.centroid_x_px + 0.5) * k - 0.5)
    # the second moments of k x k blocks: mu20 grows by k^4 plus the blocks' own spread, so FR moves slightly toward 1
    if a.flattening_ratio is not None and a.area_px >= 30:
        assert b.flattening_ratio == pytest.approx(a.flattening_ratio, rel=0.08)
        assert b.flattening_ratio <= a.flattening_ratio + 1e-9


@st.composite
def prob_maps(draw: st.DrawFn) -> np.ndarray:
    """Blobs of random strength on a random background, some with a hole."""
    prob = np.full((H, W), draw(st.floats(0, 0.4)), np.float32)
    for _ in range(draw(st.integers(0, 4))):
        c = (draw(st.integers(5, W - 5)), draw(st.integers(5, H - 5)))
        r = draw(st.integers(2, 25))
        cv2.circle(prob, c, r, draw(st.floats(0.3, 1.0)), -1)
        if r > 8 and draw(st.booleans()):
            cv2.circle(prob, c, r // 3, 0.0, -1)  # a hole
    return prob


@PROPS
@given(prob_maps(), st.floats(0.3, 0.7), st.integers(1, 200))
def test_postprocess_thresholds_fills_holes_and_drops_small_components(prob: np.ndarray, threshold: float,
                                                                       min_area: int) -> None:
    post = postprocess(prob, (W, H), threshold=threshold, min_area_px=min_area)
    mask = post.mask.astype(bool)
    # everything kept is either above the threshold or a hole filled inside a kept component
    filled = np.zeros((H, W), np.uint8)
    for c in post.components:
        assert c.area_px >= min_area
        cv2.drawContours(filled, [c.contour], -1, 1, -1)
    assert np.array_equal(mask, filled.astype(bool))
    # no kept pixel is background reachable from the border (no holes), and every strong region that is
    # large enough survives
    n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= threshold).astype(np.uint8), connectivity=8)
    for i in range(1, n):
        region = labels == i
        if region.sum() >= min_area:
            assert mask[region].all()
    assert post.n_components == len(post.components) == cv2.connectedComponents(post.mask, connectivity=8)[0] - 1


DETECTION = np.zeros((H, W), np.float32)
cv2.ellipse(DETECTION, (80, 60), (20, 10), 0, 0, 360, 0.95, -1)
NOTHING = np.zeros((H, W), np.float32)


@PROPS
@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(1, 5))
def test_tracker_measures_only_ok_frames_and_baselines_only_measured_ones(seen: list[bool], lost_after: int) -> None:
    tracker = Tracker(None, 10.0, lost_after_frames=lost_after)
    measured_areas: list[int] = []
    for i, s in enumerate(seen):
        r = tracker.update(postprocess(DETECTION if s else NOTHING, (W, H)), i, i / 10.0)
        assert r.measured == (r.status in (TrackStatus.OK, TrackStatus.REACQUIRED))
        assert (r.measurement is not None) == r.measured and (r.nerve_mask is not None) == r.measured
        if r.measured:
            measured_areas.append(r.measurement.area_px)
        else:
            assert r.status in (TrackStatus.NO_DETECTION, TrackStatus.LOST) and r.csa_change_pct is None
        b = tracker.baseline
        if b is not None:
            assert measured_areas and b.n_frames <= len(measured_areas)
            assert min(measured_areas) <= b.area_px <= max(measured_areas)
    if not any(seen):
        assert tracker.baseline is None
