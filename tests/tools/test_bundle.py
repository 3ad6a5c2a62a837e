"""``python -m tools.bundle`` (add / list / check / remove), the maintainer's tool for the bundled
models, and the CI smoke test of every model actually shipped (on the real data)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import load_engine, registry
from engines.base import EngineError
from engines.cache import file_sha256
from tests.conftest import make_dataset
from tests.engines._helpers import make_checkpoint, min_dice, random_batch, torch_prob
from tests.engines.test_catalogue import _shipped
from tools import bundle
from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.errors import UserError
from train.evaluate import main as mn_eval

SIZE = (64, 48)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def bundled(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An empty bundled folder made the active one (the package's is restored afterwards)."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    (folder / registry.MANIFEST_NAME).write_text(json.dumps({"format": 1, "default": "mn-realtime", "models": []}))
    registry.load_bundled(folder)
    try:
        yield folder
    finally:
        registry.load_bundled()


def _fp16_exact_checkpoint(path: Path, seed: int = 0, train_state: dict | None = None) -> Path:
    """A random-weights lunet whose float32 weights are exactly representable in float16, so its bundled
    copy computes the very same numbers (DSC comparisons are then exact)."""
    make_checkpoint(path, "lunet", SIZE, seed=seed)
    payload = load_checkpoint(path)
    model, config = model_from_checkpoint(path)
    model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                           for k, v in payload["state_dict"].items()})
    save_checkpoint(path, model, config, train_state=train_state)
    return path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic dataset (patient Pz004 is a paper validation patient: 5 validation images), a
    checkpoint with training state, and its mn-eval paper / native results on the paper split."""
    root = tmp_path_factory.mktemp("bundle")
    data = make_dataset(root / "data", n_patients=5, per_patient=5, size=(128, 96))
    ckpt = _fp16_exact_checkpoint(root / "best.pt", train_state={"epoch": 3, "optimizer": {"lr": torch.tensor(0.1)}})
    out = {"data": data, "checkpoint": ckpt}
    for protocol in ("paper", "native"):
        out[protocol] = root / f"{protocol}.json"
        assert mn_eval(["--checkpoint", str(ckpt), "--data", str(data), "--split", "paper", "--protocol", protocol,
                        "--json", str(out[protocol]), "-q"]) == 0
    return out


def _add(evaluated: dict[str, Path], name: str = "mn-test", **kwargs) -> dict:  # type: ignore[no-untyped-def]
    kwargs.setdefault("checkpoint", evaluated["checkpoint"])
    kwargs.setdefault("data", evaluated["data"])
    return bundle.add_model(name, description="a test model", eval_json=evaluated["paper"], **kwargs)


def _bench_json(path: Path, size: str = "64x48") -> Path:
    def row(backend: str, mode: str, p95: float, **extra) -> dict:  # type: ignore[no-untyped-def]
        return {"model": "lunet", "backend": backend, "precision": "fp32", "size": size, "mode": mode, "batch": 1,
                "status": "ok", "fps": 1000 / p95, "notes": ["random weights (architecture name given): ..."],
                "latency_ms": {"e2e": {"p50": p95 - 2, "p95": p95}}, **extra}

    path.write_text(json.dumps({"system": {"host": "box", "cpu": "Test CPU", "cores": 2, "gpu": None},
                                "runs": [row("torch-naive", "realtime", 50.0), row("onnxruntime", "offline", 30.0),
                                         row("onnxruntime", "realtime", 20.0),
                                         row("onnxruntime", "realtime", 9.0, status="failed")]}))
    return path


# -- the weights file -----------------------------------------------------------------------------
def test_half_state_dict() -> None:
    sd = {"w": torch.randn(3, dtype=torch.float32), "n": torch.tensor(7), "d": torch.randn(2, dtype=torch.float64)}
    half = bundle.half_state_dict(sd)
    assert half["w"].dtype == half["d"].dtype == torch.float16
    assert half["n"].dtype == torch.int64 and int(half["n"]) == 7


