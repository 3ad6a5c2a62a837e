"""The learning-rate schedule of a model trained on every image (``mn-cv --final``), fixed by the folds.

A run on every image has no validation images: nothing can tell it when its learning rate should drop or which
epoch to keep, so ``mn-cv --final`` (and ``--as-final``, which checks that procedure fold by fold) takes both from
the cross-validation folds of the same recipe, part by part (``mn-cv --schedule PART=RULE``):

``best``
    the median of the folds' best epochs, the learning rate left to ``mn-train``'s plateau rule (which, with
    nothing held out, watches the falling training loss and rarely drops it); the last weights are kept.
``best-drops``
    the median best epoch ``B`` at the recipe's rate, then ``P`` epochs at a tenth of it and ``P`` at a hundredth
    (``--lr-drops B B+P``, ``B + 2P`` epochs; ``P`` the folds' plateau patience, ``--lr-patience``, 10 by
    default): where each fold's validation loss was best, then the steady low-rate epochs its plateau rule would
    have given it.
``fold-drops``
    the folds' own plateau drops: each fold's first three learning-rate drops (the first epoch it ran at each
    lower rate, from its ``history.csv``), the medians of the first two as ``--lr-drops`` and the median of the
    third as the epoch count; every fold needs three drops.

Pure functions of the folds' records (no torch): :func:`rate_drops` reads one history, :func:`final_schedule`
applies a rule.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from train.errors import UserError

SCHEDULE_RULES = ("best", "best-drops", "fold-drops")
"""The rules of :func:`final_schedule` (module docstring)."""

DEFAULT_PATIENCE = 10
"""``mn-train --lr-patience``'s default, for folds whose config does not record it."""


@dataclass(frozen=True)
class Schedule:
    """``epochs`` to train and the epochs after which the rate drops (``mn-train --lr-drops``; empty: the
    trainer's plateau rule), with the rule and the fold values it came from."""

    rule: str
    epochs: int
    drops: tuple[int, ...] = ()
    source: dict[str, Any] = field(default_factory=dict)

    def train_args(self) -> list[str]:
        """The ``mn-train`` arguments beyond ``--epochs`` (``--lr-drops ...`` or nothing)."""
        return ["--lr-drops", *(str(d) for d in self.drops)] if self.drops else []

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "epochs": self.epochs, "lr_drops": list(self.drops), "from": self.source}


def parse_schedules(items: Sequence[str], parts: Sequence[str]) -> dict[str, str]:
    """``["localiser=fold-drops", ...]`` -> ``{part: rule}`` for every part (``best`` where not given).

    Raises:
        UserError: not ``PART=RULE``, an unknown part or rule, or a part given twice.
    """
    rules = {part: "best" for part in parts}
    seen: set[str] = set()
    for item in items:
        part, sep, rule = item.partition("=")
        if not sep:
            raise UserError(f"--schedule {item!r}: write PART=RULE, e.g. --schedule {parts[0]}=fold-drops")
        if part not in rules:
            raise UserError(f"--schedule {item!r}: the recipe's parts are {', '.join(parts)}")
        if rule not in SCHEDULE_RULES:
            raise UserError(f"--schedule {item!r}: the rules are {', '.join(SCHEDULE_RULES)}")
        if part in seen:
            raise UserError(f"--schedule gives {part} twice")
        seen.add(part)
        rules[part] = rule
    return rules


def rate_drops(history: Path) -> list[int]:
    """The epochs (1-based, as ``history.csv`` numbers them) that a run was the first to train at a lower
    learning rate than the epoch before: one per drop, in order.

    Raises:
        UserError: the file cannot be read or has no ``epoch`` and ``lr`` columns.
    """
    try:
        with open(history, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise UserError(f"cannot read {history} ({exc.strerror or exc})") from None
    if rows and not {"epoch", "lr"} <= set(rows[0]):
        raise UserError(f"{history} has no epoch and lr columns: not an mn-train history.csv")
    try:
        pairs = [(int(r["epoch"]), float(r["lr"])) for r in rows]
    except (TypeError, ValueError):
        raise UserError(f"{history}: an epoch or lr value is not a number") from None
    return [epoch for (_, before), (epoch, lr) in zip(pairs, pairs[1:]) if lr < before]


def _median(values: Sequence[int]) -> int:
    return max(1, int(round(statistics.median(values))))


def final_schedule(rule: str, best_epochs: Sequence[int], drops: Sequence[Sequence[int]] = (),
                   patience: int = DEFAULT_PATIENCE) -> Schedule:
    """The schedule ``rule`` (:data:`SCHEDULE_RULES`) makes of the folds' best epochs and, for ``fold-drops``,
    of each fold's :func:`rate_drops`.

    Raises:
        UserError: no folds, an unknown rule, or (``fold-drops``) a fold with fewer than three drops.
    """
    if not best_epochs:
        raise UserError("no finished fold to take the final schedule from; run mn-cv without --final first")
    best = [int(b) for b in best_epochs]
    if rule == "best":
        return Schedule(rule, _median(best), (), {"best_epochs": best})
    if rule == "best-drops":
        if patience < 1:
            raise UserError(f"the folds' plateau patience must be at least 1 epoch, got {patience}")
        b = _median(best)
        return Schedule(rule, b + 2 * patience, (b, b + patience), {"best_epochs": best, "patience": patience})
    if rule == "fold-drops":
        folds = [list(d) for d in drops]
        if not folds:
            raise UserError("fold-drops needs the folds' history.csv; none was found")
        short = [i for i, d in enumerate(folds) if len(d) < 3]
        if short:
            raise UserError(f"fold-drops needs three learning-rate drops in every fold's history; "
                            f"{len(short)} of {len(folds)} have fewer ({[folds[i] for i in short]}): "
                            "use --schedule PART=best-drops")
        first, second, third = (_median([d[k] for d in folds]) for k in range(3))
        if not first < second < third:
            raise UserError(f"fold-drops: the folds' median drops {first}, {second}, {third} are not increasing")
        return Schedule(rule, third, (first, second), {"rate_drops": folds, "best_epochs": best})
    raise UserError(f"unknown schedule rule {rule!r}; use one of {', '.join(SCHEDULE_RULES)}")
