"""mn-bench: statistics, combinations, a tiny real run, failures kept, drops, speed-ups, --engines-only."""

from __future__ import annotations

import csv
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import bench, bench_cli, engines_bench
from realtime.record import STAGES
from train.errors import UserError

CONTRACT_RUN_KEYS = {"model", "backend", "precision", "size", "mode", "frames", "dropped", "fps",
                     "speedup_vs_baseline", "status", "latency_ms", "reason", "batch", "repeats", "notes", "baseline",
                     "tail_ms", "flatness_ms"}
STAT_KEYS = {"p50", "p90", "p95", "p99", "max", "mean", "std"}


@pytest.fixture(scope="module")
def cache(engine_cache: Path) -> Path:
    """The benchmark tests' engine cache (tests/benchmarks/conftest.py): the random checkpoint and its ONNX
    exports are made once."""
    return engine_cache


@pytest.fixture
def torch_threads():  # type: ignore[no-untyped-def]
    """Restores torch's thread count after a run with --threads (the torch backend sets it process-wide)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------ arithmetic
def test_summary_stats_on_known_values() -> None:
    s = bench.summary_stats(np.arange(1, 101, dtype=float))  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1)
    assert s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01) and s["p10"] == pytest.approx(10.9)
    assert s["max"] == 100 and s["mean"] == pytest.approx(50.5) and s["std"] == pytest.approx(np.std(np.arange(1, 101)))
    assert s["tail_ms"] == pytest.approx(100 - 95.05) and s["flatness_ms"] == pytest.approx(90.1 - 10.9)
    assert s["n"] == 100
    assert bench.summary_stats([5.0, float("nan"), 5.0])["flatness_ms"] == 0.0  # NaNs ignored
    empty = bench.summary_stats([])
    assert empty["p50"] is None and empty["tail_ms"] is None and empty["n"] == 0


def _row(backend: str, mode: str, fps: float | None, p50: float | None, baseline: bool = False,
         status: str = "ok") -> dict:
    return {"model": "m", "size": "64x48", "backend": backend, "mode": mode, "fps": fps, "baseline": baseline,
            "status": status, "latency_ms": {"e2e": {"p50": p50}} if p50 else {}}


def test_speedups_against_the_baseline_of_the_same_mode() -> None:
    rows = [_row("torch-naive", "offline", 10.0, 100.0, baseline=True), _row("onnxruntime", "offline", 25.0, 40.0),
            _row("torch-naive", "realtime", 8.0, 120.0, baseline=True), _row("onnxruntime", "realtime", 24.0, 30.0),
            _row("tensorrt", "realtime", None, None, status="failed")]
    bench.add_speedups(rows)
    assert [r["speedup_vs_baseline"] for r in rows] == [1.0, 2.5, 1.0, 4.0, None]
    rows[0]["status"] = "failed"  # no baseline, no speed-up
    bench.add_speedups(rows)
    assert rows[1]["speedup_vs_baseline"] is None and rows[3]["speedup_vs_baseline"] == 4.0


def test_plan_groups_with_the_baseline_first_and_batches_offline_only() -> None:
    combos = bench.plan(["lunet"], ["onnxruntime", "torch"], ["fp32"], [(64, 48)], bench.MODES, batches=[1, 4])
    assert [c.mode for c in combos] == ["offline"] * 5 + ["realtime"] * 3
    assert combos[0].baseline and combos[0].backend == engines_bench.NAIVE[0] and combos[5].baseline
    assert {c.batch for c in combos if c.mode == "realtime"} == {1}
    assert sorted(c.batch for c in combos if c.mode == "offline" and not c.baseline) == [1, 1, 4, 4]
    assert bench.plan(["lunet"], ["torch"], [None], [None], ["offline"], baseline=False)[0].size == (384, 288)


# ------------------------------------------------------------------------------ a tiny real run
def test_tiny_run_writes_every_key_and_the_table(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture,
                                                torch_threads: None) -> None:
    out, frames_csv, plot = tmp_path / "bench.json", tmp_path / "frames.csv", tmp_path / "bench.png"
    argv = ["--models", "lunet", "--sizes", "64x48", "--frames", "10", "--warmup", "2", "--mode", "both",
            "--backends", "onnxruntime", "torch", "tensorrt", "--precisions", "fp32", "--threads", "1",
            "--cache-dir", str(cache), "--json", str(out), "--csv", str(frames_csv), "--plot", str(plot), "-q"]
    assert bench_cli.main(argv) == 0
    result = json.loads(out.read_text())
    assert {"system", "runs", "command", "date", "timing"} <= set(result)
    assert "CUDA" in result["timing"] and result["command"].startswith("mn-bench --models lunet")
    assert {"cpu", "cores", "gpu", "gpu_driver", "versions", "threads"} <= set(result["system"])
    runs = result["runs"]
    assert len(runs) == 8  # (baseline + 3 backends) x 2 modes
    ok = [r for r in runs if r["status"] == "ok"]
    assert len(ok) == 6
    for r in runs:
        assert CONTRACT_RUN_KEYS <= set(r), CONTRACT_RUN_KEYS - set(r)
    for r in ok:
        assert r["frames"] == 10 and r["repeats"] == 1 and r["size"] == "64x48" and r["fps"] > 0
        assert set(r["latency_ms"]) == {"e2e", *STAGES}
        for stats in r["latency_ms"].values():
            assert STAT_KEYS <= set(stats) and stats["n"] == 10
        assert r["latency_ms"]["render"]["p50"] > 0  # the overlay is drawn without a video output
        assert r["tail_ms"] == pytest.approx(r["latency_ms"]["e2e"]["max"] - r["latency_ms"]["e2e"]["p95"])
        assert any("random weights" in n for n in r["notes"])
    trt = [r for r in runs if r["backend"] == "tensorrt"]
    if importlib.util.find_spec("tensorrt") is None:
        assert all(r["status"] == "failed" and "tensorrt" in r["reason"].lower() for r in trt)
    # the baseline row of each mode, and speed-ups relative to it
    for mode in bench.MODES:
        base = [r for r in ok if r["mode"] == mode and r["baseline"]]
        assert len(base) == 1 and base[0]["backend"] == "torch-naive" and base[0]["speedup_vs_baseline"] == 1.0
        for r in (r for r in ok if r["mode"] == mode and not r["baseline"]):
            expected = (r["fps"] / base[0]["fps"] if mode == "offline"
                        else base[0]["latency_ms"]["e2e"]["p50"] / r["latency_ms"]["e2e"]["p50"])
            assert r["speedup_vs_baseline"] == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert "e2e p50" in printed and "speed-up" in printed and "failed" in printed and "random weights" in printed
    assert "onnxruntime" in printed and "realtime" in printed
    with frames_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 * 12 and set(rows[0]) == set(bench.CSV_COLUMNS)
    assert sum(r["warmup"] == "1" for r in rows) == 6 * 2
    assert plot.stat().st_size > 10_000


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch fp16 runs on a CUDA GPU")
def test_failing_combination_keeps_its_row(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "b.json"
    assert bench_cli.main(["--models", "lunet", "--sizes", "64x48", "--frames", "3", "--warmup", "1", "--mode",
                           "offline", "--backends", "torch", "--precisions", "fp16", "--cache-dir", str(cache),
                           "--json", str(out), "--no-plot", "-q"]) == 0
    base, fp16 = json.loads(out.read_text())["runs"]
    assert base["baseline"] and base["status"] == "ok" and base["frames"] == 3
    assert fp16["status"] == "failed" and "fp16" in fp16["reason"] and fp16["speedup_vs_baseline"] is None


def test_cuda_graph_reaches_the_engine_and_not_the_baseline(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "b.json"
    assert bench_cli.main(["--models", "lunet", "--sizes", "64x48", "--frames", "3", "--warmup", "1", "--mode",
                           "offline", "--backends", "torch", "--precisions", "fp32", "--cuda-graph", "--cache-dir",
                           str(cache), "--json", str(out), "--no-plot", "-q"]) == 0
    base, graph = json.loads(out.read_text())["runs"]
    assert base["baseline"] and base["status"] == "ok"  # the baseline never replays a graph
    assert graph["status"] == "failed" and "cuda_graph needs a CUDA device" in graph["reason"]  # on this CPU


def test_int8_rows_calibrate_on_the_given_frames_and_fail_without_them(tmp_path: Path, cache: Path) -> None:
    import cv2

    from realtime.sources.phantom import PhantomSource

    frames = tmp_path / "frames"
    frames.mkdir()
    ph = PhantomSource(seed=2)
    for i in range(4):
        cv2.imwrite(str(frames / f"f{i}.png"), ph.render(i * 5)[0])
    out = tmp_path / "b.json"
    common = ["--models", "lunet", "--sizes", "64x48", "--frames", "3", "--warmup", "1", "--mode", "offline",
              "--backends", "onnxruntime", "--precisions", "fp32", "int8", "--no-baseline", "--cache-dir", str(cache),
              "--json", str(out), "--no-plot", "-q"]
    assert bench_cli.main([*common, "--calibrate", str(frames)]) == 0
    report = json.loads(out.read_text())
    fp32, int8 = report["runs"]
    assert (fp32["precision"], fp32["status"], int8["precision"], int8["status"]) == ("fp32", "ok", "int8", "ok")
    assert int8["frames"] == 3 and report["settings"]["calibrate"] == str(frames)
    assert bench_cli.main(common) == 0  # without frames to calibrate on: the int8 row fails and says why
    fp32, int8 = json.loads(out.read_text())["runs"]
    assert fp32["status"] == "ok" and int8["status"] == "failed" and "calibrat" in int8["reason"]


def test_slow_engine_drops_frames_in_the_realtime_mode(cache: Path) -> None:
    def slow(combo: bench.Combo, settings: bench.Settings):
        engine = bench.load_bench_engine(combo, settings)
        infer = engine.infer

        def sleepy(x: np.ndarray) -> np.ndarray:
            time.sleep(0.1)  # 100 ms a frame against a 41.7 ms frame period at 24 fps
            return infer(x)

        engine.infer = sleepy
        return engine

    settings = bench.Settings(frames=6, warmup=2, cache_dir=str(cache))
    combos = bench.plan(["lunet"], ["onnxruntime"], ["fp32"], [(64, 48)], ["realtime"], baseline=False)
    (run,) = bench.Runner(settings, engine_factory=slow).run(combos)
    row = run.row
    assert row["status"] == "ok" and row["frames"] == 6 and row["dropped"] > 0
    assert row["frames_seen"] == row["frames"] + row["dropped"]
    assert row["latency_ms"]["infer"]["p50"] >= 100 and row["fps"] < 12


def test_a_stop_request_ends_the_benchmark(cache: Path) -> None:
    runner = bench.Runner(bench.Settings(frames=2, warmup=0, cache_dir=str(cache)))
    runner.request_stop("test")
    assert runner.run(bench.plan(["lunet"], ["onnxruntime"], ["fp32"], [(64, 48)], ["offline"])) == []


# ------------------------------------------------------------------------------ CLI
def test_engines_only_delegates_to_engines_bench(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    calls = []
    real_run = engines_bench.run

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(engines_bench, "run", spy)
    out = tmp_path / "e.json"
    assert bench_cli.main(["--engines-only", "--models", "lunet", "--backends", "onnxruntime", "--precisions", "fp32",
                           "--sizes", "64x48", "32x32", "--batch", "1", "2", "--repeats", "2", "--warmup", "1",
                           "--cache-dir", str(cache), "--json", str(out), "-q"]) == 0
    assert [c[0][:7] for c in calls] == [(["lunet"], ["onnxruntime"], ["fp32"], [1, 2], size, 2, 1)
                                         for size in ((64, 48), (32, 32))]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "engines" and len(result["runs"]) == 8  # (naive + onnxruntime) x 2 batches x 2 sizes
    assert all(r["status"] == "ok" for r in result["runs"])
    assert "median ms" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["--frames", "0"],
    ["--models", "missing-model.pt"],
    ["--models", "lunet", "--sizes", "65x48"],        # not a multiple of the network's stride
    ["--sizes", "64by48"],
    ["--source", "/nonexistent/clip.mp4"],
    ["--backends", "nope"],
    ["--engines-only", "--models", "some.onnx"],
])
def test_bad_arguments_exit_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        code = bench_cli.cli([*argv, "--json", str(tmp_path / "x.json"), "-q"])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_help_builds_without_torch_or_the_pipeline() -> None:
    """mn-bench --help (and the engines benchmark's) answer at once: torch, the engines and the pipeline are
    imported by the modes that run."""
    import subprocess
    import sys

    code = ("import sys; from benchmarks import bench_cli, engines_bench; bench_cli.build_parser(); "
            "engines_bench.build_parser(); print(sorted(m for m in ('torch', 'onnxruntime', 'benchmarks.bench', "
            "'realtime.pipeline') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_engines_bench_refuses_an_unknown_architecture() -> None:
    with pytest.raises(UserError, match="unknown model 'vgg'.*lunet"):
        engines_bench.run(["vgg"], ["torch"], ["fp32"], [1], (64, 48), 1, 0, 1, None)
