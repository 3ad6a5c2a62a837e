"""train.window: the cascade's window geometry with known answers (centres, clamped boxes, paste)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from train.errors import UserError
from train.window import (BACKGROUND_LOGIT, TTA_MODES, check_tta, crop_box, find_centre, flip_average, mask_centre,
                          paste, within_jitter)


def _square(h: int, w: int, x0: int, y0: int, x1: int, y1: int, value: float = 1.0) -> np.ndarray:
    prob = np.zeros((h, w), np.float32)
    prob[y0:y1, x0:x1] = value
    return prob


@pytest.mark.parametrize(("cx", "cy", "r"), [(40, 30, 9), (97, 61, 12), (20, 75, 7), (64, 48, 15)])
def test_find_centre_of_a_drawn_disc_within_2px(cx: int, cy: int, r: int) -> None:
    prob = np.zeros((96, 128), np.float32)
    cv2.circle(prob, (cx, cy), r, 1.0, -1)
    x, y = find_centre(prob)
    assert abs(x - cx) <= 2 and abs(y - cy) <= 2


def test_find_centre_largest_component_wins() -> None:
    # a large, moderately sure blob and a small, very sure one (which holds the argmax)
    prob = _square(96, 128, 60, 40, 80, 60, 0.7)
    prob[10:18, 10:18] = 1.0
    x, y = find_centre(prob)
    assert abs(x - 69.5) <= 2 and abs(y - 49.5) <= 2
    # the same with the roles of size swapped
    prob = _square(96, 128, 60, 40, 68, 48, 1.0)
    prob[5:35, 5:45] = 0.6
    x, y = find_centre(prob)
    assert abs(x - 24.5) <= 2 and abs(y - 19.5) <= 2


def test_find_centre_falls_back_to_argmax_below_threshold() -> None:
    prob = np.full((96, 128), 0.1, np.float32)
    prob[17, 33] = 0.4  # below 0.5 everywhere: the most probable pixel, exactly
    assert find_centre(prob) == (33.0, 17.0)
    # a lower threshold makes a below-0.5 blob count as a component again
    prob = _square(96, 128, 80, 20, 100, 40, 0.4)
    prob[90, 5] = 0.45
    assert find_centre(prob) == (5.0, 90.0)
    x, y = find_centre(prob, threshold=0.3)
    assert abs(x - 89.5) <= 2 and abs(y - 29.5) <= 2


def test_find_centre_step() -> None:
    prob = _square(96, 128, 60, 40, 80, 60)
    # step 1 reads every pixel: the exact centroid of the square
    assert find_centre(prob, step=1) == (69.5, 49.5)
    # step 4 reads pixels 2, 6, 10, ...: x 62..78 -> 70, y 42..58 -> 50
    assert find_centre(prob, step=4) == (70.0, 50.0)
    # step 8 reads 4, 12, ...: x 60, 68, 76 -> 68; y 44, 52 -> 48 (within half a step of the truth)
    x, y = find_centre(prob, step=8)
    assert (x, y) == (68.0, 48.0)
    assert abs(x - 69.5) <= 4 and abs(y - 49.5) <= 4
    # a blob the sampling grid misses entirely falls back to the argmax (its first pixel)
    tiny = _square(96, 128, 0, 0, 2, 2)
    assert find_centre(tiny, step=4) == (0.0, 0.0)
    assert find_centre(tiny, step=1) == (0.5, 0.5)


def test_find_centre_needs_a_2d_map() -> None:
    with pytest.raises(ValueError, match="H, W"):
        find_centre(np.zeros((1, 96, 128), np.float32))


def test_mask_centre() -> None:
    assert mask_centre(np.zeros((96, 128), np.float32)) is None
    assert mask_centre(np.full((96, 128), 0.5, np.float32)) is None  # > 0.5 counts, 0.5 does not
    assert mask_centre(_square(96, 128, 10, 20, 30, 24)) == (19.5, 21.5)


def test_crop_box_centred_and_clamped_at_every_border() -> None:
    frame, crop = (128, 96), (64, 48)
    assert crop_box((64.0, 48.0), crop, frame) == (32, 24)
    assert crop_box((50.2, 40.7), crop, frame) == (18, 17)  # round(18.2), round(16.7)
    assert crop_box((3.0, 48.0), crop, frame) == (0, 24)      # left
    assert crop_box((127.0, 48.0), crop, frame) == (64, 24)   # right: W - cw
    assert crop_box((64.0, -10.0), crop, frame) == (32, 0)    # top (even outside the frame)
    assert crop_box((64.0, 95.0), crop, frame) == (32, 48)    # bottom: H - ch
    assert crop_box((500.0, 500.0), crop, frame) == (64, 48)  # a corner
    assert crop_box((10.0, 10.0), frame, frame) == (0, 0)     # the window is the frame


def test_within_jitter_is_the_set_of_training_windows_clamped_as_training_clamps_them() -> None:
    frame, crop, jitter = (384, 288), (128, 96), 0.25  # shifts of up to 16 px across and 12 px down
    centre = (200.0, 150.0)  # far from every border: the window centred on it has its corner at (136, 102)
    assert within_jitter((136, 102), centre, crop, frame, jitter)
    assert within_jitter((136 + 16, 102 - 12), centre, crop, frame, jitter)      # the largest shift
    assert not within_jitter((136 + 17, 102), centre, crop, frame, jitter)
    assert not within_jitter((136, 102 + 13), centre, crop, frame, jitter)
    # a nerve 20 px below the top edge: training clamps every window to y0 = 0, whose centre is 28 px below it
    top = (200.0, 20.0)
    assert within_jitter((136, 0), top, crop, frame, jitter)
    assert not within_jitter((136, 1), top, crop, frame, jitter)  # a window training never cut
    # at the right edge the clamp merges the shifts into x0 = W - cw
    assert within_jitter((256, 102), (380.0, 150.0), crop, frame, jitter)
    assert not within_jitter((256 - 20, 102), (380.0, 150.0), crop, frame, jitter)
    # every training window is within: CropDataset's placement, sampled
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = (rng.uniform(-20, 404), rng.uniform(-20, 308))
        d = rng.uniform(-1, 1, 2) * jitter * np.array([64.0, 48.0])
        assert within_jitter(crop_box((c[0] + d[0], c[1] + d[1]), crop, frame), c, crop, frame, jitter)


@pytest.mark.parametrize("crop", [(130, 48), (64, 100), (200, 200)])
def test_crop_box_window_larger_than_frame(crop: tuple[int, int]) -> None:
    with pytest.raises(UserError, match="larger than the frame 128x96"):
        crop_box((64.0, 48.0), crop, (128, 96))


def test_paste_numpy_and_torch() -> None:
    refined = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 1, 4, 6)
    boxes = [(0, 0), (24, 16)]
    out = paste(refined, boxes, (20, 30), fill=-5.0)
    assert isinstance(out, np.ndarray) and out.shape == (2, 1, 20, 30) and out.dtype == np.float32
    assert np.array_equal(out[0, :, 0:4, 0:6], refined[0])
    assert np.array_equal(out[1, :, 16:20, 24:30], refined[1])
    inside = np.zeros(out.shape, bool)
    inside[0, :, 0:4, 0:6] = inside[1, :, 16:20, 24:30] = True
    assert (out[~inside] == -5.0).all()

    t = torch.from_numpy(refined).double()
    out_t = paste(t, boxes, (20, 30))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64 and out_t.shape == (2, 1, 20, 30)
    assert torch.equal(out_t[1, :, 16:20, 24:30], t[1])
    assert (out_t[torch.from_numpy(~inside)] == BACKGROUND_LOGIT).all()
    assert torch.sigmoid(torch.tensor(BACKGROUND_LOGIT)) < 1e-12
    # gradients flow into the pasted windows only
    t = torch.from_numpy(refined).requires_grad_(True)
    paste(t, boxes, (20, 30)).sum().backward()
    assert torch.equal(t.grad, torch.ones_like(t))


def test_flip_average_known_answer() -> None:
    ramp = np.tile(np.linspace(0.0, 1.0, 8, dtype=np.float32), (2, 1, 4, 1))  # [2, 1, 4, 8], left 0 -> right 1
    # a 'refiner' that answers the ramp whatever it sees: the mirror's ramp flipped back runs right 0 -> left 1
    averaged = flip_average(ramp, ramp)
    assert averaged.shape == ramp.shape and averaged.dtype == np.float32
    np.testing.assert_allclose(averaged, 0.5)
    mirror_equivariant = flip_average(ramp, ramp[..., ::-1])  # a refiner that follows the image: unchanged
    np.testing.assert_allclose(mirror_equivariant, ramp)


def test_check_tta() -> None:
    assert TTA_MODES == ("none", "hflip")
    assert [check_tta(m) for m in TTA_MODES] == list(TTA_MODES)
    for bad in ("vflip", "", None, 1):
        with pytest.raises(UserError, match="none, hflip"):
            check_tta(bad)


def test_the_window_geometry_imports_no_torch() -> None:
    """engines.cascade runs the same placement without PyTorch."""
    import subprocess
    import sys

    code = "import sys, train.window; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
