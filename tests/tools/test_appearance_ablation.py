"""tools.appearance_ablation on per-frame rows with a known answer: only the fifth feature tells nerves from
nerve-free frames, so the check on five features passes far fewer nerve-free frames than the one on four."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.appearance_ablation import ablate, cli
from tests.conftest import make_dataset


def rows(stems: list[str], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for stem in stems:
        for kind, positive in (("validation", True), ("nerve-removed", False), ("off-nerve", False)):
            noise = rng.normal(0, 1, 4).tolist()  # the first four: the same for nerves and nerve-free frames
            fifth = float(rng.normal(3.0 if positive else -3.0, 1.0))
            out.append({"kind": kind, "id": stem, "positive": positive, "features": [*noise, fifth, 0.5],
                        "dsc": 0.9 if positive else None})
    out.append({"kind": "lifted-probe", "id": stems[0], "positive": False, "features": None, "dsc": None})
    return out


def test_a_separating_feature_cuts_the_nerve_free_frames_reported(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "d", n_patients=12, per_patient=2)
    stems = sorted(p.stem for p in (data / "Images").iterdir())
    fit, check = rows(stems[:18], 0), rows(stems[18:], 1)
    patient_of = {s: s.split("-")[0] for s in stems}
    four = ablate(fit, check, patient_of, 4, folds=4)
    five = ablate(fit, check, patient_of, 5, folds=4)
    for part in ("fit_out_of_fold", "check"):
        assert five[part]["validation"]["rate"] >= 0.8  # the threshold keeps 99 % of real nerves out of fold
        assert five[part]["nerve-removed"]["rate"] <= 0.1 < four[part]["nerve-removed"]["rate"]
        assert five[part]["lifted-probe"] == {"frames": 1, "detected": 0, "nerve_reported": 0, "wrong_structure": 0,
                                              "positive": False, "rate": 0.0}
    # a nerve outlined as another structure (Dice < 0.5) is not a nerve: out of the threshold's positives
    wrong = [{**r, "dsc": 0.1} if r["kind"] == "validation" and i % 2 else r for i, r in enumerate(fit)]
    assert ablate(wrong, check, patient_of, 5, folds=4)["fit_out_of_fold"]["validation"]["wrong_structure"] > 0

    per_frame = tmp_path / "frames.json"
    per_frame.write_text(json.dumps({"fit": fit, "check": check}))
    out = tmp_path / "r.json"
    assert cli(["--per-frame", str(per_frame), "--data", str(data), "--sets", "4", "5", "--folds", "4",
                "--json", str(out), "-q"]) == 0
    report = json.loads(out.read_text())
    assert [s["features"] for s in report["sets"]] == [4, 5]
    md = out.with_suffix(".md").read_text()
    assert "set 2: ring, edge, unsure, log_area, inside" in md and "| held out | nerve-removed |" in md
    capsys.readouterr()
    assert cli(["--per-frame", str(per_frame), "--data", str(data), "--sets", "7", "--json", str(out)]) == 2
    assert "7 features asked; the frames have 6" in capsys.readouterr().err
    assert cli(["--per-frame", str(tmp_path / "none.json"), "--data", str(data), "--json", str(out)]) == 2
    assert "is not a python -m tools.presence_fit --per-frame file" in capsys.readouterr().err
