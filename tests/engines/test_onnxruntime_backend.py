"""The ONNX Runtime backend (engines/backends/onnxruntime_backend.py): parity with torch for every network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import EngineError, load_engine
from train.models import list_models
from tests.engines._helpers import SMALL_SIZE, load_fp16_or_skip, make_checkpoint, min_dice, random_batch, torch_prob


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_parity_with_torch_fp32(name: str, tmp_path: Path) -> None:
    """Random weights, max |prob diff| < 1e-4 and mask Dice >= 0.99 against the fp32 torch model."""
    size = SMALL_SIZE[name]
    ckpt = make_checkpoint(tmp_path / f"{name}.pt", name, size)
    x = random_batch(size, 2)
    with load_engine(ckpt, "onnxruntime", cache_dir=tmp_path / "cache", dynamic_batch=True) as engine:
        assert (engine.backend, engine.precision, engine.device, engine.name) == ("onnxruntime", "fp32", "cpu", name)
        prob = engine.infer(x)
    ref = torch_prob(ckpt, x)
    assert prob.dtype == np.float32 and prob.shape == ref.shape
    assert np.abs(prob - ref).max() < 1e-4
    assert min_dice(prob, ref) >= 0.99


@pytest.fixture(scope="module")
def lunet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ort")
    return make_checkpoint(folder / "best.pt", "lunet", (128, 96)), folder / "cache"


def test_io_binding_gives_the_same_result(lunet: tuple[Path, Path]) -> None:
    ckpt, cache = lunet
    x = random_batch((128, 96))
    plain = load_engine(ckpt, "onnxruntime", cache_dir=cache)
    bound = load_engine(ckpt, "onnxruntime", cache_dir=cache, io_binding=True)
    first = bound.infer(x)
    second = bound.infer(random_batch((128, 96), seed=1))
    assert np.array_equal(first, plain.infer(x))  # the returned array is not overwritten by the next call
    assert not np.array_equal(first, second)


def test_io_binding_is_ignored_for_a_dynamic_batch(lunet: tuple[Path, Path]) -> None:
    ckpt, cache = lunet
    engine = load_engine(ckpt, "onnxruntime", cache_dir=cache, dynamic_batch=True, io_binding=True)
    assert "io_binding ignored: the batch is dynamic" in engine.describe()["notes"]
    assert engine.infer(random_batch((128, 96), 3)).shape == (3, 1, 96, 128)


def test_threads_and_session_options(lunet: tuple[Path, Path]) -> None:
    import onnxruntime as ort

    ckpt, cache = lunet
    engine = load_engine(ckpt, "onnxruntime", cache_dir=cache, threads=1)
    opts = engine.session.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert engine.session.get_providers() == ["CPUExecutionProvider"]
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.infer(random_batch((128, 96)))


def test_fp16_onnx_runs_on_the_cpu(lunet: tuple[Path, Path]) -> None:
    """FP16 ONNX (float32 I/O) in onnxruntime's CPU provider: parity >= 0.98 Dice against fp32 torch."""
    ckpt, cache = lunet
    engine = load_fp16_or_skip(lambda: load_engine(ckpt, "onnxruntime", "fp16", cache_dir=cache, batch=2))
    assert engine.precision == "fp16"
    x = random_batch((128, 96), 2)
    prob = engine.infer(x)
    ref = torch_prob(ckpt, x)
    assert prob.dtype == np.float32
    assert np.abs(prob - ref).max() < 1e-2
    assert min_dice(prob, ref) >= 0.98
