"""int8 on the CPU (engines/quantize.py): static quantisation, its calibration identity and cache key, the
backends that refuse it, ``auto``'s choice, bundled int8 files, cascades, and mn-export's int8 verification.

The model is a width-0.25 ``lunet-coarse`` at 128x96 wired (as the cascade tests' localiser) to light up where
the frame is bright, so its masks follow the synthetic images' bright rims and mean something; every image is
synthetic (tests/conftest.make_dataset).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import engines.quantize as quantize
from engines import EngineError, load_engine, registry
from engines.cache import file_sha256
from engines.export import META_PRECISION, read_onnx_metadata
from engines.export_cli import cli as export_cli
from engines.quantize import (INT8, META_CALIBRATION, calibration_set, cpu_vnni, digest_of, float_node_names,
                              int8_cache_name)
from engines.registry import LoadOptions, Probes, choose_auto, resolve_model, tensorrt_plan
from engines.verify import ACCEPTANCE_DICE, INT8_ACCEPTANCE_DICE, acceptance_threshold
from tests.conftest import make_dataset
from tests.engines._helpers import min_dice
from tests.engines.test_cascade_engine import make_cascade, wire_bright_blob
from train.checkpoint import save_checkpoint
from train.models import build_model
from train.preprocess import preprocess_image

SIZE = (128, 96)
ARCH = {"name": "lunet-coarse", "kwargs": {"width": 0.25}}
NO = lambda: (False, "absent")  # noqa: E731 - probe stubs
YES = lambda: (True, "present")  # noqa: E731


def bright_checkpoint(path: Path) -> Path:
    """A lunet-coarse whose mask is the bright part of the (z-scored) frame (its rims)."""
    torch.manual_seed(0)
    model = build_model(ARCH["name"], **ARCH["kwargs"])
    wire_bright_blob(model)
    with torch.no_grad():  # nerve where the 4x4-pooled z-score exceeds 0.75: about 9 % of a synthetic frame
        model.net.head.out.weight[0, 0] = 16.0
        model.net.head.out.bias[0] = -12.0
    save_checkpoint(path, model, {"model": ARCH, "preprocessing": {"size": list(SIZE)}})
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8")


@pytest.fixture(scope="module")
def data(root: Path) -> Path:
    return make_dataset(root / "data", n_patients=4, per_patient=2, size=SIZE)


@pytest.fixture(scope="module")
def ckpt(root: Path) -> Path:
    return bright_checkpoint(root / "bright.pt")


@pytest.fixture(scope="module")
def cache(root: Path) -> Path:
    return root / "cache"


@pytest.fixture(scope="module")
def int8_engine(ckpt: Path, data: Path, cache: Path):  # type: ignore[no-untyped-def]
    with load_engine(ckpt, "onnxruntime", INT8, threads=1, cache_dir=cache, calibrate=data,
                     calibrate_images=6) as engine:
        yield engine


def frames(data: Path) -> np.ndarray:
    images = sorted((data / "Images").iterdir())
    return np.stack([preprocess_image(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), SIZE) for p in images])[:, None]


def run(engine, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate([engine.infer(x[i:i + 1]) for i in range(len(x))])


# -- quantisation ---------------------------------------------------------------------------------
def test_int8_masks_close_to_fp32(int8_engine, ckpt: Path, data: Path, cache: Path) -> None:  # type: ignore[no-untyped-def]
    assert (int8_engine.backend, int8_engine.precision) == ("onnxruntime", INT8)
    onnx_path = Path(int8_engine.path)
    meta = read_onnx_metadata(onnx_path)
    assert meta[META_PRECISION] == INT8 and meta["mn_seg_config"]["model"] == ARCH
    calib = meta[META_CALIBRATION]
    assert calib["images"] == 6 and calib["available"] == 8 and len(calib["names"]) == 6
    assert f"-int8-c{calib['digest'][:12]}-" in onnx_path.name  # the calibration keys the cache
    assert any("calibrated on 6 images" in n for n in int8_engine.info.notes)
    assert len(meta["int8_quantisation"]["float_nodes"]) >= 2  # the first conv, the last conv and what follows
    with load_engine(ckpt, "onnxruntime", "fp32", threads=1, cache_dir=cache) as fp32:
        x = frames(data)
        p8, p32 = run(int8_engine, x), run(fp32, x)
        assert onnx_path.stat().st_size < 0.6 * Path(fp32.path).stat().st_size
    assert (p32 >= 0.5).mean() > 0.02  # the masks are not empty
    assert min_dice(p8, p32) >= INT8_ACCEPTANCE_DICE
    assert np.abs(p8 - p32).mean() < 0.02


def test_float_nodes_are_the_first_and_last_convs(int8_engine) -> None:  # type: ignore[no-untyped-def]
    import onnx

    model = onnx.load(str(int8_engine.path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    dequantised = [produced_by.get(c.input[1]) == "DequantizeLinear" for c in convs]
    assert dequantised[0] is False and dequantised[-1] is False and all(dequantised[1:-1])
    with pytest.raises(EngineError, match="unknown float_nodes"):
        float_node_names(model, "middle")


def test_cache_key_changes_with_the_calibration_set(int8_engine, ckpt: Path, data: Path, cache: Path,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    six, four = calibration_set(data, 6), calibration_set(data, 4)
    assert six.identity()["digest"] != four.identity()["digest"]
    copy = tmp_path / "copy"
    shutil.copytree(data / "Images", copy)  # the same images elsewhere: the same calibration
    assert calibration_set(copy, 6).identity()["digest"] == six.identity()["digest"]
    first = sorted(copy.iterdir())[0]
    img = cv2.imread(str(first), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(first), 255 - img)  # one image changed: another calibration
    assert calibration_set(copy, 6).identity()["digest"] != six.identity()["digest"]
    assert six.identity(method="minmax")["digest"] != six.identity()["digest"]
    assert six.identity(windows={"crop": [64, 32]})["digest"] != six.identity()["digest"]

    with load_engine(ckpt, "onnxruntime", INT8, threads=1, cache_dir=cache, calibrate=data,
                     calibrate_images=4) as other:
        assert other.path != int8_engine.path and other.path.is_file() and int8_engine.path.is_file()
    monkeypatch.setattr(quantize, "quantize_onnx", lambda *a, **k: pytest.fail("the cached int8 file was not reused"))
    with load_engine(ckpt, "onnxruntime", INT8, threads=1, cache_dir=cache, calibrate=data,
                     calibrate_images=6) as again:
        assert again.path == int8_engine.path
    assert int8_cache_name("lunet-abc-64x48-b1-fp32-op18.onnx", "0123456789abcdef") == \
        "lunet-abc-64x48-b1-int8-c0123456789ab-op18.onnx"


def test_calibration_set_spreads_and_refuses_empty_folders(data: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in (data / "Images").iterdir())
    chosen = calibration_set(data, 3)
    assert [p.name for p in chosen.images] == [names[0], names[4], names[7]]
    assert len(calibration_set(data / "Images", 100).images) == len(names)  # a plain folder of images works too
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="no images in"):
        calibration_set(tmp_path / "empty")
    with pytest.raises(EngineError, match="does not exist"):
        calibration_set(tmp_path / "none")
    with pytest.raises(EngineError, match="at least 1"):
        calibration_set(data, 0)
    assert digest_of({"a": 1, "b": 2}) == digest_of({"b": 2, "a": 1})


def test_int8_without_a_calibration_says_how_to_get_one(ckpt: Path, cache: Path) -> None:
    with pytest.raises(EngineError, match="int8 needs a calibration.*--calibrate DIR"):
        load_engine(ckpt, "onnxruntime", INT8, cache_dir=cache)


# -- backends that refuse int8 ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "tensorrt"])
def test_int8_is_refused_on_torch_and_tensorrt(ckpt: Path, backend: str) -> None:
    with pytest.raises(EngineError, match=f"int8 is an onnxruntime-only precision.*the {backend} backend runs"):
        load_engine(ckpt, backend, INT8)


def test_tensorrt_refuses_an_int8_onnx_and_mn_export_an_int8_engine(int8_engine, ckpt: Path, data: Path,  # type: ignore[no-untyped-def]
                                                                    capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(EngineError, match="int8 .*onnxruntime-only"):
        tensorrt_plan(resolve_model(int8_engine.path), LoadOptions())
    assert export_cli(["--checkpoint", str(ckpt), "--format", "engine", "--precision", "int8",
                       "--calibrate", str(data)]) == 2
    assert "onnxruntime-only precision" in capsys.readouterr().err
    assert export_cli(["--checkpoint", str(ckpt), "--precision", "int8"]) == 2
    assert "--precision int8 needs --calibrate DIR" in capsys.readouterr().err


# -- auto -------------------------------------------------------------------------------------------
def test_cpu_vnni_reads_the_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert cpu_vnni(info) == (True, "the CPU has avx512_vnni")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx_vnni\n")
    assert cpu_vnni(info)[0] is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    ok, why = cpu_vnni(info)
    assert not ok and "neither avx512_vnni nor avx_vnni" in why
    assert cpu_vnni(tmp_path / "missing")[0] is False


@pytest.mark.parametrize(("vnni", "model", "expected"), [(YES, "bundled", INT8), (NO, "bundled", "fp32"),
                                                         (YES, None, "fp32"), (NO, None, "fp32")])
def test_auto_picks_int8_only_with_vnni_and_an_int8_model(vnni, model, expected: str) -> None:  # type: ignore[no-untyped-def]
    backend, precision, reason = choose_auto(Probes(NO, NO, vnni=vnni), "checkpoint", model)
    assert (backend, precision) == ("onnxruntime", expected)
    if expected == INT8:
        assert "auto chose onnxruntime int8" in reason and "present" in reason
    elif model is None:
        assert "no int8 model" in reason
    else:
        assert "int8 not chosen" in reason and "only with VNNI" in reason
    assert choose_auto(Probes(NO, YES, vnni=vnni), "checkpoint", model)[:2] == ("torch", "fp16")  # a GPU wins


def test_auto_loads_int8_with_vnni_and_a_calibration(monkeypatch: pytest.MonkeyPatch, int8_engine,  # type: ignore[no-untyped-def]
                                                     ckpt: Path, data: Path, cache: Path) -> None:
    monkeypatch.setattr(quantize, "cpu_vnni", lambda: (True, "the CPU has avx512_vnni (stub)"))
    kwargs = {"cache_dir": cache, "calibrate": data, "calibrate_images": 6, "threads": 1, "probes": Probes(NO, NO)}
    with load_engine(ckpt, "auto", **kwargs) as engine:
        assert engine.precision == INT8 and engine.path == int8_engine.path
        assert any("auto chose onnxruntime int8" in n and "stub" in n for n in engine.info.notes)
    with load_engine(ckpt, "auto", precision="fp32", **kwargs) as engine:  # --precision fp32 forces float
        assert engine.precision == "fp32"
    monkeypatch.setattr(quantize, "cpu_vnni", lambda: (False, "no VNNI (stub)"))
    with load_engine(ckpt, "auto", **kwargs) as engine:
        assert engine.precision == "fp32"
        assert any("int8 not chosen" in n and "no VNNI (stub)" in n for n in engine.info.notes)
    with load_engine(ckpt, "auto", precision=INT8, **kwargs) as engine:  # --precision int8 forces it
        assert (engine.backend, engine.precision) == ("onnxruntime", INT8)


# -- bundled int8 files -------------------------------------------------------------------------------
@pytest.fixture
def bundled_int8(tmp_path: Path, int8_engine, ckpt: Path):  # type: ignore[no-untyped-def]
    """A bundled folder with model 'mn-tiny' and its shipped int8 file, made the active catalogue."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    shutil.copyfile(ckpt, folder / "mn-tiny.pt")
    shutil.copyfile(int8_engine.path, folder / "mn-tiny-model-int8.onnx")
    sha = file_sha256(folder / "mn-tiny.pt")
    entry = {"name": "mn-tiny", "file": "mn-tiny.pt", "sha256": sha,
             "int8": {"files": {"model": "mn-tiny-model-int8.onnx"}, "model_sha256": sha}}
    (folder / registry.MANIFEST_NAME).write_text(json.dumps({"format": 1, "models": [entry]}))
    registry.load_bundled(folder)
    try:
        yield folder
    finally:
        registry.load_bundled()


