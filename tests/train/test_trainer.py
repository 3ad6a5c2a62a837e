"""Training: one step lowers the loss, a run writes its files, resume is exact, stops save state,
extra training folders join the training side only."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import make_dataset
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.errors import UserError
from train.losses import bce_dice_loss, soft_dice
from train.models import build_model, list_models
from train.trainer import Trainer, TrainConfig, keras_plateau_scheduler

REPO = Path(__file__).resolve().parents[2]
SMALL = (64, 48)
WIDTH = 0.25
"""L-UNet's width in these tests: what they check (files, resume, stops, workers, crops) does not depend on the
filter counts, and a quarter of them trains several times faster on a 2-core CPU."""


def small_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), model="lunet", out=str(out), epochs=2, batch_size=4, size=SMALL, split="kfold",
                folds=4, fold=0, save_every_min=0)
    base.update(kw)
    if base["model"] == "lunet":
        base.setdefault("model_kwargs", {"width": WIDTH})
    return TrainConfig(**base)


@pytest.mark.parametrize("name", list_models())
def test_one_step_lowers_loss_on_fixed_batch(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).train()
    x = torch.randn(2, 1, 32, 32)  # the smallest size every stride (16 at most) divides
    y = torch.zeros(2, 1, 32, 32)
    y[:, :, 10:20, 8:22] = 1.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    before = bce_dice_loss(model(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    after = bce_dice_loss(model(x), y)
    assert float(after.detach()) < float(before.detach())


def test_run_writes_checkpoints_history_and_curves(synthetic_dataset: Path, tmp_path: Path) -> None:
    from train.metrics import dice_hard

    out = tmp_path / "run"
    trainer = Trainer(small_cfg(synthetic_dataset, out), torch.device("cpu"))
    summary = trainer.fit()
    for name in ("best.pt", "last.pt", "config.json", "history.csv", "curves.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # the last epoch's validation numbers are those of last.pt's weights on the validation images: loss and
    # soft Dice averaged over batches weighted by their size, DSC the per-image hard Dice
    model, _ = model_from_checkpoint(out / "last.pt")
    images, masks, bs = trainer.val_images, trainer.val_masks, trainer.cfg.batch_size
    with torch.no_grad():
        logits = model(images)
    prob = torch.sigmoid(logits)
    chunks = [slice(i, i + bs) for i in range(0, len(images), bs)]
    loss = sum(float(bce_dice_loss(logits[c], masks[c])) * len(images[c]) for c in chunks) / len(images)
    soft = sum(float(soft_dice(prob[c], masks[c])) * len(images[c]) for c in chunks) / len(images)
    dsc = np.mean([dice_hard(p[0].numpy() >= 0.5, m[0].numpy() > 0) for p, m in zip(prob, masks)])
    last = rows[-1]
    assert float(last["val_loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(last["val_soft_dice"]) == pytest.approx(soft, rel=1e-5, abs=1e-7)
    assert float(last["val_dsc"]) == pytest.approx(dsc, abs=1e-6)
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"name": "lunet", "kwargs": {"width": WIDTH}}
    assert config["preprocessing"]["size"] == list(SMALL)
    assert len(config["data"]["hash"]) == 64
    assert set(config["split"]["train"]).isdisjoint(config["split"]["val"])
    assert config["metrics"] == summary["metrics"]
    model, ck_config = model_from_checkpoint(out / "best.pt")
    assert ck_config["model"]["name"] == "lunet"
    assert not model.training
    assert "train_state" in load_checkpoint(out / "last.pt")
    assert "train_state" not in load_checkpoint(out / "best.pt")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


@pytest.fixture
def torch_threads():  # type: ignore[no-untyped-def]
    """Restores torch's thread count after a test that changes it (or whose in-process mn-train does: --threads)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread(torch_threads: None) -> None:
    """One CPU thread for the test (bitwise reproducibility of CPU kernels), the count restored after it."""
    torch.set_num_threads(1)


