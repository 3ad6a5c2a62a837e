"""The PyTorch backend (engines/backends/torch_backend.py): CPU here, CUDA/fp16/graphs where a GPU is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines import EngineError, load_engine
from tests.engines._helpers import make_checkpoint, min_dice, random_batch, torch_prob

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", "lunet", (128, 96))


@pytest.mark.parametrize("channels_last", [True, False])
def test_cpu_fp32_is_the_sigmoid_of_the_model(ckpt: Path, channels_last: bool) -> None:
    engine = load_engine(ckpt, "torch", device="cpu", channels_last=channels_last)
    assert (engine.backend, engine.precision, engine.device, engine.input_shape) == ("torch", "fp32", "cpu",
                                                                                   (1, 1, 96, 128))
    x = random_batch((128, 96))
    prob = engine.infer(x)
    assert prob.dtype == np.float32 and prob.shape == (1, 1, 96, 128) and prob.flags.c_contiguous
    np.testing.assert_allclose(prob, torch_prob(ckpt, x), atol=1e-5)
    assert engine.describe()["model"] == {"name": "lunet", "kwargs": {}}


def test_static_and_dynamic_batch(ckpt: Path) -> None:
    static = load_engine(ckpt, "torch", device="cpu", batch=2)
    assert static.infer(random_batch((128, 96), 2)).shape[0] == 2
    with pytest.raises(EngineError, match=r"expected float32 \[2, 1, 96, 128\]"):
        static.infer(random_batch((128, 96), 3))
    dynamic = load_engine(ckpt, "torch", device="cpu", dynamic_batch=True)
    assert dynamic.input_shape[0] == -1
    assert dynamic.infer(random_batch((128, 96), 3)).shape == (3, 1, 96, 128)


def test_size_override_checked_against_the_stride(ckpt: Path) -> None:
    assert load_engine(ckpt, "torch", device="cpu", size=(64, 48)).size == (64, 48)
    with pytest.raises(Exception, match="not divisible by 8"):
        load_engine(ckpt, "torch", device="cpu", size=(60, 48))


def test_fp16_on_cpu_is_refused(ckpt: Path) -> None:
    with pytest.raises(EngineError, match="fp16 with the torch backend needs a CUDA GPU.*use precision fp32"):
        load_engine(ckpt, "torch", "fp16", device="cpu")


def test_cuda_graph_on_cpu_is_refused(ckpt: Path) -> None:
    with pytest.raises(EngineError, match="cuda_graph needs a CUDA device"):
        load_engine(ckpt, "torch", device="cpu", cuda_graph=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_gpu_is_refused(ckpt: Path) -> None:
    with pytest.raises(EngineError, match="sees no CUDA GPU; use device cpu"):
        load_engine(ckpt, "torch", device="cuda")


def test_closed_engine(ckpt: Path) -> None:
    with load_engine(ckpt, "torch", device="cpu") as engine:
        pass
    with pytest.raises(EngineError, match="closed"):
        engine.infer(random_batch((128, 96)))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_fp16_parity(ckpt: Path, cuda_graph: bool) -> None:
    engine = load_engine(ckpt, "torch", "fp16", device="cuda", batch=2, cuda_graph=cuda_graph)
    for seed in range(2):  # a replayed graph must read the new input each time
        x = random_batch((128, 96), 2, seed=seed)
        ref = torch_prob(ckpt, x)
        prob = engine.infer(x)
        assert prob.dtype == np.float32 and np.abs(prob - ref).max() < 1e-2
        assert min_dice(prob, ref) >= 0.98
    assert any("CUDA graph" in n for n in engine.describe()["notes"]) == cuda_graph
    engine.close()


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_needs_a_static_batch(ckpt: Path) -> None:
    with pytest.raises(EngineError, match="static input shape"):
        load_engine(ckpt, "torch", device="cuda", dynamic_batch=True, cuda_graph=True)
