"""mn-export end to end: export, --verify on a folder / a video, the JSON contract, failures and exit codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from engines import export_cli, load_engine, verify
from engines.backends.onnxruntime_backend import OnnxRuntimeEngine
from engines.export_cli import build_parser, cli
from engines.registry import BACKENDS
from tests.conftest import make_dataset
from tests.engines._helpers import make_checkpoint, write_video

JSON_KEYS = {"backend", "precision", "dice_vs_torch", "max_abs_prob_diff", "frames", "per_frame", "model", "onnx",
             "output", "passed", "checkpoint", "format"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("cli") / "best.pt", "lunet", (64, 48))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("cli-data") / "data", n_patients=3, per_patient=2)


def test_every_flag_has_help() -> None:
    for action in build_parser()._actions:
        assert action.help, action.dest


def test_onnx_export_verified_on_a_folder(ckpt: Path, dataset: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out, report = tmp_path / "lunet.onnx", tmp_path / "report.json"
    code = cli(["--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out), "--verify", str(dataset),
                "--verify-frames", "4", "--json", str(report), "--cache-dir", str(tmp_path / "cache"), "-q"])
    assert code == 0 and out.is_file()
    data = json.loads(report.read_text())
    assert JSON_KEYS <= set(data)
    assert (data["backend"], data["precision"], data["frames"], data["passed"]) == ("onnxruntime", "fp32", 4, True)
    assert data["dice_vs_torch"]["min"] >= 0.99 and data["max_abs_prob_diff"] < 1e-4
    assert data["onnx"] == str(out) and data["model"] == "lunet" and len(data["per_frame"]) == 4
    assert {"name", "dice", "max_abs_prob_diff", "area_diff_px"} <= set(data["per_frame"][0])
    stdout = capsys.readouterr().out
    assert "PASSED" in stdout and f"exported {out}" in stdout and "Pz001-001" in stdout


def test_default_output_name_and_no_verification(ckpt: Path, tmp_path: Path) -> None:
    local = make_checkpoint(tmp_path / "best.pt", "lunet", (64, 48))
    report = tmp_path / "r.json"
    assert cli(["--checkpoint", str(local), "--dynamic-batch", "--size", "128x96", "--json", str(report), "-q"]) == 0
    out = tmp_path / "best-lunet-128x96-dyn-fp32.onnx"
    assert out.is_file()
    data = json.loads(report.read_text())
    assert data["passed"] is None and data["frames"] == 0 and data["output"] == str(out)
    assert load_engine(out, "onnxruntime").input_shape == (-1, 1, 96, 128)


def test_failed_verification_exits_1_and_deletes_the_export(ckpt: Path, dataset: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(verify.ACCEPTANCE_DICE, "fp32", 1.01)  # no engine can pass
    out, report = tmp_path / "lunet.onnx", tmp_path / "report.json"
    code = cli(["--checkpoint", str(ckpt), "--out", str(out), "--verify", str(dataset), "--verify-frames", "2",
                "--json", str(report), "-q"])
    assert code == 1 and not out.exists()
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["deleted"] == [str(out)] and data["threshold"] == 1.01
    assert "FAILED" in capsys.readouterr().out


def test_engine_with_other_masks_fails(ckpt: Path, dataset: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real = OnnxRuntimeEngine._infer
    monkeypatch.setattr(OnnxRuntimeEngine, "_infer", lambda self, batch: 1.0 - real(self, batch))
    out = tmp_path / "lunet.onnx"
    assert cli(["--checkpoint", str(ckpt), "--out", str(out), "--verify", str(dataset), "--verify-frames", "2",
                "-q"]) == 1
    assert not out.exists()


def test_fp16_export_verified_on_a_video(ckpt: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", n_frames=8)
    out, report = tmp_path / "lunet16.onnx", tmp_path / "r.json"
    assert cli(["--checkpoint", str(ckpt), "--precision", "fp16", "--out", str(out), "--verify", str(video),
                "--verify-frames", "3", "--json", str(report), "-q"]) == 0
    data = json.loads(report.read_text())
    assert (data["precision"], data["frames"], data["threshold"]) == ("fp16", 3, 0.98)
    assert [f["name"] for f in data["per_frame"]] == ["frame000000", "frame000004", "frame000007"]
    assert data["dice_vs_torch"]["min"] >= 0.98


@pytest.mark.parametrize(("args", "message"), [
    (["--verify", "synthetic"], "mn-synth --phantom"),
    (["--format", "onnx", "--onnx", "x.onnx"], "--onnx is only for --format engine"),
    (["--size", "60x48"], "not divisible by 8"),
    (["--batch", "0"], "--batch must be at least 1"),
])
def test_bad_input_is_one_line_exit_2(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                      message: str) -> None:
    code = cli(["--checkpoint", str(ckpt), "--out", str(tmp_path / "x.onnx"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("mn-export: error:") and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli([]) == 2
    assert "--checkpoint CKPT is required" in capsys.readouterr().err


def test_engine_format_without_tensorrt(ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(BACKENDS, "tensorrt", dataclasses.replace(
        BACKENDS["tensorrt"], probe=lambda: (False, "No module named 'tensorrt'")))
    assert cli(["--checkpoint", str(ckpt), "--format", "engine"]) == 2
    assert "pip install 'mn-seg[tensorrt]'" in capsys.readouterr().err


@pytest.mark.parametrize("passes", [True, False])
def test_engine_format_plumbing_with_a_stubbed_tensorrt(ckpt: Path, dataset: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, passes: bool) -> None:
    """--out copies the plan and its sidecar; a failed verification deletes them all (cache included)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    seen = {}

    def fake_plan(source, options):  # type: ignore[no-untyped-def]
        seen.update(precision=options.precision, batch=options.batch, dynamic=options.dynamic_batch,
                    max_batch=options.max_batch)
        plan = cache / "lunet.plan"
        plan.write_bytes(b"plan")
        plan.with_name("lunet.plan.json").write_text("{}")
        return plan

    def fake_open(path, fmt, threads, cache_dir):  # type: ignore[no-untyped-def]
        assert fmt == "engine" and path == tmp_path / "out.engine"
        engine = load_engine(ckpt, "torch", device="cpu")
        if not passes:
            real = engine._infer
            engine._infer = lambda batch: 1.0 - real(batch)  # type: ignore[method-assign]
        return engine

    monkeypatch.setitem(BACKENDS, "tensorrt", dataclasses.replace(BACKENDS["tensorrt"], probe=lambda: (True, "stub")))
    monkeypatch.setattr(export_cli, "tensorrt_plan", fake_plan)
    monkeypatch.setattr(export_cli, "_open_engine", fake_open)
    out = tmp_path / "out.engine"
    code = cli(["--checkpoint", str(ckpt), "--format", "engine", "--dynamic-batch", "--batch", "4", "--out",
                str(out), "--verify", str(dataset), "--verify-frames", "2", "--cache-dir", str(cache), "-q"])
    assert seen == {"precision": "fp16", "batch": 1, "dynamic": True, "max_batch": 4}
    files = [cache / "lunet.plan", cache / "lunet.plan.json", out, tmp_path / "out.engine.json"]
    if passes:
        assert code == 0 and all(f.is_file() for f in files)
    else:
        assert code == 1 and not any(f.exists() for f in files)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_frames_lunet(real_data: Path, tmp_path: Path, precision: str) -> None:
    """L-UNet (random weights) at the paper's 384x288, verified on 2 frames of the real dataset."""
    ckpt = make_checkpoint(tmp_path / "best.pt", "lunet", (384, 288))
    report = tmp_path / "r.json"
    assert cli(["--checkpoint", str(ckpt), "--precision", precision, "--verify", str(real_data),
                "--verify-frames", "2", "--json", str(report), "-q"]) == 0
    data = json.loads(report.read_text())
    assert data["frames"] == 2 and data["passed"] and data["size"] == [384, 288]
    assert data["dice_vs_torch"]["min"] >= verify.ACCEPTANCE_DICE[precision]
    assert all("dice_truth_engine" in f for f in data["per_frame"])


def test_bundled_name_exports_into_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    from engines import registry

    package = tmp_path / "package"
    package.mkdir()
    bundled = make_checkpoint(package / "tiny.pt", "lunet", (64, 48))
    monkeypatch.setitem(registry.BUNDLED_MODELS, "mn-tiny", bundled)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli(["--checkpoint", "mn-tiny", "-q"]) == 0
    assert [p.name for p in work.iterdir()] == ["tiny-lunet-64x48-b1-fp32.onnx"]
    assert [p.name for p in package.iterdir()] == ["tiny.pt"]  # nothing written into the package
    assert cli(["--checkpoint", "mn-nosuch"]) == 2
    assert "mn-tiny" in capsys.readouterr().err  # the error lists the bundled names
