"""The engine micro-benchmark: a row per combination, failures kept, speed-ups against torch fp32."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.engines_bench import main


def test_rows_speedups_and_skips(tmp_path: Path, engine_cache: Path) -> None:
    out = tmp_path / "e.json"
    assert main(["--models", "lunet", "--backends", "torch", "onnxruntime", "--precisions", "fp32", "fp16",
                 "--batches", "1", "2", "--size", "64x48", "--repeats", "2", "--warmup", "1",
                 "--cache-dir", str(engine_cache), "--out", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    rows = {(r["backend"], r["precision"], r["batch"]): r for r in result["runs"]}
    assert len(rows) == 10 and result["system"]["cores"] >= 1 and result["threads"] >= 1
    assert rows[("torch-naive", "fp32", 1)]["speedup_vs_naive"] == 1.0
    assert rows[("torch", "fp32", 1)]["speedup_vs_torch_fp32"] == 1.0
    assert rows[("onnxruntime", "fp32", 2)]["status"] == "ok" and rows[("onnxruntime", "fp32", 2)]["median_ms"] > 0
    torch_fp16 = rows[("torch", "fp16", 1)]  # fp16 torch on a CPU is refused, and the row says why
    assert torch_fp16["status"] == "skipped" and "fp16" in torch_fp16["reason"]
