"""Morphometry on hand-drawn masks with known answers: discs, ellipses at angles, anisotropic pixels,
bifid (two-region) masks, holes, degenerate and empty masks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from realtime.calibration import Calibration
from realtime.morphometry import Measurement, measure_mask

SHIFT = 8  # fixed-point bits for sub-pixel cv2 drawing


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation (relative error < 1e-9 for these shapes)."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def raster_ellipse(shape: tuple[int, int], centre: tuple[float, float], a: float, b: float, angle_deg: float,
                   sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
    """Pixels whose centre lies inside an ellipse defined in *physical* units (mm when sx, sy != 1).

    ``centre`` in physical units; ``a`` along the direction ``angle_deg`` (from +x towards +y).
    """
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    x = xx * sx - centre[0]
    y = yy * sy - centre[1]
    t = math.radians(angle_deg)
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.uint8)


def cv2_ellipse(shape: tuple[int, int], centre: tuple[float, float], a: float, b: float,
                angle_deg: float) -> np.ndarray:
    """An ellipse drawn with ``cv2.ellipse`` whose pixel set has area pi*a*b.

    ``cv2.ellipse(..., thickness=-1)`` fills a polygon *and its outline pixels*, so a filled ellipse
    with axes (a, b) covers about pi (a + 1/2)(b + 1/2) pixels (3.8 % too many for 40 x 20).
    Drawing the axes half a pixel shorter, with sub-pixel precision, gives the intended shape.
    """
    img = np.zeros(shape, np.uint8)
    f = 1 << SHIFT
    cv2.ellipse(img, (round(centre[0] * f), round(centre[1] * f)), (round((a - 0.5) * f), round((b - 0.5) * f)),
                angle_deg, 0, 360, 1, -1, cv2.LINE_8, SHIFT)
    return img


SHAPE = (300, 340)


# ------------------------------------------------------------------------------------------ discs

@pytest.mark.parametrize("r", [20, 35, 60])
def test_disc(r: int) -> None:
    mask = np.zeros(SHAPE, np.uint8)
    cx, cy = 150, 131
    cv2.circle(mask, (cx, cy), r, 1, -1)
    m = measure_mask(mask)
    assert m.area_px == pytest.approx(math.pi * r * r, rel=0.01)
    assert m.perimeter_px == pytest.approx(2 * math.pi * r, rel=0.02)
    assert m.circularity == pytest.approx(1.0, abs=0.03)
    assert m.flattening_ratio == pytest.approx(1.0, abs=0.02)
    assert (m.centroid_x_px, m.centroid_y_px) == pytest.approx((cx, cy), abs=1e-9)
    assert m.bbox == (cx - r, cy - r, 2 * r + 1, 2 * r + 1)
    assert m.n_components == 1
    assert m.area_mm2 is None and m.perimeter_mm is None and m.centroid_x_mm is None
    assert m.confidence is None


# --------------------------------------------------------------------------------------- ellipses

ELLIPSES = [(40, 20), (60, 30), (45, 36)]
ANGLES = [0, 30, 60, 90]


def _check_ellipse(m: Measurement, a: float, b: float) -> None:
    assert m.area_px == pytest.approx(math.pi * a * b, rel=0.01)
    assert m.flattening_ratio == pytest.approx(a / b, rel=0.02)
    p = ellipse_perimeter(a, b)
    assert m.perimeter_px == pytest.approx(p, rel=0.02)
    assert m.circularity == pytest.approx(4 * math.pi * math.pi * a * b / p ** 2, rel=0.03)
    assert m.n_components == 1


@pytest.mark.parametrize("a,b", ELLIPSES)
@pytest.mark.parametrize("angle", ANGLES)
def test_ellipse_drawn_with_cv2(a: int, b: int, angle: int) -> None:
    mask = cv2_ellipse(SHAPE, (171.0, 140.0), a, b, angle)
    m = measure_mask(mask)
    _check_ellipse(m, a, b)
    assert (m.centroid_x_px, m.centroid_y_px) == pytest.approx((171.0, 140.0), abs=0.1)


@pytest.mark.parametrize("a,b", ELLIPSES)
@pytest.mark.parametrize("angle", ANGLES)
def test_ellipse_rasterised_exactly(a: int, b: int, angle: int) -> None:
    mask = raster_ellipse(SHAPE, (170.3, 140.7), a, b, angle)
    _check_ellipse(measure_mask(mask), a, b)


def test_flattening_ratio_does_not_depend_on_angle() -> None:
    frs = [measure_mask(raster_ellipse(SHAPE, (170.0, 150.0), 50, 25, ang)).flattening_ratio
           for ang in range(0, 180, 15)]
    assert max(frs) - min(frs) < 0.02  # type: ignore[operator]


# -------------------------------------------------------------------------------------- anisotropy

SX, SY = 0.06, 0.10  # mm/px: pixels taller than wide


def test_physical_circle_on_anisotropic_pixels() -> None:
    r_mm = 3.0  # drawn as an ellipse of 50 x 30 px
    mask = raster_ellipse(SHAPE, (10.0, 15.0), r_mm, r_mm, 0.0, SX, SY)
    cal = Calibration(SX, SY, "test")
    m = measure_mask(mask, cal)
    assert m.area_mm2 == pytest.approx(math.pi * r_mm ** 2, rel=0.01)
    assert m.area_mm2 == pytest.approx(m.area_px * SX * SY)
    assert m.flattening_ratio == pytest.approx(1.0, abs=0.02)
    assert m.perimeter_mm == pytest.approx(2 * math.pi * r_mm, rel=0.02)
    assert m.circularity == pytest.approx(1.0, abs=0.03)
    assert (m.centroid_x_mm, m.centroid_y_mm) == pytest.approx((10.0, 15.0), abs=0.01)
    assert m.centroid_x_mm == pytest.approx(m.centroid_x_px * SX)  # type: ignore[operator]
    # uncalibrated: the same pixels measured as square pixels are a 50 x 30 px ellipse
    u = measure_mask(mask)
    assert u.flattening_ratio == pytest.approx(50 / 30, rel=0.02)
    assert u.area_px == m.area_px and u.area_mm2 is None and u.perimeter_mm is None
    assert u.circularity == pytest.approx(4 * math.pi * math.pi * 50 * 30 / ellipse_perimeter(50, 30) ** 2, rel=0.03)


@pytest.mark.parametrize("angle", [0, 30, 60, 90])
def test_physical_ellipse_on_anisotropic_pixels(angle: int) -> None:
    a, b = 4.0, 2.0  # mm
    mask = raster_ellipse(SHAPE, (10.0, 15.0), a, b, angle, SX, SY)
    m = measure_mask(mask, Calibration(SX, SY, "test"))
    assert m.flattening_ratio == pytest.approx(a / b, rel=0.02)
    assert m.area_mm2 == pytest.approx(math.pi * a * b, rel=0.01)
    assert m.perimeter_mm == pytest.approx(ellipse_perimeter(a, b), rel=0.02)


# ---------------------------------------------------------------------------------- two regions

def test_two_regions_are_one_nerve() -> None:
    left = np.zeros(SHAPE, np.uint8)
    right = np.zeros(SHAPE, np.uint8)
    cv2.circle(left, (100, 150), 25, 1, -1)
    cv2.circle(right, (200, 170), 20, 1, -1)
    cal = Calibration(0.08, 0.08, "test")
    ml, mr, both = measure_mask(left, cal), measure_mask(right, cal), measure_mask(left | right, cal)
    assert both.n_components == 2
    assert both.area_px == ml.area_px + mr.area_px
    assert both.area_mm2 == pytest.approx(ml.area_mm2 + mr.area_mm2)  # type: ignore[operator]
    assert both.perimeter_px == pytest.approx(ml.perimeter_px + mr.perimeter_px)
    assert both.perimeter_mm == pytest.approx(ml.perimeter_mm + mr.perimeter_mm)  # type: ignore[operator]
    # centroid and FR from the union of pixels
    w = np.array([ml.area_px, mr.area_px], float)
    assert both.centroid_x_px == pytest.approx(np.dot(w, [100, 200]) / w.sum())
    assert both.centroid_y_px == pytest.approx(np.dot(w, [150, 170]) / w.sum())
    ys, xs = np.nonzero(left | right)
    cov = np.cov(np.stack([xs, ys]).astype(float), bias=True) + np.eye(2) / 12.0
    l2, l1 = np.linalg.eigvalsh(cov)
    assert both.flattening_ratio == pytest.approx(math.sqrt(l1 / l2), rel=1e-9)
    assert both.bbox == (75, 125, 146, 66)
    area_mm2, perimeter_mm = both.area_mm2, both.perimeter_mm
    assert area_mm2 is not None and perimeter_mm is not None
    assert both.circularity == pytest.approx(4 * math.pi * area_mm2 / perimeter_mm ** 2)


def test_diagonal_touch_is_one_component() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 2:6] = 1
    mask[6:10, 6:10] = 1  # touches the first square at one corner: 8-connected
    assert measure_mask(mask).n_components == 1


# ------------------------------------------------------------------------------ holes and edges

def test_hole_counts_in_neither_area_nor_perimeter() -> None:
    disc = np.zeros(SHAPE, np.uint8)
    cv2.circle(disc, (150, 150), 40, 1, -1)
    ring = disc.copy()
    cv2.circle(ring, (150, 150), 15, 0, -1)
    md, mr = measure_mask(disc), measure_mask(ring)
    assert mr.area_px == md.area_px - int((disc != ring).sum())
    assert mr.perimeter_px == pytest.approx(md.perimeter_px)  # outer boundary only
    assert mr.n_components == 1


def test_island_inside_a_hole_is_a_component() -> None:
    ring = np.zeros(SHAPE, np.uint8)
    cv2.circle(ring, (150, 150), 40, 1, -1)
    cv2.circle(ring, (150, 150), 20, 0, -1)
    cv2.circle(ring, (150, 150), 5, 1, -1)
    assert measure_mask(ring).n_components == 2


def test_mask_touching_the_border() -> None:
    mask = np.zeros((50, 60), np.uint8)
    mask[:, :10] = 1  # a 10 x 50 bar along the left edge
    m = measure_mask(mask)
    assert m.area_px == 500
    assert m.perimeter_px == pytest.approx(2 * (9 + 49))  # polygon through pixel centres
    assert m.bbox == (0, 0, 10, 50)
    assert m.flattening_ratio == pytest.approx(math.sqrt((2500 / 12) / (100 / 12)))  # moments of a 10 x 50 box


def test_single_pixel_and_line_are_finite() -> None:
    dot = np.zeros((20, 20), np.uint8)
    dot[5, 7] = 1
    m = measure_mask(dot)
    assert m.area_px == 1 and m.perimeter_px == 0.0 and m.circularity is None
    assert m.flattening_ratio == pytest.approx(1.0)
    assert (m.centroid_x_px, m.centroid_y_px) == (7.0, 5.0)
    line = np.zeros((20, 40), np.uint8)
    line[10, 5:35] = 1
    fr = measure_mask(line).flattening_ratio
    assert fr == pytest.approx(30.0)  # a 30 x 1 box of unit squares


# ------------------------------------------------------------------------------- input handling

def test_dtypes_give_the_same_result() -> None:
    mask = raster_ellipse((120, 160), (80.0, 60.0), 30, 18, 20)
    ref = measure_mask(mask)
    assert measure_mask(mask.astype(bool)) == ref
    assert measure_mask(mask * 255) == ref
    assert measure_mask(mask.astype(np.int32) * 7) == ref
    assert measure_mask(np.asfortranarray(mask)) == ref
    big = np.zeros((240, 320), np.uint8)
    big[::2, ::2] = mask
    assert measure_mask(big[::2, ::2]) == ref  # a strided view


def test_confidence_is_the_mean_probability_inside() -> None:
    mask = np.zeros((100, 120), np.uint8)
    mask[20:40, 30:60] = 1
    prob = np.full(mask.shape, 0.1, np.float32)
    prob[20:30, 30:60] = 0.9
    prob[30:40, 30:60] = 0.7
    assert measure_mask(mask, prob=prob).confidence == pytest.approx(0.8)
    with pytest.raises(ValueError, match="differ in shape"):
        measure_mask(mask, prob=prob[:, :-1])


def test_empty_mask() -> None:
    empty = np.zeros((50, 60), np.uint8)
    m = measure_mask(empty, prob=np.zeros((50, 60), np.float32))
    assert m.empty
    assert (m.area_px, m.perimeter_px, m.n_components) == (0, 0.0, 0)
    assert m.area_mm2 is None and m.flattening_ratio is None and m.circularity is None
    assert m.centroid_x_px is None and m.bbox is None and m.confidence is None
    c = measure_mask(empty, Calibration(0.1, 0.1, "test"))
    assert c.area_mm2 == 0.0 and c.perimeter_mm == 0.0 and c.centroid_x_mm is None


def test_to_dict_matches_columns() -> None:
    mask = np.zeros((50, 60), np.uint8)
    mask[10:20, 10:30] = 1
    d = measure_mask(mask).to_dict()
    assert list(d) == Measurement.columns()
    assert (d["bbox_x"], d["bbox_y"], d["bbox_w"], d["bbox_h"]) == (10, 10, 20, 10)
    e = measure_mask(np.zeros((5, 5), np.uint8)).to_dict()
    assert list(e) == Measurement.columns() and e["bbox_w"] is None


def test_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        measure_mask(np.zeros((3, 4, 5), np.uint8))


# ----------------------------------------------- found by mutation testing (docs/mutation-testing.md)

def test_confidence_ignores_the_bounding_box_outside_the_mask() -> None:
    """Only pixels of the mask count: a disc's bounding-box corners hold another probability."""
    mask = np.zeros((60, 60), np.uint8)
    cv2.circle(mask, (30, 30), 15, 1, -1)
    prob = np.where(mask > 0, 0.9, 0.2).astype(np.float32)
    assert measure_mask(mask, prob=prob).confidence == pytest.approx(0.9)


