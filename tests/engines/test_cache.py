"""The engine cache: key digests, plan names, sidecars, refusal of plans built elsewhere, location."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from engines.base import EngineError
from engines.cache import (
    ENV_VAR,
    EngineKey,
    atomic_write_bytes,
    cache_dir,
    check_sidecar,
    read_sidecar,
    rebuild_command,
    sidecar_key,
    sidecar_path,
    timing_cache_path,
    write_sidecar,
)

RUNNING = {"trt_version": "10.13.0.35", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def make_key(**changes: object) -> EngineKey:
    fields = dict(onnx_sha256="ab" * 32, trt_version=RUNNING["trt_version"], gpu_name=RUNNING["gpu_name"],
                  compute_capability=RUNNING["compute_capability"], precision="fp16", input_shape=(1, 1, 288, 384),
                  max_batch=None)
    fields.update(changes)
    return EngineKey(**fields)  # type: ignore[arg-type]


def make_plan(tmp_path: Path, key: EngineKey | None = None, **sidecar_kwargs: object) -> Path:
    key = key or make_key()
    plan = tmp_path / key.plan_filename("lunet")
    plan.write_bytes(b"serialized engine bytes")
    write_sidecar(plan, key, **sidecar_kwargs)  # type: ignore[arg-type]
    return plan


# -- key ---------------------------------------------------------------------------------------

CHANGES = {
    "onnx_sha256": "cd" * 32,
    "trt_version": "10.14.1.48",
    "gpu_name": "NVIDIA A100-SXM4-80GB",
    "compute_capability": "8.0",
    "precision": "fp32",
    "input_shape": (1, 1, 256, 384),
    "max_batch": 8,
}


def test_changes_cover_every_field() -> None:
    assert set(CHANGES) == {f.name for f in dataclasses.fields(EngineKey)}


@pytest.mark.parametrize("field_name", sorted(CHANGES))
def test_digest_changes_when_any_field_changes(field_name: str) -> None:
    base = make_key()
    other = make_key(**{field_name: CHANGES[field_name]})
    assert other.digest() != base.digest()
    assert other.plan_filename("lunet") != base.plan_filename("lunet")


def test_digest_is_stable_for_equal_keys() -> None:
    a, b = make_key(), make_key(input_shape=[1, 1, 288, 384])  # list or tuple: same key
    assert a == b and a.digest() == b.digest()
    assert len(a.digest()) == 16 and int(a.digest(), 16) >= 0
    # pinned: the digest must not depend on the process (hash seeds) or dict order
    assert make_key().digest() == EngineKey.from_dict(json.loads(json.dumps(make_key().to_dict()))).digest()


def test_plan_filename() -> None:
    key = make_key()
    name = key.plan_filename("lunet")
    assert name == f"lunet-fp16-384x288-b1-trt10.13.0.35-nvidia-h100-80gb-hbm3-sm90-{key.digest()}.plan"
    dyn = make_key(input_shape=(4, 1, 288, 384), max_batch=8).plan_filename("dlunet-b4c3")
    assert dyn.startswith("dlunet-b4c3-fp16-384x288-b1-8-trt10.13.0.35-")
    assert "/" not in make_key(gpu_name="Weird/GPU name").plan_filename("a b")


@pytest.mark.parametrize("changes, match", [
    ({"precision": "int8"}, "precision"),
    ({"input_shape": (1, 3, 288, 384)}, "one channel"),
    ({"input_shape": (1, 1, 288)}, "N, 1, H, W"),
    ({"input_shape": (4, 1, 288, 384), "max_batch": 2}, "max_batch 2"),
    ({"compute_capability": "sm90"}, "compute_capability"),
])
def test_invalid_keys_are_refused(changes: dict, match: str) -> None:
    with pytest.raises(EngineError, match=match):
        make_key(**changes)


def test_timing_cache_path_is_per_environment(tmp_path: Path) -> None:
    a = timing_cache_path(tmp_path, RUNNING)
    b = timing_cache_path(tmp_path, {**RUNNING, "gpu_name": "NVIDIA L4", "compute_capability": "8.9"})
    assert a.parent == tmp_path and a != b and a.suffix == ".cache"


# -- sidecar -----------------------------------------------------------------------------------

def test_sidecar_round_trip(tmp_path: Path) -> None:
    key = make_key(input_shape=(2, 1, 288, 384), max_batch=8)
    config = {"model": {"name": "lunet", "kwargs": {}}, "preprocessing": {"id": "x", "size": [384, 288]}}
    plan = make_plan(tmp_path, key, checkpoint_config=config, checkpoint_path=tmp_path / "best.pt",
                     extra={"workspace_mb": 1024}, model_name="lunet", onnx_path=tmp_path / "m.onnx")
    assert sidecar_path(plan) == plan.with_name(plan.name + ".json")
    sidecar = read_sidecar(plan)
    assert sidecar_key(sidecar) == key
    assert sidecar["digest"] == key.digest()
    assert sidecar["checkpoint_config"] == config
    assert sidecar["checkpoint_path"] == str((tmp_path / "best.pt").resolve())
    assert sidecar["extra"] == {"workspace_mb": 1024}
    assert sidecar["built_at"].endswith("+00:00")  # UTC, ISO 8601
    assert sidecar["plan_bytes"] == plan.stat().st_size and len(sidecar["plan_sha256"]) == 64
    assert sidecar["rebuild_command"] == rebuild_command(sidecar)
    assert check_sidecar(plan, RUNNING) == sidecar
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("field_name, value", [
    ("trt_version", "10.3.0.26"),
    ("gpu_name", "NVIDIA GeForce RTX 4090"),
    ("compute_capability", "8.9"),
])
def test_mismatched_sidecar_is_refused_with_the_rebuild_command(tmp_path: Path, field_name: str, value: str) -> None:
    ckpt = tmp_path / "runs" / "my run" / "best.pt"
    plan = make_plan(tmp_path, make_key(input_shape=(1, 1, 288, 384), max_batch=8), checkpoint_path=ckpt)
    with pytest.raises(EngineError) as info:
        check_sidecar(plan, {**RUNNING, field_name: value})
    msg = str(info.value)
    expected = (f"mn-export --checkpoint {shlex.quote(str(ckpt.resolve()))} --format engine --precision fp16 "
                f"--size 384x288 --dynamic-batch --batch 8 --cache-dir {shlex.quote(str(tmp_path.resolve()))}")
    assert expected in msg
    assert value in msg and str(RUNNING[field_name]) in msg


def test_rebuild_command_without_checkpoint_uses_the_onnx(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, make_key(precision="fp32", input_shape=(4, 1, 96, 128)), onnx_path=tmp_path / "x.onnx")
    cmd = read_sidecar(plan)["rebuild_command"]
    assert cmd.startswith(f"mn-export --onnx {tmp_path.resolve() / 'x.onnx'} --format engine --precision fp32")
    assert "--size 128x96 --batch 4" in cmd
    bare = rebuild_command({"precision": "fp16", "input_shape": [1, 1, 288, 384]})
    assert bare == "mn-export --checkpoint CHECKPOINT.pt --format engine --precision fp16 --size 384x288"


def test_missing_sidecar_is_refused(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    sidecar_path(plan).unlink()
    with pytest.raises(EngineError, match="no sidecar") as info:
        check_sidecar(plan, RUNNING)
    assert "trust_plan=True" in str(info.value)
    assert "--precision fp16 --size 384x288" in str(info.value)  # guessed from the file name


@pytest.mark.parametrize("content", ["{not json", json.dumps(["a list"]), json.dumps({"format": "other"}),
                                     json.dumps({"format": "mn-seg-tensorrt-plan", "format_version": 1})])
def test_corrupt_sidecar_is_refused(tmp_path: Path, content: str) -> None:
    plan = make_plan(tmp_path)
    sidecar_path(plan).write_text(content)
    with pytest.raises(EngineError, match="rebuild"):
        check_sidecar(plan, RUNNING)


def test_changed_plan_file_is_refused(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    plan.write_bytes(b"another engine!!!!!!!!!")  # same size, other bytes
    with pytest.raises(EngineError, match="not the file its sidecar describes"):
        check_sidecar(plan, RUNNING)
    assert check_sidecar(plan, RUNNING, verify_plan=False)["precision"] == "fp16"


def test_unserialisable_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="JSON-able"):
        make_plan(tmp_path, checkpoint_config={"bad": object()})


def test_atomic_write_replaces(tmp_path: Path) -> None:
    path = atomic_write_bytes(tmp_path / "sub" / "f.bin", b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two" and [p.name for p in path.parent.iterdir()] == ["f.bin"]


# -- location ----------------------------------------------------------------------------------

def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    default = cache_dir()
    assert default == tmp_path / "home" / ".cache" / "mn-seg" / "engines" and default.is_dir()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"  # the flag beats the environment
    monkeypatch.setenv(ENV_VAR, "")
    assert cache_dir() == default  # an empty variable counts as unset
