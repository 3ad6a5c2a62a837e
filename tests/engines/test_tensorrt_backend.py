"""TensorRT backend.

Without TensorRT (this CPU machine): availability reporting and install hints, ONNX checks, the
network mode chosen per TensorRT version, the plan cache logic of ``build_plan`` and the build
sequence against a stub that records the TensorRT calls, and the sidecar refusals of
``TensorRTEngine``. With TensorRT and a CUDA GPU (marked ``tensorrt``): a real L-UNet build at
64x48, run and compared with onnxruntime and PyTorch.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import engines.backends.tensorrt_backend as trtb
from engines.base import EngineError
from engines.cache import read_sidecar, sidecar_path, write_sidecar

RUNNING = {"trt_version": "10.13.0.35", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
AVAILABLE, REASON = trtb.tensorrt_available()


# ---------------------------------------------------------------------------------------------
# helpers: a tiny ONNX, a TensorRT stub, a pretend GPU
# ---------------------------------------------------------------------------------------------

def tiny_onnx(path: Path, *, precision: str = "fp32", batch: int | str = "N", size: tuple[int, int] = (64, 48)) -> Path:
    """``sigmoid(conv3x3(x))`` with float32 I/O; fp16 weights (and casts) for ``precision="fp16"``."""
    w, h = size
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1, 1, 3, 3)).astype(np.float16 if precision == "fp16" else np.float32)
    init = helper.make_tensor("w", TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT,
                              weight.shape, weight.tobytes(), raw=True)
    nodes = []
    x = "image"
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["image"], ["x16"], to=TensorProto.FLOAT16))
        x = "x16"
    nodes += [helper.make_node("Conv", [x, "w"], ["logits"], pads=[1, 1, 1, 1]),
              helper.make_node("Sigmoid", ["logits"], ["p"])]
    nodes.append(helper.make_node("Cast", ["p"], ["prob"], to=TensorProto.FLOAT))
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, h, w])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [batch, 1, h, w])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class Recorder:
    """Records the TensorRT calls made by ``build_plan`` (the API of TensorRT 10/11's Python docs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.parse_ok = True
        self.build_result: bytes | None = b"PLAN-BYTES"
        self.timing_cache_ok = True


def fake_tensorrt(version: str = "10.13.0.35", *, strongly_typed: bool = True, recorder: Recorder | None = None,
                  explicit_batch: bool = True) -> types.ModuleType:
    """A stand-in ``tensorrt`` module: enough of the documented API for the build path."""
    rec = recorder or Recorder()
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.recorder = rec  # type: ignore[attr-defined]

    flags = {}
    if strongly_typed:
        flags["STRONGLY_TYPED"] = 5
    if explicit_batch:
        flags["EXPLICIT_BATCH"] = 0
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)  # type: ignore[attr-defined]
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")  # type: ignore[attr-defined]
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")  # type: ignore[attr-defined]

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger  # type: ignore[attr-defined]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+timings"

    class Profile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            rec.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Config:
        def __init__(self) -> None:
            self.cache: TimingCache | None = None

        def set_flag(self, flag: str) -> None:
            rec.calls.append(("set_flag", flag))

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            rec.calls.append(("set_memory_pool_limit", pool, size))

        def create_timing_cache(self, data: bytes) -> TimingCache:
            rec.calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            rec.calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return rec.timing_cache_ok or not cache.data

        def get_timing_cache(self) -> TimingCache:
            assert self.cache is not None
            return self.cache

        def add_optimization_profile(self, profile: Profile) -> int:
            rec.calls.append(("add_optimization_profile",))
            return 0

    class Builder:
        def __init__(self, logger: Any) -> None:
            assert isinstance(logger, ILogger)
            rec.calls.append(("Builder",))

        def create_network(self, flags: int = 0) -> object:
            rec.calls.append(("create_network", flags))
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: object, config: Config) -> bytes | None:
            rec.calls.append(("build_serialized_network",))
            return rec.build_result

    class OnnxParser:
        num_errors = 2

        def __init__(self, network: object, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            rec.calls.append(("parse_from_file", path))
            return rec.parse_ok

        def get_error(self, i: int) -> str:
            return f"In node {i}: unsupported operator"

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> None:
            rec.calls.append(("deserialize_cuda_engine", len(data)))
            return None  # what TensorRT returns for a plan it cannot load

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime  # type: ignore[attr-defined]
    return trt


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError


@pytest.fixture
def pretend_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch reports an H100 (nothing is run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: RUNNING["gpu_name"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))


@pytest.fixture
def stub_trt(monkeypatch: pytest.MonkeyPatch, pretend_gpu: None) -> types.ModuleType:
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trtb, "_TRT_LOGGER", None)
    return trt


