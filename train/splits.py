"""Train/validation splits, always by patient.

Several images of one patient are strongly correlated, so a patient's images all go
to the same side of a split. Four kinds (:data:`SPLIT_KINDS`):

- ``paper``: the paper's validation patients (:data:`PAPER_VALIDATION_PATIENTS`),
  every other patient trains (164 / 38 images on the project's data);
- ``kfold``: patients shuffled with a seed and dealt into ``folds`` groups of about
  the same number of images; group ``fold`` (0-based) validates;
- ``random``: a seeded random fraction of the patients validates;
- ``none``: every patient trains, no validation.

The paper's 16 test patients (:data:`PAPER_TEST_PATIENTS`) are held out for the
final evaluation. If a dataset folder contains them they are left out of every
split (with a warning) unless ``exclude_test=False`` is passed explicitly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from train.errors import DataError, UserError

log = logging.getLogger(__name__)

PAPER_VALIDATION_PATIENTS: tuple[str, ...] = tuple(
    f"Pz{n:03d}" for n in (4, 14, 29, 31, 38, 57, 60, 62, 64, 65, 71, 72, 77, 87, 89, 98, 100, 103)
)
"""The paper's 18 validation patients (38 images), paper-code-spec.md section 3.2."""

PAPER_TEST_PATIENTS: tuple[str, ...] = tuple(
    f"Pz{n:03d}" for n in (12, 20, 25, 32, 37, 41, 42, 53, 54, 59, 67, 68, 69, 80, 88, 91)
)
"""The paper's 16 held-out test patients (44 images): never trained or validated on."""

SPLIT_KINDS: tuple[str, ...] = ("paper", "kfold", "random", "none")

DEFAULT_SEED = 42
DEFAULT_FOLDS = 5
DEFAULT_VAL_FRACTION = 0.2


