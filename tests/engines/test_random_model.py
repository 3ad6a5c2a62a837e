"""engines.random_model: random-weights checkpoints in an engine cache that several runs share."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engines.random_model import random_checkpoint
from train.checkpoint import load_checkpoint


def test_two_runs_writing_the_same_checkpoint_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs start on a fresh shared cache (mn-live and mn-segment with --model lunet, folds of mn-cv):
    both write random-lunet-...pt at the same moment. Each gets the checkpoint; before, the second one's
    rename found its temporary file renamed away by the first (exit 2, "No such file or directory: ...tmp")."""
    import train.checkpoint

    both_saving = threading.Barrier(2, timeout=60)
    real_save = train.checkpoint.torch.save

    def save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        both_saving.wait()  # each writer inside torch.save before either renames
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(train.checkpoint.torch, "save", save)
    results: dict[int, Path | BaseException] = {}

    def run(k: int) -> None:
        try:
            results[k] = random_checkpoint("lunet-coarse", (64, 64), cache_dir=tmp_path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results[0] == results[1] == tmp_path / "random-lunet-coarse-64x64-seed0.pt", results
    assert load_checkpoint(results[0])["config"]["random_weights"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["random-lunet-coarse-64x64-seed0.pt"]  # no temporary file left
