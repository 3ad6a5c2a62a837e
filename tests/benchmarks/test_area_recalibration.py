"""benchmarks.area_recalibration: area corrections fit on other folds (hand-made per-image files, known answers)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.area_recalibration import cli, grid_floor, leave_one_fold_out, read_folds
from train.errors import UserError


def _write(cv: Path, k: int, rows: list[tuple[float, float, float]], sub: str = "as-final") -> None:
    d = cv / f"fold-{k}" / sub
    d.mkdir(parents=True)
    with (d / "per-image-paper.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["stem", "dsc", "area_true_px", "area_pred_px", "csa_rel_error"])
        for i, (dsc, t, p) in enumerate(rows):
            w.writerow([f"Pz{k:03d}-{i:03d}", dsc, t, p, (p - t) / t])


def _cv(tmp_path: Path, predict, folds: int = 4, n: int = 20) -> Path:
    rng = np.random.default_rng(0)
    cv = tmp_path / "cv"
    for k in range(folds):
        true = rng.uniform(1500, 5000, n)
        _write(cv, k, [(0.9, t, predict(t)) for t in true])
    return cv


def test_a_constant_bias_is_removed_by_both(tmp_path: Path) -> None:
    res = leave_one_fold_out(read_folds(_cv(tmp_path, lambda t: 1.2 * t), "as-final", "paper"))
    assert res["methods"]["raw"]["abs_rel_median"] == pytest.approx(0.2)
    assert res["methods"]["raw"]["bias_rel"] == pytest.approx(0.2)
    for m in ("scale", "linear"):
        assert res["methods"][m]["abs_rel_median"] == pytest.approx(0.0, abs=1e-9)
        assert res["methods"][m]["bias_rel"] == pytest.approx(0.0, abs=1e-9)


def test_a_size_dependent_bias_only_by_the_linear_fit(tmp_path: Path) -> None:
    # regression to the mean: pred = 3000 * (t / 3000) ** 0.8, small areas too large, large ones too small
    res = leave_one_fold_out(read_folds(_cv(tmp_path, lambda t: 3000 * (t / 3000) ** 0.8), "as-final", "paper"))
    assert res["methods"]["raw"]["abs_rel_median"] > 0.03
    assert res["methods"]["scale"]["abs_rel_median"] > 0.02
    assert res["methods"]["linear"]["abs_rel_median"] == pytest.approx(0.0, abs=1e-9)
    assert all(v["a"] == pytest.approx(1.25) for v in res["methods"]["linear"]["per_fold"].values())


def test_missed_images_take_no_part(tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    _write(cv, 0, [(0.9, 3000, 3000), (0.9, 4000, 4000), (0.1, 3000, 9000)])
    _write(cv, 1, [(0.9, 2000, 2000), (0.9, 2500, 2500), (0.49, 1000, 100)])
    _write(cv, 2, [(0.5, 1800, 1800)])
    folds = read_folds(cv, "as-final", "paper")
    assert {k: len(v) for k, v in folds.items()} == {0: 2, 1: 2, 2: 1}
    for m in leave_one_fold_out(folds)["methods"].values():
        assert m["abs_rel_median"] == pytest.approx(0.0, abs=1e-9)
    del folds[2], folds[1]
    folds[1] = np.array([[2000.0, 2000.0]])
    with pytest.raises(UserError, match="at least 3"):
        leave_one_fold_out(folds)


def test_cli_writes_files_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cv = _cv(tmp_path, lambda t: 1.1 * t, folds=2, n=5)
    assert cli([str(cv), "--json", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md"), "-q"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 10
    assert "| raw | 10.0 % | +10.0 % |" in (tmp_path / "r.md").read_text()
    # where the files are not: one fold only, a missing folder, a file without the columns
    assert cli([str(cv), "--sub", "elsewhere", "-q"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert cli([str(tmp_path / "none"), "-q"]) == 2
    bad = tmp_path / "bad"
    for k in range(2):
        (bad / f"fold-{k}").mkdir(parents=True)
        (bad / f"fold-{k}" / "per-image-paper.csv").write_text("stem,dsc\nPz001-001,0.9\n")
    assert cli([str(bad), "--sub", "", "-q"]) == 2
    assert "area_true_px" in capsys.readouterr().err


def test_grid_floor_is_zero_on_the_masks_own_grid_and_grows_on_a_coarse_one(synthetic_dataset: Path) -> None:
    same = grid_floor(synthetic_dataset, (128, 96))  # the synthetic masks' own size: nothing lost
    assert same["images"] == 12
    assert same["abs_rel_median"] == 0.0
    coarse = grid_floor(synthetic_dataset, (16, 12))  # an ellipse of ~6x4 cells: its outline is lost
    assert coarse["abs_rel_median"] > 0.02


def test_cli_grid_floor(tmp_path: Path, synthetic_dataset: Path) -> None:
    cv = _cv(tmp_path, lambda t: t, folds=2, n=5)
    md = tmp_path / "r.md"
    assert cli([str(cv), "--grid-floor", str(synthetic_dataset), "--size", "128x96", "--md", str(md), "-q"]) == 0
    assert "the 12 annotated masks taken to it and back give a CSA |error| median of 0.0 %" in md.read_text()
    assert cli([str(cv), "--grid-floor", str(synthetic_dataset), "--size", "12", "-q"]) == 2