@dataclass
class Split:
    """Which patients train and which validate.

    Attributes:
        name: e.g. ``"paper"``, ``"kfold-5/0"``, ``"random"``, ``"none"``.
        train, val: sorted patient ids; disjoint.
        excluded: patients present in the data but used by neither (the paper's test
            patients).
        params: how the split was made (seed, folds, ...), for the record.
    """

    name: str
    train: list[str]
    val: list[str]
    excluded: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train = sorted(set(self.train))
        self.val = sorted(set(self.val))
        self.excluded = sorted(set(self.excluded))
        overlap = (set(self.train) & set(self.val)) | (set(self.excluded) & (set(self.train) | set(self.val)))
        if overlap:
            raise UserError(
                f"split {self.name!r} is inconsistent: patients {sorted(overlap)} are in more than "
                f"one of train/val/excluded"
            )

    def to_config(self) -> dict[str, Any]:
        """JSON-able record of the split (stored in checkpoints)."""
        return {
            "name": self.name,
            "train": list(self.train),
            "val": list(self.val),
            "excluded": list(self.excluded),
            "params": dict(self.params),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Split:
        """Rebuild a split from :meth:`to_config` output."""
        try:
            return cls(
                name=str(config["name"]),
                train=list(config["train"]),
                val=list(config["val"]),
                excluded=list(config.get("excluded", [])),
                params=dict(config.get("params", {})),
            )
        except (KeyError, TypeError) as exc:
            raise UserError(f"malformed split record (missing or bad field {exc})") from None

    def indices(self, patients_per_sample: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Sample indices ``(train_idx, val_idx)`` (int64, ascending) for per-sample patient ids.

        Samples whose patient is in neither list (excluded patients) are in neither.
        """
        train, val = set(self.train), set(self.val)
        train_idx = [i for i, p in enumerate(patients_per_sample) if p in train]
        val_idx = [i for i, p in enumerate(patients_per_sample) if p in val]
        return np.asarray(train_idx, dtype=np.int64), np.asarray(val_idx, dtype=np.int64)


def _unique(patients: Iterable[str]) -> list[str]:
    return sorted(set(patients))


def _without_test(patients: Iterable[str], exclude_test: bool) -> tuple[list[str], list[str]]:
    """Split unique patients into (usable, excluded paper-test patients), with a warning."""
    unique = _unique(patients)
    if not exclude_test:
        return unique, []
    test = set(PAPER_TEST_PATIENTS)
    excluded = [p for p in unique if p in test]
    if excluded:
        log.warning(
            "the data contain %d of the paper's held-out test patients (%s): they are left out of "
            "training and validation",
            len(excluded),
            ", ".join(excluded),
        )
    return [p for p in unique if p not in test], excluded


def _check_seed(seed: int) -> int:
    if int(seed) < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    return int(seed)


def paper_split(patients: Iterable[str], exclude_test: bool = True) -> Split:
    """The paper's split: its 18 validation patients validate, all others train.

    Args:
        patients: patient ids (per sample or unique).
        exclude_test: leave the paper's test patients out (always, unless you know why).

    Raises:
        DataError: none of the paper's validation patients is in the data.
    """
    usable, excluded = _without_test(patients, exclude_test)
    paper_val = set(PAPER_VALIDATION_PATIENTS)
    val = [p for p in usable if p in paper_val]
    if not val:
        raise DataError(
            f"none of the paper's validation patients ({', '.join(PAPER_VALIDATION_PATIENTS)}) is in "
            f"the data, so the paper split is empty; use the paper's file names (PzNNN-MMM) or "
            f"choose --split kfold or --split random"
        )
    missing = sorted(paper_val - set(val))
    if missing:
        log.warning(
            "paper split: %d validation patients are missing from the data: %s", len(missing), ", ".join(missing)
        )
    train = [p for p in usable if p not in paper_val]
    if not train:
        raise DataError("the data hold only the paper's validation patients: nothing is left to train on")
    return Split("paper", train, val, excluded, {"kind": "paper"})


def _deal_balanced(shuffled: list[str], counts: Mapping[str, int], groups: int) -> list[list[str]]:
    """Greedy largest-first: each patient goes to the group with the fewest images.

    Patients with the same number of images keep their (seeded) shuffled order; a tie
    between groups goes to the one with fewer patients, then the lowest index.
    """
    order = sorted(shuffled, key=lambda p: -counts[p])  # stable: ties keep the shuffle
    members: list[list[str]] = [[] for _ in range(groups)]
    totals = [0] * groups
    for patient in order:
        target = min(range(groups), key=lambda g: (totals[g], len(members[g]), g))
        members[target].append(patient)
        totals[target] += counts[patient]
    return members


def kfold_split(
    patients_per_sample: Sequence[str],
    folds: int = DEFAULT_FOLDS,
    fold: int = 0,
    seed: int = DEFAULT_SEED,
    exclude_test: bool = True,
) -> Split:
    """Fold ``fold`` (0-based) of a ``folds``-fold cross-validation by patient.

    Unique patients are sorted, shuffled with ``np.random.default_rng(seed)`` and dealt
    into ``folds`` groups balanced by number of images; group ``fold`` validates and
    the others train. The same seed gives the same groups for every ``fold``, so the
    folds partition the patients.

    Args:
        patients_per_sample: one patient id per image (the counts balance the folds).

    Raises:
        UserError: ``folds < 2`` or ``fold`` outside ``0..folds-1``.
        DataError: fewer patients than folds.
    """
    folds, fold, seed = int(folds), int(fold), _check_seed(seed)
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise UserError(f"--fold must be between 0 and {folds - 1} for {folds} folds, got {fold}")
    usable, excluded = _without_test(patients_per_sample, exclude_test)
    if len(usable) < folds:
        raise DataError(
            f"{folds}-fold cross-validation needs at least {folds} patients, the data have "
            f"{len(usable)}; use fewer --folds"
        )
    counts: dict[str, int] = {p: 0 for p in usable}
    for p in patients_per_sample:
        if p in counts:
            counts[p] += 1
    rng = np.random.default_rng(seed)
    shuffled = [usable[k] for k in rng.permutation(len(usable))]
    groups = _deal_balanced(shuffled, counts, folds)
    log.debug("k-fold images per fold: %s", [sum(counts[p] for p in g) for g in groups])
    val = groups[fold]
    train = [p for g, members in enumerate(groups) if g != fold for p in members]
    params = {"kind": "kfold", "folds": folds, "fold": fold, "seed": seed}
    return Split(f"kfold-{folds}/{fold}", train, val, excluded, params)


def random_split(
    patients: Iterable[str],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    exclude_test: bool = True,
) -> Split:
    """A seeded random ``val_fraction`` of the patients (not images) validates.

    The number of validation patients is ``round(val_fraction * n)``, at least 1 and
    at most ``n - 1``.

    Raises:
        UserError: ``val_fraction`` not in (0, 1).
        DataError: fewer than 2 patients.
    """
    seed = _check_seed(seed)
    if not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    usable, excluded = _without_test(patients, exclude_test)
    if len(usable) < 2:
        raise DataError(f"a random split needs at least 2 patients, the data have {len(usable)}")
    n_val = min(max(1, round(float(val_fraction) * len(usable))), len(usable) - 1)
    rng = np.random.default_rng(seed)
    shuffled = [usable[k] for k in rng.permutation(len(usable))]
    params = {"kind": "random", "val_fraction": float(val_fraction), "seed": seed}
    return Split("random", shuffled[n_val:], shuffled[:n_val], excluded, params)


def make_split(
    kind: str,
    patients_per_sample: Sequence[str],
    folds: int | None = None,
    fold: int | None = None,
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    exclude_test: bool = True,
) -> Split:
    """Build a split by name (one of :data:`SPLIT_KINDS`).

    ``folds``/``fold`` apply to ``kfold`` only (defaults 5 and 0); ``val_fraction``
    to ``random`` only; ``seed`` to ``kfold`` and ``random``.

    Raises:
        UserError: unknown kind, or ``folds``/``fold`` given for another kind.
    """
    if kind not in SPLIT_KINDS:
        raise UserError(f"unknown split {kind!r}; choose one of: {', '.join(SPLIT_KINDS)}")
    if kind != "kfold" and (folds is not None or fold is not None):
        raise UserError(f"--folds/--fold apply to --split kfold only, not to --split {kind}")
    if kind == "paper":
        split = paper_split(patients_per_sample, exclude_test=exclude_test)
    elif kind == "kfold":
        split = kfold_split(
            patients_per_sample,
            folds=DEFAULT_FOLDS if folds is None else folds,
            fold=0 if fold is None else fold,
            seed=seed,
            exclude_test=exclude_test,
        )
    elif kind == "random":
        split = random_split(patients_per_sample, val_fraction=val_fraction, seed=seed, exclude_test=exclude_test)
    else:
        usable, excluded = _without_test(patients_per_sample, exclude_test)
        if not usable:
            raise DataError("no patients left to train on")
        split = Split("none", usable, [], excluded, {"kind": "none"})
    train_idx, val_idx = split.indices(patients_per_sample)
    log.info(
        "split %s: %d train images (%d patients), %d validation images (%d patients)",
        split.name, len(train_idx), len(split.train), len(val_idx), len(split.val),
    )
    return split
