"""Tests for train.augment: one joint affine keeps image and mask aligned; the strong augmentation too."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from train.augment import (
    AUGMENT_NAMES,
    AugmentConfig,
    AugmentParams,
    JointAugment,
    StrongAugment,
    StrongAugmentConfig,
    augment_record,
    make_augment,
)
from train.errors import UserError

H, W = 72, 96
CENTRE = (52, 30)  # (x, y) of the nerve-like disc, off-centre so that rotations move it
RADIUS = 9


def _pair() -> tuple[np.ndarray, np.ndarray]:
    """A textured image with a bright disc, and the mask of that disc (float32, [H, W])."""
    yy, xx = np.mgrid[0:H, 0:W]
    image = (0.3 * xx / W + 0.1 * np.sin(yy / 3.0)).astype(np.float32)  # background stays below 0.45
    mask_u8 = np.zeros((H, W), dtype=np.uint8)
    cv2.circle(mask_u8, CENTRE, RADIUS, 255, thickness=-1)
    mask = mask_u8.astype(np.float32) / 255.0
    image[mask_u8 > 0] = 1.0
    return image, mask


def _weighted_centroid(weights: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    total = weights.sum()
    return np.array([(xx * weights).sum() / total, (yy * weights).sum() / total])


def test_config_defaults_and_record() -> None:
    config = AugmentConfig()
    assert (config.rotation_deg, config.width_shift, config.shear_deg, config.hflip) == (20.0, 0.1, 0.1, True)
    record = json.loads(json.dumps(config.to_config()))
    assert AugmentConfig.from_config(record) == config
    with pytest.raises(UserError):
        AugmentConfig(rotation_deg=-1)
    with pytest.raises(UserError):
        AugmentConfig(width_shift=1.5)
    with pytest.raises(UserError, match="malformed"):
        AugmentConfig.from_config({"zoom": 0.2})


def test_zero_params_are_identity() -> None:
    image, mask = _pair()
    out_image, out_mask = JointAugment().apply(image, mask, AugmentParams())
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)
    zero = JointAugment(AugmentConfig(0.0, 0.0, 0.0, hflip=False))
    out_image, out_mask = zero(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)


def test_flip_mirrors_both() -> None:
    image, mask = _pair()
    out_image, out_mask = JointAugment().apply(image, mask, AugmentParams(flip=True))
    # OpenCV 5's warp interpolates an exact pixel shift with weights a rounding error off 0 and 1
    np.testing.assert_allclose(out_image, image[:, ::-1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out_mask, mask[:, ::-1], rtol=0, atol=1e-6)


def test_shift_moves_right_by_fraction_of_width() -> None:
    image, mask = _pair()
    _, out_mask = JointAugment().apply(image, mask, AugmentParams(shift=0.1))
    moved = _weighted_centroid(out_mask) - _weighted_centroid(mask)
    np.testing.assert_allclose(moved, [0.1 * W, 0.0], atol=0.05)


@pytest.mark.parametrize("seed", range(12))
def test_image_and_mask_stay_aligned(seed: int) -> None:
    image, mask = _pair()
    augment = JointAugment()
    params = augment.sample_params(np.random.default_rng(seed))
    out_image, out_mask = augment.apply(image, mask, params)
    assert out_image.shape == (H, W) and out_image.dtype == np.float32
    assert out_mask.shape == (H, W) and out_mask.dtype == np.float32
    mask_centroid = _weighted_centroid(out_mask)
    bright_centroid = _weighted_centroid((out_image > 0.7).astype(np.float64))
    np.testing.assert_allclose(mask_centroid, bright_centroid, atol=1.0)
    # The disc lands where the affine sends its centre, and keeps its area.
    expected = params.matrix(W, H) @ np.array([*_weighted_centroid(mask), 1.0])
    np.testing.assert_allclose(mask_centroid, expected, atol=0.5)
    assert abs(out_mask.sum() / mask.sum() - 1.0) < 0.03
    assert out_mask.min() >= 0.0 and out_mask.max() <= 1.0


def test_masks_stay_soft() -> None:
    image, mask = _pair()
    _, out_mask = JointAugment().apply(image, mask, AugmentParams(angle_deg=13.0))
    assert np.any((out_mask > 0.05) & (out_mask < 0.95))


def test_channel_axis_kept() -> None:
    image, mask = _pair()
    out_image, out_mask = JointAugment()(image[None], mask[None], np.random.default_rng(1))
    assert out_image.shape == (1, H, W) and out_mask.shape == (1, H, W)
    flat_image, flat_mask = JointAugment()(image, mask, np.random.default_rng(1))
    np.testing.assert_array_equal(out_image[0], flat_image)
    np.testing.assert_array_equal(out_mask[0], flat_mask)
    with pytest.raises(ValueError):
        JointAugment().apply(image, mask[:-1], AugmentParams())


def test_same_seed_same_output() -> None:
    image, mask = _pair()
    augment = JointAugment()
    a = augment(image, mask, np.random.default_rng(5))
    b = augment(image, mask, np.random.default_rng(5))
    c = augment(image, mask, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_sampled_params_within_ranges() -> None:
    augment = JointAugment()
    rng = np.random.default_rng(0)
    params = [augment.sample_params(rng) for _ in range(400)]
    assert all(abs(p.angle_deg) <= 20 and abs(p.shift) <= 0.1 and abs(p.shear_deg) <= 0.1 for p in params)
    assert max(abs(p.angle_deg) for p in params) > 15
    flips = sum(p.flip for p in params)
    assert 150 < flips < 250
    no_flip = JointAugment(AugmentConfig(hflip=False))
    assert not any(no_flip.sample_params(rng).flip for _ in range(50))
    assert json.loads(json.dumps(params[0].to_dict()))["angle_deg"] == params[0].angle_deg


# ----------------------------------------------------------------------------- strong augmentation
def _bright_centroid(image: np.ndarray) -> np.ndarray:
    """Centroid of the pixels brighter than half-way between the median and the 99.5th percentile."""
    threshold = 0.5 * (np.median(image) + np.percentile(image, 99.5))
    return _weighted_centroid((image > threshold).astype(np.float64))


@pytest.mark.parametrize("seed", range(8))
def test_strong_keeps_alignment_and_zscores(seed: int) -> None:
    image, mask = _pair()
    out_image, out_mask = StrongAugment()(image, mask, np.random.default_rng(seed))
    assert out_image.shape == (H, W) and out_image.dtype == np.float32 and out_mask.dtype == np.float32
    np.testing.assert_allclose(_weighted_centroid(out_mask), _bright_centroid(out_image), atol=2.0)
    assert abs(float(out_image.mean())) < 1e-4 and abs(float(out_image.std()) - 1.0) < 1e-4
    assert out_mask.min() >= 0.0 and out_mask.max() <= 1.0


def test_strong_elastic_moves_both_within_alpha() -> None:
    image, mask = _pair()
    config = StrongAugmentConfig(elastic_p=1.0)
    augment = StrongAugment(config, AugmentConfig(0.0, 0.0, 0.0, hflip=False))
    rng = np.random.default_rng(3)
    warped_image, warped_mask = augment.elastic(image, mask, rng)
    assert not np.array_equal(warped_mask, mask)
    shift = np.linalg.norm(_weighted_centroid(warped_mask) - _weighted_centroid(mask))
    assert shift <= config.elastic_alpha * W * np.sqrt(2) + 0.5
    np.testing.assert_allclose(_weighted_centroid(warped_mask), _bright_centroid(warped_image), atol=1.0)
    assert np.any((warped_mask > 0.05) & (warped_mask < 0.95))  # soft, never re-binarised


def test_strong_deterministic_and_keeps_channel_axis() -> None:
    image, mask = _pair()
    augment = StrongAugment()
    a = augment(image[None], mask[None], np.random.default_rng(11))
    b = augment(image[None], mask[None], np.random.default_rng(11))
    c = augment(image[None], mask[None], np.random.default_rng(12))
    assert a[0].shape == (1, H, W) and a[1].shape == (1, H, W)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_make_augment_registry_and_records() -> None:
    assert AUGMENT_NAMES == ("paper", "strong", "acquisition", "fov", "compress", "none")
    assert make_augment("none") is None
    assert isinstance(make_augment("paper"), JointAugment)
    strong = make_augment("strong")
    assert isinstance(strong, StrongAugment)
    record = json.loads(json.dumps(augment_record(strong)))
    assert record["name"] == "strong" and record["strong"]["gamma"] == [0.7, 1.5]
    assert StrongAugmentConfig.from_config(record["strong"]) == strong.config
    assert augment_record(None) == {"name": "none"} and augment_record(make_augment("paper"))["name"] == "paper"
    with pytest.raises(UserError, match="paper, strong, acquisition, fov, compress, none"):
        make_augment("heavy")
    with pytest.raises(UserError):
        StrongAugmentConfig(elastic_p=1.5)
    with pytest.raises(UserError):
        StrongAugmentConfig(gamma=(1.5, 0.7))


# ---------------------------------------------------------------------------------------------
# acquisition augmentation
# ---------------------------------------------------------------------------------------------


def _disc_pair(w: int = 128, h: int = 96, r: int = 14) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    rng = np.random.default_rng(1)
    mask = np.zeros((h, w), np.float32)
    cv2.circle(mask, (w // 2, h // 2), r, 1.0, -1)
    image = (rng.normal(0, 1, (h, w)) + 2 * mask).astype(np.float32)
    return image, mask


def test_acquisition_augment_record_roundtrip_and_determinism() -> None:
    from train.augment import AcquisitionAugment, AcquisitionAugmentConfig

    aug = make_augment("acquisition")
    assert isinstance(aug, AcquisitionAugment)
    record = json.loads(json.dumps(augment_record(aug)))
    assert record["name"] == "acquisition" and record["acquisition"]["zoom"] == [0.8, 1.25]
    assert AcquisitionAugmentConfig.from_config(record["acquisition"]) == aug.config
    image, mask = _disc_pair()
    a = aug(image, mask, np.random.default_rng(5))
    b = aug(image, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == image.shape and a[0].dtype == np.float32
    # the output is z-scored and the mask stays in [0, 1]
    assert abs(float(a[0].mean())) < 1e-4 and abs(float(a[0].std()) - 1) < 1e-3
    assert 0.0 <= float(a[1].min()) and float(a[1].max()) <= 1.0
    with pytest.raises(UserError):
        AcquisitionAugmentConfig(zoom=(1.2, 0.8))
    with pytest.raises(UserError):
        AcquisitionAugmentConfig(codec_p=2.0)


def test_acquisition_field_of_view_scales_the_nerve_as_drawn() -> None:
    """With only the field-of-view step on and zoom fixed at z, the mask area scales by z**2."""
    from train.augment import AcquisitionAugment, AcquisitionAugmentConfig

    image, mask = _disc_pair()
    for z in (0.8, 1.25):
        aug = AcquisitionAugment(AcquisitionAugmentConfig(fov_p=1.0, zoom=(z, z), aspect=(1.0, 1.0), offset=0.0))
        _, out = aug.field_of_view(image * 0 + 100, mask, np.random.default_rng(0))
        assert float(out.sum()) == pytest.approx(z * z * float(mask.sum()), rel=0.03)


def test_fov_augment_is_acquisition_without_its_intensity_changes() -> None:
    """--augment fov: the acquisition augmentation's geometry (the same masks for the same draws) with depth
    brightness, gain and JPEG never applied (the same frames as acquisition with those three probabilities 0),
    recorded as ``fov`` with the speckle and compression it was given."""
    from train.augment import AcquisitionAugment, AcquisitionAugmentConfig, CompressAugmentConfig, FieldOfViewAugment

    aug = make_augment("fov", (0.0, 0.6), (0.75, 0.5))
    assert isinstance(aug, FieldOfViewAugment) and repr(aug).startswith("FieldOfViewAugment(")
    assert (aug.config.tgc_p, aug.config.gain_p, aug.config.codec_p) == (0.0, 0.0, 0.0)
    assert aug.config.fov_p == AcquisitionAugmentConfig().fov_p and aug.config.zoom == AcquisitionAugmentConfig().zoom
    assert aug.compress == CompressAugmentConfig(compress_p=0.5, level=(0.75, 1.0))
    assert aug.strong.config.speckle_range == (0.0, 0.6)
    record = json.loads(json.dumps(augment_record(aug)))
    assert record["name"] == "fov" and record["acquisition"]["gain_p"] == 0.0
    assert record["compress"] == {"compress_p": 0.5, "level": [0.75, 1.0]}

    image, mask = _disc_pair()
    quiet = AcquisitionAugment(AcquisitionAugmentConfig(tgc_p=0.0, gain_p=0.0, codec_p=0.0))
    full = AcquisitionAugment(AcquisitionAugmentConfig(tgc_p=1.0, gain_p=1.0, codec_p=1.0))
    fov = FieldOfViewAugment()
    for seed in range(4):
        got = fov(image, mask, np.random.default_rng(seed))
        same = quiet(image, mask, np.random.default_rng(seed))
        changed = full(image, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(got[0], same[0])
        np.testing.assert_array_equal(got[1], changed[1])  # the geometry is the acquisition augmentation's
        assert not np.array_equal(got[0], changed[0])


# ---------------------------------------------------------------------------------------------
# compression augmentation
# ---------------------------------------------------------------------------------------------


def test_compress_augment_record_roundtrip_determinism_and_bad_ranges() -> None:
    from train.augment import CompressAugment, CompressAugmentConfig

    aug = make_augment("compress")
    assert isinstance(aug, CompressAugment)
    record = json.loads(json.dumps(augment_record(aug)))
    assert record["name"] == "compress" and record["compress"] == {"compress_p": 0.5, "level": [0.75, 1.0]}
    assert CompressAugmentConfig.from_config(record["compress"]) == aug.config
    assert StrongAugmentConfig.from_config(record["strong"]) == aug.strong.config
    image, mask = _disc_pair()
    a = aug(image, mask, np.random.default_rng(5))
    b = aug(image, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert abs(float(a[0].mean())) < 1e-4 and abs(float(a[0].std()) - 1) < 1e-3
    assert 0.0 <= float(a[1].min()) and float(a[1].max()) <= 1.0
    for bad in ({"compress_p": 1.5}, {"level": (0.9, 0.7)}, {"level": (0.7, 1.2)}, {"level": (0.0, 1.0)}):
        with pytest.raises(UserError):
            CompressAugmentConfig(**bad)


def test_compress_augment_flattens_the_nerve_as_drawn() -> None:
    """With every other step off and the level fixed at 0.75, the nerve is 25 % less tall and its area
    0.75 ** 0.4 of what it was; with compress_p 0 it keeps its shape."""
    from train.augment import AugmentConfig, CompressAugment, CompressAugmentConfig

    image, mask = _disc_pair(w=256, h=192, r=20)
    still = StrongAugmentConfig(elastic_p=0.0, speckle=0.0, blur_p=0.0, gamma=(1.0, 1.0), contrast=(1.0, 1.0),
                                brightness=0.0)
    affine = AugmentConfig(rotation_deg=0.0, width_shift=0.0, shear_deg=0.0, hflip=False)
    heights = {}
    for p in (0.0, 1.0):
        aug = CompressAugment(CompressAugmentConfig(compress_p=p, level=(0.75, 0.75)), still, affine)
        _, out = aug(image, mask, np.random.default_rng(0))
        ys, _ = np.nonzero(out > 0.5)
        heights[p] = (ys.max() - ys.min() + 1, float(out.sum()))
    assert heights[0.0] == (41, pytest.approx(float(mask.sum()), rel=1e-3))
    assert heights[1.0][0] == pytest.approx(41 * 0.75, abs=1.5)
    assert heights[1.0][1] == pytest.approx(0.75 ** 0.4 * float(mask.sum()), rel=0.02)


def test_acquisition_with_compress_flattens_the_nerve_and_records_it() -> None:
    """--augment acquisition --compress LEVEL P: the acquisition steps plus the nerve compressed as --augment
    compress does it (here every other step off: 25 % less tall, area 0.75 ** 0.4); without --compress the
    acquisition augmentation compresses nothing and records no compression."""
    from train.augment import (AcquisitionAugment, AcquisitionAugmentConfig, AugmentConfig, CompressAugmentConfig)

    plain = make_augment("acquisition")
    assert isinstance(plain, AcquisitionAugment) and plain.compress is None
    assert "compress" not in augment_record(plain)
    aug = make_augment("acquisition", (0.0, 0.6), (0.7, 0.4))
    assert isinstance(aug, AcquisitionAugment) and aug.compress == CompressAugmentConfig(compress_p=0.4,
                                                                                          level=(0.7, 1.0))
    assert aug.strong.config.speckle_range == (0.0, 0.6)
    record = json.loads(json.dumps(augment_record(aug)))
    assert record["name"] == "acquisition" and record["compress"] == {"compress_p": 0.4, "level": [0.7, 1.0]}
    assert "compress" in repr(aug)

    image, mask = _disc_pair(w=256, h=192, r=20)
    still = StrongAugmentConfig(elastic_p=0.0, speckle=0.0, blur_p=0.0, gamma=(1.0, 1.0), contrast=(1.0, 1.0),
                                brightness=0.0)
    affine = AugmentConfig(rotation_deg=0.0, width_shift=0.0, shear_deg=0.0, hflip=False)
    quiet = AcquisitionAugmentConfig(fov_p=0.0, tgc_p=0.0, gain_p=0.0, codec_p=0.0)
    shapes = {}
    for p in (None, 0.0, 1.0):
        compress = None if p is None else CompressAugmentConfig(compress_p=p, level=(0.75, 0.75))
        _, out = AcquisitionAugment(quiet, still, affine, compress=compress)(image, mask, np.random.default_rng(0))
        ys, _ = np.nonzero(out > 0.5)
        shapes[p] = (ys.max() - ys.min() + 1, float(out.sum()))
    assert shapes[None] == shapes[0.0] == (41, pytest.approx(float(mask.sum()), rel=1e-3))
    assert shapes[1.0][0] == pytest.approx(41 * 0.75, abs=1.5)
    assert shapes[1.0][1] == pytest.approx(0.75 ** 0.4 * float(mask.sum()), rel=0.02)
    with pytest.raises(UserError, match="--augment paper has none"):
        make_augment("paper", None, (0.75, 0.5))


def _speckle_strength(augment: StrongAugment, seed: int) -> float:
    """The speckle strength one call of ``augment.intensity`` applied, read back from its output: on a ramp with
    every other intensity step off, ``out = a * x * (1 + s * n) + b`` (z-score), ``n`` white noise blurred with
    sigma 0.8 (std 1 / (2 sqrt(pi) 0.8))."""
    ramp = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (192, 1))
    out = augment.intensity(ramp, np.random.default_rng(seed))
    a, b = np.polyfit(ramp.ravel(), out.ravel(), 1)
    keep = ramp > 0.3
    relative = (out[keep] - (a * ramp[keep] + b)) / (a * ramp[keep])
    return float(relative.std() / (1.0 / (2.0 * np.sqrt(np.pi) * 0.8)))


def test_compress_settings_through_make_augment() -> None:
    """--compress LEVEL P sets the compression's lowest scale (drawn up to 1) and probability, beside --speckle,
    is recorded, and is refused for another augmentation or out of range."""
    from train.augment import CompressAugment, CompressAugmentConfig, check_compress

    aug = make_augment("compress", None, (0.65, 0.7))
    assert isinstance(aug, CompressAugment)
    assert aug.config == CompressAugmentConfig(compress_p=0.7, level=(0.65, 1.0))
    record = json.loads(json.dumps(augment_record(aug)))
    assert record["compress"] == {"compress_p": 0.7, "level": [0.65, 1.0]}
    assert record["strong"]["speckle_range"] is None
    both = make_augment("compress", (0.0, 0.6), (0.65, 0.7))
    assert both.config.level == (0.65, 1.0) and both.strong.config.speckle_range == (0.0, 0.6)
    assert make_augment("compress", (0.0, 0.6)).config == CompressAugmentConfig()  # speckle alone: default compression
    # LEVEL 0.5, P 1: every image compressed, by up to half
    pinned = make_augment("compress", None, (0.5, 1.0))
    assert pinned.config.level == (0.5, 1.0) and pinned.config.compress_p == 1.0
    with pytest.raises(UserError, match="--augment strong has none"):
        make_augment("strong", None, (0.65, 0.7))
    for bad in ((0.0, 0.5), (1.2, 0.5), (0.7, 1.5), (0.7, float("nan")), (0.7,)):
        with pytest.raises(UserError, match="--compress"):
            check_compress(bad)


def test_speckle_range_draws_each_images_strength_from_it() -> None:
    quiet = {"gamma": (1.0, 1.0), "contrast": (1.0, 1.0), "brightness": 0.0, "blur_p": 0.0}
    fixed = [_speckle_strength(StrongAugment(StrongAugmentConfig(**quiet)), s) for s in range(6)]
    np.testing.assert_allclose(fixed, 0.15, atol=0.01)  # the default: always the fixed strength
    pinned = [_speckle_strength(StrongAugment(StrongAugmentConfig(**quiet, speckle_range=(0.45, 0.45))), s)
              for s in range(4)]
    np.testing.assert_allclose(pinned, 0.45, atol=0.02)
    drawn = [_speckle_strength(StrongAugment(StrongAugmentConfig(**quiet, speckle_range=(0.0, 0.6))), s)
             for s in range(24)]
    assert min(drawn) >= 0.0 and max(drawn) <= 0.62
    assert min(drawn) < 0.15 and max(drawn) > 0.45  # spread over the range, not one value


def test_speckle_range_through_make_augment_records_and_bad_values() -> None:
    from train.augment import AcquisitionAugment, CompressAugment

    for name, kind in (("strong", StrongAugment), ("acquisition", AcquisitionAugment), ("compress", CompressAugment)):
        aug = make_augment(name, (0.0, 0.6))
        assert isinstance(aug, kind)
        record = json.loads(json.dumps(augment_record(aug)))
        assert record["strong"]["speckle_range"] == [0.0, 0.6]
        assert StrongAugmentConfig.from_config(record["strong"]).speckle_range == (0.0, 0.6)
    old = json.loads(json.dumps(augment_record(make_augment("compress"))))["strong"]
    del old["speckle_range"]  # a record written before the range existed reads as the fixed strength
    assert StrongAugmentConfig.from_config(old).speckle_range is None
    with pytest.raises(UserError, match="has none"):
        make_augment("paper", (0.0, 0.6))
    for bad in ((0.6, 0.0), (-0.1, 0.3), (0.0, float("nan")), (0.1,)):
        with pytest.raises(UserError, match="speckle range"):
            StrongAugmentConfig(speckle_range=bad)
