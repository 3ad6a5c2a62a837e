"""train.threshold: the sweep on probability maps with a known outline at every threshold, the choice, the
leave-one-fold-out estimate, the sweep file and its command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train.threshold import (GRID, at, choose, cli, format_report, leave_one_fold_out, load_cv, model_threshold,
                             read_sweep, sweep, write_sweep)


def _ramp_disc(radius_at_half: float, size: int = 96, ramp: float = 8.0) -> np.ndarray:
    """A probability map that is 1 inside, 0 outside and falls linearly across ``ramp`` px, so that ``prob >= t``
    is the disc of radius ``radius_at_half + ramp * (0.5 - t)``."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - size / 2, yy - size / 2)
    return np.clip(0.5 - (r - radius_at_half) / ramp, 0.0, 1.0).astype(np.float32)


def _disc(radius: float, size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (np.hypot(xx - size / 2, yy - size / 2) <= radius).astype(np.uint8) * 255


def test_sweep_areas_follow_the_threshold() -> None:
    prob, truth = _ramp_disc(20.0), _disc(20.0)
    rows = sweep([prob], [truth], ["a"])
    assert [r["threshold"] for r in rows] == list(GRID) and GRID[0] == 0.3 and GRID[-1] == 0.7
    areas = [r["area_pred_px"] for r in rows]
    assert areas == sorted(areas, reverse=True)  # a higher threshold, a smaller outline
    half = at(rows, 0.5)
    assert half["csa_signed_median"] == pytest.approx(0.0, abs=0.02) and half["dsc_mean"] > 0.98
    low = at(rows, 0.3)  # radius 21.6 against 20: (21.6 / 20)^2 - 1 = +16.6 %
    assert low["csa_signed_mean"] == pytest.approx((21.6 / 20) ** 2 - 1, abs=0.02)
    assert all(r["area_true_px"] == int((truth > 0).sum()) for r in rows)


def test_choose_removes_a_known_bias() -> None:
    # the network's 0.5 outline is 19 px where the truth is 20 px: prob >= t has radius 19 + 8 (0.5 - t) = 20 at
    # t = 0.375; an image that no threshold fixes (nothing near the truth) must not move the choice
    rows = sweep([_ramp_disc(19.0), _ramp_disc(19.0, size=80), np.zeros((96, 96), np.float32)],
                 [_disc(20.0), _disc(20.0, size=80), _disc(20.0)], ["a", "b", "missed"])
    assert choose(rows) == pytest.approx(0.375)
    unbiased = sweep([_ramp_disc(20.0)], [_disc(20.0)], ["a"])
    assert choose(unbiased) == pytest.approx(0.5)


def test_leave_one_fold_out_chooses_on_the_other_folds() -> None:
    folds = {0: sweep([_ramp_disc(19.0)], [_disc(20.0)], ["a"]),   # wants 0.375
             1: sweep([_ramp_disc(19.0)], [_disc(20.0)], ["b"]),   # wants 0.375
             2: sweep([_ramp_disc(20.0)], [_disc(20.0)], ["c"])}   # wants 0.5
    report = leave_one_fold_out(folds)
    chosen = {f["fold"]: f["threshold"] for f in report["per_fold"]}
    # fold 2 is measured at what folds 0 and 1 chose; folds 0 and 1 at the median of {one 0.375, one 0.5} images
    assert chosen[2] == pytest.approx(0.375)
    assert report["per_fold"][2]["at_chosen"]["csa_signed_median"] > 0.05  # fold 2 did not need it: too large now
    assert report["pooled_at_default"]["n"] == report["pooled_at_chosen"]["n"] == 3
    assert report["chosen_all"] == pytest.approx(0.375)
    with pytest.raises(ValueError, match="two folds"):
        leave_one_fold_out({0: folds[0]})


def test_the_final_keeps_half_when_choosing_does_not_help_out_of_fold() -> None:
    # every fold's outline 1 px short: each fold, at the others' choice (0.375), is right on; the final takes it
    biased = {k: sweep([_ramp_disc(19.0)], [_disc(20.0)], [f"s{k}"]) for k in range(3)}
    report = leave_one_fold_out(biased)
    assert report["helps"] and report["final"] == report["chosen_all"] == pytest.approx(0.375)
    assert report["pooled_at_chosen"]["csa_abs_median"] < report["pooled_at_default"]["csa_abs_median"]
    assert "mn-cv --final writes it" in format_report(report)
    # the folds disagree (areas 10 % too large on two, 10-19 % too small on three): a fold measured at the others'
    # choice is pushed the wrong way, so the pooled |error| grows and the final keeps 0.5 (all folds choose 0.425)
    noisy = {k: sweep([_ramp_disc(r)], [_disc(20.0)], [f"n{k}"]) for k, r in enumerate((21.0, 19.0, 19.5, 18.5, 21.5))}
    report = leave_one_fold_out(noisy)
    assert report["chosen_all"] == pytest.approx(0.425) and not report["helps"] and report["final"] == 0.5
    assert report["pooled_at_chosen"]["csa_abs_median"] > report["pooled_at_default"]["csa_abs_median"]
    assert "mn-cv --final keeps 0.5" in format_report(report)


def test_sweep_file_round_trip_and_cv_folder(tmp_path: Path) -> None:
    rows = sweep([_ramp_disc(19.0)], [_disc(20.0)], ["Pz001-001"])
    for k in (0, 1):
        (tmp_path / f"fold-{k}").mkdir()
        write_sweep(tmp_path / f"fold-{k}" / "threshold-sweep.csv", rows)
    back = read_sweep(tmp_path / "fold-0" / "threshold-sweep.csv")
    assert [r["area_pred_px"] for r in back] == [r["area_pred_px"] for r in rows]
    assert back[0]["csa_signed"] == pytest.approx(rows[0]["csa_signed"])
    assert sorted(load_cv(tmp_path)) == [0, 1]
    (tmp_path / "fold-1" / "as-final").mkdir()  # fold 1 trained the way the final is: its own sweep
    write_sweep(tmp_path / "fold-1" / "as-final" / "threshold-sweep.csv", rows[:3])
    assert list(load_cv(tmp_path, "as-final")) == [1] and len(load_cv(tmp_path, "as-final")[1]) == 3
    assert len(load_cv(tmp_path)[1]) == len(rows)  # the fold's own sweep is not mixed with it
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a threshold sweep"):
        read_sweep(tmp_path / "other.csv")


def test_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "fold-0").mkdir()
    write_sweep(tmp_path / "fold-0" / "threshold-sweep.csv", sweep([_ramp_disc(19.0)], [_disc(20.0)], ["a"]))
    assert cli([str(tmp_path)]) == 2
    assert "needs two or more" in capsys.readouterr().err
    (tmp_path / "fold-1").mkdir()
    write_sweep(tmp_path / "fold-1" / "threshold-sweep.csv", sweep([_ramp_disc(19.0)], [_disc(20.0)], ["b"]))
    assert cli([str(tmp_path), "--json", str(tmp_path / "t.json"), "--md", str(tmp_path / "t.md"), "-q"]) == 0
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["chosen_all"] == pytest.approx(0.375) and report["folds"] == [0, 1]
    assert "| 0 | 0.375 |" in (tmp_path / "t.md").read_text()
    assert cli([str(tmp_path / "missing")]) == 2


def test_model_threshold() -> None:
    assert model_threshold(None) == 0.5 and model_threshold({"model": {}}) == 0.5
    assert model_threshold({"postprocess": {"threshold": 0.425}}) == 0.425
    with pytest.raises(ValueError, match="postprocess.threshold"):
        model_threshold({"postprocess": {"threshold": 1.5}})
