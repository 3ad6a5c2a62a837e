"""Acquisition perturbations: known geometry on drawn shapes, intensity-only changes leave the mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from train.errors import UserError
from train.perturb import IDENTITY_LEVELS, PERTURBATIONS, REPORT_LEVELS, parse_levels, perturb, warp_box


def _pair(w: int = 200, h: int = 150, r: int = 20, centre: tuple[int, int] | None = None):
    rng = np.random.default_rng(0)
    mask = np.zeros((h, w), np.float32)
    cv2.circle(mask, centre or (w // 2, h // 2), r, 1.0, -1)
    image = np.clip(rng.normal(120, 20, (h, w)), 0, 255).astype(np.float32)
    return image, mask


@pytest.mark.parametrize("level", [0.8, 1.2])
def test_zoom_scales_area_by_level_squared(level: float) -> None:
    image, mask = _pair()
    out_i, out_m = perturb("zoom", image, mask, level)
    assert out_i.shape == image.shape
    assert float(out_m.sum()) == pytest.approx(level ** 2 * float(mask.sum()), rel=0.02)


def test_zoom_out_pads_black() -> None:
    image, mask = _pair()
    out_i, _ = perturb("zoom", image, mask, 0.8)
    assert float(out_i[:5, :5].max()) == 0.0 and float(out_i[70:80, 95:105].mean()) > 50


def test_aspect_scales_width_only() -> None:
    image, mask = _pair()
    _, out = perturb("aspect", image, mask, 1.15)
    ys, xs = np.nonzero(out > 0.5)
    assert (xs.max() - xs.min() + 1) == pytest.approx(41 * 1.15, abs=2)
    assert (ys.max() - ys.min() + 1) == pytest.approx(41, abs=1)


def test_crop_and_pad_change_the_size_and_keep_the_nerve() -> None:
    image, mask = _pair()
    ci, cm = perturb("crop", image, mask, 0.1)
    assert ci.shape == (120, 160) and cm.sum() == mask.sum()
    pi, pm = perturb("pad", image, mask, 0.1)
    assert pi.shape == (180, 240) and pm.sum() == mask.sum() and float(pi[0].max()) == 0.0


def test_shift_moves_sideways_and_depth_moves_down() -> None:
    image, mask = _pair()
    _, out = perturb("shift", image, mask, 0.1)
    ys, xs = np.nonzero(out > 0.5)
    assert xs.mean() == pytest.approx(100 + 20, abs=0.6) and ys.mean() == pytest.approx(75, abs=0.6)
    out_i, out = perturb("depth", image, mask, 0.1)
    ys, xs = np.nonzero(out > 0.5)
    assert xs.mean() == pytest.approx(100, abs=0.6) and ys.mean() == pytest.approx(75 + 15, abs=0.6)
    assert float(out_i[:14].max()) == 0.0  # black above the skin line
    with pytest.raises(UserError):
        perturb("depth", image, mask, -0.1)


def test_zoom_scales_about_the_transducer_face() -> None:
    image, mask = _pair(centre=(100, 40))
    _, out = perturb("zoom", image, mask, 1.2)
    ys, xs = np.nonzero(out > 0.5)
    assert xs.mean() == pytest.approx(100, abs=0.6) and ys.mean() == pytest.approx(40 * 1.2, abs=0.8)


def test_rotation_keeps_a_centred_disc() -> None:
    image, mask = _pair()
    _, out = perturb("rotate", image, mask, 10)
    assert float(out.sum()) == pytest.approx(float(mask.sum()), rel=0.01)


@pytest.mark.parametrize("level", [0.75, 0.85])
def test_compress_flattens_the_nerve_about_its_centroid_and_leaves_the_far_field(level: float) -> None:
    image, mask = _pair(w=400, h=300, r=30, centre=(220, 120))
    out_i, out_m = perturb("compress", image, mask, level)
    assert out_i.shape == image.shape and out_m.shape == mask.shape
    ys, xs = np.nonzero(out_m > 0.5)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert height == pytest.approx(61 * level, abs=1.5)
    assert width == pytest.approx(61 * level ** -0.6, abs=1.5)
    assert float(out_m.sum()) == pytest.approx(level ** 0.4 * float(mask.sum()), rel=0.02)
    assert (xs.mean(), ys.mean()) == pytest.approx((220, 120), abs=0.3)
    # the image moves with the mask: inside the disc it is the same affine image of the input
    inside = cv2.remap(image, *np.meshgrid(np.float32(220 + (np.arange(200, 241) - 220) * level ** 0.6),
                                           np.float32(120 + (np.arange(110, 131) - 120) / level)),
                       interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out_i[110:131, 200:241], inside, atol=1e-2)
    # far from the nerve nothing moves (the ring is a quarter of the shorter side past the disc)
    np.testing.assert_array_equal(out_i[:, :40], image[:, :40])
    np.testing.assert_array_equal(out_i[-10:, :], image[-10:, :])


def test_compress_without_a_nerve_or_with_a_bad_level() -> None:
    image, mask = _pair()
    out_i, out_m = perturb("compress", image, np.zeros_like(mask), 0.75)
    np.testing.assert_array_equal(out_i, image)
    assert not out_m.any()
    for bad in (0.0, -0.5, float("nan")):
        with pytest.raises(UserError, match="compress level must be a positive number"):
            perturb("compress", image, mask, bad)


@pytest.mark.parametrize("name", ["gain", "gamma", "tgc", "speckle", "blur", "jpeg", "h264"])
def test_intensity_perturbations_leave_the_mask(name: str) -> None:
    image, mask = _pair()
    level = REPORT_LEVELS[name][-1]
    out_i, out_m = perturb(name, image, mask, level, np.random.default_rng(3))
    np.testing.assert_array_equal(out_m, mask)
    assert out_i.shape == image.shape and out_i.dtype == np.float32
    assert 0.0 <= float(out_i.min()) and float(out_i.max()) <= 255.0
    assert not np.array_equal(out_i, image)


def test_known_intensity_values() -> None:
    image = np.full((10, 12), 100.0, np.float32)
    mask = np.zeros_like(image)
    assert float(perturb("gain", image, mask, 3.0)[0].max()) == 255.0  # saturates
    assert float(perturb("gamma", image, mask, 2.0)[0][0, 0]) == pytest.approx(255 * (100 / 255) ** 2, rel=1e-5)
    rows = perturb("tgc", image, mask, 1.0)[0][:, 0]
    assert (rows[0] == pytest.approx(100 * np.exp(-0.5), rel=1e-5)
            and rows[-1] == pytest.approx(100 * np.exp(0.5), rel=1e-5))


@pytest.mark.parametrize("name", sorted(IDENTITY_LEVELS))
def test_identity_levels_change_nothing(name: str) -> None:
    image, mask = _pair()
    out_i, out_m = perturb(name, image, mask, IDENTITY_LEVELS[name])
    np.testing.assert_allclose(out_i, image, atol=1e-3)
    np.testing.assert_allclose(out_m, mask, atol=1e-6)


def test_warp_box_identity_and_bad_box() -> None:
    image, mask = _pair()
    out_i, _ = warp_box(image, mask, (0, 0, 200, 150))
    np.testing.assert_allclose(out_i, image, atol=1e-3)
    with pytest.raises(ValueError):
        warp_box(image, mask, (10, 10, 10, 20))


def test_registry_levels_and_errors() -> None:
    assert set(REPORT_LEVELS) == set(PERTURBATIONS)
    assert parse_levels(None) == dict(REPORT_LEVELS)
    assert parse_levels(["zoom=0.7,1.3", "jpeg"]) == {"zoom": (0.7, 1.3), "jpeg": REPORT_LEVELS["jpeg"]}
    with pytest.raises(UserError, match="choose from"):
        parse_levels(["fisheye"])
    with pytest.raises(UserError, match="numbers"):
        parse_levels(["zoom=big"])
    image, mask = _pair()
    with pytest.raises(UserError, match="choose from"):
        perturb("fisheye", image, mask, 1.0)
    for name, level in (("zoom", 0.0), ("crop", 0.6), ("jpeg", 0), ("h264", 60), ("gain", -1)):
        with pytest.raises(UserError):
            perturb(name, image, mask, level)


def test_remove_nerve_float_and_uint8() -> None:
    from train.perturb import remove_nerve

    image, mask = _pair(300, 200, r=15, centre=(80, 100))
    image[mask > 0] = 10.0  # a dark nerve
    out = remove_nerve(image, mask)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert float(out[mask > 0].mean()) > 90  # painted over with the tissue beside it
    np.testing.assert_array_equal(out[:, 200:], image[:, 200:])
    out8 = remove_nerve(image.astype(np.uint8), mask)
    assert out8.dtype == np.uint8 and float(out8[mask > 0].mean()) > 90
    assert remove_nerve(image, np.zeros_like(mask)) is None
    wide = np.zeros_like(mask)
    wide[90:110, 5:295] = 1.0
    assert remove_nerve(image, wide) is None
