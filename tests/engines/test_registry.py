"""The backend registry, model sources, ``auto`` selection and load_engine's errors (engines/registry.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engines import EngineError, list_backends, load_engine
from engines import registry
from engines.base import Engine, EngineInfo
from engines.registry import BACKENDS, LoadOptions, ModelSource, Probes, choose_auto, get_backend, resolve_model
from tests.engines._helpers import make_checkpoint

YES = lambda: (True, "stub: present")  # noqa: E731
NO = lambda: (False, "stub: absent")  # noqa: E731


class Recorder(Engine):
    """What a stubbed backend loader returns: records the options it was given."""

    def __init__(self, backend: str, options: LoadOptions) -> None:
        super().__init__(EngineInfo(name="stub", backend=backend, precision=options.precision or "?",
                                    device=options.device or "?", input_shape=(1, 1, 48, 64),
                                    notes=list(options.notes)))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return batch


def stub_backend(monkeypatch: pytest.MonkeyPatch, name: str, ok: bool = True) -> None:
    """Make backend ``name`` available (or not) with a loader that returns a :class:`Recorder`."""
    monkeypatch.setitem(BACKENDS, name, dataclasses.replace(
        BACKENDS[name], probe=YES if ok else NO, loader=lambda source, options: Recorder(name, options)))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", "lunet", (64, 48))


# -- registry -----------------------------------------------------------------------------------
def test_list_and_get_backends() -> None:
    assert set(list_backends()) == {"torch", "onnxruntime", "tensorrt"}
    for name in list_backends():
        backend = get_backend(name)
        assert backend.name == name and "fp32" in backend.precisions
        ok, reason = backend.available()
        assert isinstance(ok, bool) and reason


def test_unknown_backend_key_error_lists_names(ckpt: Path) -> None:
    with pytest.raises(KeyError, match="valid backends: auto, tensorrt, torch, onnxruntime"):
        get_backend("openvino")
    with pytest.raises(KeyError, match="unknown backend 'cuda'"):
        load_engine(ckpt, backend="cuda")


def test_unsupported_precision(ckpt: Path) -> None:
    with pytest.raises(EngineError, match="runs precisions fp32, fp16, not 'bf16'"):
        load_engine(ckpt, backend="torch", precision="bf16")


# -- model sources ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "kind"), [("best.pt", "checkpoint"), ("m.onnx", "onnx"), ("m.engine", "plan"),
                                            ("m.plan", "plan"), ("weights.pth", "checkpoint")])
def test_resolve_model_by_suffix(tmp_path: Path, name: str, kind: str) -> None:
    (tmp_path / name).write_bytes(b"x")
    source = resolve_model(tmp_path / name)
    assert (source.kind, source.format, source.path) == (kind, kind, tmp_path / name)


def test_resolve_model_errors(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        resolve_model(tmp_path / "missing.pt")
    with pytest.raises(EngineError, match=r"not a file and not a bundled model \(bundled: .*mn-realtime.*\).*path"):
        resolve_model("lunet-paper")
    with pytest.raises(EngineError, match="is not a file"):
        resolve_model(tmp_path)


def test_bundled_model(monkeypatch: pytest.MonkeyPatch, ckpt: Path) -> None:
    monkeypatch.setitem(registry.BUNDLED_MODELS, "lunet-demo", ckpt)
    source = resolve_model("lunet-demo")
    assert (source.kind, source.format, source.path, source.name) == ("bundled", "checkpoint", ckpt, "lunet-demo")
    with pytest.raises(EngineError, match="bundled: lunet-demo"):
        resolve_model("other")


# -- auto ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("trt", "cuda", "expected"), [
    (YES, YES, ("tensorrt", "fp16")),
    (NO, YES, ("torch", "fp16")),
    (YES, NO, ("onnxruntime", "fp32")),
    (NO, NO, ("onnxruntime", "fp32")),
])
def test_choose_auto(trt, cuda, expected) -> None:  # type: ignore[no-untyped-def]
    backend, precision, reason = choose_auto(Probes(tensorrt=trt, cuda=cuda))
    assert (backend, precision) == expected
    assert "auto" in reason and "stub: " in reason


def test_choose_auto_by_source_format() -> None:
    assert choose_auto(Probes(NO, NO), "plan")[0] == "tensorrt"
    assert choose_auto(Probes(NO, YES), "onnx")[0] == "onnxruntime"  # torch cannot run an .onnx
    assert choose_auto(Probes(YES, YES), "onnx")[0] == "tensorrt"


@pytest.mark.parametrize(("trt", "cuda", "backend", "precision", "device"), [
    (True, True, "tensorrt", "fp16", "?"),
    (False, True, "torch", "fp16", "cuda"),
])
def test_auto_records_its_reason(monkeypatch: pytest.MonkeyPatch, ckpt: Path, trt: bool, cuda: bool, backend: str,
                                 precision: str, device: str) -> None:
    stub_backend(monkeypatch, "tensorrt", trt)
    stub_backend(monkeypatch, "torch")
    probes = Probes(tensorrt=YES if trt else NO, cuda=YES if cuda else NO)
    engine = load_engine(ckpt, "auto", probes=probes)
    assert (engine.backend, engine.precision, engine.device) == (backend, precision, device)
    notes = engine.describe()["notes"]
    assert any(n.startswith(f"auto chose {backend}") and "stub: " in n for n in notes)


def test_auto_falls_back_to_onnxruntime_and_says_so(ckpt: Path, tmp_path: Path) -> None:
    engine = load_engine(ckpt, "auto", probes=Probes(NO, NO), cache_dir=tmp_path)
    assert (engine.backend, engine.precision, engine.device) == ("onnxruntime", "fp32", "cpu")
    assert any("auto fell back to onnxruntime fp32 on the CPU (no CUDA GPU)" in n
               for n in engine.describe()["notes"])


def test_auto_with_device_cpu_stays_on_the_cpu(monkeypatch: pytest.MonkeyPatch, ckpt: Path) -> None:
    stub_backend(monkeypatch, "onnxruntime")
    engine = load_engine(ckpt, "auto", device="cpu", probes=Probes(NO, YES))
    assert engine.backend == "onnxruntime"
    assert "device cpu was requested" in engine.describe()["notes"][0]


# -- errors -------------------------------------------------------------------------------------
def test_tensorrt_without_tensorrt_says_how_to_install(monkeypatch: pytest.MonkeyPatch, ckpt: Path) -> None:
    monkeypatch.setitem(BACKENDS, "tensorrt", dataclasses.replace(
        BACKENDS["tensorrt"], probe=lambda: (False, "No module named 'tensorrt'")))
    with pytest.raises(EngineError,
                       match=r"not available: No module named 'tensorrt'; pip install 'mn-seg\[tensorrt\]'"):
        load_engine(ckpt, backend="tensorrt")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_really_missing(ckpt: Path) -> None:
    with pytest.raises(EngineError, match=r"pip install 'mn-seg\[tensorrt\]'"):
        load_engine(ckpt, backend="tensorrt")


def test_missing_file(tmp_path: Path) -> None:
    for backend in ("torch", "onnxruntime", "auto"):
        with pytest.raises(EngineError, match="does not exist"):
            load_engine(tmp_path / "nope.onnx", backend=backend)


def test_corrupt_onnx_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(EngineError, match=r"onnxruntime .* cannot load .*broken\.onnx: .*Re-export"):
        load_engine(bad, backend="onnxruntime")


def test_onnx_of_another_model_is_refused(tmp_path: Path) -> None:
    """A colour classifier's ONNX: 3 input channels, pooled output."""
    import onnx
    from onnx import TensorProto, helper

    foreign = tmp_path / "classifier.onnx"
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["image"], ["scores"])], "classifier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3, 1, 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(EngineError, match=r"not an mn-seg segmentation model: expected one float32 \[N, 1, H, W\]"):
        load_engine(foreign, backend="onnxruntime")


