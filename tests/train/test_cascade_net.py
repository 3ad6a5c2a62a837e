"""train.cascade_net: CascadeNet (shapes, windows that follow the localiser, errors) and its registration as a
composite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from train.cascade_net import CascadeNet, check_crop
from train.checkpoint import model_from_checkpoint, save_checkpoint
from train.errors import UserError
from train.models import build_model, list_models, model_stride
from train.preprocess import preprocessing_config
from train.window import BACKGROUND_LOGIT, crop_box

FRAME = (128, 96)  # W x H: the synthetic dataset's native size, valid for lunet-coarse (stride 32)
CROP = (64, 48)
TINY_REFINER = {"name": "lunet", "kwargs": {"width": 0.25}}


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


class RampRefiner(nn.Module):
    """Logits that rise left to right whatever the window holds (probability 0.1 at the left, 0.9 at the right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.linspace(0.1, 0.9, x.shape[-1]).expand_as(x)
        return torch.log(p / (1 - p))


def test_hflip_averages_each_window_and_its_mirror() -> None:
    centres = [(90, 30), (10, 80)]
    plain = CascadeNet(refiner=TINY_REFINER, crop=CROP).eval()
    flipped = CascadeNet(refiner=TINY_REFINER, crop=CROP, tta="hflip").eval()
    for net in (plain, flipped):
        net.localiser, net.refiner = BlobLocaliser(centres), RampRefiner()
    x = torch.randn(2, 1, 96, 128)
    with torch.no_grad():
        a, b = plain.forward_parts(x), flipped.forward_parts(x)
    assert a["boxes"] == b["boxes"] and "tta=hflip" in repr(flipped)
    x0, y0 = b["boxes"][0]
    window = (0, 0, slice(y0, y0 + CROP[1]), slice(x0, x0 + CROP[0]))
    p = torch.sigmoid(a["logits"][window])
    assert p[0, 0] == pytest.approx(0.1, abs=1e-5) and p[0, -1] == pytest.approx(0.9, abs=1e-5)
    # the mirrored window's ramp flipped back runs the other way: the average is 0.5 everywhere in the window
    torch.testing.assert_close(torch.sigmoid(b["logits"][window]), torch.full_like(p, 0.5), atol=1e-5, rtol=0)
    assert (b["logits"][0, 0, :, :x0] == BACKGROUND_LOGIT).all()  # outside the window: as without it
    # a real (random) refiner: the same as averaging by hand
    torch.manual_seed(3)
    net = CascadeNet(refiner=TINY_REFINER, crop=CROP, tta="hflip").eval()
    net.localiser = BlobLocaliser(centres)
    with torch.no_grad():
        got = torch.sigmoid(net(x))
        windows = torch.stack([x[i, :, y:y + CROP[1], xx:xx + CROP[0]] for i, (xx, y) in enumerate(b["boxes"])])
        by_hand = 0.5 * (torch.sigmoid(net.refiner(windows)) + torch.sigmoid(net.refiner(windows.flip(3))).flip(3))
    for i, (xx, y) in enumerate(b["boxes"]):
        torch.testing.assert_close(got[i, :, y:y + CROP[1], xx:xx + CROP[0]], by_hand[i], atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="none, hflip"):
        CascadeNet(refiner=TINY_REFINER, crop=CROP, tta="rot90")


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