def test_resume_across_epochs_is_exact(synthetic_dataset: Path, tmp_path: Path, one_thread: None) -> None:
    Trainer(small_cfg(synthetic_dataset, tmp_path / "a", epochs=3), torch.device("cpu")).fit()
    Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=2), torch.device("cpu")).fit()
    Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=3, resume=True), torch.device("cpu")).fit()
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist_a = (tmp_path / "a" / "history.csv").read_text().splitlines()
    hist_b = (tmp_path / "b" / "history.csv").read_text().splitlines()
    strip = lambda lines: [",".join(l.split(",")[:-1]) for l in lines]  # drop the seconds column
    assert strip(hist_a) == strip(hist_b)


def test_stop_mid_epoch_then_resume_is_exact(synthetic_dataset: Path, tmp_path: Path, one_thread: None) -> None:
    Trainer(small_cfg(synthetic_dataset, tmp_path / "a", epochs=2, model="unet"), torch.device("cpu")).fit()

    trainer = Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=2, model="unet"), torch.device("cpu"))
    original = trainer._train_batch
    calls = {"n": 0}

    def stop_after_two(*args):
        result = original(*args)
        calls["n"] += 1
        if calls["n"] == 2:  # mid-way through epoch 1 (9 training images at batch 4 -> 3 batches/epoch)
            trainer._stop_signal = signal.SIGTERM
        return result

    trainer._train_batch = stop_after_two
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    state = load_checkpoint(tmp_path / "b" / "last.pt")["train_state"]
    assert (state["epoch"], state["step_in_epoch"]) == (0, 2)
    Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=2, model="unet", resume=True),
            torch.device("cpu")).fit()
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_different_settings(synthetic_dataset: Path, tmp_path: Path) -> None:
    Trainer(small_cfg(synthetic_dataset, tmp_path / "r", epochs=1), torch.device("cpu")).fit()
    with pytest.raises(UserError, match="seed"):
        Trainer(small_cfg(synthetic_dataset, tmp_path / "r", epochs=2, seed=7, resume=True), torch.device("cpu"))


