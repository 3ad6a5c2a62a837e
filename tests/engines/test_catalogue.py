"""The bundled models as data (engines.catalogue, engines.registry): the package's manifest, broken
manifests as clear errors where used, nothing read at import, loading a shipped model by name, and the
package data in the wheel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engines import load_engine, registry
from engines.base import EngineError
from engines.cache import file_sha256
from engines.catalogue import Catalogue
from tests.engines._helpers import random_batch
from tools import bundle

REPO = Path(__file__).resolve().parents[2]


# -- the manifest and the registry -----------------------------------------------------------------
def test_package_manifest_is_valid() -> None:
    manifest = registry.read_manifest(registry.BUNDLED_DIR)
    assert manifest["format"] == registry.MANIFEST_FORMAT == 1
    assert set(registry.BUNDLED_MODELS) == {m["name"] for m in manifest["models"]}
    assert sum(p.stat().st_size for p in registry.BUNDLED_DIR.glob("*.pt")) <= bundle.MAX_BUNDLE_BYTES


@pytest.mark.parametrize(("text", "needle"), [
    (None, "is missing; reinstall mn-seg"),
    ("{not json", "cannot be read"),
    ('{"format": 2, "models": []}', "newer than this mn-seg reads"),
    ('{"format": 1, "models": [{"name": "x"}]}', "'name' and 'file'"),
])
def test_broken_manifest_is_a_clear_error_when_used(tmp_path: Path, text: str | None, needle: str) -> None:
    if text is not None:
        (tmp_path / registry.MANIFEST_NAME).write_text(text)
    try:
        assert registry.load_bundled(tmp_path) == {}  # no exception at load (import) time
        assert needle in registry.bundled_error()
        with pytest.raises(EngineError, match=needle):
            registry.read_manifest()
        with pytest.raises(EngineError, match=f"not a bundled model.*{needle}"):
            registry.resolve_model("mn-realtime")
        assert bundle.cli(["list"]) == 2
    finally:
        registry.load_bundled()


def test_nothing_is_read_at_import_and_a_catalogue_is_a_value(tmp_path: Path) -> None:
    code = "import json, engines.registry as r; print(json.dumps(r._active))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout) == [], proc.stderr
    (tmp_path / registry.MANIFEST_NAME).write_text(json.dumps({"format": 1, "default": "a", "models": [
        {"name": "a", "file": "a.pt"}, {"name": "b", "file": "b.pt"}]}))
    catalogue = Catalogue.load(tmp_path)
    assert catalogue.models == {"a": tmp_path / "a.pt", "b": tmp_path / "b.pt"} and catalogue.default == "a"
    assert catalogue.error is None and Catalogue.load(tmp_path / "none").error
    (tmp_path / "a.pt").write_bytes(b"x")
    source = registry.resolve_model("a", catalogue=catalogue)  # any catalogue, the active one untouched
    assert (source.kind, source.path, source.name) == ("bundled", tmp_path / "a.pt", "a")
    assert "a" not in registry.BUNDLED_MODELS


# -- the package data ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_wheel_carries_the_bundled_models(tmp_path: Path) -> None:
    """A normal (non-editable) build: the wheel holds the manifest and every listed model file, and the
    registry of the unpacked wheel finds them."""
    if subprocess.run([sys.executable, "-c", "import setuptools"], capture_output=True, check=False).returncode:
        pytest.skip("setuptools is not installed in this environment (pip wheel --no-build-isolation needs it)")
    src = tmp_path / "src"  # a copy: the build must not touch the checkout's egg-info or build/
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(REPO / name, src / name)
    for package in ("common", "train", "engines", "realtime", "benchmarks"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(tmp_path / "dist")], cwd=src, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mn_seg-*.whl")
    manifest = registry.read_manifest(registry.BUNDLED_DIR)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "engines/bundled/manifest.json" in names
        assert json.loads(z.read("engines/bundled/manifest.json")) == manifest
        assert {f"engines/bundled/{m['file']}" for m in manifest["models"]} <= names
        # and each model's presence appearance model beside it (the package data of realtime.appearance)
        sidecars = {f"engines/bundled/{p.name}" for p in registry.BUNDLED_DIR.glob("*.appearance.json")}
        assert "engines/bundled/mn-realtime.appearance.json" in sidecars and sidecars <= names
        assert not any(n.startswith("tools/") for n in names)  # the maintainer's tool stays in the checkout
        z.extractall(tmp_path / "installed")
    code = ("import json, engines.registry as r; "
            "print(json.dumps([r.__file__, sorted(r.BUNDLED_MODELS), r.bundled_error()]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path / "installed"), "PATH": "/usr/bin:/bin"}, check=False)
    assert proc.returncode == 0, proc.stderr
    where, names, error = json.loads(proc.stdout)
    assert where.startswith(str(tmp_path / "installed")) and error is None
    assert names == sorted(m["name"] for m in manifest["models"])


def _shipped() -> list:
    try:
        models = registry.read_manifest(registry.BUNDLED_DIR)["models"]
    except EngineError as exc:  # reported by test_package_manifest_is_valid
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"manifest unreadable: {exc}"))]
    if not models:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no model is bundled yet "
                                                                 "(engines/bundled/manifest.json lists none)"))]
    return [pytest.param(m, id=m["name"]) for m in models]


@pytest.mark.parametrize("entry", _shipped())
def test_shipped_model_loads_by_name(entry: dict, tmp_path: Path) -> None:
    registry.load_bundled()
    path = registry.BUNDLED_DIR / entry["file"]
    assert registry.BUNDLED_MODELS[entry["name"]] == path
    assert file_sha256(path) == entry["sha256"] and path.stat().st_size == entry["file_bytes"]
    with load_engine(entry["name"], backend="torch", device="cpu") as engine:
        assert list(engine.size) == entry["input_size"]
        assert engine.info.config["model"] == entry["architecture"]
        prob = engine.infer(random_batch(tuple(entry["input_size"])))
    assert np.isfinite(prob).all()


