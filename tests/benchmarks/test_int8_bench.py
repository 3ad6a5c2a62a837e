"""benchmarks.int8_bench end to end on a tiny model and synthetic images: timing rows for every network and
variant, and the mn-eval accuracy of fp32 against int8 by both protocols."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.int8_bench import main
from tests.conftest import make_dataset
from tests.engines.test_int8 import SIZE, bright_checkpoint


def test_int8_bench_writes_timing_and_accuracy(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MN_SEG_CACHE", str(tmp_path / "cache"))
    data = make_dataset(tmp_path / "data", n_patients=3, per_patient=2, size=SIZE)
    ckpt = bright_checkpoint(tmp_path / "bright.pt")
    out = tmp_path / "int8.json"
    assert main(["--model", str(ckpt), "--data", str(data), "--split", "none", "--calibrate", str(data),
                 "--threads", "1", "--calls", "10", "--warmup", "1", "--frames", "2", "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    timing = result["timing"]["model"]
    assert {"fp32", "fp32_dynamic_batch", "int8"} <= timing.keys() and timing["int8"]["calls"] == 10
    assert timing["speedup_int8_vs_fp32"] > 0 and result["engines"]["int8"]["precision"] == "int8"
    for protocol in ("paper", "native"):
        acc = result["accuracy"][protocol]
        assert acc["fp32"]["n"] == acc["int8"]["n"] == 6
        assert abs(acc["dsc_change"]) < 0.05 and "--precision int8" in acc["commands"][1]
    assert result["int8_vs_fp32_mask_dice"]["frames"] == 6 and result["int8_vs_fp32_mask_dice"]["min"] >= 0.9
    assert result["command"].startswith("python -m benchmarks.int8_bench --model")
