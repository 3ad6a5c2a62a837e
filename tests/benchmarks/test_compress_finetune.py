"""benchmarks/compress_finetune.sh: the shipped ensemble's refiners trained again on stronger compression.

The script is run for real on a synthetic dataset: an mn-cv-shaped source folder with one fold's as-final parts
(each a one- or two-epoch mn-train run), then ``FROM=scratch`` trains both refiners from the start with the
source parts' own schedule, joins them with the source's localiser and evaluates the fold as mn-cv does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_dataset
from train.checkpoint import load_checkpoint
from train.train_cli import cli as train_cli

SCRIPT = REPO / "benchmarks" / "compress_finetune.sh"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PY": sys.executable, "TRAIN_ARGS": "--threads 1 --width 0.25 -q", **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=full,
                          timeout=600)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic dataset, phantom-like extra frames and an mn-cv folder holding fold 0's as-final parts: the
    refiners' schedule is 3 epochs with a drop after 2 (what FROM=scratch must copy)."""
    root = tmp_path_factory.mktemp("cft")
    data = make_dataset(root / "data", n_patients=5, per_patient=2)
    extra = make_dataset(root / "extra", n_patients=2, per_patient=2, seed=3)
    parts = root / "cv" / "fold-0" / "as-final"
    common = ["--data", str(data), "--split", "kfold", "--folds", "5", "--fold", "0", "--blind", "--batch-size", "4",
              "--width", "0.25", "--save-every-min", "0", "--threads", "1", "-q"]
    assert train_cli(["--model", "lunet-coarse", "--epochs", "1", "--out", str(parts / "localiser"), *common]) == 0
    assert train_cli(["--model", "lunet", "--crop", "128x96", "--augment", "compress", "--epochs", "3",
                      "--lr-drops", "2", "--lr", "2e-3", "--out", str(parts / "refiner"), *common]) == 0
    shutil.copytree(parts / "refiner", parts / "refiner-2")
    return {"data": data, "extra": extra, "cv": root / "cv", "out": root / "out"}


@pytest.mark.slow
def test_from_scratch_trains_both_refiners_on_the_source_schedule_and_evaluates_the_fold(
        source: dict[str, Path]) -> None:
    done = _run(source["data"], source["extra"], source["cv"], source["out"], 0, env={"FROM": "scratch"})
    assert done.returncode == 0, done.stderr + done.stdout
    fold = source["out"] / "fold-0" / "as-final"
    for part in ("refiner", "refiner-2"):
        train = json.loads((fold / part / "config.json").read_text())["train"]
        assert train["epochs"] == 3 and train["lr_drops"] == [2] and train["lr"] == pytest.approx(2e-3)
        assert train["init"] is None and train["compress"] == [0.65, 0.7] and train["blind"]
        assert train["speckle"] == ([0.0, 0.6] if part == "refiner-2" else None)
    joined = load_checkpoint(fold / "model.pt")["config"]
    assert joined["model"]["name"] == "cascade"
    for protocol in ("paper", "native"):
        assert json.loads((fold / f"eval-{protocol}.json").read_text())["n"] == 2  # fold 0: one patient
    assert (fold / "threshold-sweep.csv").is_file()
    # a finished fold is not trained again: the second run only says where its model is
    again = _run(source["data"], source["extra"], source["cv"], source["out"], 0, env={"FROM": "scratch"})
    assert again.returncode == 0 and (fold / "refiner.log").read_text().count('"best_checkpoint"') == 1


def test_an_unknown_start_and_a_missing_fold_are_refused(tmp_path: Path) -> None:
    bad = _run(tmp_path, tmp_path, tmp_path, tmp_path / "out", 0, env={"FROM": "bogus"})
    assert bad.returncode == 2 and "FROM=bogus: use finetune or scratch" in bad.stderr
    missing = _run(tmp_path, tmp_path, tmp_path / "cv", tmp_path / "out", 0, env={"FROM": "scratch"})
    assert missing.returncode == 2 and "fold-0/as-final/localiser/last.pt is missing" in missing.stderr


@pytest.mark.slow
def test_parts_localiser_trains_the_localiser_with_compression_and_joins_the_source_refiners_mirrored(
        source: dict[str, Path]) -> None:
    """PARTS=localiser (recipe cascade-acqcmploc-ens-mir): the localiser trained from the start on the source
    localiser's schedule with acquisition augmentation, 15 % nerve-removed frames and the nerve compressed; the
    source's two refiners joined behind it, the second shown the mirror image."""
    out = source["out"].parent / "out-localiser"
    env = {"FROM": "scratch", "PARTS": "localiser", "COMPRESS": "0.75 0.5", "MIRROR": "alternate"}
    done = _run(source["data"], source["extra"], source["cv"], out, 0, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    fold = out / "fold-0" / "as-final"
    train = json.loads((fold / "localiser" / "config.json").read_text())["train"]
    assert train["model"] == "lunet-coarse" and train["augment"] == "acquisition" and train["epochs"] == 1
    assert train["compress"] == [0.75, 0.5] and train["nerve_removed"] == 0.15 and train["blind"]
    assert not (fold / "refiner").exists() and not (fold / "refiner-2").exists()  # the refiners are the source's
    model = load_checkpoint(fold / "model.pt")["config"]["model"]
    assert model["name"] == "cascade"
    assert model["kwargs"]["refiner"]["kwargs"]["mirrored"] == [False, True]
    assert json.loads((fold / "eval-paper.json").read_text())["n"] == 2


def test_parts_other_than_the_two_kinds_and_a_fine_tuned_localiser_are_refused(tmp_path: Path) -> None:
    bad = _run(tmp_path, tmp_path, tmp_path, tmp_path / "out", 0, env={"PARTS": "refiner"})
    assert bad.returncode == 2 and "PARTS='refiner': use 'refiner refiner-2' or localiser" in bad.stderr
    fine = _run(tmp_path, tmp_path, tmp_path, tmp_path / "out", 0, env={"PARTS": "localiser"})
    assert fine.returncode == 2 and "PARTS=localiser trains it from the start: set FROM=scratch" in fine.stderr