# ---------------------------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------------------------

def test_missing_tensorrt_is_reported_with_the_install_hint(no_tensorrt: None) -> None:
    ok, reason = trtb.tensorrt_available()
    assert not ok
    assert reason == ("tensorrt is not installed: pip install 'mn-seg[tensorrt]' on a machine with an NVIDIA GPU "
                      "and driver")


def test_missing_gpu_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, reason = trtb.tensorrt_available()
    assert not ok and reason.startswith("no CUDA GPU visible to PyTorch")


def test_available_with_tensorrt_and_gpu(stub_trt: types.ModuleType) -> None:
    assert trtb.tensorrt_available() == (True, f"TensorRT 10.13.0.35 on {RUNNING['gpu_name']}")
    assert trtb.running_environment() == RUNNING


def test_build_and_load_without_tensorrt_raise_the_install_hint(no_tensorrt: None, tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(EngineError, match=r"pip install 'mn-seg\[tensorrt\]'"):
        trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path)
    with pytest.raises(EngineError, match=r"pip install 'mn-seg\[tensorrt\]'"):
        trtb.TensorRTEngine(tmp_path / "x.plan")
    with pytest.raises(EngineError, match="tensorrt is not installed"):
        trtb.running_environment()


def test_tensorrt_without_gpu_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError, match="needs a CUDA GPU: no CUDA GPU visible"):
        trtb.build_plan(tmp_path / "m.onnx", precision="fp32", input_shape=(1, 1, 48, 64))


def test_import_does_not_import_tensorrt() -> None:
    import subprocess

    code = "import sys, engines, engines.backends.tensorrt_backend; sys.exit('tensorrt' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0


def test_tensorrt_messages_go_to_python_logging(stub_trt: types.ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    logger = trtb._logger(stub_trt)
    assert trtb._logger(stub_trt) is logger  # one logger per process
    sev = stub_trt.ILogger.Severity
    with caplog.at_level(logging.DEBUG, logger="engines.tensorrt"):
        for level, text in ((sev.ERROR, "e"), (sev.WARNING, "w"), (sev.INFO, "i"), (sev.VERBOSE, "v")):
            logger.log(level, text)
    assert [(r.levelname, r.message) for r in caplog.records] == [("ERROR", "e"), ("WARNING", "w"), ("DEBUG", "i")]


# ---------------------------------------------------------------------------------------------
# network mode per TensorRT version, ONNX checks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, strongly, precision, expected", [
    ("11.1.0", True, "fp16", (0, False, "strongly typed (always on")),
    ("10.13.0.35", True, "fp16", (1 << 5, False, "strongly typed (NetworkDefinitionCreationFlag")),
    ("10.13.0.35", True, "fp32", (1 << 5, False, "strongly typed")),
    ("8.6.1", False, "fp16", (1 << 0, True, "weakly typed with BuilderFlag.FP16")),
    ("8.6.1", False, "fp32", (1 << 0, False, "weakly typed, fp32")),
])
def test_network_mode(version: str, strongly: bool, precision: str, expected: tuple) -> None:
    flags, fp16_flag, mode = trtb._network_mode(fake_tensorrt(version, strongly_typed=strongly), precision)
    assert (flags, fp16_flag) == expected[:2] and mode.startswith(expected[2])