def test_onnx_for_another_size_or_precision_is_refused(ckpt: Path, tmp_path: Path) -> None:
    from engines.export import export_onnx

    onnx_path = export_onnx(ckpt, tmp_path / "m.onnx")
    assert load_engine(onnx_path, "onnxruntime", size=(64, 48)).size == (64, 48)
    with pytest.raises(EngineError, match=r"takes 64x48 input, not the 128x96 asked for"):
        load_engine(onnx_path, "onnxruntime", size=(128, 96))
    with pytest.raises(EngineError, match=r"is a fp32 export, not fp16; re-export"):
        load_engine(onnx_path, "onnxruntime", precision="fp16")
    with pytest.raises(EngineError, match="the torch backend runs checkpoints"):
        load_engine(onnx_path, "torch")


def test_onnxruntime_is_cpu_only(ckpt: Path) -> None:
    with pytest.raises(EngineError, match="runs on the CPU only"):
        load_engine(ckpt, "onnxruntime", device="cuda")


def test_checkpoint_export_is_cached_by_content(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engines import export

    calls: list[Path] = []
    real = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: calls.append(Path(a[1])) or real(*a, **k))
    ckpt = make_checkpoint(tmp_path / "best.pt", "lunet", (64, 48))
    cache = tmp_path / "cache"
    first = load_engine(ckpt, "onnxruntime", cache_dir=cache)
    second = load_engine(ckpt, "onnxruntime", cache_dir=cache)
    assert len(calls) == 1 and calls[0].parent == cache
    assert any(str(calls[0]) in n for n in second.describe()["notes"])
    x = np.zeros((1, 1, 48, 64), np.float32)
    assert np.array_equal(first.infer(x), second.infer(x))
    make_checkpoint(ckpt, "lunet", (64, 48), seed=1)  # retrained: new content, new export
    load_engine(ckpt, "onnxruntime", cache_dir=cache)
    load_engine(ckpt, "onnxruntime", cache_dir=cache, batch=2)
    assert len(calls) == 3 and len(set(calls)) == 3
    assert "-b2-fp32-" in calls[2].name


