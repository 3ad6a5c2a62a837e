"""Localise-then-refine cascade (train.cascade): window geometry with known answers, training
windows, the composite model, and joining two real mn-train runs into one checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import make_dataset
from train.cascade import (
    BACKGROUND_LOGIT,
    CascadeNet,
    CropDataset,
    build_cascade_checkpoint,
    check_crop,
    crop_around_truth,
    crop_box,
    find_centre,
    mask_centre,
    paste,
)
from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.errors import UserError
from train.evaluate import cli as eval_cli
from train.models import build_model, list_models, model_stride
from train.preprocess import preprocessing_config
from train.train_cli import cli as train_cli

REPO = Path(__file__).resolve().parents[2]
FRAME = (128, 96)  # W x H: the synthetic dataset's native size, valid for lunet-coarse (stride 32)
CROP = (64, 48)
TINY_REFINER = {"name": "lunet", "kwargs": {"width": 0.25}}


def _square(h: int, w: int, x0: int, y0: int, x1: int, y1: int, value: float = 1.0) -> np.ndarray:
    prob = np.zeros((h, w), np.float32)
    prob[y0:y1, x0:x1] = value
    return prob


# ---------------------------------------------------------------------------------------------
# find_centre / mask_centre
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# crop_box / check_crop
# ---------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("crop", [(130, 48), (64, 100), (200, 200)])
def test_crop_box_window_larger_than_frame(crop: tuple[int, int]) -> None:
    with pytest.raises(UserError, match="larger than the frame 128x96"):
        crop_box((64.0, 48.0), crop, (128, 96))


def test_check_crop() -> None:
    assert check_crop([64, 48], [128, 96], 8, "lunet") == (64, 48)
    assert check_crop((128, 96), (128, 96), 8, "lunet") == (128, 96)
    with pytest.raises(UserError, match="--crop 136x48 must fit inside --size 128x96"):
        check_crop((136, 48), (128, 96), 8, "lunet")
    with pytest.raises(UserError, match="--crop 64x104 must fit inside"):
        check_crop((64, 104), (128, 96), 8, "lunet")
    # not a multiple of the refiner's stride: the message names the stride and a valid size
    with pytest.raises(UserError, match=r"60x46 is not divisible by 8 \(the stride of lunet\); "
                                        r"the nearest valid size is 64x48"):
        check_crop((60, 46), (128, 96), 8, "lunet")
    with pytest.raises(UserError, match="nearest valid size is 64x48"):
        check_crop((64, 40), (128, 96), 16, "unet")


# ---------------------------------------------------------------------------------------------
# CropDataset / crop_around_truth
# ---------------------------------------------------------------------------------------------


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


# a nerve in the middle, one at each border (the window must clamp), one fully in a corner
MASK_BOXES = [(50, 40, 70, 56), (0, 30, 14, 50), (110, 10, 128, 30), (60, 0, 80, 10), (40, 84, 66, 96),
              (118, 88, 128, 96)]


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


# ---------------------------------------------------------------------------------------------
# paste
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# CascadeNet
# ---------------------------------------------------------------------------------------------


class BlobLocaliser(nn.Module):
    """A localiser whose logits are +10 in a 12x12 square around ``centres[i]`` of item i, -10 elsewhere."""

    def __init__(self, centres: list[tuple[int, int]]) -> None:
        super().__init__()
        self.centres = centres

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(x, -10.0)
        for i, (cx, cy) in enumerate(self.centres):
            out[i, :, max(cy - 6, 0):cy + 6, max(cx - 6, 0):cx + 6] = 10.0
        return out


def test_cascade_forward_shapes() -> None:
    torch.manual_seed(0)
    net = CascadeNet(refiner=TINY_REFINER, crop=CROP).eval()
    assert net.localiser.__class__.__name__ == "CoarseLUNet" and net.refiner.width == 0.25
    assert net.frame_stride == 32 == model_stride("cascade")
    assert "crop=64x48" in repr(net)
    x = torch.randn(2, 1, 96, 128)
    with torch.no_grad():
        parts = net.forward_parts(x)
        logits = net(x)
    assert logits.shape == parts["localiser"].shape == (2, 1, 96, 128)
    assert torch.equal(logits, parts["logits"])
    assert len(parts["boxes"]) == 2
    for i, (x0, y0) in enumerate(parts["boxes"]):
        assert 0 <= x0 <= 64 and 0 <= y0 <= 48
        outside = torch.ones(96, 128, dtype=torch.bool)
        outside[y0:y0 + 48, x0:x0 + 64] = False
        assert (logits[i, 0][outside] == BACKGROUND_LOGIT).all()
        assert (logits[i, 0][~outside] != BACKGROUND_LOGIT).all()


def test_cascade_windows_follow_the_localiser() -> None:
    net = CascadeNet(refiner=TINY_REFINER, crop=CROP).eval()
    centres = [(90, 30), (10, 80), (64, 48)]
    net.localiser = BlobLocaliser(centres)
    net.refiner = nn.Identity()  # the window itself comes back: shows exactly where it was cut and pasted
    x = torch.arange(3 * 96 * 128, dtype=torch.float32).reshape(3, 1, 96, 128)
    with torch.no_grad():
        parts = net.forward_parts(x)
    # the squares cover [c-6, c+6): centroid c - 0.5, read every 4 pixels -> within 2 px of c
    expected = [crop_box((cx, cy), CROP, FRAME) for cx, cy in centres]
    assert expected == [(58, 6), (0, 48), (32, 24)]
    for (x0, y0), (ex, ey) in zip(parts["boxes"], expected):
        assert abs(x0 - ex) <= 2 and abs(y0 - ey) <= 2
    assert parts["boxes"][1] == (0, 48)  # clamped into the bottom-left corner
    logits = parts["logits"]
    for i, (x0, y0) in enumerate(parts["boxes"]):
        window = (slice(y0, y0 + 48), slice(x0, x0 + 64))
        assert torch.equal(logits[i, 0][window], x[i, 0][window])
        rest = logits[i, 0].clone()
        rest[window] = BACKGROUND_LOGIT
        assert (rest == BACKGROUND_LOGIT).all()


def test_cascade_user_errors() -> None:
    with pytest.raises(UserError, match="not divisible by 8"):
        CascadeNet(refiner=TINY_REFINER, crop=(60, 48))
    net = CascadeNet(refiner=TINY_REFINER, crop=CROP)
    with pytest.raises(UserError, match="window 64x48 does not fit a 128x32 frame"):
        net(torch.zeros(1, 1, 32, 128))
    with pytest.raises(UserError, match=r"\[N, 1, H, W\]"):
        net(torch.zeros(1, 3, 96, 128))


def test_build_model_cascade_checkpoint_round_trip(tmp_path: Path) -> None:
    assert "cascade" not in list_models()
    kwargs = {"localiser": {"name": "lunet-coarse", "kwargs": {"width": 0.25}}, "refiner": TINY_REFINER,
              "crop": list(CROP)}
    torch.manual_seed(1)
    net = build_model("cascade", **kwargs).eval()
    assert isinstance(net, CascadeNet) and net.crop == CROP and net.localiser.width == 0.25
    path = tmp_path / "c.pt"
    save_checkpoint(path, net, {"model": {"name": "cascade", "kwargs": kwargs},
                                "preprocessing": preprocessing_config(FRAME)})
    torch.manual_seed(2)
    loaded, config = model_from_checkpoint(path)
    assert isinstance(loaded, CascadeNet) and config["model"]["kwargs"] == kwargs
    x = torch.randn(2, 1, 96, 128)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))


# ---------------------------------------------------------------------------------------------
# joining checkpoints
# ---------------------------------------------------------------------------------------------


def _fake_ckpt(path: Path, model: str, kwargs: dict, size=FRAME, crop=None) -> Path:
    config = {"model": {"name": model, "kwargs": kwargs}, "preprocessing": preprocessing_config(size),
              "crop": crop}
    save_checkpoint(path, build_model(model, **kwargs), config)
    return path


def test_build_cascade_checkpoint_errors(tmp_path: Path) -> None:
    crop = {"size": list(CROP), "frame_size": list(FRAME), "jitter": 0.25}
    loc = _fake_ckpt(tmp_path / "loc.pt", "lunet-coarse", {"width": 0.25})
    ref = _fake_ckpt(tmp_path / "ref.pt", "lunet", {"width": 0.25}, crop=crop)
    out = tmp_path / "c.pt"
    with pytest.raises(UserError, match="ref.pt is a --crop .*localiser must see whole frames"):
        build_cascade_checkpoint(str(ref), str(ref), str(out))
    with pytest.raises(UserError, match="loc.pt was not trained with --crop WxH"):
        build_cascade_checkpoint(str(loc), str(loc), str(out))
    other = _fake_ckpt(tmp_path / "ref2.pt", "lunet", {"width": 0.25},
                       crop={**crop, "frame_size": [256, 192]})
    with pytest.raises(UserError, match="frame sizes differ.*same --size"):
        build_cascade_checkpoint(str(loc), str(other), str(out))
    payload = load_checkpoint(ref)
    payload["config"]["preprocessing"]["id"] = "something-else"
    torch.save(payload, tmp_path / "ref3.pt")
    with pytest.raises(UserError, match="different preprocessing"):
        build_cascade_checkpoint(str(loc), str(tmp_path / "ref3.pt"), str(out))
    with pytest.raises(UserError, match="nope.pt does not exist"):
        build_cascade_checkpoint(str(tmp_path / "nope.pt"), str(ref), str(out))
    assert not out.exists()
    build_cascade_checkpoint(str(loc), str(ref), str(out))
    assert model_from_checkpoint(out)[1]["model"]["kwargs"]["crop"] == list(CROP)


@pytest.fixture(scope="module")
def trained_parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic dataset, a lunet-coarse localiser and a lunet --crop refiner, each one short mn-train run."""
    root = tmp_path_factory.mktemp("cascade")
    data = make_dataset(root / "data", n_patients=4, per_patient=2)
    common = ["--data", str(data), "--size", "128x96", "--epochs", "1", "--batch-size", "4", "--folds", "4",
              "--fold", "0", "--save-every-min", "0", "-q"]
    assert train_cli(["--model", "lunet-coarse", "--width", "0.25", "--out", str(root / "loc"), *common]) == 0
    assert train_cli(["--model", "lunet", "--width", "0.25", "--crop", "64x48", "--crop-jitter", "0.2",
                      "--out", str(root / "ref"), *common]) == 0
    return {"root": root, "data": data, "loc": root / "loc" / "best.pt", "ref": root / "ref" / "best.pt"}


