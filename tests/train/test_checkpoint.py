"""Checkpoints load with weights_only and refuse anything else with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.errors import CheckpointError
from train.models import build_model


def _config(name: str = "lunet") -> dict:
    return {"model": {"name": name, "kwargs": {}}, "preprocessing": {"size": [64, 48]}}


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model("lunet").eval()
    save_checkpoint(tmp_path / "m.pt", model, _config())
    loaded, config = model_from_checkpoint(tmp_path / "m.pt")
    x = torch.randn(1, 1, 48, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert config == _config()
    assert not (tmp_path / "m.pt.tmp").exists()


@pytest.mark.parametrize("content, match", [
    (b"not a checkpoint at all", "cannot read checkpoint .*: not a PyTorch file"),
    (b"", "cannot read checkpoint .*: not a PyTorch file"),
])
def test_corrupt_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m.pt", build_model("lunet"), _config())
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read .*truncated or damaged") as err:
        load_checkpoint(tmp_path / "cut.pt")
    assert "weights_only" not in str(err.value)


def test_foreign_and_pickled_files_are_refused(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an mn-seg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save(build_model("lunet"), tmp_path / "pickled.pt")  # a whole pickled module: code, refused
    with pytest.raises(CheckpointError, match="cannot read .*pickled Python objects") as err:
        load_checkpoint(tmp_path / "pickled.pt")
    assert "PyTorch 2.6" not in str(err.value) and len(str(err.value)) < 300


def test_missing_file_and_wrong_architecture(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    save_checkpoint(tmp_path / "m.pt", build_model("lunet"), _config("unet"))
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(tmp_path / "m.pt")
    save_checkpoint(tmp_path / "x.pt", build_model("lunet"), _config("resnet-9000"))
    with pytest.raises(CheckpointError, match="does not know"):
        model_from_checkpoint(tmp_path / "x.pt")