def test_inspect_onnx(tmp_path: Path) -> None:
    s32 = trtb.inspect_onnx(tiny_onnx(tmp_path / "a.onnx"))
    assert s32.inputs == [("image", (None, 1, 48, 64), "FLOAT")] and s32.outputs[0][2] == "FLOAT"
    assert s32.precision == "fp32" and s32.float32_weights == 9
    s16 = trtb.inspect_onnx(tiny_onnx(tmp_path / "b.onnx", precision="fp16", batch=2))
    assert s16.precision == "fp16" and s16.inputs[0][1] == (2, 1, 48, 64)
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(EngineError, match="cannot read ONNX"):
        trtb.inspect_onnx(tmp_path / "bad.onnx")


@pytest.mark.parametrize("onnx_kwargs, precision, shape, max_batch, match", [
    ({}, "fp16", (1, 1, 48, 64), None, r"holds fp32 weights .* mn-export --precision fp16"),
    ({"precision": "fp16"}, "fp32", (1, 1, 48, 64), None, r"holds fp16 weights .* --precision fp32"),
    ({"batch": 1}, "fp32", (1, 1, 48, 64), 8, "fixed batch of 1"),
    ({"batch": 2}, "fp32", (4, 1, 48, 64), None, "fixed batch of 2"),
    ({}, "fp32", (1, 1, 96, 128), None, r"mn-export --size WxH"),
])
def test_onnx_that_does_not_fit_the_request_is_refused(tmp_path: Path, onnx_kwargs: dict, precision: str,
                                                        shape: tuple, max_batch: int | None, match: str) -> None:
    path = tiny_onnx(tmp_path / "m.onnx", **onnx_kwargs)
    with pytest.raises(EngineError, match=match):
        trtb._check_onnx(trtb.inspect_onnx(path), path, precision, shape, max_batch, strongly_typed=True)


def test_weakly_typed_fallback_accepts_fp32_onnx_for_fp16(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "m.onnx")
    name, dims = trtb._check_onnx(trtb.inspect_onnx(path), path, "fp16", (1, 1, 48, 64), None, strongly_typed=False)
    assert name == "image" and dims == (None, 1, 48, 64)


# ---------------------------------------------------------------------------------------------
# build_plan against the stub: cache hits do not build, misses build with the documented calls
# ---------------------------------------------------------------------------------------------

def test_cached_plan_is_returned_without_building(stub_trt: types.ModuleType, tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    key = trtb.plan_key(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), running=RUNNING)
    plan = cache / key.plan_filename("lunet")
    cache.mkdir()
    plan.write_bytes(b"a plan built earlier")
    write_sidecar(plan, key)
    stub_trt.Builder = None  # building would fail loudly

    got = trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=cache,
                          model_name="lunet")
    assert got == plan and plan.read_bytes() == b"a plan built earlier"
    assert stub_trt.recorder.calls == []


