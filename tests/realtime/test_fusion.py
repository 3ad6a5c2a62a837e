"""Temporal fusion with known answers: motion followed exactly, noise averaged, every rule that starts again."""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest

from common.errors import UserError
from realtime.fusion import (
    AFFINE_MAX_CHANGE,
    DEFAULT_WEIGHT,
    MOTIONS,
    TemporalFusion,
    fusion_weight,
    image_affine,
    image_motion,
    make_fusion,
)

H, W = 96, 128


def disc(cx: float, cy: float, r: int = 12, value: float = 1.0, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    p = np.zeros(shape, np.float32)
    cv2.circle(p, (int(cx), int(cy)), r, value, -1)
    return p


def test_the_first_frame_is_its_own_and_a_measured_one_is_fused_with_the_next() -> None:
    f = TemporalFusion(weight=0.5)
    first = disc(40, 40)
    out, fused = f.apply(first)
    assert not fused and np.array_equal(out, first)
    f.observe(True)
    out, fused = f.apply(disc(40, 40, value=0.6))  # same place: 0.5 * 0.6 + 0.5 * 1.0
    assert fused and out[40, 40] == pytest.approx(0.8) and out[0, 0] == 0.0
    assert f.counts == {"fused": 1, "own": 1} and f.describe()["frames"] == {"fused": 1, "own": 1}


def test_a_translation_is_followed_exactly() -> None:
    """A disc gliding by whole pixels: the previous map moved by the same amount lands on the current one,
    so the fused map is the current map (nothing smeared, nothing lagging)."""
    f = TemporalFusion(weight=0.3)
    for i in range(8):
        cur = disc(30 + 3 * i, 40 + i)
        out, fused = f.apply(cur)
        assert fused == (i > 0)
        np.testing.assert_allclose(out, cur, atol=1e-5)
        f.observe(True)


def test_independent_noise_is_averaged_down() -> None:
    """Each frame the clean disc plus fresh noise: at weight W the fused noise's variance settles at
    W / (2 - W) of a frame's (1/3 for W = 0.5), so its SD at about 0.58 of a frame's."""
    rng = np.random.default_rng(0)
    clean = disc(60, 48, r=20, value=0.9)
    f = TemporalFusion(weight=0.5)
    raw_sd, fused_sd = [], []
    for i in range(60):
        noise = rng.normal(0.0, 0.1, clean.shape).astype(np.float32)
        out, _ = f.apply(clean + noise)
        f.observe(True)
        if i >= 10:
            raw_sd.append(float(noise.std()))
            fused_sd.append(float((out - clean).std()))
    assert np.mean(fused_sd) / np.mean(raw_sd) == pytest.approx(np.sqrt(1 / 3), abs=0.05)


def test_a_frame_after_one_not_measured_starts_again() -> None:
    f = TemporalFusion()
    f.apply(disc(40, 40))
    f.observe(False)
    cur = disc(40, 40, value=0.6)
    out, fused = f.apply(cur)
    assert not fused and np.array_equal(out, cur)
    f.observe(True)
    assert f.apply(disc(40, 40))[1]  # measured again: the next one is fused
    f.observe(True)
    f.reset()
    assert not f.apply(disc(40, 40))[1]  # reset forgets everything


@pytest.mark.parametrize("second, why", [
    (disc(40 + 10, 40, r=12), "a shift over max_shift (0.1 x 96 = 9.6 px)"),
    (disc(40, 40, r=18), "an area 2.25x the previous"),
    (np.zeros((H, W), np.float32), "no region"),
    (disc(40, 40, shape=(H // 2, W // 2)), "another resolution"),
])
def test_jumps_and_new_regions_start_again(second: np.ndarray, why: str) -> None:
    f = TemporalFusion()
    f.apply(disc(40, 40))
    f.observe(True)
    out, fused = f.apply(second)
    assert not fused, why
    assert np.array_equal(out, second)


def test_within_the_limits_it_fuses() -> None:
    f = TemporalFusion()
    f.apply(disc(40, 40))
    f.observe(True)
    assert f.apply(disc(49, 40))[1]  # 9 px <= 9.6 px
    f = TemporalFusion(max_area_change=0.7)
    f.apply(disc(40, 40, r=12))
    f.observe(True)
    assert f.apply(disc(40, 40, r=15))[1]  # 1.63x the outline's area, within 0.7 (not the default 0.5)


def test_the_region_followed_is_the_tracked_nerve() -> None:
    """Two regions: a large one that stays and a small one that moves 4 px. With the tracker's nerve on the
    small one, its motion is the one compensated: the fused small disc sits where the current one is."""
    def frame(x: int) -> np.ndarray:
        p = disc(30, 40, r=14)
        cv2.circle(p, (x, 60), 8, 1.0, -1)
        return p

    f = TemporalFusion(weight=0.5)
    f.apply(frame(90))
    f.observe(True, centre=(90.0, 60.0))
    cur = frame(94)
    out, fused = f.apply(cur)
    assert fused
    np.testing.assert_allclose(out[45:75, 80:110], cur[45:75, 80:110], atol=1e-5)  # the nerve: exact
    assert out[40, 18] == pytest.approx(0.5)  # the big one (not followed) is smeared by the 4 px shift

    g = TemporalFusion(weight=0.5)  # without the tracker's centre the largest region is followed
    g.apply(frame(90))
    g.observe(True)
    out, _ = g.apply(cur)
    np.testing.assert_allclose(out[20:60, 10:50], cur[20:60, 10:50], atol=1e-5)


def test_inputs_in_other_layouts_and_dtypes() -> None:
    f = TemporalFusion()
    out, _ = f.apply(disc(40, 40).astype(np.float16)[None, None])
    assert out.dtype == np.float32 and out.shape == (H, W)
    f.observe(True)
    out, fused = f.apply(disc(40, 40)[None, None])
    assert fused and out.shape == (H, W)


def test_settings_are_checked() -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(UserError, match=r"\(0, 1\]"):
            TemporalFusion(weight=bad)
    with pytest.raises(UserError, match="threshold"):
        TemporalFusion(threshold=1.5)
    with pytest.raises(UserError, match="positive"):
        TemporalFusion(max_shift=0)
    assert make_fusion(1.0) is None and make_fusion(0.25).weight == 0.25 and DEFAULT_WEIGHT == 0.35
    assert make_fusion(0.5, threshold=0.3).threshold == 0.3
    assert fusion_weight("0.4") == 0.4 and fusion_weight("1") == 1.0
    for text in ("0", "2", "abc", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            fusion_weight(text)


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "The streaming loop and temporal fusion")
# ---------------------------------------------------------------------------------------------


def square(p: np.ndarray, x: int, y: int, side: int, value: float = 1.0) -> np.ndarray:
    p[y:y + side, x:x + side] = value
    return p


def test_a_frame_is_fused_only_after_observe_says_the_last_one_was_measured() -> None:
    f = TemporalFusion()
    f.apply(disc(40, 40))
    assert not f.apply(disc(40, 40))[1]  # no observe(True) in between: not fused
    f.observe(True)
    assert f.apply(disc(40, 40))[1]
    assert not f.apply(disc(40, 40))[1]  # applying again resets the "measured" mark


def test_three_dimensional_input_and_the_exact_limits() -> None:
    f = TemporalFusion()
    out, _ = f.apply(disc(40, 40)[None])  # [1, h, w]
    assert out.shape == (H, W)
    f.observe(True)
    assert f.apply(disc(40, 40)[None])[1]

    g = TemporalFusion()  # a 100 x 100 map: the limit is exactly 10 px, which still fuses, vertically too
    g.apply(disc(50, 30, shape=(100, 100)))
    g.observe(True)
    assert g.apply(disc(50, 40, shape=(100, 100)))[1]
    g.observe(True)
    assert not g.apply(disc(50, 51, shape=(100, 100)))[1]  # 11 px down

    a, b = disc(40, 40, r=12), disc(40, 40, r=14)
    probe = TemporalFusion()
    small, large = probe._follow(a), TemporalFusion()._follow(b)
    change = abs(large.area - small.area) / small.area
    h = TemporalFusion(max_area_change=change)  # an area change exactly at the limit still fuses
    h.apply(a)
    h.observe(True)
    assert h.apply(b)[1]


def test_regions_at_the_threshold_and_the_smallest_region() -> None:
    f = TemporalFusion()
    f.apply(disc(40, 40, value=0.5))  # exactly the threshold counts
    assert f.region is not None and f.region.area > 400
    tiny = square(np.zeros((H, W), np.float32), 10, 10, 3)  # a 3 x 3 block: an outline of area exactly 4
    g = TemporalFusion()
    g.apply(tiny)
    assert g.region is not None and g.region.area == 4.0
    two = square(np.zeros((H, W), np.float32), 10, 10, 2)  # 2 x 2: area 1, no position
    h = TemporalFusion()
    h.apply(two)
    assert h.region is None


def test_the_region_chosen_first_and_the_one_nearest_the_tracked_nerve() -> None:
    def squares(*boxes: tuple[int, int, int]) -> np.ndarray:
        p = np.zeros((H, W), np.float32)
        for x, y, side in boxes:
            square(p, x, y, side)
        return p

    # a first frame: the largest; equal areas: the top one, then the left one
    f = TemporalFusion()
    f.apply(squares((60, 10, 10), (10, 50, 10)))
    assert (f.region.x, f.region.y) == pytest.approx((64.5, 14.5))
    g = TemporalFusion()
    g.apply(squares((60, 10, 10), (10, 10, 10)))
    assert (g.region.x, g.region.y) == pytest.approx((14.5, 14.5))

    # the tracked nerve's centre picks the nearest region by true distance, not by x or y alone
    two = squares((10, 40, 10), (70, 10, 10))  # centres A (14.5, 44.5), B (74.5, 14.5)
    for centre, expected in (((40.0, 14.0), (74.5, 14.5)),   # by x alone A (25.5 vs 34.5); distance B (39.8 vs 34.5)
                             ((25.0, 20.0), (14.5, 44.5))):  # by y alone B (24.5 vs 5.5); distance A (26.7 vs 49.8)
        f.reset()
        f.apply(two)
        f.observe(True, centre=centre)
        assert (f.region.x, f.region.y) == pytest.approx(expected), centre
    f.reset()
    f.apply(squares((10, 10, 10), (50, 8, 14)))  # centres (14.5, 14.5) area 81, (56.5, 14.5) area 169
    f.observe(True, centre=(35.5, 14.5))  # 21 px from both: the larger
    assert f.region.area == pytest.approx(169.0)

    # from frame to frame without the tracker: the region nearest the last one, by true distance; a tie: the larger
    for nxt, expected in ((squares((30, 60, 10), (60, 40, 10)), (34.5, 64.5)),  # y alone: the second (30 vs 10)
                          (squares((60, 30, 10), (40, 66, 10)), (64.5, 34.5))):  # x alone: the second (30 vs 10)
        h = TemporalFusion()
        h.apply(squares((30, 30, 10)))  # (34.5, 34.5)
        h.apply(nxt)
        assert (h.region.x, h.region.y) == pytest.approx(expected)
    h = TemporalFusion()
    h.apply(squares((30, 30, 10)))
    h.apply(squares((58, 30, 10), (0, 28, 14)))  # (62.5, 34.5) area 81 and (6.5, 34.5) area 169: 28 px each
    assert h.region.area == pytest.approx(169.0)


def test_messages_say_what_is_accepted() -> None:
    TemporalFusion(threshold=0.0)
    TemporalFusion(threshold=1.0)  # both ends are valid
    with pytest.raises(UserError, match=r"^the fusion's max_shift and max_area_change must be positive$"):
        TemporalFusion(max_area_change=0.0)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected the current frame's weight, a number in "
                                                         r"\(0, 1\], got 'x'$"):
        fusion_weight("x")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^2: the current frame's weight must be in \(0, 1\] "
                                                         r"\(1 turns fusion off\)$"):
        fusion_weight("2")


def textured(shape: tuple[int, int] = (288, 384), seed: int = 0) -> np.ndarray:
    """Smooth random texture (structure at a few pixels' scale, like tissue at the network's resolution)."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 4.0)
    return (t - t.min()) / (t.max() - t.min())


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("dx,dy", [(0.0, 0.0), (3.0, -2.0), (0.5, 0.25), (-7.5, 4.0)])
def test_image_motion_recovers_a_known_shift(dx: float, dy: float) -> None:
    prev = textured()
    got = image_motion(prev, shifted(prev, dx, dy), (190.0, 140.0), 20.0)
    assert got is not None
    assert got[0] == pytest.approx(dx, abs=0.2) and got[1] == pytest.approx(dy, abs=0.2)


def test_image_motion_ignores_fresh_speckle() -> None:
    """The same tissue under new per-frame speckle: the measured motion stays below a pixel."""
    rng = np.random.default_rng(1)
    tissue = textured(seed=2)
    a = tissue * rng.rayleigh(0.6, tissue.shape).astype(np.float32)
    b = shifted(tissue, 2.0, 1.0) * rng.rayleigh(0.6, tissue.shape).astype(np.float32)
    got = image_motion(a, b, (200.0, 150.0), 20.0)
    assert got is not None and abs(got[0] - 2.0) < 1.0 and abs(got[1] - 1.0) < 1.0


def test_image_motion_is_none_without_structure_or_room_or_match() -> None:
    flat = np.full((288, 384), 0.4, np.float32)
    assert image_motion(flat, flat, (190.0, 140.0), 20.0) is None
    tiny = textured((20, 24))
    assert image_motion(tiny, tiny, (2.0, 2.0), 20.0) is None  # the patch clipped to under 16 px
    assert image_motion(textured(seed=3), textured(seed=4), (190.0, 140.0), 20.0) is None  # nothing alike


def test_a_change_of_shape_is_not_taken_for_motion_when_the_image_stands_still() -> None:
    """The probable region grows on one side (its centroid moves 4 px) while the image is still: with the
    image, the previous map is not moved, so the fused map keeps the previous edge on the far side."""
    img = textured()
    f = TemporalFusion(weight=0.5)
    first = np.zeros((288, 384), np.float32)
    cv2.rectangle(first, (150, 120), (210, 160), 1.0, -1)
    f.apply(first, img)
    f.observe(True)
    grown = first.copy()
    cv2.rectangle(grown, (150, 120), (218, 160), 1.0, -1)  # right edge 8 px further
    out, fused = f.apply(grown, img)
    assert fused
    assert out[140, 151] == pytest.approx(1.0)  # left edge where both put it: not moved
    assert out[140, 214] == pytest.approx(0.5)  # new part: only the current frame says so
    f2 = TemporalFusion(weight=0.5)  # without the image, the centroid's 4 px move shifts the old map
    f2.apply(first)
    f2.observe(True)
    out2, _ = f2.apply(grown)
    assert out2[140, 151] == pytest.approx(0.5)


def test_image_motion_moves_the_previous_map_with_the_content() -> None:
    """Image and nerve glide together by (5, -3): the previous map follows the image's motion."""
    img = textured()
    f = TemporalFusion(weight=0.5)
    a = disc(180, 140, r=20, shape=(288, 384))
    f.apply(a, img)
    f.observe(True)
    b = disc(185, 137, r=20, shape=(288, 384))
    out, fused = f.apply(b, shifted(img, 5.0, -3.0))
    assert fused
    np.testing.assert_allclose(out, b, atol=0.06)


def test_an_image_of_another_size_falls_back_to_the_region() -> None:
    f = TemporalFusion(weight=0.3)
    for i in range(4):
        cur = disc(30 + 3 * i, 40 + i)
        out, _ = f.apply(cur, np.zeros((10, 10), np.float32))
        np.testing.assert_allclose(out, cur, atol=1e-5)
        f.observe(True)


def squeezed(img: np.ndarray, centre: tuple[float, float], sx: float, sy: float, dx: float = 0.0,
             dy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``img`` scaled by ``(sx, sy)`` about ``centre`` and moved by ``(dx, dy)``, and that 2x3 matrix."""
    cx, cy = centre
    m = np.float32([[sx, 0, cx * (1 - sx) + dx], [0, sy, cy * (1 - sy) + dy]])
    out = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out, m


@pytest.mark.parametrize("sx,sy,dx,dy", [(1.0, 1.0, 0.0, 0.0), (1.02, 0.97, 2.0, -1.0), (0.99, 1.03, -4.0, 3.0)])
def test_image_affine_recovers_a_known_squeeze(sx: float, sy: float, dx: float, dy: float) -> None:
    prev = textured()
    centre = (190.0, 140.0)
    cur, truth = squeezed(prev, centre, sx, sy, dx, dy)
    got = image_affine(prev, cur, centre, 20.0)
    assert got is not None and got.shape == (2, 3)
    np.testing.assert_allclose(got[:, :2], truth[:, :2], atol=0.006)  # 0.3 px across the patch's half
    here = np.array([*centre, 1.0])
    np.testing.assert_allclose(got @ here, truth @ here, atol=0.2)  # where the nerve's centre goes


def test_image_affine_is_none_where_the_translation_is_or_the_change_is_not_believed() -> None:
    flat = np.full((288, 384), 0.4, np.float32)
    assert image_affine(flat, flat, (190.0, 140.0), 20.0) is None  # no structure: no translation either
    prev = textured()
    cur, _ = squeezed(prev, (190.0, 140.0), 1.0, 0.8)  # 20 % in a frame: more than AFFINE_MAX_CHANGE
    got = image_affine(prev, cur, (190.0, 140.0), 20.0)
    assert got is None or float(np.abs(got[:, :2] - np.eye(2)).max()) <= AFFINE_MAX_CHANGE


def squeeze_run(frames: int = 6, step: float = 0.98) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, bool]],
                                                               dict[str, TemporalFusion]]:
    """A soft nerve in textured tissue, both squeezed vertically by ``step`` more each frame about the nerve, fused
    at W = 0.35 with every motion: the last frame's map, each motion's last ``apply`` and the fusions."""
    img, nerve = textured(), cv2.GaussianBlur(disc(190, 140, r=24, shape=(288, 384)), (0, 0), 3.0)
    fusions = {m: TemporalFusion(weight=0.35, motion=m) for m in MOTIONS}
    for i in range(frames):
        cur_img, _ = squeezed(img, (190.0, 140.0), 1.0, step ** i)
        cur = squeezed(nerve, (190.0, 140.0), 1.0, step ** i)[0]
        fused = {m: f.apply(cur, cur_img) for m, f in fusions.items()}
        for f in fusions.values():
            f.observe(True)
    return cur, fused, fusions


def test_affine_motion_follows_a_change_of_shape_the_shift_carries_late() -> None:
    """The tissue and the nerve in it are squeezed 2 % more each frame about the nerve (a compression): moved by the
    affine motion the previous map lands on the current nerve, so the fused area is the current one's; moved by the
    translation alone it still holds the rounder nerve of the frames before, and the area lags behind (a soft edge,
    as a network's, so the outline moves with the weights: (1 - W) / W = 1.9 frames, 4 % of area)."""
    cur, fused, fusions = squeeze_run()
    area = float((cur >= 0.5).sum())
    assert all(was for _, was in fused.values())
    assert float((fused["affine"][0] >= 0.5).sum()) == pytest.approx(area, rel=0.01)
    assert float((fused["shift"][0] >= 0.5).sum()) > 1.025 * area
    assert fusions["affine"].describe()["motion"] == "affine" and make_fusion(0.5, motion="affine").motion == "affine"


def test_an_unknown_motion_says_which_there_are() -> None:
    with pytest.raises(UserError, match="--fusion-motion must be one of shift, affine, shape, got 'flow'"):
        TemporalFusion(motion="flow")


def _height_over_width(p: np.ndarray) -> float:
    m = cv2.moments((p >= 0.5).astype(np.uint8), binaryImage=True)
    return float(np.sqrt(m["mu02"] / m["mu20"]))


def test_shape_motion_follows_the_shape_and_averages_the_area() -> None:
    """The squeeze of the test above, fused with ``--fusion-motion shape``: the previous maps are squeezed as the
    tissue was but keep their area, so the fused outline has the current nerve's shape (height over width) while its
    area is still the frames' average, behind the current one as with the shift."""
    cur, outs, _ = squeeze_run()
    fused = {m: out for m, (out, _) in outs.items()}
    ratio = _height_over_width(cur)
    assert ratio == pytest.approx(0.98 ** 5, abs=0.01)
    assert _height_over_width(fused["shape"]) == pytest.approx(ratio, abs=0.01)  # soft edges: not exact
    assert _height_over_width(fused["shift"]) > ratio + 0.02  # rounder: the earlier frames' shape
    area = float((cur >= 0.5).sum())
    assert float((fused["shape"] >= 0.5).sum()) > 1.015 * area  # the area averaged over the frames, behind


def test_area_kept_keeps_the_centre_and_divides_out_the_determinant() -> None:
    from realtime.fusion import _area_kept

    m = np.float32([[1.1, 0.02, 3.0], [0.01, 0.8, -2.0]])
    got = _area_kept(m, (50.0, 40.0))
    assert abs(float(np.linalg.det(got[:, :2].astype(np.float64)))) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(got @ np.array([50.0, 40.0, 1.0]), m @ np.array([50.0, 40.0, 1.0]), atol=1e-4)
