"""benchmarks.final_check: a final model that fits its own training images worse than the fold models is flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import final_check
from tests.conftest import make_dataset
from tests.engines._helpers import make_checkpoint


def _row(dsc: float, bias: float) -> dict:
    return {"model": "m.pt", "n": 10, "dsc": dsc, "csa_abs_median": abs(bias), "csa_bias": bias, "missed": 0}


def test_verdict() -> None:
    folds = [_row(0.92, 0.015), _row(0.93, -0.028), _row(0.91, 0.02)]
    assert final_check.verdict(_row(0.925, 0.03), folds) == []  # within 2 points of the worst fold's bias
    reasons = final_check.verdict(_row(0.92, 0.088), folds)
    assert len(reasons) == 1 and "+8.8 %" in reasons[0] and "2.8 %" in reasons[0]
    reasons = final_check.verdict(_row(0.90, -0.01), folds)
    assert len(reasons) == 1 and "below every fold model" in reasons[0]
    assert final_check.verdict(_row(0.90, 0.0), folds, bias_margin=0.5) != []  # DSC alone fails it


def test_cli_evaluates_every_model_on_every_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_dataset(tmp_path / "d", n_patients=2, per_patient=2, size=(128, 96))
    final, fold = make_checkpoint(tmp_path / "final.pt", seed=1), make_checkpoint(tmp_path / "fold.pt", seed=2)
    code = final_check.cli(["--final", str(final), "--folds", str(fold), "--data", str(data), "--threads", "1",
                            "--json", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md"), "-q"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["final"]["n"] == report["folds"][0]["n"] == 4
    assert code == (0 if report["passes"] else 1) and report["passes"] == (report["reasons"] == [])
    assert "Verdict:" in (tmp_path / "r.md").read_text()
    assert final_check.cli(["--final", str(tmp_path / "nope.pt"), "--folds", str(fold), "--data", str(data)]) == 2
    assert "does not exist" in capsys.readouterr().err