def test_model_source_is_frozen() -> None:
    source = ModelSource("onnx", "onnx", Path("m.onnx"), "m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        source.kind = "plan"  # type: ignore[misc]


def test_opset_onnxruntime_cannot_run(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    future = tmp_path / "future.onnx"
    graph = helper.make_graph([helper.make_node("Sigmoid", ["input"], ["prob"])], "future",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)]), str(future))
    with pytest.raises(EngineError, match=r"cannot load .*future\.onnx: .*(opset|Opset)"):
        load_engine(future, backend="onnxruntime")


# -- the default model on this machine ------------------------------------------------------------
def _two_model_bundle(folder: Path, *, int8: bool, fp32_default: str | None = "fast") -> None:
    import json

    folder.mkdir()
    models = []
    for name in ("big", "fast"):
        (folder / f"{name}.pt").write_bytes(name.encode())
        models.append({"name": name, "file": f"{name}.pt", "sha256": name * 4})
    if int8:
        (folder / "big-int8.onnx").write_bytes(b"x")
        models[0]["int8"] = {"files": {"model": "big-int8.onnx"}, "model_sha256": "big" * 4}
    manifest = {"format": 1, "default": "big", "models": models,
                **({"fp32_default": fp32_default} if fp32_default else {})}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("int8", "cuda", "vnni", "expected"), [
    (True, NO, YES, "big"),     # int8 with VNNI: the default keeps real time
    (True, NO, NO, "fast"),     # no VNNI: the default would run float32
    (False, NO, YES, "fast"),   # no int8 files to run
    (True, YES, NO, "big"),     # a GPU runs it
])
def test_machine_default_swaps_a_float_cpu_to_the_fp32_default(tmp_path: Path, int8: bool, cuda, vnni,
                                                                expected: str) -> None:
    _two_model_bundle(tmp_path / "b", int8=int8)
    registry.load_bundled(tmp_path / "b")
    try:
        name, why = registry.machine_default(Probes(tensorrt=NO, cuda=cuda, vnni=vnni))
        assert name == expected
        assert (why is None) == (expected == "big")
        if why:
            assert "big would run in float32" in why and "--model big runs it anyway" in why
        assert registry.bundled().fp32_default == "fast"
    finally:
        registry.load_bundled()


def test_machine_default_without_an_fp32_default_keeps_the_default(tmp_path: Path) -> None:
    _two_model_bundle(tmp_path / "b", int8=False, fp32_default=None)
    registry.load_bundled(tmp_path / "b")
    try:
        assert registry.machine_default(Probes(tensorrt=NO, cuda=NO, vnni=NO)) == ("big", None)
    finally:
        registry.load_bundled()
    _two_model_bundle(tmp_path / "c", int8=False, fp32_default="gone")  # names no bundled model: ignored
    registry.load_bundled(tmp_path / "c")
    try:
        assert registry.bundled().fp32_default is None
        assert registry.machine_default(Probes(tensorrt=NO, cuda=NO, vnni=NO)) == ("big", None)
    finally:
        registry.load_bundled()
