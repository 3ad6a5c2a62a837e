"""Engine.check_input and the lifetime of the Engine interface (engines/base.py)."""

from __future__ import annotations

import numpy as np
import pytest

from engines import Engine, EngineError, EngineInfo


class Identity(Engine):
    """The smallest engine: returns its input."""

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()


def make(n: int = 1, max_batch: int | None = None) -> Identity:
    return Identity(EngineInfo(name="id", backend="test", precision="fp32", device="cpu",
                               input_shape=(n, 1, 48, 64), max_batch=max_batch))


def test_valid_input_runs_and_describe_is_json_able() -> None:
    engine = make()
    x = np.zeros((1, 1, 48, 64), np.float32)
    assert engine.infer(x).shape == (1, 1, 48, 64)
    assert engine.size == (64, 48)
    d = engine.describe()
    assert d["input_shape"] == [1, 1, 48, 64] and d["backend"] == "test" and d["notes"] == []


@pytest.mark.parametrize(("batch", "match"), [
    (np.zeros((1, 1, 48, 64), np.float64), "dtype float64"),
    (np.zeros((1, 1, 48, 64), np.uint8), "dtype uint8"),
    (np.zeros((1, 48, 64), np.float32), r"shape \[1, 48, 64\]"),
    (np.zeros((1, 3, 48, 64), np.float32), r"shape \[1, 3, 48, 64\]"),
    (np.zeros((1, 1, 96, 128), np.float32), r"expected float32 \[1, 1, 48, 64\]"),
    (np.zeros((2, 1, 48, 64), np.float32), r"got shape \[2, 1, 48, 64\]"),
    ([[0.0]], "numpy array"),
])
def test_check_input_errors(batch: object, match: str) -> None:
    with pytest.raises(EngineError, match=match):
        make().infer(batch)  # type: ignore[arg-type]


def test_dynamic_batch_and_max_batch() -> None:
    engine = make(n=-1, max_batch=4)
    assert engine.infer(np.zeros((3, 1, 48, 64), np.float32)).shape[0] == 3
    with pytest.raises(EngineError, match="exceeds this engine's maximum 4"):
        engine.infer(np.zeros((5, 1, 48, 64), np.float32))
    with pytest.raises(EngineError, match="expected float32 \\[N, 1, 48, 64\\]"):
        engine.infer(np.zeros((0, 1, 48, 64), np.float32))


def test_closed_engine_refuses_and_context_manager_closes() -> None:
    with make() as engine:
        engine.infer(np.zeros((1, 1, 48, 64), np.float32))
    with pytest.raises(EngineError, match="is closed"):
        engine.infer(np.zeros((1, 1, 48, 64), np.float32))


def test_import_engines_is_light() -> None:
    """``import engines`` pulls in neither onnxruntime, onnx, tensorrt, av nor torch."""
    import subprocess
    import sys

    code = ("import sys, engines; heavy = [m for m in ('onnxruntime', 'onnx', 'tensorrt', 'av', 'torch') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
