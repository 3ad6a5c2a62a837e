"""Candidate windows of the cascade (no single wrong window): geometry with known answers, the
choice by refined probability mass, CascadeNet == CascadeEngine; and negative refiner windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engines.base import Engine, EngineInfo
from engines.cascade import CascadeEngine
from train.cascade import (
    NEGATIVE_MAX,
    CascadeNet,
    CropDataset,
    candidate_boxes,
    candidate_masses,
    choose_candidates,
    crop_box,
    find_centre,
    find_centres,
    negative_box,
    window_boxes,
    window_mass,
)
from train.data import SegmentationDataset
from train.errors import UserError

FRAME = (128, 96)  # W, H
CROP = (32, 32)
BIG = (20, 20, 44, 44)  # x0, y0, x1, y1 of the larger localiser blob (centre 32, 32)
SMALL = (90, 60, 102, 72)  # the smaller blob (centre 96, 66)


def two_blobs(h: int = FRAME[1], w: int = FRAME[0]) -> np.ndarray:
    prob = np.zeros((h, w), np.float32)
    prob[BIG[1]:BIG[3], BIG[0]:BIG[2]] = 0.9
    prob[SMALL[1]:SMALL[3], SMALL[0]:SMALL[2]] = 0.8
    return prob


def test_find_centres_largest_first_and_k1_is_find_centre() -> None:
    prob = two_blobs()
    centres = find_centres(prob, 3)
    assert len(centres) == 2
    assert centres[0] == pytest.approx((32, 32), abs=2) and centres[1] == pytest.approx((96, 66), abs=2)
    assert find_centres(prob, 1) == [find_centre(prob)]
    assert centres[0] == find_centre(prob)
    empty = np.zeros((96, 128), np.float32)
    empty[10, 100] = 0.3
    assert find_centres(empty, 3) == [(100.0, 10.0)]  # nothing above the threshold: the most probable pixel
    with pytest.raises(ValueError):
        find_centres(prob, 0)


def test_candidate_boxes_first_is_window_boxes_and_overlaps_dropped() -> None:
    prob = two_blobs()[None, None]
    boxes = candidate_boxes(prob, CROP, 3)
    assert boxes[0][0] == window_boxes(prob, CROP)[0]
    assert boxes[0][1] == crop_box(find_centres(prob[0, 0], 2)[1], CROP, FRAME)
    near = np.zeros((96, 128), np.float32)
    near[20:44, 20:36] = 0.9
    near[28:36, 40:46] = 0.9  # a second blob whose window mostly overlaps the first one's
    assert len(candidate_boxes(near[None, None], CROP, 3)[0]) == 1


def test_window_mass_and_choice() -> None:
    prob = np.array([[0.2, 0.5], [0.9, 0.49]], np.float32)
    assert window_mass(prob) == pytest.approx(1.4)
    assert window_mass(np.zeros((4, 4))) == 0.0
    masses = np.array([[1.0, 3.0, -np.inf], [2.0, 2.0, 1.0]])
    assert choose_candidates(masses).tolist() == [1, 0]  # a tie goes to the earlier candidate
    probs = np.zeros((3, 1, 2, 2), np.float32)
    probs[1] = 0.9
    masses, index = candidate_masses([[(0, 0), (1, 1)], [(2, 2)]], probs, 2)
    assert masses[0].tolist() == [0.0, pytest.approx(3.6)] and masses[1, 1] == -np.inf
    assert index.tolist() == [[0, 1], [2, -1]]


# ---------------------------------------------------------------------------------------------
# the choice on a frame: the localiser's largest blob is empty, the nerve is at the smaller one
# ---------------------------------------------------------------------------------------------


def _localiser_prob(x: np.ndarray) -> np.ndarray:
    """Two blobs on every frame, the larger one first (a 'tendon' and the 'nerve')."""
    return np.broadcast_to(two_blobs()[None, None], x.shape).astype(np.float32).copy()


def _refiner_prob(windows: np.ndarray) -> np.ndarray:
    """Nerve where the window's input is bright (> 2): the refiner finds what is really there."""
    return (windows > 2.0).astype(np.float32) * 0.95


def nerve_frame() -> np.ndarray:
    x = np.zeros((1, 1, FRAME[1], FRAME[0]), np.float32)
    x[0, 0, 62:70, 92:100] = 4.0  # the nerve, under the smaller blob
    return x


class _FakeEngine(Engine):
    def __init__(self, fn, shape: tuple[int, int, int, int]) -> None:
        super().__init__(EngineInfo(name="fake", backend="fake", precision="fp32", device="cpu", input_shape=shape))
        self.fn = fn
        self.calls = 0

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.fn(batch)


def _engine(k: int) -> CascadeEngine:
    loc = _FakeEngine(_localiser_prob, (1, 1, FRAME[1], FRAME[0]))
    ref = _FakeEngine(_refiner_prob, (1, 1, CROP[1], CROP[0]))
    return CascadeEngine(loc, ref, candidates=k)


def test_one_window_misses_the_nerve_two_candidates_find_it() -> None:
    x = nerve_frame()
    one = _engine(1).infer_parts(x)
    assert one["prob"].max() == 0.0  # the window on the largest blob holds no nerve
    engine = _engine(2)
    two = engine.infer_parts(x)
    assert two["boxes"][0] == crop_box(find_centres(two_blobs(), 2)[1], CROP, FRAME)
    assert two["prob"][0, 0, 62:70, 92:100].min() == pytest.approx(0.95)
    assert float(two["prob"].sum()) == pytest.approx(0.95 * 64)
    assert engine.refiner.calls == 2 and engine.describe()["cascade"]["candidates"] == 2


