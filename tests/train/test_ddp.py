"""A 2-process DistributedDataParallel (gloo) training job through torchrun."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training(synthetic_dataset: Path, tmp_path: Path) -> None:
    """Two ranks, each on its half of every global batch: gradients averaged, so both end with the same
    weights and BatchNorm statistics (the ones rank 0 saved), validate the same model and so agree on every
    validation number, the best epoch and the scheduler's learning rate."""
    out, keep = tmp_path / "ddp", tmp_path / "ranks"
    keep.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "tests.train._ddp_driver", str(keep),
           "--data", str(synthetic_dataset), "--out", str(out), "--model", "lunet", "--width", "0.25",
           "--size", "64x48", "--epochs", "2", "--batch-size", "4", "--folds", "3", "--fold", "1", "--threads", "1",
           "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    weights = [torch.load(keep / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert any("running_mean" in k for k in weights[0])  # BatchNorm buffers are compared too
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), f"rank 1's {k} differs from rank 0's"
    saved = load_checkpoint(out / "last.pt")["state_dict"]
    for k in weights[0]:
        assert torch.equal(saved[k], weights[0][k]), k
    runs = [json.loads((keep / f"rank{r}.json").read_text()) for r in (0, 1)]
    same = ("epoch", "lr", "val_loss", "val_soft_dice", "val_dsc", "best")
    assert [{k: row[k] for k in same} for row in runs[0]["history"]] == \
           [{k: row[k] for k in same} for row in runs[1]["history"]]
    assert (runs[0]["best_epoch"], runs[0]["best_val"]) == (runs[1]["best_epoch"], runs[1]["best_val"])
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))  # written once, by rank 0: its rows
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx([row["val_loss"] for row in runs[0]["history"]])
