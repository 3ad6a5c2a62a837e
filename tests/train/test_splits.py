"""Tests for train.splits: every split is by patient and never touches the paper's test patients."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from train.errors import DataError, UserError
from train.splits import (
    PAPER_TEST_PATIENTS,
    PAPER_VALIDATION_PATIENTS,
    SPLIT_KINDS,
    Split,
    kfold_split,
    make_split,
    paper_split,
    random_split,
)

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "median-nerve"


def _per_sample(patients: list[str]) -> list[str]:
    """One entry per image: 1 to 5 images per patient, in a fixed irregular pattern."""
    return [p for k, p in enumerate(patients) for _ in range(1 + (k * 7) % 5)]


ALL_PAPER = [f"Pz{n:03d}" for n in range(1, 104)]
NON_TEST = sorted(set(ALL_PAPER) - set(PAPER_TEST_PATIENTS))
DEV_SAMPLES = _per_sample(NON_TEST)  # like the project's data: no test patients
FULL_SAMPLES = _per_sample(ALL_PAPER)  # like the authors' full folder


def _check_partition(split: Split, usable: list[str]) -> None:
    assert not set(split.train) & set(split.val), "a patient is in train and validation"
    assert sorted(set(split.train) | set(split.val)) == sorted(usable)
    assert split.train == sorted(split.train) and split.val == sorted(split.val)
    assert not set(PAPER_TEST_PATIENTS) & (set(split.train) | set(split.val))


def test_paper_constants() -> None:
    assert len(PAPER_VALIDATION_PATIENTS) == 18 and len(PAPER_TEST_PATIENTS) == 16
    assert PAPER_VALIDATION_PATIENTS[0] == "Pz004" and PAPER_VALIDATION_PATIENTS[-1] == "Pz103"
    assert PAPER_TEST_PATIENTS[0] == "Pz012" and PAPER_TEST_PATIENTS[-1] == "Pz091"
    assert not set(PAPER_VALIDATION_PATIENTS) & set(PAPER_TEST_PATIENTS)


# --- paper -----------------------------------------------------------------------------


def test_paper_split_on_development_patients(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="train.splits"):
        split = paper_split(DEV_SAMPLES)
    assert split.val == list(PAPER_VALIDATION_PATIENTS)
    assert len(split.train) == 69 and split.excluded == []
    _check_partition(split, NON_TEST)
    assert not caplog.records


def test_paper_split_excludes_test_patients_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="train.splits"):
        split = paper_split(FULL_SAMPLES)
    _check_partition(split, NON_TEST)
    assert split.excluded == list(PAPER_TEST_PATIENTS)
    assert any("test patients" in r.getMessage() and "Pz012" in r.getMessage() for r in caplog.records)
    train_idx, val_idx = split.indices(FULL_SAMPLES)
    used = {FULL_SAMPLES[i] for i in np.concatenate([train_idx, val_idx])}
    assert not used & set(PAPER_TEST_PATIENTS)


def test_paper_split_can_keep_test_patients_when_asked() -> None:
    split = paper_split(FULL_SAMPLES, exclude_test=False)
    assert set(PAPER_TEST_PATIENTS) <= set(split.train)


def test_paper_split_without_validation_patients() -> None:
    with pytest.raises(DataError, match="validation patients"):
        paper_split(["case1", "case2"])


# --- k-fold ----------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [DEV_SAMPLES, FULL_SAMPLES], ids=["dev", "with-test"])
def test_kfold_folds_partition_patients_and_balance_images(samples: list[str]) -> None:
    folds = 5
    splits = [kfold_split(samples, folds=folds, fold=k, seed=42) for k in range(folds)]
    for split in splits:
        _check_partition(split, NON_TEST)
        assert split.name.startswith("kfold-5/")
    vals = [p for split in splits for p in split.val]
    assert sorted(vals) == NON_TEST, "validation folds must partition the patients"
    counts = [len(split.indices(samples)[1]) for split in splits]
    assert max(counts) - min(counts) <= 5  # at most one patient's images apart


def test_kfold_seeded() -> None:
    a = kfold_split(DEV_SAMPLES, folds=5, fold=2, seed=1)
    assert a == kfold_split(DEV_SAMPLES, folds=5, fold=2, seed=1)
    assert a.val != kfold_split(DEV_SAMPLES, folds=5, fold=2, seed=2).val
    assert a.params == {"kind": "kfold", "folds": 5, "fold": 2, "seed": 1}


def test_kfold_independent_of_sample_order() -> None:
    shuffled = list(np.random.default_rng(0).permutation(DEV_SAMPLES))
    assert kfold_split(shuffled, fold=1) == kfold_split(DEV_SAMPLES, fold=1)


@pytest.mark.parametrize(
    ("folds", "fold", "error"),
    [(5, 5, UserError), (5, -1, UserError), (1, 0, UserError), (4, 0, DataError)],
)
def test_kfold_errors(folds: int, fold: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        kfold_split(["a", "a", "b", "c"], folds=folds, fold=fold)


# --- random ----------------------------------------------------------------------------


def test_random_split() -> None:
    split = random_split(DEV_SAMPLES, val_fraction=0.2, seed=42)
    _check_partition(split, NON_TEST)
    assert len(split.val) == round(0.2 * len(NON_TEST))
    assert split == random_split(list(reversed(DEV_SAMPLES)), val_fraction=0.2, seed=42)
    assert split.val != random_split(DEV_SAMPLES, val_fraction=0.2, seed=43).val
    _check_partition(random_split(FULL_SAMPLES, seed=3), NON_TEST)


def test_random_split_errors() -> None:
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(UserError):
            random_split(DEV_SAMPLES, val_fraction=fraction)
    with pytest.raises(DataError):
        random_split(["only"])
    assert len(random_split(["a", "b"], val_fraction=0.01).val) == 1


# --- make_split and the Split record ---------------------------------------------------


def test_make_split_kinds() -> None:
    assert SPLIT_KINDS == ("paper", "kfold", "random", "none")
    assert make_split("paper", DEV_SAMPLES) == paper_split(DEV_SAMPLES)
    assert make_split("kfold", DEV_SAMPLES, folds=3, fold=2, seed=5) == kfold_split(DEV_SAMPLES, 3, 2, 5)
    assert make_split("kfold", DEV_SAMPLES).name == "kfold-5/0"
    assert make_split("random", DEV_SAMPLES, val_fraction=0.3, seed=1) == random_split(DEV_SAMPLES, 0.3, 1)
    none = make_split("none", FULL_SAMPLES)
    assert none.val == [] and none.train == NON_TEST and none.excluded == list(PAPER_TEST_PATIENTS)


def test_make_split_errors() -> None:
    with pytest.raises(UserError, match="paper, kfold, random, none"):
        make_split("loo", DEV_SAMPLES)
    with pytest.raises(UserError, match="kfold only"):
        make_split("paper", DEV_SAMPLES, fold=1)


def test_split_indices() -> None:
    split = make_split("kfold", FULL_SAMPLES, fold=3)
    train_idx, val_idx = split.indices(FULL_SAMPLES)
    assert train_idx.dtype == np.int64 and np.all(np.diff(train_idx) > 0)
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert {FULL_SAMPLES[i] for i in train_idx} == set(split.train)
    assert {FULL_SAMPLES[i] for i in val_idx} == set(split.val)
    test_images = sum(p in PAPER_TEST_PATIENTS for p in FULL_SAMPLES)
    assert len(train_idx) + len(val_idx) == len(FULL_SAMPLES) - test_images


def test_split_config_round_trip_and_consistency() -> None:
    split = make_split("kfold", FULL_SAMPLES, fold=1, seed=9)
    config = json.loads(json.dumps(split.to_config()))
    assert Split.from_config(config) == split
    with pytest.raises(UserError, match="more than one"):
        Split("bad", ["a", "b"], ["b"])
    with pytest.raises(UserError, match="malformed"):
        Split.from_config({"name": "x"})


# --- the real dataset ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_patients() -> list[str]:
    if not (REAL_DATA / "Images").is_dir():
        pytest.skip(f"real dataset not found at {REAL_DATA}")
    from train.data import scan_dataset

    return [s.patient for s in scan_dataset(REAL_DATA)]


def test_real_paper_split_is_164_train_38_val(real_patients: list[str]) -> None:
    split = make_split("paper", real_patients)
    train_idx, val_idx = split.indices(real_patients)
    assert (len(train_idx), len(val_idx)) == (164, 38)
    assert (len(split.train), len(split.val)) == (69, 18)


def test_real_kfold_balanced(real_patients: list[str]) -> None:
    counts = [len(make_split("kfold", real_patients, fold=k).indices(real_patients)[1]) for k in range(5)]
    assert sum(counts) == 202
    assert max(counts) - min(counts) <= 2
