"""A 2-process DistributedDataParallel (gloo) training job through torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from train.checkpoint import model_from_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training(synthetic_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "train.train_cli",
           "--data", str(synthetic_dataset), "--out", str(out), "--model", "lunet", "--size", "64x48",
           "--epochs", "2", "--batch-size", "4", "--folds", "3", "--fold", "1", "--threads", "1", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    assert len((out / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs, written once (rank 0)
    model, _ = model_from_checkpoint(out / "best.pt")
    assert model is not None
