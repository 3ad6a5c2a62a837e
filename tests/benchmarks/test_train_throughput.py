"""The training-throughput benchmark writes a results file with the machine and a rate per model."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.train_throughput import main


def test_writes_results_json(tmp_path: Path) -> None:
    out = tmp_path / "tp.json"
    assert main(["--models", "lunet", "unet", "--size", "64x48", "--batch", "2", "--steps", "1", "--out", str(out),
                 "-q"]) == 0
    result = json.loads(out.read_text())
    assert result["system"]["cpu"] and result["system"]["versions"]["torch"]
    assert [r["model"] for r in result["results"]] == ["lunet", "unet"]
    assert all(r["images_per_s"] > 0 for r in result["results"])