def test_build_sequence_and_sidecar(stub_trt: types.ModuleType, tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    onnx_path = tiny_onnx(tmp_path / "m.onnx", precision="fp16")
    cache = tmp_path / "cache"
    config = {"model": {"name": "lunet", "kwargs": {}}}
    with caplog.at_level(logging.INFO):
        plan = trtb.build_plan(onnx_path, precision="fp16", input_shape=(2, 1, 48, 64), max_batch=8, workspace_mb=512,
                               cache_dir=cache, checkpoint_config=config, checkpoint_path=tmp_path / "best.pt")
    assert "building TensorRT engine for m.onnx" in caplog.text and "several minutes" in caplog.text
    assert plan.parent == cache and plan.name.startswith("lunet-fp16-64x48-b1-8-trt10.13.0.35-")
    assert plan.read_bytes() == b"PLAN-BYTES"
    calls = stub_trt.recorder.calls
    names = [c[0] for c in calls]
    assert ("create_network", 1 << 5) in calls  # STRONGLY_TYPED
    assert ("set_flag", "FP16") not in calls  # no FP16 builder flag: the ONNX carries the precision
    assert ("parse_from_file", str(onnx_path)) in calls
    assert ("set_memory_pool_limit", "WORKSPACE", 512 << 20) in calls
    assert ("set_shape", "image", (1, 1, 48, 64), (2, 1, 48, 64), (8, 1, 48, 64)) in calls
    assert names.index("add_optimization_profile") < names.index("build_serialized_network")
    assert ("create_timing_cache", b"") in calls
    timing = list(cache.glob("timing-*.cache"))
    assert len(timing) == 1 and timing[0].read_bytes() == b"+timings"

    sidecar = read_sidecar(plan)
    assert sidecar["precision"] == "fp16" and sidecar["max_batch"] == 8 and sidecar["input_shape"] == [2, 1, 48, 64]
    assert sidecar["checkpoint_config"] == config and sidecar["extra"]["workspace_mb"] == 512
    assert sidecar["extra"]["network_mode"].startswith("strongly typed")
    assert "--checkpoint" in sidecar["rebuild_command"]
    assert "--dynamic-batch --batch 8 --workspace-mb 512" in sidecar["rebuild_command"]

    # second call: cached, no new build; the timing cache is reloaded on a forced rebuild
    stub_trt.recorder.calls.clear()
    assert trtb.build_plan(onnx_path, precision="fp16", input_shape=(2, 1, 48, 64), max_batch=8, workspace_mb=512,
                           cache_dir=cache, checkpoint_config=config) == plan
    assert stub_trt.recorder.calls == []
    trtb.build_plan(onnx_path, precision="fp16", input_shape=(2, 1, 48, 64), max_batch=8, cache_dir=cache,
                    checkpoint_config=config, force=True)
    assert ("create_timing_cache", b"+timings") in stub_trt.recorder.calls
    assert not any(c[0] == "set_memory_pool_limit" for c in stub_trt.recorder.calls)


def test_static_onnx_builds_without_profile(stub_trt: types.ModuleType, tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "m.onnx", batch=1)
    trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path)
    assert not any(c[0] in ("set_shape", "add_optimization_profile") for c in stub_trt.recorder.calls)


def test_dynamic_onnx_without_max_batch_gets_a_fixed_profile(stub_trt: types.ModuleType, tmp_path: Path) -> None:
    trtb.build_plan(tiny_onnx(tmp_path / "m.onnx"), precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path)
    assert ("set_shape", "image", (1, 1, 48, 64), (1, 1, 48, 64), (1, 1, 48, 64)) in stub_trt.recorder.calls


def test_stale_cached_plan_is_rebuilt(stub_trt: types.ModuleType, tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    plan = trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path)
    sidecar_path(plan).write_text("{broken")
    stub_trt.recorder.calls.clear()
    assert trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path) == plan
    assert ("build_serialized_network",) in stub_trt.recorder.calls
    assert read_sidecar(plan)["precision"] == "fp32"


def test_parse_and_build_failures_are_reported(stub_trt: types.ModuleType, tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    stub_trt.recorder.parse_ok = False
    with pytest.raises(EngineError, match=r"cannot parse m.onnx:\n  In node 0: unsupported operator\n  In node 1"):
        trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path)
    stub_trt.recorder.parse_ok = True
    stub_trt.recorder.build_result = None
    with pytest.raises(EngineError, match="could not build"):
        trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.plan"))


