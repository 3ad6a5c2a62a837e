"""train.crops: the refiner's training windows (centred, jittered within bounds, deterministic) and validation
windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.train.test_window import _square
from train.crops import CropDataset, crop_around_truth
from train.errors import UserError
from train.window import crop_box, mask_centre

FRAME = (128, 96)  # W x H: the synthetic dataset's native size, valid for lunet-coarse (stride 32)
CROP = (64, 48)
MASK_BOXES = [(50, 40, 70, 56), (0, 30, 14, 50), (110, 10, 128, 30), (60, 0, 80, 10), (40, 84, 66, 96),
              (118, 88, 128, 96)]


class CoordBase(torch.utils.data.Dataset):
    """A full-frame dataset whose image pixel value is ``y * W + x`` (the window's origin is its
    first pixel) and whose masks are given; ``set_epoch`` as SegmentationDataset."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = masks.astype(np.float32)
        h, w = masks.shape[-2:]
        self.image = (np.arange(h)[:, None] * w + np.arange(w)[None, :]).astype(np.float32)[None]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.image.copy()), torch.from_numpy(self.masks[index][None].copy())


def _origin(window: torch.Tensor, frame_w: int) -> tuple[int, int]:
    v = int(window[0, 0, 0])
    return v % frame_w, v // frame_w


def _masks(boxes: list[tuple[int, int, int, int]], h: int = 96, w: int = 128) -> np.ndarray:
    return np.stack([_square(h, w, *b) for b in boxes])


def test_crop_dataset_without_jitter_centres_on_the_nerve() -> None:
    base = CoordBase(_masks(MASK_BOXES))
    ds = CropDataset(base, CROP, jitter=0.0, seed=3)
    assert len(ds) == len(MASK_BOXES)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == mask.shape == (1, CROP[1], CROP[0])
        x0, y0 = _origin(image, FRAME[0])
        cx, cy = mask_centre(base.masks[i])
        assert (x0, y0) == crop_box((cx, cy), CROP, FRAME)
        assert float(mask.sum()) == float(base.masks[i].sum()), "the whole nerve is inside the window"
        # the image and mask windows are the same pixels of the frame
        assert torch.equal(image[0], torch.from_numpy(base.image[0, y0:y0 + CROP[1], x0:x0 + CROP[0]]))
        assert torch.equal(mask[0], torch.from_numpy(base.masks[i, y0:y0 + CROP[1], x0:x0 + CROP[0]]))


def test_crop_dataset_deterministic_in_seed_epoch_index() -> None:
    masks = _masks(MASK_BOXES)

    def origins(seed: int, epoch: int) -> list[tuple[int, int]]:
        ds = CropDataset(CoordBase(masks), CROP, jitter=0.5, seed=seed)
        ds.set_epoch(epoch)
        assert ds.epoch == epoch
        return [_origin(ds[i][0], FRAME[0]) for i in range(len(ds))]

    assert origins(0, 0) == origins(0, 0)
    assert origins(5, 3) == origins(5, 3)
    assert origins(0, 0) != origins(0, 1), "another epoch shifts the windows differently"
    assert origins(0, 0) != origins(1, 0), "another seed shifts the windows differently"
    # an item does not depend on which items were read before it, nor on negative indexing
    ds = CropDataset(CoordBase(masks), CROP, jitter=0.5, seed=0)
    ds.set_epoch(2)
    later = [_origin(ds[i][0], FRAME[0]) for i in reversed(range(len(ds)))][::-1]
    assert later == origins(0, 2)
    assert _origin(ds[-1][0], FRAME[0]) == later[-1]


@pytest.mark.parametrize("jitter", [0.25, 1.0])
def test_crop_dataset_jitter_is_bounded(jitter: float) -> None:
    base = CoordBase(_masks(MASK_BOXES))
    ds = CropDataset(base, CROP, jitter=jitter, seed=11)
    cw, ch = CROP
    largest = [0.0, 0.0]
    seen: set[tuple[int, int]] = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x0, y0 = _origin(ds[i][0], FRAME[0])
            assert 0 <= x0 <= FRAME[0] - cw and 0 <= y0 <= FRAME[1] - ch
            cx, cy = mask_centre(base.masks[i])
            if i == 0:
                seen.add((x0, y0))
            # the window's centre moves at most jitter * half the window (+ rounding), except where clamped
            if 0 < x0 < FRAME[0] - cw:
                dx = abs(x0 + cw / 2 - cx)
                assert dx <= jitter * cw / 2 + 0.5, (epoch, i, x0)
                largest[0] = max(largest[0], dx)
            if 0 < y0 < FRAME[1] - ch:
                dy = abs(y0 + ch / 2 - cy)
                assert dy <= jitter * ch / 2 + 0.5, (epoch, i, y0)
                largest[1] = max(largest[1], dy)
    # and the shifts do use most of the allowed range
    assert largest[0] >= 0.6 * jitter * cw / 2 and largest[1] >= 0.6 * jitter * ch / 2
    assert len(seen) > 10


def test_crop_dataset_empty_mask_gives_a_valid_random_window() -> None:
    base = CoordBase(np.zeros((3, 96, 128), np.float32))
    ds = CropDataset(base, CROP, jitter=0.25, seed=0)
    origins = set()
    for epoch in range(10):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            image, mask = ds[i]
            assert image.shape == mask.shape == (1, CROP[1], CROP[0])
            assert float(mask.sum()) == 0.0
            x0, y0 = _origin(image, FRAME[0])
            assert 0 <= x0 <= FRAME[0] - CROP[0] and 0 <= y0 <= FRAME[1] - CROP[1]
            origins.add((x0, y0))
    assert len(origins) > 5


def test_crop_dataset_over_an_augmented_dataset_is_deterministic() -> None:
    from train.augment import make_augment
    from train.data import SegmentationDataset

    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 1, 96, 128)).astype(np.float32)
    masks = _masks(MASK_BOXES[:4])[:, None]

    def item(epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = CropDataset(SegmentationDataset(images, masks, augment=make_augment("paper"), seed=4), CROP, 0.25,
                         seed=4)
        ds.set_epoch(epoch)
        return ds[index]

    a, b = item(1, 2), item(1, 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (1, 48, 64)
    c = item(2, 2)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("jitter", [-0.1, 1.5])
def test_crop_dataset_rejects_bad_jitter(jitter: float) -> None:
    with pytest.raises(UserError, match="--crop-jitter"):
        CropDataset(CoordBase(_masks(MASK_BOXES)), CROP, jitter=jitter)


def test_crop_around_truth() -> None:
    masks = _masks(MASK_BOXES + [(0, 0, 0, 0)])[:, None]  # the last one is empty
    images = np.broadcast_to(CoordBase(masks[:, 0]).image, masks.shape).copy()
    wi, wm = crop_around_truth(images, masks, CROP)
    n = len(masks)
    assert wi.shape == wm.shape == (n, 1, CROP[1], CROP[0])
    assert wi.dtype == images.dtype and wi.flags["C_CONTIGUOUS"] and wm.flags["C_CONTIGUOUS"]
    for i in range(n - 1):
        x0, y0 = int(wi[i, 0, 0, 0]) % FRAME[0], int(wi[i, 0, 0, 0]) // FRAME[0]
        assert (x0, y0) == crop_box(mask_centre(masks[i, 0]), CROP, FRAME)
        assert wm[i].sum() == masks[i].sum()
    # no nerve: the middle of the frame
    assert int(wi[-1, 0, 0, 0]) == 24 * FRAME[0] + 32 and wm[-1].sum() == 0
