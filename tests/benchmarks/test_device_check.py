"""The GPU device check, in its CPU mode: it runs end to end here and writes a complete results file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import benchmarks.device_check as dc


def _result(out: Path) -> dict:
    files = list(out.glob("device-check-*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())


def test_cpu_quick_mode_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dc.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--models", "lunet", "-q"]) == 0
    result = _result(tmp_path)
    assert result["benchmark"] == "device-check" and result["device"] == "cpu" and result["size"] == [32, 32]
    assert result["repeats"] == 2 and result["gpu"]["torch"] and "cudnn" in result["gpu"]
    assert result["system"]["versions"]["torch"] and result["frames"].startswith("2 random")
    rows = {(r["path"], r["mode"], r["batch"]): r for r in result["results"]}
    assert set(rows) == {(p, m, b) for p in ("engine", "direct") for m in dc.MODES for b in (1, 2)}
    for path in ("engine", "direct"):
        for batch in (1, 2):
            r = rows[(path, "fp32", batch)]
            assert "error" not in r and r["n"] == 2 and 0 < r["min_ms"] <= r["median_ms"] <= r["p95_ms"] <= r["max_ms"]
            assert rows[(path, "fp16-graph", batch)]["skipped"] == "CUDA graphs need a CUDA device"
    assert "median_ms" in rows[("direct", "fp16", 1)]  # half precision runs on the CPU directly
    assert "needs a CUDA GPU" in rows[("engine", "fp16", 1)]["skipped"]  # the torch backend refuses it
    (parity,) = result["parity"]
    assert parity["model"] == "lunet" and parity["frames"] == 2
    assert 0.9 <= parity["dice_min"] <= 1.0 and 0 <= parity["max_abs_prob_diff"] < 0.05
    assert result["tensorrt"] is None
    out = capsys.readouterr().out
    assert "parity lunet torch fp16 vs torch fp32" in out and "wrote " in out


def test_real_frames_and_failures_are_recorded(tmp_path: Path, synthetic_dataset: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no engine today")

    monkeypatch.setattr(dc, "_engine", broken)
    argv = ["--out", str(tmp_path), "--device", "cpu", "--quick", "--models", "lunet", "--modes", "fp32",
            "--batches", "1", "--data", str(synthetic_dataset), "--tensorrt", "-q"]
    assert dc.main(argv) == 0
    result = _result(tmp_path)
    assert result["frames"] == f"2 frames of {synthetic_dataset}"
    rows = {r["path"]: r for r in result["results"]}
    assert rows["engine"]["error"] == "RuntimeError: no engine today"  # recorded; the check went on
    assert rows["direct"]["median_ms"] > 0
    assert result["tensorrt"]["available"] is False and result["tensorrt"]["reason"]


def test_summarise_and_compare() -> None:
    s = dc.summarise([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s == {"median_ms": 3.0, "p95_ms": 80.8, "min_ms": 1.0, "max_ms": 100.0, "n": 5}
    ref = np.zeros((2, 1, 4, 4), np.float32)
    ref[0, 0, :2, :2] = 0.9
    other = ref.copy()
    other[0, 0, 0, 0] = 0.4  # one of four mask pixels lost: Dice 6/7
    c = dc.compare(ref, other)
    assert c["dice_min"] == pytest.approx(6 / 7, abs=1e-6)
    assert c["dice_mean"] == pytest.approx((6 / 7 + 1) / 2, abs=1e-6)
    assert c["max_abs_prob_diff"] == pytest.approx(0.5) and c["frames"] == 2 and c["mask_pixels_ref"] == 4


def test_size_the_model_cannot_take_is_refused(tmp_path: Path) -> None:
    from train.errors import UserError

    with pytest.raises(UserError, match="nearest valid size"):
        dc.main(["--out", str(tmp_path), "--device", "cpu", "--models", "unet", "--size", "40x40", "-q"])