def test_mismatched_timing_cache_starts_empty(stub_trt: types.ModuleType, tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path)
    stub_trt.recorder.timing_cache_ok = False
    stub_trt.recorder.calls.clear()
    trtb.build_plan(onnx_path, precision="fp32", input_shape=(1, 1, 48, 64), cache_dir=tmp_path, force=True)
    creates = [c for c in stub_trt.recorder.calls if c[0] == "create_timing_cache"]
    assert creates == [("create_timing_cache", b"+timings"), ("create_timing_cache", b"")]


def test_fp16_on_tensorrt8_uses_the_builder_flag(monkeypatch: pytest.MonkeyPatch, pretend_gpu: None,
                                                 tmp_path: Path) -> None:
    trt = fake_tensorrt("8.6.1", strongly_typed=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trtb, "_TRT_LOGGER", None)
    plan = trtb.build_plan(tiny_onnx(tmp_path / "m.onnx"), precision="fp16", input_shape=(1, 1, 48, 64),
                           cache_dir=tmp_path)
    assert ("set_flag", "FP16") in trt.recorder.calls and ("create_network", 1) in trt.recorder.calls
    assert "BuilderFlag.FP16" in read_sidecar(plan)["extra"]["network_mode"]


# ---------------------------------------------------------------------------------------------
# TensorRTEngine refuses plans it cannot trust, before deserialising them
# ---------------------------------------------------------------------------------------------

def _plan_with_sidecar(tmp_path: Path, input_shape: tuple = (1, 1, 48, 64), max_batch: int | None = None,
                       **running: str) -> Path:
    key = trtb.plan_key(tiny_onnx(tmp_path / "m.onnx"), precision="fp16", input_shape=input_shape,
                        max_batch=max_batch, running={**RUNNING, **running})
    plan = tmp_path / key.plan_filename("lunet")
    plan.write_bytes(b"engine")
    write_sidecar(plan, key, checkpoint_path=tmp_path / "best.pt", model_name="lunet",
                  checkpoint_config={"model": {"name": "lunet", "kwargs": {}}})
    return plan


@pytest.mark.parametrize("running", [{"trt_version": "10.3.0.26"}, {"gpu_name": "NVIDIA L4"},
                                     {"compute_capability": "8.9"}])
def test_engine_refuses_a_plan_built_elsewhere(stub_trt: types.ModuleType, tmp_path: Path, running: dict) -> None:
    plan = _plan_with_sidecar(tmp_path, **running)
    for trust in (False, True):  # trust_plan does not override a mismatch
        with pytest.raises(EngineError, match="does not match this machine") as info:
            trtb.TensorRTEngine(plan, trust_plan=trust)
        assert f"mn-export --checkpoint {(tmp_path / 'best.pt').resolve()} --format engine --precision fp16 " \
               f"--size 64x48 --cache-dir {tmp_path.resolve()}" in str(info.value)
    assert not any(c[0] == "deserialize_cuda_engine" for c in stub_trt.recorder.calls)


