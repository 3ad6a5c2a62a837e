"""Post-processing: geometry round trip through the model's resize, threshold semantics, hole filling,
small components, and equality with the textbook flood-fill + connectedComponentsWithStats pipeline."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realtime.postprocess import fill_holes, mean_inside, postprocess, upsample

NATIVE = (606, 468)  # (W, H)
MODEL = (384, 288)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a != 0, b != 0
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def centroid(mask: np.ndarray) -> tuple[float, float]:
    m = cv2.moments((mask != 0).astype(np.uint8), binaryImage=True)
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


def native_truth() -> np.ndarray:
    """An off-centre, tilted, non-square ellipse on the native 606 x 468 frame (a transposition can't match it)."""
    truth = np.zeros((NATIVE[1], NATIVE[0]), np.uint8)
    cv2.ellipse(truth, (190, 310), (80, 38), 25, 0, 360, 1, -1)
    return truth


def model_prob(truth: np.ndarray) -> np.ndarray:
    """What a perfect network would output: the truth resized like the model's input (INTER_LINEAR)."""
    return cv2.resize(truth.astype(np.float32), MODEL, interpolation=cv2.INTER_LINEAR)


# ------------------------------------------------------------------------------------ geometry

def test_round_trip_through_the_model_resolution() -> None:
    truth = native_truth()
    prob = model_prob(truth)
    assert prob.shape == (MODEL[1], MODEL[0])
    post = postprocess(prob, NATIVE, min_area_px=100)
    assert post.mask.shape == truth.shape == (468, 606)
    assert post.prob.shape == truth.shape and post.prob.dtype == np.float32
    assert dice(post.mask, truth) >= 0.95
    # tighter than Dice: no half-pixel shift, no axis swap
    assert centroid(post.mask) == pytest.approx(centroid(truth), abs=0.1)
    assert int(post.mask.sum()) == pytest.approx(int(truth.sum()), rel=0.01)
    assert post.n_components == 1
    comp = post.components[0]
    assert comp.area_px == int(post.mask.sum())
    assert comp.centroid_px == pytest.approx(centroid(truth), abs=0.1)


def test_round_trip_checks_would_catch_a_half_pixel_shift_or_a_transposition() -> None:
    """The classic bugs give visibly wrong geometry, so the checks above are sharp enough."""
    truth = native_truth()
    prob = model_prob(truth)
    w, h = NATIVE
    # "top-left corner" mapping x_src = x * w_src / w_dst (no half-pixel offset)
    shifted = cv2.warpAffine(prob, np.float32([[MODEL[0] / w, 0, 0], [0, MODEL[1] / h, 0]]), (w, h),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert abs(centroid(shifted >= 0.5)[0] - centroid(truth)[0]) > 0.1
    transposed = cv2.resize(np.ascontiguousarray(prob.T), (w, h), interpolation=cv2.INTER_LINEAR)
    assert dice(transposed >= 0.5, truth) < 0.5


def test_native_size_order_is_width_height() -> None:
    prob = np.zeros((30, 40), np.float32)  # [h, w] at model resolution
    post = postprocess(prob, (80, 50))
    assert post.mask.shape == (50, 80) == post.shape
    assert upsample(prob, (80, 50)).shape == (50, 80)


def test_leading_singleton_axes_and_same_size_passthrough() -> None:
    prob = np.zeros((1, 1, 60, 80), np.float32)
    prob[0, 0, 10:30, 20:50] = 0.9
    post = postprocess(prob, (80, 60), min_area_px=1)
    assert post.mask.shape == (60, 80)
    assert post.components[0].area_px == 600
    assert post.components[0].bbox == (20, 10, 30, 20)
    assert np.shares_memory(upsample(prob[0, 0], (80, 60)), prob)  # no resize at native size
    with pytest.raises(ValueError, match="2-D"):
        postprocess(np.zeros((2, 60, 80), np.float32), (80, 60))


# ------------------------------------------------------------------------------------ threshold

def test_threshold_is_inclusive() -> None:
    prob = np.zeros((40, 60), np.float32)
    prob[5:20, 5:25] = 0.5                      # exactly the threshold: foreground
    prob[22:38, 30:55] = np.nextafter(np.float32(0.5), np.float32(0))  # just below: background
    post = postprocess(prob, (60, 40), min_area_px=1)
    assert post.n_components == 1
    assert post.components[0].bbox == (5, 5, 20, 15)
    high = postprocess(prob, (60, 40), threshold=0.7, min_area_px=1)
    assert high.n_components == 0 and high.mask.sum() == 0
    low = postprocess(prob, (60, 40), threshold=0.3, min_area_px=1)
    assert low.n_components == 2
    with pytest.raises(ValueError, match="threshold"):
        postprocess(prob, (60, 40), threshold=1.5)


# ---------------------------------------------------------------------------- holes and sizes

def test_holes_are_filled() -> None:
    mask = np.zeros((120, 160), np.uint8)
    cv2.circle(mask, (80, 60), 40, 1, -1)
    disc_area = int(mask.sum())
    cv2.circle(mask, (80, 60), 20, 0, -1)       # a hole...
    cv2.circle(mask, (80, 60), 5, 1, -1)        # ...with an island in it
    mask[0:20, 0:30] = 1                        # a block on the border, with a hole that touches nothing
    mask[5:10, 10:15] = 0
    post = postprocess(mask.astype(np.float32), (160, 120), min_area_px=1)
    assert post.n_components == 2
    areas = sorted(c.area_px for c in post.components)
    assert areas == [600, disc_area]
    assert int(post.mask.sum()) == 600 + disc_area


def test_a_notch_open_to_the_outside_is_not_a_hole() -> None:
    mask = np.zeros((60, 60), np.uint8)
    mask[10:50, 10:50] = 1
    mask[20:40, 30:50] = 0                      # a bay open to the right
    assert np.array_equal(fill_holes(mask), mask)
    mask[20:40, 49] = 1                         # closed off at the right edge: now a hole
    filled = fill_holes(mask)
    assert filled[20:40, 30:49].all() and int(filled.sum()) == 40 * 40
    mask[30, 49] = 0                            # a one-pixel gap: still open (4-connected to the outside)
    assert np.array_equal(fill_holes(mask), mask)


def test_small_components_are_dropped() -> None:
    prob = np.zeros((60, 100), np.float32)
    prob[5:14, 5:16] = 1.0     # 9 x 11 = 99 px: dropped
    prob[20:30, 5:15] = 1.0    # 10 x 10 = 100 px: kept
    prob[40:55, 40:90] = 1.0   # 750 px: kept
    prob[2, 98] = 1.0          # a speck: dropped
    post = postprocess(prob, (100, 60), min_area_px=100)
    assert [c.area_px for c in post.components] == [750, 100]  # ordered by decreasing area
    assert [c.label for c in post.components] == [1, 2]
    assert post.n_dropped == 2
    assert int(post.mask.sum()) == 850
    assert post.mask[5:14, 5:16].sum() == 0
    # the minimum area counts the filled area: a 12 x 12 ring (holes filled: 144 px) survives min area 120
    ring = np.zeros((40, 40), np.float32)
    ring[5:17, 5:17] = 1.0
    ring[7:15, 7:15] = 0.0
    assert [c.area_px for c in postprocess(ring, (40, 40), min_area_px=120).components] == [144]


def test_eight_connectivity() -> None:
    prob = np.zeros((30, 30), np.float32)
    prob[2:12, 2:12] = 1.0
    prob[12:22, 12:22] = 1.0  # touches the first square only at a corner
    post = postprocess(prob, (30, 30), min_area_px=1)
    assert post.n_components == 1 and post.components[0].area_px == 200


# ---------------------------------------------------------------- the result object's helpers

def test_labels_masks_and_confidence() -> None:
    prob = np.zeros((80, 120), np.float32)
    prob[10:30, 10:40] = 0.8   # 600 px
    prob[50:70, 60:110] = 0.6  # 1000 px
    post = postprocess(prob, (120, 80), min_area_px=10)
    big, small = post.components
    assert (big.area_px, small.area_px) == (1000, 600)
    labels = post.labels
    assert labels.dtype == np.int32
    assert (labels == 1).sum() == 1000 and (labels == 2).sum() == 600 and (labels == 0).sum() == 80 * 120 - 1600
    assert post.component_mask([1, 2]) is post.mask
    assert int(post.component_mask([2]).sum()) == 600 and post.component_mask([2])[20, 20] == 1
    assert post.component_mask([]).sum() == 0
    assert post.component_confidence(1) == pytest.approx(0.6)
    assert post.component_confidence(2) == pytest.approx(0.8)
    assert post.confidence() == pytest.approx((0.6 * 1000 + 0.8 * 600) / 1600)
    assert mean_inside(post.prob, np.zeros_like(post.mask)) is None
    with pytest.raises(KeyError):
        post.component(3)


def test_nothing_found() -> None:
    post = postprocess(np.zeros(MODEL[::-1], np.float32), NATIVE)
    assert post.n_components == 0 and post.mask.shape == (468, 606) and post.mask.sum() == 0
    assert post.confidence() is None


# ------------------------------------------------- equality with the textbook implementation

def reference(prob: np.ndarray, threshold: float, min_area: int) -> tuple[np.ndarray, list[tuple]]:
    """Flood-fill the background from the border, fill the rest, label with connectedComponentsWithStats."""
    binary = (prob >= threshold).astype(np.uint8)
    h, w = binary.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = binary
    cv2.floodFill(pad, None, (0, 0), 2, flags=4)
    filled = (pad[1:-1, 1:-1] != 2).astype(np.uint8)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(filled, connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    mask = np.isin(labels, keep).astype(np.uint8)
    comps = sorted((int(stats[i, cv2.CC_STAT_AREA]), tuple(int(v) for v in stats[i, :4]),
                    round(float(cents[i, 0]), 9), round(float(cents[i, 1]), 9)) for i in keep)
    return mask, comps


@pytest.mark.parametrize("seed", range(6))
def test_matches_flood_fill_and_connected_components(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = 90, 130
    noise = rng.random((h // 6, w // 6)).astype(np.float32)
    prob = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)  # blobs, rings, holes, specks
    prob[rng.random((h, w)) < 0.01] = 1.0
    for min_area in (1, 20, 100):
        post = postprocess(prob, (w, h), threshold=0.6, min_area_px=min_area)
        ref_mask, ref_comps = reference(prob, 0.6, min_area)
        assert np.array_equal(post.mask, ref_mask)
        mine = sorted((c.area_px, c.bbox, round(c.centroid_px[0], 9), round(c.centroid_px[1], 9))
                      for c in post.components)
        assert mine == ref_comps
        assert np.array_equal(post.labels != 0, ref_mask.astype(bool))


# ----------------------------------------------- found by mutation testing (docs/mutation-testing.md)

def _two_blobs(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    prob = np.zeros(shape, np.float32)
    for x, y, w, h in boxes:
        prob[y:y + h, x:x + w] = 1.0
    return prob


def test_masks_are_uint8_zero_one() -> None:
    prob = _two_blobs((60, 80), [(5, 5, 20, 20), (40, 30, 15, 15)])
    r = postprocess(prob, (80, 60), min_area_px=1)
    assert r.mask.dtype == np.uint8 and set(np.unique(r.mask)) == {0, 1}
    one = r.component_mask([2])
    assert one.dtype == np.uint8 and int(one.sum()) == r.components[1].area_px
    holes = np.zeros((30, 30), np.uint8)
    holes[5:25, 5:25] = 1
    holes[7:23, 7:23] = 0  # a 20 x 20 frame, two pixels thick
    filled = fill_holes(holes)
    assert filled.dtype == np.uint8 and int(filled.sum()) == 400


def test_components_ordered_by_area_then_top_then_left() -> None:
    # the smaller component is left of and above the larger: label 1 is still the larger
    r = postprocess(_two_blobs((100, 120), [(2, 2, 10, 10), (60, 50, 30, 30)]), (120, 100), min_area_px=1)
    assert [c.area_px for c in r.components] == [900, 100]
    # equal areas: the upper first, even when it is wider (the tie is broken by y, not by width)
    r = postprocess(_two_blobs((100, 120), [(60, 60, 10, 20), (10, 5, 20, 10)]), (120, 100), min_area_px=1)
    assert [c.bbox for c in r.components] == [(10, 5, 20, 10), (60, 60, 10, 20)]
    # equal areas on the same rows: the left first
    r = postprocess(_two_blobs((100, 120), [(70, 40, 10, 10), (10, 40, 10, 10)]), (120, 100), min_area_px=1)
    assert [c.bbox[0] for c in r.components] == [10, 70]


def test_settings_are_kept_and_boundaries_accepted() -> None:
    prob = _two_blobs((40, 40), [(5, 5, 10, 10)]) * 0.6
    r = postprocess(prob, (40, 40), threshold=0.3, min_area_px=7)
    assert (r.threshold, r.min_area_px) == (0.3, 7)
    assert postprocess(prob, (40, 40), threshold=0.0, min_area_px=0).mask.all()  # 0.0: every pixel
    assert not postprocess(prob, (40, 40), threshold=1.0).mask.any()  # 1.0: only certain pixels
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match="threshold"):
            postprocess(prob, (40, 40), threshold=bad)
    with pytest.raises(ValueError, match="min_area_px"):
        postprocess(prob, (40, 40), min_area_px=-1)


def test_upsample_sizes() -> None:
    assert upsample(np.ones((4, 4), np.float32), (1, 1)).shape == (1, 1)
    assert upsample(np.ones((1, 8), np.float32), (16, 2)).shape == (2, 16)  # a one-row map stays 2-D
    for bad in ((0, 5), (5, 0), (-1, 5)):
        with pytest.raises(ValueError, match="positive"):
            upsample(np.ones((4, 4), np.float32), bad)


def test_confidence_of_another_mask_and_of_any_dtype() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[:, :10] = 0.8
    prob[:, 10:] = 0.6
    r = postprocess(prob, (20, 20), threshold=0.5, min_area_px=1)
    assert r.confidence() == pytest.approx(0.7)
    right = np.zeros((20, 20), bool)
    right[:, 10:] = True
    assert r.confidence(right) == pytest.approx(0.6)  # a given mask, not the kept one
    assert mean_inside(prob, right.astype(np.float32)) == pytest.approx(0.6)  # float 0/1 masks
    assert mean_inside(prob.astype(np.float16), right) == pytest.approx(0.6, abs=1e-3)  # fp16 probabilities


def test_component_mask_rejects_unknown_labels() -> None:
    r = postprocess(_two_blobs((60, 80), [(5, 5, 20, 20), (40, 30, 15, 15)]), (80, 60), min_area_px=1)
    with pytest.raises(KeyError, match=r"no component 5: labels are 1\.\.2"):
        r.component_mask([1, 5])
