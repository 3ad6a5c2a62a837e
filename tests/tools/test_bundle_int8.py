"""``python -m tools.bundle int8``: a bundled model's int8 files, calibrated on the paper split's training images,
verified on its validation images, shipped only when they pass (synthetic data; the tiny model of
tests/engines/test_int8.py, whose masks follow the frames' bright rims)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import engines.quantize as quantize
from engines import load_engine, registry
from engines.cache import file_sha256
from tests.conftest import make_dataset
from tests.engines.test_int8 import SIZE, bright_checkpoint
from tools import bundle


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pz004 is one of the paper's validation patients: 3 validation images, 12 training images."""
    return make_dataset(tmp_path_factory.mktemp("bundle-int8") / "data", n_patients=5, per_patient=3, size=SIZE)


@pytest.fixture
def bundled(tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "bundled"
    folder.mkdir()
    bright_checkpoint(folder / "mn-tiny.pt")
    entry = {"name": "mn-tiny", "file": "mn-tiny.pt", "sha256": file_sha256(folder / "mn-tiny.pt")}
    (folder / registry.MANIFEST_NAME).write_text(json.dumps({"format": 1, "models": [entry]}))
    registry.load_bundled(folder)
    try:
        yield folder
    finally:
        registry.load_bundled()


def test_int8_files_are_made_verified_and_recorded(bundled: Path, data: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    argv = ["int8", "mn-tiny", "--data", str(data), "--images", "6", "--threads", "1", "--cache-dir",
            str(tmp_path / "cache"), "--json", str(tmp_path / "int8.json"), "-q"]
    assert bundle.main(argv) == 0
    assert "shipped" in capsys.readouterr().out
    assert sorted(p.name for p in bundled.iterdir()) == ["manifest.json", "mn-tiny-model-int8.onnx", "mn-tiny.pt"]
    entry = json.loads((bundled / registry.MANIFEST_NAME).read_text())["models"][0]
    int8 = entry["int8"]
    assert int8["files"] == {"model": "mn-tiny-model-int8.onnx"} and int8["model_sha256"] == entry["sha256"]
    assert int8["sha256"]["model"] == file_sha256(bundled / "mn-tiny-model-int8.onnx")
    calibration = int8["calibration"]
    assert (calibration["images"], calibration["available"], calibration["split"]) == (6, 12, "paper:train")
    assert "Pz004" not in json.dumps(calibration)  # no validation patient was calibrated on (nor named)
    assert int8["verify"]["passed"] and int8["verify"]["frames"] == 3 and int8["verify"]["threshold"] == 0.97
    assert abs(int8["val"]["int8"]["dsc"] - int8["val"]["fp32"]["dsc"]) <= bundle.TOLERANCE
    assert int8["command"].startswith("python -m tools.bundle int8 mn-tiny")
    with load_engine("mn-tiny", "onnxruntime", "int8", threads=1) as engine:  # by name, no dataset needed
        assert engine.path == bundled / "mn-tiny-model-int8.onnx"
    bundle.remove_model("mn-tiny")
    assert sorted(p.name for p in bundled.iterdir()) == ["manifest.json"]


def test_a_failing_int8_model_is_not_shipped(bundled: Path, data: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = quantize.quantize_onnx
    monkeypatch.setattr(quantize, "quantize_onnx",
                        lambda src, out, inputs, **kw: real(src, out, inputs * 1000.0, **kw))  # ranges far too wide
    before = (bundled / registry.MANIFEST_NAME).read_text()
    report, passed = bundle.make_int8("mn-tiny", data, images=6, threads=1, cache_dir=str(tmp_path / "cache"))
    assert not passed and not report["verify"]["passed"]
    assert sorted(p.name for p in bundled.iterdir()) == ["manifest.json", "mn-tiny.pt"]
    assert (bundled / registry.MANIFEST_NAME).read_text() == before


def test_int8_refuses_an_unknown_model_or_a_changed_file(bundled: Path, data: Path) -> None:
    with pytest.raises(bundle.UserError, match="no bundled model 'nope'"):
        bundle.make_int8("nope", data)
    shutil.copyfile(bundled / "mn-tiny.pt", bundled / "copy.pt")
    (bundled / "mn-tiny.pt").write_bytes((bundled / "copy.pt").read_bytes() + b"x")
    with pytest.raises(bundle.UserError, match="not the file the manifest lists"):
        bundle.make_int8("mn-tiny", data)
