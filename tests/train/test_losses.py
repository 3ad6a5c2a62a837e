"""Tests for train.losses: the paper's batch-pooled bce_dice_loss (paper-code-spec.md §3.4)."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import (
    LOSSES,
    bce_dice_area_loss,
    bce_dice_loss,
    get_loss,
    relative_area_error,
    soft_dice,
)


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
    assert get_loss("bce_dice_area") is bce_dice_area_loss
    assert set(LOSSES) == {"bce_dice", "bce_dice_area"}
    with pytest.raises(KeyError, match="bce_dice"):
        get_loss("dice_only")


def test_relative_area_error_per_image_mean() -> None:
    # image 0: true area 16, predicted soft area 12 (-25 %); image 1: true 8, predicted 10 (+25 %)
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, :4, :4] = 1.0
    target[1, 0, :2, :4] = 1.0
    prob = torch.zeros(2, 1, 8, 8)
    prob[0, 0, :4, :4] = 0.75
    prob[1, 0, :2, :4] = 1.0
    prob[1, 0, 7, :4] = 0.5
    assert float(relative_area_error(prob, target)) == pytest.approx(0.25, abs=1e-6)
    # pooled over the batch the two errors would cancel: 22 against 24 px
    assert float(prob.sum() / target.sum()) == pytest.approx(22 / 24)


def test_relative_area_error_leaves_out_slivers() -> None:
    target = torch.zeros(2, 1, 10, 10)
    target[0, 0, :5, :5] = 1.0  # 25 of 100 px
    target[1, 0, 0, 0] = 0.5  # 0.5 % of the window: left out at the default 1 %
    prob = target.clone()
    prob[1] = 1.0  # huge relative error on the sliver
    assert float(relative_area_error(prob, target)) == pytest.approx(0.0, abs=1e-7)
    assert float(relative_area_error(prob, target, min_fraction=0.0)) == pytest.approx((0 + 99.5 / 0.5) / 2)
    empty = torch.zeros(1, 1, 4, 4)
    assert float(relative_area_error(empty + 0.3, empty)) == 0.0


def test_bce_dice_area_loss_adds_the_weighted_area_term() -> None:
    torch.manual_seed(0)
    target = torch.zeros(3, 1, 16, 16)
    target[:, :, 4:12, 5:11] = 1.0
    logits = torch.randn(3, 1, 16, 16)
    area = float(relative_area_error(torch.sigmoid(logits), target))
    assert area > 0.1
    assert float(bce_dice_area_loss(logits, target, weight=2.0)) == pytest.approx(
        float(bce_dice_loss(logits, target)) + 2.0 * area, rel=1e-6)
    assert float(bce_dice_area_loss(logits, target, weight=0.0)) == pytest.approx(float(bce_dice_loss(logits, target)))


def test_area_term_gradient_moves_the_unsure_boundary() -> None:
    # an outline too small: sure inside, unsure ring; the area term's gradient pushes the unsure pixels up
    target = torch.zeros(1, 1, 12, 12)
    target[0, 0, 2:10, 2:10] = 1.0
    logits = torch.full((1, 1, 12, 12), -8.0)
    logits[0, 0, 3:9, 3:9] = 8.0
    logits[0, 0, 2, 2:10] = 0.0  # the unsure top row of the true outline
    logits.requires_grad_(True)
    relative_area_error(torch.sigmoid(logits), target).backward()
    g = logits.grad[0, 0]
    assert float(g[2, 5]) < 0  # descent raises the unsure pixel
    assert abs(float(g[5, 5])) < 2e-3 * abs(float(g[2, 5]))  # sure inside: sigmoid slope 3e-4, not 0.25


def test_relative_area_error_rejects_unbatched() -> None:
    with pytest.raises(ValueError, match="batches"):
        relative_area_error(torch.zeros(4), torch.zeros(4))