class _Logit(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.from_numpy(self.fn(x.numpy())).clamp(1e-6, 1 - 1e-6)
        return torch.log(p / (1 - p))


def test_cascadenet_chooses_as_the_engine() -> None:
    net = CascadeNet(localiser={"name": "lunet-coarse", "kwargs": {"width": 0.125}},
                     refiner={"name": "lunet", "kwargs": {"width": 0.125}}, crop=CROP, candidates=2)
    net.localiser, net.refiner = _Logit(_localiser_prob), _Logit(_refiner_prob)
    x = np.concatenate([nerve_frame(), np.zeros_like(nerve_frame())])
    with torch.inference_mode():
        parts = net.forward_parts(torch.from_numpy(x))
    engine = _engine(2)
    for i in range(2):
        ref = engine.infer_parts(x[i:i + 1])
        assert parts["boxes"][i] == ref["boxes"][0]
        np.testing.assert_allclose(torch.sigmoid(parts["logits"][i:i + 1]).numpy(), ref["prob"], atol=1e-4)
    with pytest.raises(UserError):
        CascadeNet(crop=CROP, candidates=0)


# ---------------------------------------------------------------------------------------------
# negative refiner windows (mn-train --crop-negatives)
# ---------------------------------------------------------------------------------------------


def _dataset(n: int = 6) -> SegmentationDataset:
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (n, 1, FRAME[1], FRAME[0])).astype(np.float32)
    masks = np.zeros_like(images)
    masks[:, :, 40:56, 56:72] = 1.0
    return SegmentationDataset(images, masks)


def test_negative_box_holds_no_nerve_or_none() -> None:
    mask = np.zeros((FRAME[1], FRAME[0]), np.float32)
    mask[40:56, 56:72] = 1.0
    for seed in range(20):
        box = negative_box(mask, CROP, np.random.default_rng(seed))
        assert box is not None
        x0, y0 = box
        assert mask[y0:y0 + CROP[1], x0:x0 + CROP[0]].max() <= NEGATIVE_MAX
    assert negative_box(np.ones_like(mask), CROP, np.random.default_rng(0)) is None


def test_crop_negatives_share_and_empty_targets() -> None:
    base = _dataset(40)
    plain = CropDataset(base, CROP, seed=3)
    mixed = CropDataset(base, CROP, seed=3, negatives=0.5)
    empty = 0
    for i in range(len(base)):
        image, mask = mixed[i]
        assert tuple(image.shape) == (1, CROP[1], CROP[0])
        if float(mask.max()) == 0.0:
            empty += 1
        else:  # a positive item is exactly the item without negatives
            ref_image, ref_mask = plain[i]
            assert torch.equal(image, ref_image) and torch.equal(mask, ref_mask)
    assert 10 <= empty <= 30
    assert all(float(plain[i][1].max()) > 0 for i in range(len(base)))
    again = CropDataset(base, CROP, seed=3, negatives=0.5)
    assert all(torch.equal(again[i][0], mixed[i][0]) for i in range(len(base)))
    with pytest.raises(UserError):
        CropDataset(base, CROP, negatives=1.0)


def _dark_nerve_dataset(n: int) -> SegmentationDataset:
    rng = np.random.default_rng(0)
    images = rng.normal(0, 0.2, (n, 1, FRAME[1], FRAME[0])).astype(np.float32)
    masks = np.zeros_like(images)
    masks[:, :, 40:56, 20:36] = 1.0
    images[masks > 0] = -3.0  # a dark nerve with room beside it
    return SegmentationDataset(images, masks)


def test_crop_removed_keeps_the_window_and_paints_the_nerve_over() -> None:
    base = _dark_nerve_dataset(40)
    plain = CropDataset(base, CROP, seed=3)
    mixed = CropDataset(base, CROP, seed=3, removed=0.5)
    removed = 0
    for i in range(len(base)):
        image, mask = mixed[i]
        ref_image, ref_mask = plain[i]
        if float(mask.max()) == 0.0:
            removed += 1
            assert float(image.min()) > -2.0  # no dark nerve left in the same window
            assert float(ref_image.min()) == -3.0
        else:
            assert torch.equal(image, ref_image) and torch.equal(mask, ref_mask)
    assert 10 <= removed <= 30
    with pytest.raises(UserError):
        CropDataset(base, CROP, negatives=0.5, removed=0.5)


def test_removed_nerve_dataset_full_frames() -> None:
    from train.data import RemovedNerveDataset

    base = _dark_nerve_dataset(30)
    data = RemovedNerveDataset(base, 0.5, seed=1)
    data.set_epoch(2)
    assert base.epoch == 2 and data.epoch == 2
    flags = [float(data[i][1].max()) == 0.0 for i in range(len(data))]
    assert 5 <= sum(flags) <= 25
    for i, flag in enumerate(flags):
        image, mask = data[i]
        if flag:
            assert float(image.min()) > -2.0
        else:
            assert torch.equal(image, base[i][0])
    with pytest.raises(UserError):
        RemovedNerveDataset(base, 1.0)