def test_bundled_int8_files_need_no_dataset(bundled_int8: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with load_engine("mn-tiny", "onnxruntime", INT8, threads=1) as engine:
        assert engine.precision == INT8 and engine.path == bundled_int8 / "mn-tiny-model-int8.onnx"
    monkeypatch.setattr(quantize, "cpu_vnni", lambda: (True, "vnni (stub)"))
    with load_engine("mn-tiny", "auto", threads=1, probes=Probes(NO, NO)) as engine:
        assert engine.precision == INT8
        assert any("int8 files shipped with this bundled model" in n for n in engine.info.notes)
    with load_engine(bundled_int8 / "mn-tiny.pt", "onnxruntime", INT8, threads=1) as engine:  # by path as well
        assert engine.path == bundled_int8 / "mn-tiny-model-int8.onnx"


def test_a_stale_int8_record_is_ignored(bundled_int8: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    manifest = json.loads((bundled_int8 / registry.MANIFEST_NAME).read_text())
    manifest["models"][0]["int8"]["model_sha256"] = "0" * 64  # made from another file than the one shipped
    (bundled_int8 / registry.MANIFEST_NAME).write_text(json.dumps(manifest))
    registry.load_bundled(bundled_int8)
    monkeypatch.setattr(quantize, "cpu_vnni", lambda: (True, "vnni (stub)"))
    with load_engine("mn-tiny", "auto", threads=1, cache_dir=cache, probes=Probes(NO, NO)) as engine:
        assert engine.precision == "fp32" and any("no int8 model" in n for n in engine.info.notes)
    with pytest.raises(EngineError, match="int8 needs a calibration"):
        load_engine("mn-tiny", "onnxruntime", INT8, cache_dir=cache)


# -- cascades -----------------------------------------------------------------------------------------
@pytest.mark.slow  # exports both parts of a cascade: ~20 s on two busy cores
def test_cascade_int8_calibrates_the_refiner_on_its_windows(root: Path, data: Path, cache: Path) -> None:
    cascade = make_cascade(root / "cascade.pt")
    with load_engine(cascade, "onnxruntime", INT8, threads=1, cache_dir=cache, calibrate=data,
                     calibrate_images=4) as engine:
        assert engine.precision == INT8
        assert (engine.localiser.precision, engine.refiner.precision) == (INT8, INT8)
        loc = read_onnx_metadata(engine.localiser.path)[META_CALIBRATION]
        ref = read_onnx_metadata(engine.refiner.path)[META_CALIBRATION]
        prob = engine.infer(frames(data)[:1])
    assert "windows" not in loc and ref["windows"]["crop"] == [64, 32]
    assert ref["windows"]["rule"].startswith("fp32 localiser") and loc["contents_sha256"] == ref["contents_sha256"]
    assert loc["digest"] != ref["digest"] and prob.shape == (1, 1, SIZE[1], SIZE[0])
    with pytest.raises(EngineError, match="int8 is an onnxruntime-only precision"):
        load_engine(cascade, "torch", INT8, cache_dir=cache)


# -- mn-export --precision int8 --verify ------------------------------------------------------------
def test_verify_thresholds() -> None:
    assert acceptance_threshold(INT8) == ACCEPTANCE_DICE[INT8] == INT8_ACCEPTANCE_DICE == 0.97


def test_mn_export_int8_verifies_and_keeps_a_good_file(ckpt: Path, data: Path, cache: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "good-int8.onnx", tmp_path / "good.json"
    assert export_cli(["--checkpoint", str(ckpt), "--precision", "int8", "--calibrate", str(data),
                       "--calibrate-images", "6", "--verify", str(data), "--out", str(out), "--json", str(report),
                       "--cache-dir", str(cache), "--threads", "1", "-q"]) == 0
    result = json.loads(report.read_text())
    assert result["passed"] is True and result["precision"] == INT8 and result["threshold"] == 0.97
    assert out.is_file() and read_onnx_metadata(out)[META_PRECISION] == INT8


def test_mn_export_int8_verify_fails_and_keeps_no_file(ckpt: Path, data: Path, cache: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    real = quantize.quantize_onnx

    def broken(src, out, inputs, **kwargs):  # type: ignore[no-untyped-def]
        return real(src, out, inputs * 1000.0, **kwargs)  # ranges 1000x too wide: every activation rounds to 0

    monkeypatch.setattr(quantize, "quantize_onnx", broken)
    out, report = tmp_path / "broken-int8.onnx", tmp_path / "broken.json"
    assert export_cli(["--checkpoint", str(ckpt), "--precision", "int8", "--calibrate", str(data),
                       "--calibrate-images", "6", "--verify", str(data), "--out", str(out), "--json", str(report),
                       "--cache-dir", str(cache), "--threads", "1", "-q"]) == 1
    assert not out.exists()
    result = json.loads(report.read_text())
    assert result["passed"] is False and result["failed_frames"] and result["deleted"] == [str(out)]
    assert "FAIL" in capsys.readouterr().out


def test_a_calibration_that_would_exhaust_memory_is_refused_with_what_fits(ckpt: Path, data: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx import TensorProto, helper

    # a graph whose one intermediate tensor is 1 x 1000 float32 (4 kB) and output 1 x 1000 (4 kB): 16 kB a frame held
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])
    mid = helper.make_tensor_value_info("mid", TensorProto.FLOAT, [1, 1000])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["mid"]), helper.make_node("Relu", ["mid"], ["y"])],
                              "g", [x], [y], value_info=[mid])
    model = helper.make_model(graph)
    assert quantize.activation_bytes(model) == 8000
    quantize.check_calibration_memory(model, 10, "g.onnx", available=1_000_000)  # 160 kB of 1 MB: fine
    with pytest.raises(EngineError, match=r"on 100 frames needs about 0\.0 GB .*at most 37 frames "
                                          r"\(--calibrate-images 37\)"):
        quantize.check_calibration_memory(model, 100, "g.onnx", available=1_000_000)
    with pytest.raises(EngineError, match="on a machine with more memory"):
        quantize.check_calibration_memory(model, 5, "g.onnx", available=10_000)
    # the real quantiser asks before it collects anything
    monkeypatch.setattr(quantize, "available_memory", lambda: 1000)
    with pytest.raises(EngineError, match="calibrating .* for int8 on 6 frames"):
        load_engine(ckpt, "onnxruntime", INT8, threads=1, cache_dir=tmp_path / "cache", calibrate=data,
                    calibrate_images=6)
    assert not list((tmp_path / "cache").glob("*int8*.onnx"))