def test_engine_refuses_a_plan_without_sidecar_unless_trusted(stub_trt: types.ModuleType, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    plan = _plan_with_sidecar(tmp_path)
    sidecar_path(plan).unlink()
    with pytest.raises(EngineError, match="no sidecar"):
        trtb.TensorRTEngine(plan)
    assert stub_trt.recorder.calls == []
    with caplog.at_level(logging.WARNING), pytest.raises(EngineError, match="could not deserialise"):
        trtb.TensorRTEngine(plan, trust_plan=True)  # the stub runtime, like TensorRT, returns None for bad bytes
    assert "without a sidecar (trust_plan=True)" in caplog.text
    assert ("deserialize_cuda_engine", len(b"engine")) in stub_trt.recorder.calls


def test_engine_with_missing_plan(stub_trt: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist; build it with mn-export"):
        trtb.TensorRTEngine(tmp_path / "none.plan")


# ---------------------------------------------------------------------------------------------
# TensorRTEngine's buffers, shapes and CUDA graph, on the CPU: a stub runtime whose "kernel" reads
# and writes the addresses given to set_tensor_address (ctypes), torch's CUDA stream/graph stubbed
# ---------------------------------------------------------------------------------------------

class FakeGraph:
    capturing: "FakeGraph | None" = None
    fail = False

    def __init__(self) -> None:
        self.kernel: Any = None

    def replay(self) -> None:
        self.kernel()


class FakeStream:
    cuda_stream = 1234

    def __init__(self, device: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _Capture:
    def __init__(self, graph: FakeGraph, stream: Any = None) -> None:
        self.graph = graph

    def __enter__(self) -> FakeGraph:
        if FakeGraph.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        FakeGraph.capturing = self.graph
        return self.graph

    def __exit__(self, *exc: object) -> None:
        FakeGraph.capturing = None


def _array_at(address: int, count: int, dtype: Any) -> np.ndarray:
    import ctypes

    buffer = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=dtype, count=count)


def add_fake_runtime(trt: types.ModuleType, *, shape: tuple[int, ...], profile: tuple | None = None,
                     out_half: bool = False) -> None:
    """A deserialised 'engine' computing sigmoid(x) with one input 'image' and one output 'prob'."""
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF")  # type: ignore[attr-defined]
    rec = trt.recorder
    out_dtype = np.float16 if out_half else np.float32

    class Context:
        def __init__(self) -> None:
            self.shape = shape if -1 not in shape else None
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, value: tuple) -> bool:
            rec.calls.append(("set_input_shape", name, tuple(value)))
            lo, _, hi = profile  # type: ignore[misc]
            if not all(a <= v <= b for a, v, b in zip(lo, value, hi)):
                return False
            self.shape = tuple(value)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return self.shape if self.shape is not None else shape

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def _kernel(self) -> None:
            count = int(np.prod(self.shape))
            x = _array_at(self.addresses["image"], count, np.float32)
            y = _array_at(self.addresses["prob"], count, out_dtype)
            y[:] = 1.0 / (1.0 + np.exp(-x))

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == FakeStream.cuda_stream
            rec.calls.append(("execute_async_v3", self.shape))
            if FakeGraph.capturing is not None:
                FakeGraph.capturing.kernel = self._kernel  # captured, not run
            else:
                self._kernel()
            return True

    class FakeEngine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["image", "prob"][i]

        def get_tensor_mode(self, name: str) -> str:
            return "INPUT" if name == "image" else "OUTPUT"

        def get_tensor_dtype(self, name: str) -> str:
            return "HALF" if (name == "prob" and out_half) else "FLOAT"

        def get_tensor_shape(self, name: str) -> tuple:
            return shape

        def get_tensor_profile_shape(self, name: str, index: int) -> tuple:
            assert index == 0 and profile is not None
            return profile

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine:
            rec.calls.append(("deserialize_cuda_engine", len(data)))
            return FakeEngine()

    trt.Runtime = Runtime  # type: ignore[attr-defined]


@pytest.fixture
def cpu_as_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trtb, "_cuda_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(trtb, "PIN_MEMORY", False)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", _Capture)
    monkeypatch.setattr(FakeGraph, "fail", False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def test_engine_runs_a_dynamic_batch_plan(stub_trt: types.ModuleType, cpu_as_cuda: None, tmp_path: Path) -> None:
    add_fake_runtime(stub_trt, shape=(-1, 1, 4, 6), profile=((1, 1, 4, 6), (2, 1, 4, 6), (4, 1, 4, 6)))
    plan = _plan_with_sidecar(tmp_path, input_shape=(2, 1, 4, 6), max_batch=4)
    with trtb.TensorRTEngine(plan, cuda_graph=True) as engine:
        assert engine.backend == "tensorrt" and engine.precision == "fp16" and engine.name == "lunet"
        assert engine.info.config == {"model": {"name": "lunet", "kwargs": {}}}
        assert engine.input_shape == (-1, 1, 4, 6) and engine.info.max_batch == 4
        assert engine.device.endswith(f"({RUNNING['gpu_name']})")
        assert any("dynamic batch" in n for n in engine.info.notes)  # no graph for a dynamic shape
        x = np.random.default_rng(0).normal(size=(4, 1, 4, 6)).astype(np.float32)
        for n in (3, 1, 4, 1):
            y = engine.infer(x[:n])
            assert y.dtype == np.float32 and y.shape == (n, 1, 4, 6)
            np.testing.assert_allclose(y, _sigmoid(x[:n]), rtol=1e-6)
        with pytest.raises(EngineError, match="exceeds this engine's maximum 4"):
            engine.infer(np.zeros((5, 1, 4, 6), np.float32))
    shapes = [c[2] for c in stub_trt.recorder.calls if c[0] == "set_input_shape"]
    assert shapes == [(4, 1, 4, 6), (3, 1, 4, 6), (1, 1, 4, 6), (4, 1, 4, 6), (1, 1, 4, 6)]
    with pytest.raises(EngineError, match="is closed"):
        engine.infer(x[:1])


@pytest.mark.parametrize("fail", [False, True])
def test_engine_cuda_graph_on_a_static_plan(stub_trt: types.ModuleType, cpu_as_cuda: None, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture, fail: bool) -> None:
    add_fake_runtime(stub_trt, shape=(2, 1, 4, 6), out_half=True)
    FakeGraph.fail = fail
    plan = _plan_with_sidecar(tmp_path, input_shape=(2, 1, 4, 6))
    x = np.random.default_rng(1).normal(size=(2, 1, 4, 6)).astype(np.float32)
    with caplog.at_level(logging.WARNING), trtb.TensorRTEngine(plan, cuda_graph=True) as engine:
        assert engine.input_shape == (2, 1, 4, 6)
        stub_trt.recorder.calls.clear()
        for _ in range(2):
            y = engine.infer(x)
            np.testing.assert_allclose(y, _sigmoid(x), atol=1e-3)  # float16 output, returned as float32
            assert y.dtype == np.float32
        with pytest.raises(EngineError, match=r"expected float32 \[2, 1, 4, 6\]"):
            engine.infer(x[:1])
    executes = [c for c in stub_trt.recorder.calls if c[0] == "execute_async_v3"]
    if fail:
        assert "CUDA graph capture failed" in caplog.text and any("failed" in n for n in engine.info.notes)
        assert len(executes) == 2  # runs without the graph
    else:
        assert any(n.startswith("CUDA graph:") for n in engine.info.notes)
        assert executes == []  # replayed, not enqueued


# ---------------------------------------------------------------------------------------------
# real TensorRT on a CUDA GPU
# ---------------------------------------------------------------------------------------------

def requires_trt(test: Any) -> Any:
    """Mark a test as needing TensorRT and a CUDA GPU; skip it with tensorrt_available()'s reason."""
    return pytest.mark.tensorrt(pytest.mark.gpu(pytest.mark.skipif(not AVAILABLE, reason=REASON)(test)))


class _Prob(torch.nn.Module):
    """The network with a sigmoid; ``half`` runs it in fp16 with float32 I/O (how FP16 ONNX is exported)."""

    def __init__(self, net: torch.nn.Module, half: bool) -> None:
        super().__init__()
        self.net, self.half_io = (net.half() if half else net), half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x.half() if self.half_io else x)).float()


