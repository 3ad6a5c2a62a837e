"""Smoke run on 16 real images from ../shared at a small size (skipped where the data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train.evaluate import cli as eval_cli
from train.train_cli import cli as train_cli


@pytest.mark.data
@pytest.mark.slow
def test_train_and_eval_16_real_images(real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = train_cli(["--data", str(real_data), "--out", str(out), "--model", "lunet", "--size", "128x96",
                      "--epochs", "2", "--max-images", "16", "--split", "random", "--val-fraction", "0.25", "-q"])
    assert code == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["images"] == 16
    for protocol in ("paper", "native"):
        js = tmp_path / f"{protocol}.json"
        assert eval_cli(["--checkpoint", str(out / "best.pt"), "--data", str(real_data), "--split", "paper",
                         "--protocol", protocol, "--json", str(js), "-q"]) == 0
        result = json.loads(js.read_text())
        assert result["n"] == 38  # the paper's validation patients
        dscs = [r["dsc"] for r in result["per_image"]]
        assert len(dscs) == 38 and result["dsc"]["mean"] == pytest.approx(sum(dscs) / 38)  # the mean of its images
        assert all(r["area_true_px"] > 0 for r in result["per_image"])  # native-resolution nerve areas
