"""Tests for train.losses: the paper's batch-pooled bce_dice_loss (paper-code-spec.md §3.4)."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import LOSSES, bce_dice_loss, get_loss, soft_dice


def _per_image_mean_dice(prob: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.stack([soft_dice(p, t) for p, t in zip(prob, target)]).mean())


def test_soft_dice_identical_is_one() -> None:
    t = torch.zeros(2, 1, 8, 8)
    t[:, :, 2:6, 2:6] = 1.0
    assert float(soft_dice(t, t)) == pytest.approx(1.0, abs=1e-7)


def test_soft_dice_is_batch_pooled_not_per_image_mean() -> None:
    # Image 0: p = t = 1 on 4 px (Dice 1). Image 1: p = 0.5 on 4 px, t empty (Dice ~0).
    prob = torch.zeros(2, 1, 2, 2)
    target = torch.zeros(2, 1, 2, 2)
    prob[0] = 1.0
    target[0] = 1.0
    prob[1] = 0.5
    # pooled: 2 * 4 / (sum p = 4 + 2, sum t = 4) = 8 / 10
    assert float(soft_dice(prob, target)) == pytest.approx(0.8, abs=1e-6)
    # the per-image mean is (1 + ~0) / 2
    assert _per_image_mean_dice(prob, target) == pytest.approx(0.5, abs=1e-6)


def test_soft_dice_smooth_on_empty() -> None:
    z = torch.zeros(1, 1, 4, 4)
    assert float(soft_dice(z, z)) == pytest.approx(1.0)  # smooth / smooth


def test_soft_dice_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        soft_dice(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))


def test_bce_dice_loss_matches_hand_computation() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.5, 0.25]]]])  # soft targets, as in training
    sig = [1 / (1 + math.exp(-z)) for z in (2.0, -1.0, 0.0, 3.0)]
    tgt = [1.0, 0.0, 0.5, 0.25]
    bce = -sum(t * math.log(s) + (1 - t) * math.log(1 - s) for s, t in zip(sig, tgt)) / 4
    smooth = 1e-7
    dice = (2 * sum(s * t for s, t in zip(sig, tgt)) + smooth) / (sum(sig) + sum(tgt) + smooth)
    expected = bce + 1 - dice
    assert float(bce_dice_loss(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_bce_dice_loss_decreases_toward_target() -> None:
    torch.manual_seed(0)
    target = (torch.rand(4, 1, 16, 16) > 0.7).float()
    sign = 2 * target - 1
    losses = [float(bce_dice_loss(a * sign, target)) for a in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.01


def test_bce_dice_loss_gradient_step_reduces_loss() -> None:
    torch.manual_seed(1)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    loss0 = bce_dice_loss(logits, target)
    loss0.backward()
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
    assert float(bce_dice_loss(stepped, target)) < float(loss0.detach())


def test_bce_dice_loss_float32_under_autocast() -> None:
    torch.manual_seed(2)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    logits32 = torch.randn(2, 1, 8, 8)
    ref = float(bce_dice_loss(logits32, target))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = bce_dice_loss(logits32.to(torch.bfloat16), target)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(ref, abs=2e-2)  # bf16 logits only round the input


def test_bce_dice_loss_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same layout"):
        bce_dice_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))


def test_registry() -> None:
    assert get_loss("bce_dice") is bce_dice_loss
    assert set(LOSSES) == {"bce_dice"}
    with pytest.raises(KeyError, match="bce_dice"):
        get_loss("dice_only")
