"""train.consistency (mn-train --consistency): view B is the same tissue under a new speckle pattern, the loss
is the two views' supervised losses plus their disagreement, and a run with it trains, resumes exactly and is
recorded; mn-cv recognises runs recorded before the option existed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from train.consistency import TwinViewDataset, check_weight, disagreement, respeckle, twin_loss
from train.data import SegmentationDataset
from train.errors import UserError
from train.losses import bce_dice_loss


def _frame(seed: int = 0) -> np.ndarray:
    """A z-scored 'ultrasound' frame: dark background, brighter tissue bands, a darker round nerve."""
    rng = np.random.default_rng(seed)
    img = np.full((48, 64), 40.0, np.float32)
    img[10:40] = 120.0
    yy, xx = np.mgrid[:48, :64]
    img[(yy - 25) ** 2 + (xx - 30) ** 2 < 64] = 70.0
    img *= 1.0 + 0.1 * rng.standard_normal(img.shape).astype(np.float32)
    return ((img - img.mean()) / img.std()).astype(np.float32)


def test_respeckle_is_multiplicative_noise_on_the_intensity() -> None:
    z = _frame()
    out = respeckle(z, np.random.default_rng(1))
    assert out.shape == z.shape and out.dtype == np.float32
    # the darkest pixel stands for zero echo: it gets no noise
    assert out.flat[np.argmin(z)] == z.min()
    # the noise is proportional to the intensity (x - min x): bright tissue moves more than dark background
    diff = np.abs(out - z)
    bright, dark = z > np.percentile(z, 80), z < np.percentile(z, 20)
    assert diff[bright].mean() > 2.0 * diff[dark].mean()
    # strength: (x - min) * 0.15 * blurred N(0, 1); blurring with sigma 0.8 leaves a std of about 0.35
    ratio = (out - z)[bright] / (z - z.min())[bright]
    assert 0.15 * 0.25 < ratio.std() < 0.15 * 0.5
    # a new pattern, not a change of the frame's level or spread
    assert abs(out.mean() - z.mean()) < 0.05 and abs(out.std() / z.std() - 1) < 0.05


def test_respeckle_keeps_the_shape_and_is_determined_by_the_generator() -> None:
    z = _frame()[None]
    a, b = respeckle(z, np.random.default_rng(5)), respeckle(z, np.random.default_rng(5))
    assert a.shape == (1, 48, 64) and np.array_equal(a, b)
    assert not np.array_equal(a, respeckle(z, np.random.default_rng(6)))
    assert np.array_equal(respeckle(z, np.random.default_rng(5), strength=0.0), z)


def test_twin_views_share_tissue_and_target_and_are_keyed_by_seed_epoch_index() -> None:
    images = np.stack([_frame(i)[None] for i in range(3)])
    masks = (images < -0.5).astype(np.float32)
    base = SegmentationDataset(images, masks)
    twins = TwinViewDataset(base, seed=3)
    x, y = twins[1]
    assert x.shape == (2, 48, 64) and y.shape == (1, 48, 64)
    assert torch.equal(x[:1], base[1][0]) and torch.equal(y, base[1][1])
    assert not torch.equal(x[0], x[1])
    assert torch.equal(twins[1][0], x)  # the same item again: the same view B
    twins.set_epoch(1)
    assert base.epoch == 1 and not torch.equal(twins[1][0][1], x[1])
    twins.set_epoch(0)
    assert not torch.equal(TwinViewDataset(base, seed=4)[1][0][1], x[1])
    assert len(twins) == 3


def test_disagreement_and_twin_loss_known_answers() -> None:
    big = torch.full((2, 1, 4, 4), 30.0)  # probability 1 everywhere
    assert float(disagreement(big, big)) == pytest.approx(0.0, abs=1e-6)
    half = big.clone()
    half[..., :2] = -30.0  # half of the 32 pixels 0: 16 pixels differ, of 32 + 16 (+ 1)
    assert float(disagreement(big, half)) == pytest.approx(1 - 33 / 49, abs=1e-6)
    empty = torch.full((2, 1, 4, 4), -30.0)
    assert float(disagreement(empty, empty)) == pytest.approx(0.0, abs=1e-6)  # two empty outlines agree
    unsure = torch.zeros(2, 1, 4, 4)  # probability 0.5 everywhere, in both views: they agree
    assert float(disagreement(unsure, unsure)) == 0.0
    soft = torch.linspace(-3, 3, 32).reshape(2, 1, 4, 4)
    pa, pb = torch.sigmoid(soft), torch.sigmoid(soft + 1)
    expected = ((pa - pb) ** 2).sum() / (pa.sum() + pb.sum() + 1)
    assert float(disagreement(soft, soft + 1)) == pytest.approx(float(expected))

    target = torch.zeros(2, 1, 4, 4)
    target[..., 2:] = 1.0
    logits = torch.cat([half, big])
    loss, a = twin_loss(logits, target, weight=2.0)
    expected = 0.5 * (bce_dice_loss(half, target) + bce_dice_loss(big, target)) + 2.0 * disagreement(half, big)
    assert torch.equal(a, half) and float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(twin_loss(logits, target, 0.0)[0]) < float(loss)
    with pytest.raises(ValueError, match="two views"):
        twin_loss(big, target, 1.0)


def test_the_weight_is_checked() -> None:
    assert check_weight(0) == 0.0 and check_weight(1.5) == 1.5
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(UserError, match="--consistency"):
            check_weight(bad)


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # exact resume compares weights bit for bit
    yield
    torch.set_num_threads(before)


def test_a_run_with_consistency_trains_on_both_views_and_resumes_exactly(synthetic_dataset: Path, tmp_path: Path,
                                                                         one_thread: None) -> None:
    from tests.train.test_trainer import _weights, small_cfg
    from train.trainer import Trainer

    kw = dict(size=(128, 96), crop=(64, 48), consistency=1.0)
    trainer = Trainer(small_cfg(synthetic_dataset, tmp_path / "a", epochs=2, **kw), torch.device("cpu"))
    assert isinstance(trainer.train_set, TwinViewDataset)
    seen = []
    forward = trainer.net.forward

    def spy(x):  # type: ignore[no-untyped-def]
        seen.append(tuple(x.shape))
        return forward(x)

    trainer.net.forward = spy
    trainer.fit()
    assert seen and all(s[0] % 2 == 0 and s[1:] == (1, 48, 64) for s in seen)
    assert seen[0][0] == 2 * 4  # batch 4: 8 windows through the network
    Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=1, **kw), torch.device("cpu")).fit()
    Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=2, resume=True, **kw), torch.device("cpu")).fit()
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    import json

    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["consistency"] == 1.0
    with pytest.raises(UserError, match="consistency"):
        Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=3, resume=True, size=(128, 96), crop=(64, 48)),
                torch.device("cpu"))


def test_mn_train_flag(tmp_path: Path) -> None:
    from train.train_cli import build_parser, training_config

    args = ["--data", "d", "--out", str(tmp_path), "--consistency", "0.5"]
    assert training_config(build_parser().parse_args(args), "cpu").consistency == 0.5
    assert training_config(build_parser().parse_args(args[:4]), "cpu").consistency == 0.0
    with pytest.raises(UserError, match="--consistency"):
        training_config(build_parser().parse_args([*args[:4], "--consistency", "-1"]), "cpu")


def test_runs_recorded_before_the_option_are_the_same_training() -> None:
    """A run recorded before --consistency existed had it off: mn-cv --share / resume still recognise it."""
    import dataclasses
    import json

    from train.crossval import same_training
    from train.train_cli import build_parser, training_config

    args = ["--data", ".", "--out", "o", "--model", "lunet", "--crop", "128x96"]
    recorded = json.loads(json.dumps(dataclasses.asdict(training_config(build_parser().parse_args(args), "cpu"))))
    del recorded["consistency"]
    assert same_training(recorded, args) == []
    assert same_training(recorded, [*args, "--consistency", "1"]) == ["consistency"]
