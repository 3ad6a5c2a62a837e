"""``mn-eval`` as the console script runs it (engines/evaluate_cli.py): ``--checkpoint`` alone is train.evaluate
as before, ``--model`` runs the live engine with the same metrics, and bundled names work in both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engines import registry
from engines.cache import file_sha256
from engines.evaluate_cli import cli as mn_eval
from engines.evaluate_cli import resolve_checkpoint
from tests.engines._helpers import make_checkpoint

SIZE = (64, 48)
SAME = ("n", "protocol", "dsc", "iou", "precision", "recall", "csa_rel_error", "csa_agreement", "per_image")
"""The metric keys both ways must agree on exactly."""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("eval") / "lunet.pt", "lunet", SIZE)


def _eval(tmp_path: Path, name: str, *argv: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert mn_eval([*argv, "--json", str(out), "-q"]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("protocol", ["paper", "native"])
def test_model_on_torch_equals_checkpoint(ckpt: Path, synthetic_dataset_shared: Path, tmp_path: Path,
                                          protocol: str) -> None:
    common = ["--data", str(synthetic_dataset_shared), "--protocol", protocol, "--split", "paper", "--threads", "1"]
    by_checkpoint = _eval(tmp_path, "ckpt", "--checkpoint", str(ckpt), *common)
    by_engine = _eval(tmp_path, "engine", "--model", str(ckpt), "--backend", "torch", "--precision", "fp32", *common)
    assert {k: by_engine[k] for k in SAME} == {k: by_checkpoint[k] for k in SAME}
    assert set(by_checkpoint) <= set(by_engine)  # the same JSON, plus what ran
    assert by_engine["engine"]["backend"] == "torch" and by_engine["engine"]["precision"] == "fp32"
    assert by_engine["model"] == by_checkpoint["model"] == "lunet" and by_engine["split"] == "paper:val"


def test_model_on_onnxruntime_matches_and_records_auto(ckpt: Path, synthetic_dataset_shared: Path,
                                                       tmp_path: Path) -> None:
    common = ["--data", str(synthetic_dataset_shared), "--threads", "1"]
    by_checkpoint = _eval(tmp_path, "ckpt", "--checkpoint", str(ckpt), *common)
    by_engine = _eval(tmp_path, "ort", "--checkpoint", str(ckpt), "--backend", "onnxruntime",
                      "--cache-dir", str(tmp_path / "cache"), *common)  # --checkpoint + an engine flag: the engine
    assert by_engine["engine"]["backend"] == "onnxruntime"
    assert by_engine["dsc"]["mean"] == pytest.approx(by_checkpoint["dsc"]["mean"], abs=1e-3)
    auto = _eval(tmp_path, "auto", "--model", str(ckpt), "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
                 *common)
    assert any(n.startswith("auto ") for n in auto["engine"]["notes"])  # why auto chose what it chose


@pytest.fixture
def bundled(tmp_path: Path, ckpt: Path):  # type: ignore[no-untyped-def]
    """A bundled folder with 'mn-tiny' (the module's checkpoint), made the active catalogue."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    shutil.copyfile(ckpt, folder / "mn-tiny.pt")
    entry = {"name": "mn-tiny", "file": "mn-tiny.pt", "sha256": file_sha256(folder / "mn-tiny.pt")}
    (folder / registry.MANIFEST_NAME).write_text(json.dumps({"format": 1, "models": [entry]}))
    registry.load_bundled(folder)
    try:
        yield folder
    finally:
        registry.load_bundled()


def test_bundled_names_resolve_both_ways(bundled: Path, ckpt: Path, synthetic_dataset_shared: Path,
                                         tmp_path: Path) -> None:
    common = ["--data", str(synthetic_dataset_shared), "--threads", "1"]
    by_path = _eval(tmp_path, "path", "--checkpoint", str(ckpt), *common)
    by_name = _eval(tmp_path, "name", "--checkpoint", "mn-tiny", *common)
    assert by_name["checkpoint"] == str(bundled / "mn-tiny.pt")
    assert {k: by_name[k] for k in SAME} == {k: by_path[k] for k in SAME}
    as_model = _eval(tmp_path, "model", "--model", "mn-tiny", "--backend", "torch", *common)
    assert {k: as_model[k] for k in SAME} == {k: by_path[k] for k in SAME}
    assert as_model["model_arg"] == "mn-tiny"


def test_the_package_default_model_resolves_by_name() -> None:
    registry.load_bundled()
    assert "mn-realtime" in registry.BUNDLED_MODELS  # the package ships its default model: not a reason to skip
    assert resolve_checkpoint("mn-realtime") == str(registry.BUNDLED_MODELS["mn-realtime"])
    assert resolve_checkpoint("runs/none/best.pt") == "runs/none/best.pt"  # not a name: passed on as it was


@pytest.mark.parametrize(("argv", "needle"), [
    (["--model", "m.pt", "--checkpoint", "c.pt"], "not both"),
    ([], "--checkpoint CKPT"),
    (["--model", "no-such-model"], "not a file and not a bundled model"),
    (["--model", "x.pt", "--mm-per-px", "0"], "--mm-per-px"),
])
def test_bad_input_is_one_line_exit_2(argv: list[str], needle: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    assert mn_eval([*argv, "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_tta_of_a_single_network_is_refused(ckpt: Path, synthetic_dataset_shared: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    assert mn_eval(["--checkpoint", str(ckpt), "--tta", "hflip", "--data", str(synthetic_dataset_shared)]) == 2
    err = capsys.readouterr().err
    assert "is the cascade's refiner's" in err and "leave out --tta" in err and err.count("\n") == 1