@pytest.fixture(scope="module")
def lunet_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """L-UNet (random weights) exported at 64x48 in fp32 and fp16, a batch of 3 inputs and torch's output."""
    import copy

    from train.models import build_model

    out = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    net = build_model("lunet").eval()
    paths = {}
    for precision in ("fp32", "fp16"):
        model = _Prob(copy.deepcopy(net), half=precision == "fp16").eval()
        path = out / f"lunet-{precision}.onnx"
        torch.onnx.export(model, torch.randn(1, 1, 48, 64), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["prob"],
                          dynamic_axes={"image": {0: "n"}, "prob": {0: "n"}})
        paths[precision] = path
    x = np.random.default_rng(0).normal(size=(3, 1, 48, 64)).astype(np.float32)
    with torch.no_grad():
        expected = _Prob(net, half=False)(torch.from_numpy(x)).numpy()
    return {"dir": out, "paths": paths, "x": x, "expected": expected}


@requires_trt
@pytest.mark.parametrize("precision, tol", [("fp32", 5e-3), ("fp16", 3e-2)])  # fp32 plans may use TF32
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_real_static_build_matches_torch_and_onnxruntime(lunet_onnx: dict, precision: str, tol: float,
                                                         cuda_graph: bool) -> None:
    import onnxruntime as ort

    plan = trtb.build_plan(lunet_onnx["paths"][precision], precision=precision, input_shape=(1, 1, 48, 64),
                           cache_dir=lunet_onnx["dir"], model_name="lunet")
    x = lunet_onnx["x"][:1]
    with trtb.TensorRTEngine(plan, cuda_graph=cuda_graph) as engine:
        assert engine.backend == "tensorrt" and engine.precision == precision and engine.input_shape == (1, 1, 48, 64)
        assert engine.device.startswith("cuda:0 (")
        y = engine.infer(x)
        y2 = engine.infer(x)
        if cuda_graph:
            assert any("CUDA graph" in n for n in engine.info.notes)
    assert y.dtype == np.float32 and y.shape == (1, 1, 48, 64)
    np.testing.assert_array_equal(y, y2)
    assert np.abs(y - lunet_onnx["expected"][:1]).max() < tol
    session = ort.InferenceSession(str(lunet_onnx["paths"]["fp32"]), providers=["CPUExecutionProvider"])
    ort_y = session.run(None, {"image": x})[0]
    assert np.abs(y - ort_y).max() < tol