def test_confidence_of_half_precision_probabilities() -> None:
    """An fp16 engine's probabilities (float16) give the float32 answer."""
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 10:30] = 1
    prob = np.full(mask.shape, 0.25, np.float32)
    prob[10:15, 10:30] = 0.75
    want = measure_mask(mask, prob=prob).confidence
    assert want == pytest.approx(0.5)
    assert measure_mask(mask, prob=prob.astype(np.float16)).confidence == pytest.approx(want)


def test_shape_mismatch_message_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(10, 12\).*\(10, 11\)"):
        measure_mask(np.ones((10, 11), np.uint8), prob=np.ones((10, 12), np.float32))


def test_three_pixel_line_has_the_closed_polygon_length() -> None:
    """A 3-pixel line: its contour is two points (the end pixels' centres), and the closed polygon
    through them is 4 px long (there and back)."""
    mask = np.zeros((10, 10), np.uint8)
    mask[4, 4:7] = 1
    assert measure_mask(mask).perimeter_px == pytest.approx(4.0)


@pytest.mark.parametrize("sx, sy", [(1.0, 2.0), (2.0, 1.0), (1.0, 1.0), (0.5, 0.25)])
def test_rectangle_perimeter_in_mm_with_one_axis_at_unit_spacing(sx: float, sy: float) -> None:
    """A w x h box: the polygon through pixel centres is 2 (w-1) sx + 2 (h-1) sy mm, also when one
    spacing is exactly 1 mm/px (the unscaled shortcut applies only when both are)."""
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 20:60] = 1  # w = 40, h = 20
    m = measure_mask(mask, Calibration(sx, sy, "test"))
    assert m.perimeter_px == pytest.approx(2 * 39 + 2 * 19)
    assert m.perimeter_mm == pytest.approx(2 * 39 * sx + 2 * 19 * sy)
    assert m.area_mm2 == pytest.approx(800 * sx * sy)


def test_flattening_ratio_from_moments_defaults_to_square_pixels() -> None:
    """Without a spacing the covariance is taken as is: a 30 x 1 line of unit squares has FR 30."""
    from realtime.morphometry import flattening_ratio_from_moments

    n = 30
    mu20 = sum((i - (n - 1) / 2) ** 2 for i in range(n))  # pixel-centre second moment along x
    assert flattening_ratio_from_moments(mu20, 0.0, 0.0, float(n)) == pytest.approx(30.0)
    assert flattening_ratio_from_moments(mu20, 0.0, 0.0, float(n), 1.0, 1.0) == pytest.approx(30.0)
