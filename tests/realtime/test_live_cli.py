"""``mn-live --list-models`` and the default model taken from the bundled manifest."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from engines import registry
from realtime.cli_common import DEFAULT_MODEL, default_model, open_engine
from realtime.live_cli import cli as live_cli
from tests.engines._helpers import make_checkpoint
from train.errors import UserError

ENTRY = {
    "name": "mn-small", "file": "mn-small.pt", "description": "small real-time L-UNet",
    "architecture": {"name": "lunet", "kwargs": {}}, "input_size": [64, 48], "parameters": 1949669,
    "file_bytes": 3_930_819, "sha256": "0" * 64,
    "val": {"protocol": "paper", "dsc": 0.8375, "native_dsc": 0.8288, "csa_median_rel_error": 0.1249,
            "split": "paper:val", "images": 38},
    "smoke": {"stems": ["Pz004-001"], "dsc": [0.92]},
    "cpu_latency_ms": {"p50": 23.9, "p95": 26.1, "fps": 24.0, "machine": "vm: AMD EPYC, 2 cores, no GPU",
                       "results_file": "benchmarks/results/bench.json"},
}


@pytest.fixture
def bundled(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Make a temporary bundled folder the active one; ``write(manifest)`` fills it."""
    folder = tmp_path / "bundled"
    folder.mkdir()

    def write(manifest: dict) -> Path:
        (folder / registry.MANIFEST_NAME).write_text(json.dumps(manifest))
        registry.load_bundled(folder)
        return folder

    try:
        yield write
    finally:
        registry.load_bundled()


def test_list_models_without_bundled_models_explains_model(bundled, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    bundled({"format": 1, "default": "mn-realtime", "models": []})
    assert live_cli(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "no trained model is bundled" in out
    assert "--model" in out and "RUN_DIR/best.pt" in out and "random weights" in out and "lunet" in out


def test_list_models_table(bundled, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    other = {**ENTRY, "name": "mn-other", "file": "mn-other.pt", "cpu_latency_ms": None, "description": "other"}
    bundled({"format": 1, "default": "mn-small", "models": [ENTRY, other]})
    assert live_cli(["--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(h in lines[0] for h in ("name", "MB", "input", "val DSC", "CSA err", "CPU p95", "fps", "description"))
    small = next(x for x in lines if "mn-small" in x)
    assert small.startswith("*")
    for text in ("3.9", "64x48", "0.838", "12.5 %", "26.1 ms", "24.0", "vm: AMD EPYC, 2 cores, no GPU",
                 "small real-time L-UNet"):
        assert text in small, text
    plain = next(x for x in lines if "mn-other" in x)
    assert not plain.startswith("*") and "ms" not in plain  # no latency measured: dashes
    assert any(x.startswith("* default") for x in lines)


def test_list_models_broken_manifest_exit_2(bundled, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    folder = bundled({"format": 1, "models": []})
    (folder / registry.MANIFEST_NAME).write_text("{broken")
    registry.load_bundled(folder)
    assert live_cli(["--list-models"]) == 2
    assert "manifest" in capsys.readouterr().err


def test_default_model_comes_from_the_manifest(bundled, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = argparse.Namespace(model=None, size=None, backend="torch", precision=None, threads=None,
                              cache_dir=str(tmp_path / "cache"))
    bundled({"format": 1, "default": "mn-realtime", "models": []})
    assert default_model() == DEFAULT_MODEL == "mn-realtime"
    with pytest.raises(UserError, match="no trained model is bundled"):
        open_engine(args)
    folder = bundled({"format": 1, "default": "mn-small", "models": [ENTRY]})
    make_checkpoint(folder / "mn-small.pt", "lunet", (64, 48))
    assert default_model() == "mn-small"
    with open_engine(args) as engine:
        assert engine.info.source == str(folder / "mn-small.pt") and engine.size == (64, 48)
    bundled({"format": 1, "default": "not-bundled", "models": [ENTRY]})
    assert default_model() == DEFAULT_MODEL  # a default that is not bundled is ignored