def test_keras_plateau_semantics() -> None:
    """LR drops on the 10th epoch without a 1e-4 improvement, and the count restarts after a drop."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-2, eps=1e-7)
    sched = keras_plateau_scheduler(opt, factor=0.1, patience=10, min_delta=1e-4)
    lrs = []
    losses = [1.0] + [1.0 - 5e-5] * 24  # an improvement below min_delta does not count
    for loss in losses:
        sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[9] == pytest.approx(1e-2) and lrs[10] == pytest.approx(1e-3)
    assert lrs[19] == pytest.approx(1e-3) and lrs[20] == pytest.approx(1e-4)


def test_sigint_saves_last_and_exits_130(synthetic_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "train.train_cli", "--data", str(synthetic_dataset), "--out", str(out),
         "--model", "lunet", "--width", str(WIDTH), "--size", "64x48", "--epochs", "1000", "--batch-size", "2",
         "--folds", "4", "--fold", "0", "--threads", "1", "-q"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 120
    while not (out / "history.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (out / "history.csv").exists(), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    state = load_checkpoint(out / "last.pt")["train_state"]
    assert state["epoch"] >= 1


def test_sigkill_then_resume_continues_exactly_from_the_last_saved_state(synthetic_dataset: Path, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture,
                                                                         torch_threads: None) -> None:
    """A hard kill (SIGKILL: no handler runs, nothing is saved on the way out) during training, then --resume:
    training goes on from the last last.pt written (saved after every batch here: killed once one was saved
    within epoch 2, so usually mid-epoch), the epochs before it are not trained again (their history rows are
    the killed run's own), and the run ends with the weights and history of one never interrupted (README:
    --resume continues exactly)."""
    from train.train_cli import cli as train_cli

    common = ["--data", str(synthetic_dataset), "--model", "lunet", "--width", "0.25", "--size", "64x48",
              "--batch-size", "4", "--folds", "4", "--fold", "0", "--threads", "1", "-q"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "train.train_cli", *common, "--out", str(out), "--epochs", "1000",
                             "--save-every-min", "0.0001"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 180  # a guard against a hang, not a timing requirement
        last, history_csv = out / "last.pt", out / "history.csv"

        def saved_within_an_epoch() -> bool:  # epoch 1 is done (last.pt, then history.csv) and last.pt was
            try:                               # saved again since: after a batch of the next epoch
                return last.stat().st_mtime_ns > history_csv.stat().st_mtime_ns
            except FileNotFoundError:
                return False

        while not saved_within_an_epoch():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_history = (out / "history.csv").read_text().splitlines()
    state = load_checkpoint(out / "last.pt")["train_state"]
    saved_epoch, saved_step = state["epoch"], state["step_in_epoch"]
    assert saved_epoch >= 1 and len(killed_history) - 1 in (saved_epoch, saved_epoch - 1)
    epochs = saved_epoch + 1  # the rest of the epoch it was killed in (all of it when saved at its start)

    with caplog.at_level(logging.INFO, logger="train.trainer"):
        assert train_cli([*common, "--out", str(out), "--epochs", str(epochs), "--resume"]) == 0
    assert f"at epoch {saved_epoch + 1}, batch {saved_step}" in caplog.text  # from the saved state, not from 0
    ref = tmp_path / "uninterrupted"
    assert train_cli([*common, "--out", str(ref), "--epochs", str(epochs)]) == 0

    history = (out / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == list(range(1, epochs + 1))  # each epoch once
    assert history[:len(killed_history)] == killed_history  # the saved epochs' rows kept as they were, seconds too
    strip = lambda lines: [",".join(x.split(",")[:-1]) for x in lines]  # noqa: E731 - the seconds column
    assert strip(history) == strip((ref / "history.csv").read_text().splitlines())
    for name in ("last.pt", "best.pt"):
        a, b = _weights(ref / name), _weights(out / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # a file torn by the kill was replaced


def test_extra_train_joins_training_side_only(synthetic_dataset: Path, tmp_path: Path) -> None:
    extra = make_dataset(tmp_path / "extra", n_patients=2, per_patient=2, seed=5)
    plain = Trainer(small_cfg(synthetic_dataset, tmp_path / "plain", epochs=1), torch.device("cpu"))
    out = tmp_path / "run"
    trainer = Trainer(small_cfg(synthetic_dataset, out, epochs=1, extra_train=[str(extra)], augment="strong"),
                      torch.device("cpu"))
    assert len(trainer.train_set) == len(plain.train_idx) + 4
    assert len(trainer.val_idx) == len(plain.val_idx) and trainer.split.to_config() == plain.split.to_config()
    trainer.fit()
    config = json.loads((out / "config.json").read_text())
    (record,) = config["data"]["extra_train"]
    assert record["root"] == str(extra) and record["images"] == 4 and len(record["hash"]) == 64
    assert config["train"]["extra_train"] == [str(extra)]
    assert config["augmentation"]["name"] == "strong" and config["train"]["augment"] == "strong"
    assert plain.run_config()["data"]["extra_train"] == []
    with pytest.raises(UserError, match="extra_train"):
        Trainer(small_cfg(synthetic_dataset, out, epochs=2, resume=True), torch.device("cpu"))
    with pytest.raises(UserError, match="--data folder itself"):
        Trainer(small_cfg(synthetic_dataset, tmp_path / "x", extra_train=[str(synthetic_dataset)]),
                torch.device("cpu"))


def test_augment_flag_backwards_compatible(tmp_path: Path) -> None:
    assert small_cfg(tmp_path, tmp_path / "o", augment=True).augment == "paper"
    assert small_cfg(tmp_path, tmp_path / "o", augment=False).augment == "none"
    with pytest.raises(UserError, match="paper, strong, acquisition, fov, compress, none"):
        small_cfg(tmp_path, tmp_path / "o", augment="heavy")


# --- --workers, --crop -----------------------------------------------------------------------


def _history(trainer: Trainer) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in trainer.history]


def _no_worker_processes_left() -> bool:
    import multiprocessing

    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not multiprocessing.active_children()


@pytest.mark.parametrize("crop, consistency", [(None, 0.0), ((32, 24), 0.0), ((32, 24), 10.0)],
                         ids=["frames", "crop", "crop-consistency"])
def test_workers_give_the_same_run(synthetic_dataset: Path, tmp_path: Path, crop, consistency: float,
                                   one_thread: None) -> None:
    """Augmentation in 2 worker processes (keyed by epoch and index) = augmentation in the trainer; with
    --consistency, each item's second view too."""
    runs = {}
    for workers in (0, 2):
        trainer = Trainer(small_cfg(synthetic_dataset, tmp_path / f"w{workers}", epochs=2, augment="paper",
                                    crop=crop, workers=workers, consistency=consistency), torch.device("cpu"))
        trainer.fit()
        assert trainer._loader is None
        runs[workers] = trainer
    assert _no_worker_processes_left()
    assert _history(runs[0]) == _history(runs[2])
    assert len(runs[0].history) == 2
    a, b = _weights(tmp_path / "w0" / "last.pt"), _weights(tmp_path / "w2" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.loads((tmp_path / "w2" / "config.json").read_text())["train"]["workers"] == 2


def test_stop_mid_epoch_with_workers_then_resume_is_exact(synthetic_dataset: Path, tmp_path: Path,
                                                          one_thread: None) -> None:
    Trainer(small_cfg(synthetic_dataset, tmp_path / "a", epochs=2), torch.device("cpu")).fit()

    trainer = Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=2, workers=2), torch.device("cpu"))
    original = trainer._train_batch
    calls = {"n": 0}
    per_epoch = len(trainer._batches(0))
    assert per_epoch >= 2

    def stop_in_epoch_2(*args):
        result = original(*args)
        calls["n"] += 1
        if calls["n"] == per_epoch + 1:  # after the first batch of epoch 2
            trainer._stop_signal = signal.SIGTERM
        return result

    trainer._train_batch = stop_in_epoch_2
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer._loader is None and _no_worker_processes_left()
    state = load_checkpoint(tmp_path / "b" / "last.pt")["train_state"]
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    Trainer(small_cfg(synthetic_dataset, tmp_path / "b", epochs=2, workers=2, resume=True), torch.device("cpu")).fit()
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_saves_last(synthetic_dataset: Path, tmp_path: Path) -> None:
    """SIGTERM reaches the trainer and its workers (one process group, as Ctrl-C or a job scheduler):
    the workers ignore it, the trainer finishes its batch, saves last.pt, and exits 130; --resume goes on."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "train.train_cli", "--data", str(synthetic_dataset), "--out", str(out),
         "--model", "lunet", "--width", str(WIDTH), "--size", "64x48", "--batch-size", "2", "--folds", "4",
         "--fold", "0", "--workers", "2", "--epochs", "1000", "--save-every-min", "0.0001", "--threads", "1", "-q"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # last.pt is saved after every batch (--save-every-min ~0): the workers are running by then
        while not (out / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert (out / "last.pt").exists(), proc.communicate(timeout=5)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "killed by signal" not in err, err
    assert "SIGTERM received" in err and "--resume" in err
    state = load_checkpoint(out / "last.pt")["train_state"]
    assert state["epoch"] * 100 + state["step_in_epoch"] >= 1
    resumed = Trainer(small_cfg(synthetic_dataset, out, batch_size=2, epochs=state["epoch"] + 1, resume=True,
                                workers=2), torch.device("cpu"))
    assert (resumed.epoch, resumed.step_in_epoch) == (state["epoch"], state["step_in_epoch"])
    resumed.fit()
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, state["epoch"] + 2))


def test_crop_run_trains_and_validates_on_windows(synthetic_dataset: Path, tmp_path: Path) -> None:
    from train.cascade import crop_around_truth
    from train.data import load_samples, scan_dataset
    from train.metrics import dice_hard

    size, crop = (128, 96), (64, 48)
    out = tmp_path / "ref"
    trainer = Trainer(small_cfg(synthetic_dataset, out, epochs=1, size=size, crop=crop, crop_jitter=0.3,
                                model_kwargs={"width": 0.25}), torch.device("cpu"))
    assert trainer.cfg.input_size == crop
    # validation: the windows around the true nerve of the full frames, without jitter
    full = load_samples(scan_dataset(str(synthetic_dataset)), size, progress=False)
    vi, vm = crop_around_truth(full.images[trainer.val_idx], full.masks[trainer.val_idx], crop)
    assert trainer.val_images.shape == (len(trainer.val_idx), 1, 48, 64)
    assert torch.equal(trainer.val_images, torch.from_numpy(vi))
    assert torch.equal(trainer.val_masks, torch.from_numpy(vm))
    areas = (full.masks[trainer.val_idx] > 0).sum(axis=(1, 2, 3))
    assert ((vm > 0).sum(axis=(1, 2, 3)) == areas).all(), "each validation window holds its whole nerve"

    # known answer: a model calling every pixel nerve has DSC 2|M| / (|M| + window area) on windows
    class AllNerve(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x, 30.0)

    net = trainer.model
    trainer.model = AllNerve()
    dsc = trainer.validate()["val_dsc"]
    assert dsc == pytest.approx(float(np.mean(2 * areas / (areas + 64 * 48))), rel=1e-9)
    assert dsc > 1.5 * float(np.mean(2 * areas / (areas + 128 * 96)))  # (on frames it would be far lower)
    trainer.model = net
    with torch.no_grad():
        net.eval()
        prob = torch.sigmoid(net(trainer.val_images)).numpy()
    expected = [dice_hard(prob[i, 0] >= 0.5, vm[i, 0] > 0) for i in range(len(vm))]
    assert trainer.validate()["val_dsc"] == pytest.approx(float(np.mean(expected)), abs=1e-6)

    shapes = []
    original = trainer._train_batch

    def record(x, y):
        shapes.append((tuple(x.shape), tuple(y.shape)))
        return original(x, y)

    trainer._train_batch = record
    trainer.fit()
    assert shapes and all(sx[1:] == sy[1:] == (1, 48, 64) for sx, sy in shapes)
    config = json.loads((out / "config.json").read_text())
    for cfg in (config, load_checkpoint(out / "best.pt")["config"], load_checkpoint(out / "last.pt")["config"]):
        assert cfg["crop"]["size"] == [64, 48] and cfg["crop"]["frame_size"] == [128, 96]
        assert cfg["crop"]["jitter"] == 0.3 and "train.cascade" in cfg["crop"]["note"]
        assert cfg["preprocessing"]["size"] == [128, 96]  # the frame's preprocessing, not the window's
    assert config["train"]["crop"] == [64, 48] and config["train"]["crop_jitter"] == 0.3
    model, _ = model_from_checkpoint(out / "best.pt")
    assert model(torch.zeros(1, 1, 48, 64)).shape == (1, 1, 48, 64)


def test_frame_runs_record_no_crop(synthetic_dataset: Path, tmp_path: Path) -> None:
    trainer = Trainer(small_cfg(synthetic_dataset, tmp_path / "o", epochs=1), torch.device("cpu"))
    assert trainer.run_config()["crop"] is None and trainer.cfg.input_size == SMALL
    assert trainer.val_images.shape[-2:] == (SMALL[1], SMALL[0])


def test_crop_and_workers_config_errors(synthetic_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    with pytest.raises(UserError, match="--crop 72x24 must fit inside --size 64x48"):
        Trainer(small_cfg(synthetic_dataset, out, crop=(72, 24)), torch.device("cpu"))
    with pytest.raises(UserError, match="30x24 is not divisible by 8.*nearest valid size is 32x24"):
        Trainer(small_cfg(synthetic_dataset, out, crop=(30, 24)), torch.device("cpu"))
    with pytest.raises(UserError, match="--crop-jitter must be in"):
        Trainer(small_cfg(synthetic_dataset, out, crop=(32, 24), crop_jitter=2.0), torch.device("cpu"))
    with pytest.raises(UserError, match="--workers"):
        small_cfg(synthetic_dataset, out, workers=-1)
    with pytest.raises(UserError, match="--amp-dtype"):
        Trainer(small_cfg(synthetic_dataset, out, amp_dtype="fp8"), torch.device("cpu"))
    assert not (out / "last.pt").exists()


def test_speckle_range_config(synthetic_dataset: Path, tmp_path: Path) -> None:
    """--speckle LO HI reaches the augmentation, is recorded as a list, and is refused where it means nothing."""
    out = tmp_path / "o"
    cfg = small_cfg(synthetic_dataset, out, augment="compress", speckle=(0, 0.6))
    assert cfg.speckle == (0.0, 0.6) and cfg.to_dict()["speckle"] == [0.0, 0.6]
    trainer = Trainer(cfg, torch.device("cpu"))
    assert trainer.augment.strong.config.speckle_range == (0.0, 0.6)
    assert small_cfg(synthetic_dataset, out).to_dict()["speckle"] is None
    with pytest.raises(UserError, match="--speckle LO HI sets the speckle of --augment strong"):
        small_cfg(synthetic_dataset, out, augment="paper", speckle=(0, 0.6))
    with pytest.raises(UserError, match="0 <= LOW <= HIGH"):
        small_cfg(synthetic_dataset, out, augment="strong", speckle=(0.5, 0.1))


def test_compress_config(synthetic_dataset: Path, tmp_path: Path) -> None:
    """--compress LEVEL P reaches the augmentation, is recorded as a list and checked on --resume, and is refused
    without --augment compress."""
    out = tmp_path / "o"
    cfg = small_cfg(synthetic_dataset, out, augment="compress", compress=(0.65, 0.7), epochs=1)
    assert cfg.compress == (0.65, 0.7) and cfg.to_dict()["compress"] == [0.65, 0.7]
    trainer = Trainer(cfg, torch.device("cpu"))
    assert trainer.augment.config.level == (0.65, 1.0) and trainer.augment.config.compress_p == 0.7
    trainer.fit()
    assert json.loads((out / "config.json").read_text())["train"]["compress"] == [0.65, 0.7]
    with pytest.raises(UserError, match="was trained with compress"):
        Trainer(small_cfg(synthetic_dataset, out, augment="compress", compress=(0.75, 0.5), epochs=2, resume=True),
                torch.device("cpu"))
    assert small_cfg(synthetic_dataset, out).to_dict()["compress"] is None
    with pytest.raises(UserError, match="--compress LEVEL P sets the nerve's compression of --augment compress, "
                                        "acquisition or fov; this run has --augment strong"):
        small_cfg(synthetic_dataset, out, augment="strong", compress=(0.65, 0.7))
    acq = Trainer(small_cfg(synthetic_dataset, tmp_path / "acq", augment="acquisition", compress=(0.75, 0.5),
                            epochs=1), torch.device("cpu"))
    assert acq.augment.compress is not None and acq.augment.compress.level == (0.75, 1.0)


def test_cpu_mixed_precision_is_bfloat16_where_the_cpu_has_it(synthetic_dataset: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import train.trainer as trainer_module

    # float32 by default on a CPU, and recorded as such
    plain = Trainer(small_cfg(synthetic_dataset, tmp_path / "f32", epochs=1), torch.device("cpu"))
    assert plain.run_config()["precision"] == {"device": "cpu", "mixed": False, "dtype": "float32"}
    # --amp on a CPU with native bfloat16: a bfloat16 run that trains, validates and records it
    monkeypatch.setattr(trainer_module, "cpu_bf16", lambda: (True, "the CPU has avx512_bf16"))
    run = Trainer(small_cfg(synthetic_dataset, tmp_path / "bf16", epochs=1, amp=True), torch.device("cpu"))
    assert run.amp and run.amp_dtype == torch.bfloat16 and run.channels_last
    summary = run.fit()
    assert summary["metrics"]["epochs_run"] == 1 and math.isfinite(summary["metrics"]["val_loss"])
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["precision"] == {"device": "cpu", "mixed": True, "dtype": "bfloat16"}
    _, saved = model_from_checkpoint(tmp_path / "bf16" / "best.pt")  # weights stay float32: loads as any run's
    assert saved["precision"]["dtype"] == "bfloat16"
    # without native bfloat16 (emulated: slower than float32) --amp warns and trains in float32
    monkeypatch.setattr(trainer_module, "cpu_bf16", lambda: (False, "the CPU has neither AVX512-BF16 nor AMX"))
    slow = Trainer(small_cfg(synthetic_dataset, tmp_path / "emu", epochs=1, amp=True), torch.device("cpu"))
    assert not slow.amp and not slow.channels_last
    assert slow.run_config()["precision"]["mixed"] is False
    # float16 autocast is CUDA's: refused on a CPU with what to use instead
    with pytest.raises(UserError, match="--amp-dtype fp16 is for CUDA"):
        Trainer(small_cfg(synthetic_dataset, tmp_path / "f16", epochs=1, amp=True, amp_dtype="fp16"),
                torch.device("cpu"))


def test_cpu_bf16_probe_answers_with_a_reason() -> None:
    from train.trainer import cpu_bf16

    native, why = cpu_bf16()
    assert isinstance(native, bool) and why and ("AVX512-BF16" in why) != native


def test_blind_run_lets_nothing_depend_on_its_validation_images(tmp_path: Path) -> None:
    """mn-train --blind measures the validation images but best.pt follows the training loss (as with --split none)."""
    from train.train_cli import cli as train_cli

    data = make_dataset(tmp_path / "d", n_patients=4, per_patient=2)
    out = tmp_path / "run"
    assert train_cli(["--data", str(data), "--model", "lunet", "--width", "0.25", "--size", "64x64", "--epochs", "4",
                      "--folds", "2", "--fold", "0", "--blind", "--lr", "0.05", "--out", str(out), "-q"]) == 0
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert all(r["val_loss"] not in ("", "nan") for r in rows)  # measured
    best_so_far, expected = float("inf"), []
    for r in rows:
        expected.append(int(float(r["train_loss"]) < best_so_far))
        best_so_far = min(best_so_far, float(r["train_loss"]))
    assert [int(r["best"]) for r in rows] == expected  # chosen by the training loss alone
    assert json.loads((out / "config.json").read_text())["train"]["blind"] is True


def test_lr_drops_is_a_fixed_schedule(tmp_path: Path) -> None:
    """--lr-drops 2 3: the learning rate is multiplied by --lr-factor after epochs 2 and 3, whatever the losses do."""
    from train.train_cli import cli as train_cli

    data = make_dataset(tmp_path / "d", n_patients=4, per_patient=1)
    out = tmp_path / "run"
    assert train_cli(["--data", str(data), "--model", "lunet", "--width", "0.25", "--size", "64x64", "--epochs", "4",
                      "--split", "none", "--lr", "0.01", "--lr-drops", "3", "2", "--out", str(out), "-q"]) == 0
    lrs = [float(r["lr"]) for r in csv.DictReader((out / "history.csv").open())]
    assert lrs == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    assert json.loads((out / "config.json").read_text())["train"]["lr_drops"] == [2, 3]
    with pytest.raises(UserError, match="--lr-drops"):
        TrainConfig(data=str(data), model="lunet", out=str(tmp_path / "x"), lr_drops=[0])


def test_swa_averages_the_epochs_weights_and_resumes_exactly(synthetic_dataset: Path, tmp_path: Path,
                                                             one_thread: None) -> None:
    """--swa-from 2 over 3 epochs: swa.pt holds the mean of the weights after epochs 2 and 3, BatchNorm measured again
    (not the mean of theirs), last.pt the network as trained; a run stopped after epoch 2 and resumed: the same."""
    run = tmp_path / "b"
    Trainer(small_cfg(synthetic_dataset, run, epochs=2, swa_from=2), torch.device("cpu")).fit()
    after2 = _weights(run / "last.pt")
    first = _weights(run / "swa.pt")
    for k, v in after2.items():  # one snapshot: the weights themselves
        if "running" not in k and v.is_floating_point():
            assert torch.equal(first[k], v), k
    Trainer(small_cfg(synthetic_dataset, run, epochs=3, swa_from=2, resume=True), torch.device("cpu")).fit()
    after3, swa = _weights(run / "last.pt"), _weights(run / "swa.pt")
    stats = [k for k in swa if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats, "L-UNet has BatchNorm layers"
    for k, v in swa.items():
        if k in stats or not v.is_floating_point():
            continue
        mean = (after2[k].double() + after3[k].double()) / 2
        assert torch.allclose(v.double(), mean, atol=1e-7), k
    assert any(not torch.allclose(swa[k], (after2[k] + after3[k]) / 2) for k in stats)  # measured, not averaged
    config = load_checkpoint(run / "swa.pt")["config"]
    assert config["swa"]["snapshots"] == 2 and config["swa"]["from_epoch"] == 2
    assert config["swa"]["batchnorm_batches"] >= 1 and 0 <= config["swa"]["val_dsc"] <= 1
    model = model_from_checkpoint(run / "swa.pt")[0]  # loads as any checkpoint does
    assert sum(p.numel() for p in model.parameters()) > 0

    straight = tmp_path / "a"
    Trainer(small_cfg(synthetic_dataset, straight, epochs=3, swa_from=2), torch.device("cpu")).fit()
    again = _weights(straight / "swa.pt")
    for k in swa:
        assert torch.equal(swa[k], again[k]), k


def test_swa_from_must_fall_within_the_run(synthetic_dataset: Path, tmp_path: Path) -> None:
    for bad in (0, 3):
        with pytest.raises(UserError, match="--swa-from"):
            small_cfg(synthetic_dataset, tmp_path / "x", epochs=2, swa_from=bad)
    out = tmp_path / "plain"
    Trainer(small_cfg(synthetic_dataset, out, epochs=1), torch.device("cpu")).fit()
    assert not (out / "swa.pt").exists()
    assert "swa" not in json.loads((out / "config.json").read_text())


def test_mn_train_swa_from_writes_swa_pt_and_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from train.train_cli import cli as train_cli

    data = make_dataset(tmp_path / "d", n_patients=4, per_patient=1)
    out = tmp_path / "run"
    assert train_cli(["--data", str(data), "--model", "lunet", "--width", "0.25", "--size", "64x64", "--epochs", "2",
                      "--split", "none", "--swa-from", "1", "--out", str(out), "-q"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["swa_checkpoint"] == str(out / "swa.pt") and summary["swa"]["snapshots"] == 2
    assert (out / "swa.pt").exists() and json.loads((out / "config.json").read_text())["swa"]["from_epoch"] == 1
    assert train_cli(["--data", str(data), "--model", "lunet", "--epochs", "2", "--swa-from", "3", "--out",
                      str(tmp_path / "bad"), "-q"]) == 2
    assert "--swa-from 3" in capsys.readouterr().err


def test_loss_bce_dice_area_trains_and_is_recorded(synthetic_dataset: Path, tmp_path: Path, one_thread: None) -> None:
    """--loss bce_dice_area: the same run with the area term ends elsewhere, its history's losses are the new loss's
    (the area term makes them larger), the config records it, --resume with another loss is refused."""
    from train.losses import bce_dice_area_loss, bce_dice_loss

    plain, area = tmp_path / "plain", tmp_path / "area"
    Trainer(small_cfg(synthetic_dataset, plain, epochs=1), torch.device("cpu")).fit()
    trainer = Trainer(small_cfg(synthetic_dataset, area, epochs=1, loss="bce_dice_area"), torch.device("cpu"))
    trainer.fit()
    assert json.loads((area / "config.json").read_text())["train"]["loss"] == "bce_dice_area"
    a, b = _weights(plain / "last.pt"), _weights(area / "last.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    # the validation loss is the run's loss: recomputed here on the validation images with the saved weights
    row = list(csv.DictReader((area / "history.csv").open()))[-1]
    net = model_from_checkpoint(area / "last.pt")[0].eval()
    with torch.no_grad():
        logits = net(trainer.val_images).float()
    expected = float(bce_dice_area_loss(logits, trainer.val_masks))
    assert expected > float(bce_dice_loss(logits, trainer.val_masks))
    assert float(row["val_loss"]) == pytest.approx(expected, rel=0.05)  # batched and in bfloat16 or not
    with pytest.raises(UserError, match="loss"):
        Trainer(small_cfg(synthetic_dataset, area, epochs=2, resume=True), torch.device("cpu"))
    with pytest.raises(UserError, match="bce_dice_area"):
        small_cfg(synthetic_dataset, tmp_path / "x", loss="dice_only")
