"""tools.presence_draws on synthetic per-frame rows: each single draw and each group of draws gets exactly the
thresholds tools.presence_fit would give a fit of those draws, each group's model is written, a file of one draw
is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_dataset
from tools.presence_draws import cli, draw_thresholds
from train.errors import UserError


def rows(stems: list[str], draws: int, noise: float, seed: int = 0) -> list[dict]:
    """Frames as acquired (a nerve, the nerve removed, the wrist beside it) and ``draws`` changed copies of each,
    whose features move by ``noise`` from draw to draw."""
    rng = np.random.default_rng(seed)
    base, out = [], []
    for stem in stems:
        for kind, positive in (("validation", True), ("nerve-removed", False), ("off-nerve", False)):
            f = [float(rng.normal(1.5 if positive else -1.5, 1.0)), *rng.normal(0, 1, 5).tolist()]
            base.append({"kind": kind, "id": stem, "positive": positive, "features": f,
                         "dsc": 0.9 if positive else None})
    out += base
    for d in range(draws):
        for r in base:
            f = [v + float(rng.normal(0, noise)) for v in r["features"]]
            out.append({**r, "kind": r["kind"] + "+changed", "features": f, "draw": d})
    return out


def test_each_single_draw_and_each_group_gets_the_thresholds_a_fit_of_those_draws_would() -> None:
    from tools.presence_fit import fit_thresholds

    stems = [f"Pz{p:03d}-001" for p in range(1, 31)]
    patient_of = {s: s.split("-")[0] for s in stems}
    frames = rows(stems, 12, noise=1.0)
    report = draw_thresholds(frames, patient_of, 4, folds=5, fit_seed=7)
    assert report["draws"] == 12 and len(report["single"]) == 12 and len(report["groups"]) == 3
    base = [r for r in frames if "draw" not in r]
    # draws 4-7: the frames as acquired and those draws' copies, dealt as tools.presence_fit --fit-seed 4007 --draws 4
    _, _, entry, hold, _ = fit_thresholds(base + [r for r in frames if r.get("draw") in (4, 5, 6, 7)], patient_of,
                                          5, 0.01, 0.05, 0.95, 0.5, seed=4007, deals=4)
    assert report["groups"][1] == [entry, hold] and report["models"][1]["fit_seed"] == 4007
    _, _, entry, hold, _ = fit_thresholds(base + [r for r in frames if r.get("draw") == 11], patient_of,
                                          5, 0.01, 0.05, 0.95, 0.5, seed=11007)
    assert report["single"][11] == [entry, hold]
    assert report["sd_single"][1] > 0 and report["models"][0]["draws"] == [0, 1, 2, 3]
    for e, h in report["single"] + report["groups"]:
        assert 0.0 < h <= e < 1.0


def test_the_command_writes_the_report_and_each_groups_model(tmp_path: Path) -> None:
    from realtime.appearance import load_appearance_model

    data = make_dataset(tmp_path / "data", n_patients=12, per_patient=1, size=(64, 48))
    stems = sorted(p.stem for p in (data / "Images").iterdir())
    (tmp_path / "frames.json").write_text(json.dumps({"fit": rows(stems, 4, noise=0.5), "check": []}))
    args = ["--per-frame", str(tmp_path / "frames.json"), "--data", str(data), "--group", "2", "--folds", "4",
            "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "models"), "-q"]
    assert cli(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["sd_ratio"]) == 2 and "SD ratio" in (tmp_path / "r.md").read_text()
    model = load_appearance_model(tmp_path / "models" / "group-1" / "appearance.json")
    assert model.threshold == pytest.approx(report["groups"][1][0])
    assert model.hold_threshold == pytest.approx(report["groups"][1][1])
    # one draw: nothing to compare; a broken file: said so
    (tmp_path / "one.json").write_text(json.dumps({"fit": rows(stems, 1, noise=0.5), "check": []}))
    assert cli([*args[:1], str(tmp_path / "one.json"), *args[2:]]) == 2
    (tmp_path / "bad.json").write_text("{}")
    assert cli([*args[:1], str(tmp_path / "bad.json"), *args[2:]]) == 2
    with pytest.raises(UserError, match="fewer than two groups"):
        draw_thresholds(rows(stems, 3, noise=0.5), {s: s.split("-")[0] for s in stems}, 2, folds=4)
