"""Smoke run on 16 real images from ../shared at a small size (skipped where the data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from train.evaluate import cli as eval_cli
from train.train_cli import cli as train_cli


@pytest.fixture
def torch_threads():  # type: ignore[no-untyped-def]
    """Restores torch's thread count after the commands' --threads 1 (process-wide)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.data
@pytest.mark.slow
def test_train_and_eval_16_real_images(real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                       torch_threads: None) -> None:
    out = tmp_path / "run"  # a quarter-width L-UNet on one thread: the real files and split are what is tested
    code = train_cli(["--data", str(real_data), "--out", str(out), "--model", "lunet", "--width", "0.25",
                      "--size", "128x96", "--epochs", "2", "--max-images", "16", "--split", "random",
                      "--val-fraction", "0.25", "--threads", "1", "-q"])
    assert code == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["images"] == 16
    for protocol in ("paper", "native"):
        js = tmp_path / f"{protocol}.json"
        assert eval_cli(["--checkpoint", str(out / "best.pt"), "--data", str(real_data), "--split", "paper",
                         "--protocol", protocol, "--threads", "1", "--json", str(js), "-q"]) == 0
        result = json.loads(js.read_text())
        assert result["n"] == 38  # the paper's validation patients
        dscs = [r["dsc"] for r in result["per_image"]]
        assert len(dscs) == 38 and result["dsc"]["mean"] == pytest.approx(sum(dscs) / 38)  # the mean of its images
        assert all(r["area_true_px"] > 0 for r in result["per_image"])  # native-resolution nerve areas