@pytest.mark.slow
def test_trained_parts_join_into_a_cascade(trained_parts: dict[str, Path]) -> None:
    out = trained_parts["root"] / "joined.pt"
    config = build_cascade_checkpoint(str(trained_parts["loc"]), str(trained_parts["ref"]), str(out))
    loc_model, loc_cfg = model_from_checkpoint(trained_parts["loc"])
    ref_model, ref_cfg = model_from_checkpoint(trained_parts["ref"])
    assert ref_cfg["crop"]["size"] == [64, 48] and ref_cfg["crop"]["frame_size"] == [128, 96]
    assert ref_cfg["crop"]["jitter"] == 0.2 and loc_cfg["crop"] is None
    assert config["model"] == {"name": "cascade", "kwargs": {
        "localiser": {"name": "lunet-coarse", "kwargs": {"width": 0.25}},
        "refiner": {"name": "lunet", "kwargs": {"width": 0.25}}, "crop": [64, 48]}}
    assert config["preprocessing"] == loc_cfg["preprocessing"]
    assert config["parts"]["localiser"]["checkpoint"] == str(trained_parts["loc"])
    assert config["parts"]["refiner"]["config"]["crop"] == ref_cfg["crop"]

    cascade, saved = model_from_checkpoint(out)
    assert saved == json.loads(json.dumps(config))
    # the cascade is exactly localiser -> find_centre -> crop_box -> refiner -> paste with the parts' weights
    x = torch.randn(3, 1, 96, 128)
    with torch.no_grad():
        got = cascade.forward_parts(x)
        loc = loc_model(x)
        boxes = [crop_box(find_centre(p[0]), CROP, FRAME) for p in torch.sigmoid(loc).numpy()]
        windows = torch.stack([x[i, :, y0:y0 + 48, x0:x0 + 64] for i, (x0, y0) in enumerate(boxes)])
        expected = paste(ref_model(windows), boxes, (96, 128))
    assert got["boxes"] == boxes
    assert torch.equal(got["localiser"], loc)
    assert torch.allclose(got["logits"], expected, atol=1e-6)


@pytest.mark.slow
def test_cascade_cli_and_eval(trained_parts: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = trained_parts["root"] / "cli.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "train.cascade", "--localiser", str(trained_parts["loc"]),
                         "--refiner", str(trained_parts["ref"]), "--out", str(out)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "lunet-coarse -> lunet on 64x48 windows" in ok.stderr
    assert load_checkpoint(out)["config"]["model"]["name"] == "cascade"
    bad = subprocess.run([sys.executable, "-m", "train.cascade", "--localiser", str(trained_parts["root"] / "no.pt"),
                          "--refiner", str(trained_parts["ref"]), "--out", str(trained_parts["root"] / "x.pt")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("train.cascade: error:") and "no.pt" in bad.stderr
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert not (trained_parts["root"] / "x.pt").exists()

    capsys.readouterr()
    for protocol in ("paper", "native"):
        assert eval_cli(["--checkpoint", str(out), "--data", str(trained_parts["data"]), "--protocol", protocol,
                         "--json", "-", "-q"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["model"] == "cascade" and result["n"] == 8 and result["protocol"] == protocol
        assert 0.0 <= result["dsc"]["mean"] <= 1.0
