"""ONNX export (engines/export.py): probability output, float32 I/O, metadata, dynamic batch, fp16."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from engines import EngineError, load_engine
from engines.export import (OPSET, cached_onnx, export_onnx, onnx_input_shape, read_onnx_metadata,
                            write_onnx_metadata)
from train.errors import UserError
from train.models import build_model
from tests.engines._helpers import load_fp16_or_skip, make_checkpoint, min_dice, random_batch, torch_prob

SIZE = (64, 48)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("export") / "best.pt", "lunet", SIZE)


@pytest.fixture(scope="module")
def fp16_onnx(ckpt: Path) -> Path:
    return export_onnx(ckpt, ckpt.with_name("lunet-fp16.onnx"), precision="fp16", dynamic_batch=True)


def io_types(model: onnx.ModelProto) -> list[str]:
    return [onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
            for v in (*model.graph.input, *model.graph.output)]


def test_fp32_export_is_checked_self_contained_and_outputs_probabilities(ckpt: Path, tmp_path: Path) -> None:
    path = export_onnx(ckpt, tmp_path / "sub" / "m.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert io_types(model) == ["FLOAT", "FLOAT"]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert sorted(p.name for p in tmp_path.joinpath("sub").iterdir()) == ["m.onnx"]  # no temporary, no side file
    assert model.graph.node[-1].op_type == "Sigmoid"
    assert onnx_input_shape(path) == (1, 1, 48, 64)
    x = random_batch(SIZE)
    prob = load_engine(path, "onnxruntime").infer(x)
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    np.testing.assert_allclose(prob, torch_prob(ckpt, x), atol=1e-4)


def test_metadata_round_trip(ckpt: Path, fp16_onnx: Path, tmp_path: Path) -> None:
    meta = read_onnx_metadata(fp16_onnx)
    assert meta["mn_seg_config"] == {"model": {"name": "lunet", "kwargs": {}}, "preprocessing": {"size": [64, 48]}}
    assert meta["precision"] == "fp16" and meta["input_shape"] == [-1, 1, 48, 64]
    assert len(meta["checkpoint_sha256"]) == 64
    # write / read helpers on a bare model proto
    model = onnx.load(str(fp16_onnx))
    write_onnx_metadata(model, {"precision": "fp32", "mn_seg_config": {"a": [1, 2]}, "note": "x"})
    onnx.save(model, str(tmp_path / "edited.onnx"))
    edited = read_onnx_metadata(tmp_path / "edited.onnx")
    assert edited["precision"] == "fp32" and edited["mn_seg_config"] == {"a": [1, 2]} and edited["note"] == "x"
    assert [p.key for p in model.metadata_props].count("precision") == 1
    # the engine knows its model from the file alone
    engine = load_engine(fp16_onnx, "onnxruntime")
    assert engine.name == "lunet" and engine.describe()["preprocessing"] == {"size": [64, 48]}
    assert json.loads(json.dumps(engine.describe()))


def test_fp16_export_is_well_formed_with_float32_io(fp16_onnx: Path) -> None:
    model = onnx.load(str(fp16_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert io_types(model) == ["FLOAT", "FLOAT"]
    dtypes = [init.data_type for init in model.graph.initializer if len(init.dims) and np.prod(init.dims) > 16]
    assert dtypes and all(t == onnx.TensorProto.FLOAT16 for t in dtypes)  # the weights are half
    assert {"Cast"} <= {n.op_type for n in model.graph.node}
    assert fp16_onnx.stat().st_size < 0.6 * 7.8e6  # about half of the fp32 file


def test_fp16_parity_on_onnxruntime_cpu(ckpt: Path, fp16_onnx: Path) -> None:
    engine = load_fp16_or_skip(lambda: load_engine(fp16_onnx, "onnxruntime"))
    x = random_batch(SIZE, 3)
    prob = engine.infer(x)
    ref = torch_prob(ckpt, x)
    assert min_dice(prob, ref) >= 0.98 and np.abs(prob - ref).max() < 1e-2


def test_dynamic_batch_runs_at_1_and_3(ckpt: Path, tmp_path: Path) -> None:
    path = export_onnx(ckpt, tmp_path / "dyn.onnx", dynamic_batch=True)
    assert onnx_input_shape(path) == (-1, 1, 48, 64)
    engine = load_engine(path, "onnxruntime")
    assert engine.input_shape == (-1, 1, 48, 64)
    for n in (1, 3):
        x = random_batch(SIZE, n, seed=n)
        np.testing.assert_allclose(engine.infer(x), torch_prob(ckpt, x), atol=1e-4)


def test_static_batch(ckpt: Path, tmp_path: Path) -> None:
    engine = load_engine(export_onnx(ckpt, tmp_path / "b2.onnx", batch=2), "onnxruntime")
    assert engine.input_shape == (2, 1, 48, 64)
    with pytest.raises(EngineError, match=r"expected float32 \[2, 1, 48, 64\]"):
        engine.infer(random_batch(SIZE, 1))


def test_legacy_exporter_fallback_without_onnxscript(ckpt: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # "import onnxscript" raises ImportError
    path = export_onnx(ckpt, tmp_path / "legacy.onnx", dynamic_batch=True)
    assert read_onnx_metadata(path)["precision"] == "fp32"
    x = random_batch(SIZE, 2)
    np.testing.assert_allclose(load_engine(path, "onnxruntime").infer(x), torch_prob(ckpt, x), atol=1e-4)


def test_opset_17_export(ckpt: Path, tmp_path: Path) -> None:
    """Opset 17 (TensorRT 8.6's newest) goes through the legacy exporter."""
    path = export_onnx(ckpt, tmp_path / "op17.onnx", opset=17)
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")] == [17]
    x = random_batch(SIZE)
    np.testing.assert_allclose(load_engine(path, "onnxruntime").infer(x), torch_prob(ckpt, x), atol=1e-4)


def test_export_of_a_module_with_config(tmp_path: Path) -> None:
    path = export_onnx(build_model("lunet"), tmp_path / "m.onnx", size=(64, 48),
                       config={"model": {"name": "lunet"}})
    assert read_onnx_metadata(path)["mn_seg_config"] == {"model": {"name": "lunet"}}


def test_export_errors(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="unknown precision 'int8'"):
        export_onnx(ckpt, tmp_path / "x.onnx", precision="int8")
    with pytest.raises(UserError, match="not divisible by 8.*nearest valid size is 64x48"):
        export_onnx(ckpt, tmp_path / "x.onnx", size=(62, 48))
    with pytest.raises(EngineError, match="opset 13 is too old"):
        export_onnx(ckpt, tmp_path / "x.onnx", opset=13)
    with pytest.raises(EngineError, match="no input size"):
        export_onnx(build_model("lunet"), tmp_path / "x.onnx", config={"model": {"name": "lunet"}})
    with pytest.raises(UserError, match="does not exist"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(EngineError, match="does not exist"):
        read_onnx_metadata(tmp_path / "x.onnx")


def test_cached_onnx_names_and_reuse(ckpt: Path, tmp_path: Path) -> None:
    path, config = cached_onnx(ckpt, cache_dir=tmp_path)
    assert config["model"]["name"] == "lunet"
    assert path.parent == tmp_path and path.name.startswith("lunet-") and path.name.endswith(
        f"-64x48-b1-fp32-op{OPSET}.onnx")
    mtime = path.stat().st_mtime_ns
    assert cached_onnx(ckpt, cache_dir=tmp_path)[0] == path and path.stat().st_mtime_ns == mtime
    path.write_bytes(b"truncated")  # a broken cache entry is re-exported
    assert cached_onnx(ckpt, cache_dir=tmp_path)[0] == path and read_onnx_metadata(path)["precision"] == "fp32"