def test_add_writes_float16_copy_and_manifest_entry(bundled: Path, evaluated: dict[str, Path]) -> None:
    paper = json.loads(evaluated["paper"].read_text())
    native = json.loads(evaluated["native"].read_text())
    entry = _add(evaluated, native_json=evaluated["native"], train_command="mn-train ...", notes="n",
                 results_files=[str(evaluated["paper"])], make_default=True)
    dest = bundled / "mn-test.pt"
    payload = torch.load(dest, weights_only=True)
    assert set(payload) == {"format", "format_version", "config", "state_dict"}  # no training state
    sd = payload["state_dict"]
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}
    assert all(v.dtype == torch.int64 for k, v in sd.items() if k.endswith("num_batches_tracked"))
    assert payload["config"]["bundled"]["weights_dtype"] == "float16"
    assert dest.stat().st_size < 0.6 * evaluated["checkpoint"].stat().st_size

    model, config = model_from_checkpoint(evaluated["checkpoint"])
    manifest = json.loads((bundled / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["default"] == "mn-test" and manifest["models"] == [entry]
    assert entry["file"] == "mn-test.pt" and entry["architecture"] == config["model"]
    assert entry["input_size"] == list(SIZE)
    assert entry["parameters"] == sum(p.numel() for p in model.parameters())
    assert entry["file_bytes"] == dest.stat().st_size and entry["sha256"] == file_sha256(dest)
    assert entry["val"] == {"protocol": "paper", "dsc": paper["dsc"]["mean"], "dsc_std": paper["dsc"]["std"],
                            "native_dsc": native["dsc"]["mean"],
                            "csa_median_rel_error": paper["csa_rel_error"]["median"], "split": "paper:val",
                            "images": 5}
    stems = sorted(r["stem"] for r in paper["per_image"])[:4]
    assert entry["smoke"] == {"stems": stems,
                              "dsc": [next(r["dsc"] for r in paper["per_image"] if r["stem"] == s) for s in stems]}
    assert entry["cpu_latency_ms"] is None and entry["train_command"] == "mn-train ..." and entry["notes"] == "n"
    assert entry["source_checkpoint"]["sha256"] == file_sha256(evaluated["checkpoint"])
    # the registry follows the manifest at once, and the manifest's default is the default model
    assert registry.BUNDLED_MODELS == {"mn-test": dest}
    assert registry.bundled_default() == "mn-test"

    # re-adding replaces the entry (one entry, one file)
    _add(evaluated, verify=False)
    assert [m["name"] for m in registry.read_manifest()["models"]] == ["mn-test"]
    assert sorted(p.name for p in bundled.iterdir()) == ["manifest.json", "mn-test.pt"]


def test_the_appearance_model_travels_with_the_model(bundled: Path, evaluated: dict[str, Path], tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from realtime.appearance import FEATURES, AppearanceModel, appearance_for, load_appearance_model, sidecar

    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(evaluated["checkpoint"].read_bytes())
    fit = AppearanceModel(features=FEATURES[:4], mean=(0.0,) * 4, scale=(1.0,) * 4, weights=(1.0, 0, 0, 0), bias=0.0,
                          threshold=0.3, provenance={"segmentation_model": str(checkpoint),
                                                     "model_sha256": file_sha256(checkpoint)})
    fit.save(sidecar(checkpoint))
    entry = _add(evaluated, checkpoint=checkpoint, verify=False)
    shipped = load_appearance_model(bundled / "mn-test.appearance.json")
    assert shipped == fit  # the same weights and threshold, now describing the float16 copy
    assert shipped.provenance["model_sha256"] == entry["sha256"]
    assert shipped.provenance["fit_on"] == {"path": str(checkpoint), "sha256": file_sha256(checkpoint),
                                            "segmentation_model": str(checkpoint)}
    assert shipped.provenance["segmentation_model"] == "mn-test"  # the name it is loaded by now
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert appearance_for(bundled / "mn-test.pt").threshold == 0.3
    assert caplog.text == ""  # its own, fit on this file's outlines
    # renamed and removed with the model
    assert bundle.cli(["rename", "mn-test", "mn-other", "--why", "w", "--dir", str(bundled)]) == 0
    assert not (bundled / "mn-test.appearance.json").exists()
    renamed = load_appearance_model(bundled / "mn-other.appearance.json").provenance
    assert renamed["model_file"].endswith("mn-other.pt") and renamed["segmentation_model"] == "mn-other"
    assert bundle.cli(["remove", "mn-other", "--dir", str(bundled)]) == 0
    assert sorted(p.name for p in bundled.iterdir()) == ["manifest.json"]
    # a replaced model without one of its own drops the stale one, and says so
    fit.save(bundled / "mn-test.appearance.json")
    with caplog.at_level(logging.WARNING, logger="tools.bundle"):
        _add(evaluated, verify=False)
    assert not (bundled / "mn-test.appearance.json").exists() and "has no appearance model" in caplog.text


def test_add_reads_cpu_latency_from_mn_bench(bundled: Path, evaluated: dict[str, Path], tmp_path: Path) -> None:
    entry = _add(evaluated, bench_json=_bench_json(tmp_path / "bench.json"), verify=False)
    lat = entry["cpu_latency_ms"]
    assert (lat["p50"], lat["p95"], lat["fps"]) == (18.0, 20.0, 50.0)  # the ok realtime onnxruntime row
    assert lat["machine"] == "box: Test CPU, 2 cores, no GPU"
    assert lat["results_file"] == str(tmp_path / "bench.json")
    assert "random weights" in lat["what"]
    with pytest.raises(UserError, match="no successful realtime-mode onnxruntime row at 64x48"):
        _add(evaluated, bench_json=_bench_json(tmp_path / "other.json", size="128x96"), verify=False)


def test_latency_replaces_the_record_and_keeps_int8_beside_fp32(bundled: Path, evaluated: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    _add(evaluated, verify=False)
    weights = (bundled / "mn-test.pt").read_bytes()
    bench = json.loads(_bench_json(tmp_path / "bench.json").read_text())
    bench["runs"].append({**bench["runs"][2], "precision": "int8", "fps": 24.0, "dropped": 0,
                          "latency_ms": {"e2e": {"p50": 8.0, "p95": 11.0}}})
    bench["runs"][2]["dropped"] = 3
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    assert bundle.cli(["latency", "mn-test", "--bench-json", str(tmp_path / "bench.json"), "--dir", str(bundled)]) == 0
    lat = registry.read_manifest()["models"][0]["cpu_latency_ms"]
    assert (lat["p95"], lat["dropped"]) == (20.0, 3) and lat["int8"] == {"p50": 8.0, "p95": 11.0, "fps": 24.0,
                                                                          "dropped": 0}
    assert (bundled / "mn-test.pt").read_bytes() == weights
    assert "20.0 ms / 11.0" in bundle.models_table()
    assert bundle.cli(["latency", "mn-none", "--bench-json", str(tmp_path / "bench.json"), "--dir", str(bundled)]) == 2


def test_add_refuses_more_than_the_size_limit(bundled: Path, evaluated: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert bundle.MAX_BUNDLE_BYTES == 64_000_000
    _add(evaluated, verify=False)
    first = (bundled / "mn-test.pt").stat().st_size
    monkeypatch.setattr(bundle, "MAX_BUNDLE_BYTES", first + 1000)
    _add(evaluated, verify=False)  # replacing a model counts its new size only
    with pytest.raises(UserError, match=r"more than the \d+ MB the package may carry"):
        _add(evaluated, "mn-second", verify=False)
    assert sorted(p.name for p in bundled.iterdir()) == ["manifest.json", "mn-test.pt"]
    assert [m["name"] for m in registry.read_manifest()["models"]] == ["mn-test"]


@pytest.mark.parametrize(("name", "protocol_file", "needle"), [
    ("Bad Name", "paper", "use lower-case letters"),
    ("lunet", "paper", "is an architecture name"),
    ("mn-test", "native", "is a 'native' protocol result, not 'paper'"),
])
def test_add_refuses_bad_input(bundled: Path, evaluated: dict[str, Path], name: str, protocol_file: str,
                               needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        bundle.add_model(name, evaluated["checkpoint"], description="d", eval_json=evaluated[protocol_file],
                         verify=False)
    assert registry.read_manifest()["models"] == []


def test_add_refuses_results_of_another_split(bundled: Path, evaluated: dict[str, Path], tmp_path: Path) -> None:
    other = json.loads(evaluated["paper"].read_text())
    other["split"] = "none"
    (tmp_path / "all.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match="split 'none', not 'paper:val'.*--split paper --subset val"):
        bundle.add_model("mn-test", evaluated["checkpoint"], description="d", eval_json=tmp_path / "all.json")


def test_add_refuses_a_copy_that_does_not_reproduce_the_smoke_dsc(bundled: Path, evaluated: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    other = _fp16_exact_checkpoint(tmp_path / "other.pt", seed=5)  # evaluated results belong to another model
    with pytest.raises(UserError, match="does not reproduce the smoke DSC"):
        _add(evaluated, checkpoint=other)
    assert not (bundled / "mn-test.pt").exists() and registry.read_manifest()["models"] == []


def test_bundled_model_loads_by_name_on_every_cpu_backend(bundled: Path, evaluated: dict[str, Path],
                                                         tmp_path: Path) -> None:
    original = make_checkpoint(tmp_path / "fp32.pt", "lunet", SIZE, seed=3)  # weights not float16-exact
    _add(evaluated, checkpoint=original, verify=False)
    batch = random_batch(SIZE, n=2)
    reference = torch_prob(original, batch)
    for backend in ("onnxruntime", "torch"):
        with load_engine("mn-test", backend=backend, batch=2, cache_dir=tmp_path / "cache") as engine:
            assert engine.size == SIZE and engine.info.source == str(bundled / "mn-test.pt")
            prob = engine.infer(batch)
        assert np.abs(prob - reference).max() < 1e-3, backend  # float16 weights: ~1e-4 on these networks
        assert min_dice(prob, reference) > 0.98, backend


def test_list(bundled: Path, evaluated: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bundle.cli(["list", "--dir", str(bundled)]) == 0
    assert "no trained model is bundled" in capsys.readouterr().out
    entry = _add(evaluated, bench_json=_bench_json(tmp_path / "bench.json"), make_default=True, verify=False)
    assert bundle.cli(["list", "--dir", str(bundled)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "mn-test" in x)
    assert line.startswith("*")
    for text in (f"{entry['file_bytes'] / 1e6:.1f}", "64x48", f"{entry['val']['dsc']:.3f}", "20.0 ms", "50.0",
                 "box: Test CPU, 2 cores, no GPU", "a test model"):
        assert text in line, text
    assert "* default" in out


def _cv_summary(path: Path, folds_done: list[int], folds: int = 5, models: str | None = None) -> Path:
    """An mn-cv cv-summary.json as train.crossval writes it (the keys add reads); ``models="as-final"``: its
    cv-summary-as-final.json (no ``models`` key: a summary from before that key)."""
    path.write_text(json.dumps({
        "recipe": "cascade-strong-ph-cmp", "folds": folds, "seed": 42, "folds_done": folds_done,
        **({"models": models} if models else {}),
        "best_epochs": {"localiser": [40] * len(folds_done), "refiner": [100] * len(folds_done)},
        "threshold": {"chosen_all": 0.475},
        "protocols": {"paper": {"n_images": 202, "dsc": {"mean": 0.8912, "sd": 0.03, "n": len(folds_done)},
                                "csa_rel_error_median": {"mean": 0.068, "sd": 0.005, "n": len(folds_done)},
                                "pooled": {"csa_agreement": {"bias_rel": 0.02, "missed": 4}}},
                      "native": {"dsc": {"mean": 0.8944, "sd": 0.03}}}}))
    return path


def test_a_model_trained_on_every_image_ships_with_its_cross_validation(bundled: Path, evaluated: dict[str, Path],
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """mn-cv --final's model saw the validation images: add needs the folds' estimate, records it as 'cv' and marks
    'val' as trained on; the models table shows the CV number and no validation score."""
    final = tmp_path / "final.pt"
    payload = load_checkpoint(evaluated["checkpoint"])
    save_checkpoint(final, model_from_checkpoint(evaluated["checkpoint"])[0],
                    {**payload["config"], "train": {"split": "none", "epochs": 3}})
    with pytest.raises(UserError, match="trained on every image.*--cv-summary"):
        _add(evaluated, checkpoint=final, verify=False)
    with pytest.raises(UserError, match="3 of 5 folds evaluated"):
        _add(evaluated, checkpoint=final, verify=False, cv_summary=_cv_summary(tmp_path / "part.json", [0, 1, 2]))
    with pytest.raises(UserError, match="not an mn-cv summary"):
        _add(evaluated, checkpoint=final, verify=False, cv_summary=evaluated["paper"])
    summary = _cv_summary(tmp_path / "cv-summary.json", [0, 1, 2, 3, 4])
    entry = _add(evaluated, checkpoint=final, verify=False, cv_summary=summary, make_default=True)
    assert entry["val"]["trained_on"] is True
    cv = entry["cv"]
    assert (cv["recipe"], cv["folds"], cv["images"], cv["dsc"], cv["dsc_sd"], cv["native_dsc"]) == \
        ("cascade-strong-ph-cmp", 5, 202, 0.8912, 0.03, 0.8944)
    assert (cv["csa_median_rel_error"], cv["csa_bias_rel"], cv["missed"], cv["threshold"]) == (0.068, 0.02, 4, 0.475)
    assert cv["models"] == "folds" and "each fold model on" in cv["what"]
    # the estimate of the final procedure itself (mn-cv --as-final's summary) is recorded as such
    as_final = _cv_summary(tmp_path / "cv-summary-as-final.json", [0, 1, 2, 3, 4], models="as-final")
    cv = _add(evaluated, checkpoint=final, verify=False, cv_summary=as_final, make_default=True)["cv"]
    assert cv["models"] == "as-final" and "trained the way the final model is" in cv["what"]
    assert bundle.cli(["list", "--dir", str(bundled)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "mn-test" in x)
    assert "0.891±0.030" in line and "trained on" in line and "6.8 %" in line
    # a model with held-out validation images keeps its val number and gets no 'cv' unless one is given
    entry = _add(evaluated, verify=False)
    assert "trained_on" not in entry["val"] and "cv" not in entry


def test_check_smoke_passes_and_fails_on_a_doctored_manifest(bundled: Path, evaluated: dict[str, Path],
                                                             tmp_path: Path) -> None:
    _add(evaluated)
    out = tmp_path / "check.json"
    argv = ["check", "--dir", str(bundled), "--data", str(evaluated["data"]), "--json", str(out), "-q"]
    assert bundle.cli(argv) == 0
    result = json.loads(out.read_text())
    assert result["ok"] and result["mode"] == "smoke" and result["tolerance"] == 0.005
    (row,) = result["models"]
    assert row["name"] == "mn-test" and row["sha256_ok"] and row["max_abs_diff"] == 0.0 and len(row["per_image"]) == 4

    manifest = json.loads((bundled / "manifest.json").read_text())
    manifest["models"][0]["smoke"]["dsc"][1] += 0.01
    (bundled / "manifest.json").write_text(json.dumps(manifest))
    assert bundle.cli(argv) == 1
    result = json.loads(out.read_text())
    assert not result["ok"] and result["models"][0]["max_abs_diff"] == pytest.approx(0.01)


def test_check_full_compares_the_validation_mean(bundled: Path, evaluated: dict[str, Path], tmp_path: Path) -> None:
    _add(evaluated)
    out = tmp_path / "full.json"
    argv = ["check", "--full", "--dir", str(bundled), "--data", str(evaluated["data"]), "--json", str(out), "-q"]
    assert bundle.cli(argv) == 0
    (row,) = json.loads(out.read_text())["models"]
    assert row["ok"] and row["images"] == 5 and row["diff"] == 0.0
    manifest = json.loads((bundled / "manifest.json").read_text())
    manifest["models"][0]["val"]["dsc"] += 0.006
    (bundled / "manifest.json").write_text(json.dumps(manifest))
    assert bundle.cli(argv) == 1


def test_check_detects_a_changed_file(bundled: Path, evaluated: dict[str, Path]) -> None:
    _add(evaluated)
    manifest = json.loads((bundled / "manifest.json").read_text())
    manifest["models"][0]["sha256"] = "0" * 64
    (bundled / "manifest.json").write_text(json.dumps(manifest))
    result = bundle.check_bundled(evaluated["data"])
    assert not result["ok"] and not result["models"][0]["sha256_ok"]


def test_check_without_models_passes(bundled: Path, tmp_path: Path) -> None:
    assert bundle.check_bundled(tmp_path)["models"] == []


def test_the_float_cpu_default_follows_add_rename_and_remove(bundled: Path, evaluated: dict[str, Path]) -> None:
    _add(evaluated, verify=False, make_default=True)
    _add(evaluated, "mn-light", verify=False, make_fp32_default=True)
    manifest = registry.read_manifest()
    assert (manifest["default"], manifest["fp32_default"]) == ("mn-test", "mn-light")
    assert registry.bundled().fp32_default == "mn-light"
    table = bundle.models_table()
    assert next(line for line in table.splitlines() if "mn-light" in line).startswith("f  mn-light")
    assert next(line for line in table.splitlines() if "mn-test" in line).startswith("*  mn-test")
    assert bundle.cli(["rename", "mn-light", "mn-lighter", "--why", "clearer", "--dir", str(bundled)]) == 0
    assert registry.read_manifest()["fp32_default"] == "mn-lighter"
    assert bundle.cli(["remove", "mn-lighter", "--dir", str(bundled)]) == 0
    assert "fp32_default" not in registry.read_manifest() and registry.bundled().fp32_default is None


def test_remove(bundled: Path, evaluated: dict[str, Path]) -> None:
    _add(evaluated, verify=False)
    assert bundle.cli(["remove", "mn-test", "--dir", str(bundled)]) == 0
    assert registry.read_manifest()["models"] == [] and registry.BUNDLED_MODELS == {}
    assert not (bundled / "mn-test.pt").exists()
    assert bundle.cli(["remove", "mn-test", "--dir", str(bundled)]) == 2


def test_rename_keeps_the_old_name_working_with_a_warning(bundled: Path, evaluated: dict[str, Path],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _add(evaluated, verify=False)
    before = (bundled / "mn-test.pt").read_bytes()
    assert bundle.cli(["rename", "mn-test", "mn-renamed", "--why", "it was misnamed", "--dir", str(bundled)]) == 0
    manifest = registry.read_manifest()
    assert [m["name"] for m in manifest["models"]] == ["mn-renamed"]
    assert manifest["renamed"] == {"mn-test": {"name": "mn-renamed", "why": "it was misnamed"}}
    assert not (bundled / "mn-test.pt").exists() and (bundled / "mn-renamed.pt").read_bytes() == before
    with caplog.at_level(logging.WARNING, logger="engines.registry"):
        source = registry.resolve_model("mn-test")
    assert source.name == "mn-renamed" and source.path == bundled / "mn-renamed.pt"
    assert "now called 'mn-renamed' (it was misnamed)" in caplog.text
    # a second rename follows the chain; reusing a taken or retired name is refused
    assert bundle.cli(["rename", "mn-renamed", "mn-third", "--why", "again", "--dir", str(bundled)]) == 0
    assert registry.resolve_model("mn-test").name == "mn-third"
    assert bundle.cli(["rename", "mn-third", "mn-test", "--why", "back", "--dir", str(bundled)]) == 2
    # removing the model drops the old names that led to it, and the manifest stays readable
    assert bundle.cli(["remove", "mn-third", "--dir", str(bundled)]) == 0
    assert "renamed" not in registry.read_manifest()
    with pytest.raises(EngineError, match="unknown model 'mn-test'"):
        registry.resolve_model("mn-test")


def test_a_renamed_record_pointing_nowhere_is_a_broken_manifest(bundled: Path) -> None:
    manifest = registry.read_manifest(bundled)
    manifest["renamed"] = {"old": {"name": "not-bundled", "why": ""}}
    (bundled / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="'renamed' must map"):
        registry.read_manifest(bundled)


# -- the models actually shipped (the CI smoke test) ------------------------------------------------
@pytest.mark.data
@pytest.mark.parametrize("entry", _shipped())
def test_shipped_model_reproduces_its_smoke_dsc(entry: dict, real_data: Path) -> None:
    registry.load_bundled()
    result = bundle.check_bundled(real_data, names=[entry["name"]])
    (row,) = result["models"]
    assert row["ok"], json.dumps(row, indent=1)
    assert row["max_abs_diff"] <= bundle.TOLERANCE