@requires_trt
def test_real_batch_profile_and_cache(lunet_onnx: dict, tmp_path: Path) -> None:
    kwargs: dict[str, Any] = dict(precision="fp32", input_shape=(2, 1, 48, 64), max_batch=4, cache_dir=tmp_path,
                                  model_name="lunet")
    plan = trtb.build_plan(lunet_onnx["paths"]["fp32"], **kwargs)
    mtime = plan.stat().st_mtime_ns
    assert trtb.build_plan(lunet_onnx["paths"]["fp32"], **kwargs) == plan and plan.stat().st_mtime_ns == mtime
    with trtb.TensorRTEngine(plan, cuda_graph=True) as engine:  # no graph for a dynamic batch, with a note
        assert engine.input_shape == (-1, 1, 48, 64) and engine.info.max_batch == 4
        assert any("dynamic batch" in n for n in engine.info.notes)
        for n in (1, 3, 2):
            y = engine.infer(lunet_onnx["x"][:n])
            assert y.shape == (n, 1, 48, 64)
            assert np.abs(y - lunet_onnx["expected"][:n]).max() < 5e-3
        with pytest.raises(EngineError, match="exceeds"):
            engine.infer(np.zeros((5, 1, 48, 64), np.float32))


@requires_trt
def test_real_plan_refused_after_environment_change(lunet_onnx: dict, tmp_path: Path) -> None:
    import json

    plan = trtb.build_plan(lunet_onnx["paths"]["fp32"], precision="fp32", input_shape=(1, 1, 48, 64),
                           cache_dir=tmp_path, model_name="lunet")
    sidecar = json.loads(sidecar_path(plan).read_text())
    sidecar["trt_version"] = "0.0.1"
    sidecar_path(plan).write_text(json.dumps(sidecar))
    with pytest.raises(EngineError, match="mn-export --onnx"):
        trtb.TensorRTEngine(plan)
