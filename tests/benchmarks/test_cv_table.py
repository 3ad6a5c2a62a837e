"""benchmarks.cv_table: fold reports of mn-cv folders gathered into one table (hand-made fold files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cv_table import cli, collect, format_table


def _fold(folder: Path, k: int, dsc: float, missed: int, ok: float | None) -> None:
    f = folder / f"fold-{k}"
    f.mkdir(parents=True)
    for protocol in ("paper", "native"):
        (f / f"eval-{protocol}.json").write_text(json.dumps({
            "dsc": {"mean": dsc}, "csa_rel_error": {"median": 0.05 + k / 100},
            "csa_agreement": {"bias_rel": -0.02, "sd_rel": 0.1, "missed": missed}}))
    if ok is not None:
        (f / "window-on.json").write_text(json.dumps({"pooled": {"tracked+fusion": {"ok_rate": ok, "jumps": k}}}))


def test_folds_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = tmp_path / "cv-a", tmp_path / "cv-b"
    _fold(a, 0, 0.90, 1, 0.95)
    _fold(a, 1, 0.80, 2, 0.85)
    _fold(b, 0, 0.92, 0, None)
    (a / "fold-2").mkdir()  # not evaluated yet: left out
    (a / "cv-summary.json").write_text(json.dumps({"recipe": "recipe-a"}))
    result = collect([a, b])
    assert [r["folds"] for r in result["recipes"]] == [[0, 1], [0]]
    table = format_table(result)
    assert "| `recipe-a` (folds 0, 1) | `cv-b` (folds 0) |" in table
    assert "| stills: DSC, paper protocol | **0.850 ± 0.071** (0.900 / 0.800) | 0.920 |" in table
    assert "| stills: missed (DSC < 0.5) | 3 (1 + 2) | 0 |" in table
    assert "| clips, presence on: frames ok | **90.0 ± 7.1** % (95.0 / 85.0) |  |" in table
    assert "presence on" not in table.replace("clips, presence on", "")  # no presence files: no row
    assert cli([str(a), str(b), "--json", str(tmp_path / "t.json"), "--md", str(tmp_path / "t.md"), "-q"]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["recipes"][0]["recipe"] == "recipe-a"
    (b / "cv-summary.json").write_text(json.dumps({"recipe": "recipe-a", "tta": "hflip"}))  # the same, flipped
    assert "| `recipe-a` (folds 0, 1) | `recipe-a`, tta hflip (folds 0) |" in format_table(collect([a, b]))
    assert cli([str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
