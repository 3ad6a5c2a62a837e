"""train.schedule: the final model's schedule from the folds, on hand-made histories with known drops and on the
fold histories the shipped model's schedule was taken from (committed results files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.errors import UserError
from train.schedule import SCHEDULE_RULES, Schedule, final_schedule, parse_schedules, rate_drops

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _history(path: Path, lrs: list[float]) -> Path:
    lines = ["epoch,lr,train_loss,val_loss,best"] + [f"{i + 1},{lr},0.5,0.5,0" for i, lr in enumerate(lrs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rate_drops_are_the_first_epochs_at_each_lower_rate(tmp_path: Path) -> None:
    h = _history(tmp_path / "h.csv", [1e-2] * 4 + [1e-3] * 3 + [1e-4] * 2 + [1e-5])
    assert rate_drops(h) == [5, 8, 10]
    assert rate_drops(_history(tmp_path / "flat.csv", [1e-3] * 5)) == []
    assert rate_drops(_history(tmp_path / "up.csv", [1e-3, 1e-2, 1e-2])) == []  # a rise is not a drop
    (tmp_path / "bad.csv").write_text("epoch,loss\n1,0.3\n")
    with pytest.raises(UserError, match="no epoch and lr columns"):
        rate_drops(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("epoch,lr\n1,x\n")
    with pytest.raises(UserError, match="not a number"):
        rate_drops(tmp_path / "nan.csv")
    with pytest.raises(UserError, match="cannot read"):
        rate_drops(tmp_path / "missing.csv")


def test_the_three_rules_on_known_folds() -> None:
    best = [81, 84, 84, 107, 92]
    assert final_schedule("best", best) == Schedule("best", 84, (), {"best_epochs": best})
    s = final_schedule("best-drops", best, patience=10)
    assert (s.epochs, s.drops) == (104, (84, 94))
    assert s.train_args() == ["--lr-drops", "84", "94"]
    assert final_schedule("best-drops", best, patience=5).epochs == 94
    drops = [[34, 47, 63], [52, 79, 89], [33, 55, 65, 75], [30, 71, 81], [26, 59, 72]]
    s = final_schedule("fold-drops", best, drops)
    assert (s.epochs, s.drops) == (72, (33, 59))
    assert s.as_dict() == {"rule": "fold-drops", "epochs": 72, "lr_drops": [33, 59],
                           "from": {"rate_drops": drops, "best_epochs": best}}
    assert final_schedule("best", [3, 4]).epochs == 4  # the median rounded (3.5 -> 4, half to even)
    assert final_schedule("best", [1]).train_args() == []


def test_refusals_say_what_to_do() -> None:
    with pytest.raises(UserError, match="three learning-rate drops.*best-drops"):
        final_schedule("fold-drops", [10, 12], [[5, 8, 11], [6, 9]])
    with pytest.raises(UserError, match="history.csv"):
        final_schedule("fold-drops", [10], [])
    with pytest.raises(UserError, match="not increasing"):
        final_schedule("fold-drops", [10, 10], [[5, 5, 9], [5, 5, 9]])
    with pytest.raises(UserError, match="run mn-cv without --final"):
        final_schedule("best", [])
    with pytest.raises(UserError, match="unknown schedule rule"):
        final_schedule("cosine", [10])
    with pytest.raises(UserError, match="patience"):
        final_schedule("best-drops", [10], patience=0)


def test_parse_schedules() -> None:
    parts = ["localiser", "refiner"]
    assert parse_schedules([], parts) == {"localiser": "best", "refiner": "best"}
    assert parse_schedules(["refiner=best-drops", "localiser=fold-drops"], parts) == {
        "localiser": "fold-drops", "refiner": "best-drops"}
    for bad, message in (("refiner", "PART=RULE"), ("head=best", "parts are localiser, refiner"),
                         ("refiner=cosine", "rules are " + ", ".join(SCHEDULE_RULES))):
        with pytest.raises(UserError, match=message):
            parse_schedules([bad], parts)
    with pytest.raises(UserError, match="twice"):
        parse_schedules(["refiner=best", "refiner=best-drops"], parts)


def test_the_shipped_schedules_come_from_the_committed_folds() -> None:
    """mn-realtime's final (2026-12-04) was trained for 72 localiser epochs with drops after 33 and 59 and 104
    refiner epochs with drops after 84 and 94, taken from the five CPU folds of cascade-strong-ph-cmp by hand;
    the two rules give exactly those from the fold records that benchmarks/cv_collect.sh keeps."""
    folds = [RESULTS / "cv-cpu" / "cascade-strong-ph-cmp" / f"fold-{k}" for k in range(5)]
    if not all((f / "localiser-history.csv").is_file() for f in folds):
        pytest.skip("the fold records of cascade-strong-ph-cmp are not in benchmarks/results/cv-cpu")
    import json

    loc_best = [json.loads((f / "localiser-config.json").read_text())["metrics"]["best_epoch"] for f in folds]
    loc = final_schedule("fold-drops", loc_best, [rate_drops(f / "localiser-history.csv") for f in folds])
    assert (loc.epochs, loc.drops) == (72, (33, 59))
    ref_best = [json.loads((f / "refiner-config.json").read_text())["metrics"]["best_epoch"] for f in folds]
    ref = final_schedule("best-drops", ref_best)
    assert (ref.epochs, ref.drops) == (104, (84, 94))
