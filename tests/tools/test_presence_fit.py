"""The appearance fit's pieces: the logistic regression separates separable data, patients never
straddle folds, out-of-fold scores come from models that did not see the row's patient, and the
report counts frames per kind."""

from __future__ import annotations

import numpy as np
import pytest

from tools.presence_fit import (
    describe,
    entry_threshold,
    fit_logistic,
    fitted,
    format_md,
    found_nerve,
    group_folds,
    labels,
    out_of_fold,
    rates,
)
from train.errors import UserError


def separable(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(float)  # unbalanced: a third positive
    X = rng.normal(0, 1, (n, 4))
    X[:, 0] += 4 * y  # only feature 0 carries the class
    return X, y


def test_logistic_regression_learns_the_informative_feature() -> None:
    X, y = separable()
    mean, scale, w, b = fit_logistic(X, y)
    p = 1 / (1 + np.exp(-(((X - mean) / scale) @ w + b)))
    assert ((p >= 0.5) == (y == 1)).mean() > 0.95
    assert abs(w[0]) > 3 * np.abs(w[1:]).max() and w[0] > 0
    with pytest.raises(UserError, match="with and without"):
        fit_logistic(X, np.ones(len(y)))


def test_group_folds_deal_every_patient_to_one_fold() -> None:
    groups = [f"P{i // 3}" for i in range(30)]  # 10 patients, 3 frames each
    fold_of = group_folds(groups, 5, seed=1)
    assert set(fold_of) == {f"P{i}" for i in range(10)}
    assert sorted(np.bincount(list(fold_of.values()))) == [2, 2, 2, 2, 2]
    assert group_folds(groups, 5, seed=1) == fold_of
    with pytest.raises(UserError, match="at least as many patients"):
        group_folds(groups, 11)


def test_out_of_fold_scores_do_not_see_their_own_patient() -> None:
    X, y = separable(120)
    rows = [{"features": list(x), "positive": bool(t)} for x, t in zip(X, y)]
    groups = [f"P{i % 12}" for i in range(120)]
    scores = out_of_fold(rows, groups, 4)
    assert scores.shape == (120,) and ((scores >= 0.5) == (y == 1)).mean() > 0.9
    # poison one patient's labels: its own out-of-fold scores cannot follow the poison
    poisoned = [dict(r, positive=not r["positive"]) if g == "P0" else r for r, g in zip(rows, groups)]
    again = out_of_fold(poisoned, groups, 4)
    own = np.array([g == "P0" for g in groups])
    assert ((again[own] >= 0.5) == (y[own] == 1)).mean() > 0.9


def test_out_of_fold_scores_of_several_deals_are_their_mean() -> None:
    """``deals`` > 1: each row's score is the mean of its out-of-fold scores over that many deals of the patients
    (seeds ``seed + DRAW_STRIDE * d``); one deal is :func:`out_of_fold` itself."""
    from tools.presence_fit import DRAW_STRIDE, threshold_out_of_fold

    X, y = separable(120, seed=3)
    rows = [{"kind": "validation" if t else "nerve-removed", "id": f"Pz{i % 12:03d}-{i}", "positive": bool(t),
             "features": list(map(float, x)), "dsc": None} for i, (x, t) in enumerate(zip(X, y))]
    groups = [r["id"].split("-")[0] for r in rows]
    one, _ = threshold_out_of_fold(rows, groups, 4, 0.01, seed=5)
    assert np.allclose(one, out_of_fold(rows, groups, 4, seed=5))
    two, hold = threshold_out_of_fold(rows, groups, 4, 0.01, seed=5, deals=2)
    expected = (out_of_fold(rows, groups, 4, seed=5) + out_of_fold(rows, groups, 4, seed=5 + DRAW_STRIDE)) / 2
    assert np.allclose(two, expected) and not np.allclose(two, one)
    assert hold == pytest.approx(float(np.quantile(two[y == 1], 0.01)))


def test_drawn_copies_are_told_apart_by_their_draw() -> None:
    """A fit of several draws holds copies of one image with the same kind and id: :func:`row_key` keeps them
    apart (a row of a one-draw fit, written before draws existed, is draw 0)."""
    from tools.presence_fit import row_key

    a = {"kind": "validation+changed", "id": "Pz001-001", "draw": 0}
    assert row_key(a) != row_key({**a, "draw": 1})
    assert row_key({"kind": "validation+changed", "id": "Pz001-001"}) == row_key(a)


def test_score_only_rows_are_scored_but_never_learnt_from() -> None:
    """The hold threshold's clip frames (score_only) get out-of-fold scores like any row, but flipping their labels
    changes no score: the regressions never saw them."""
    X, y = separable(120)
    rows = [{"features": list(x), "positive": bool(t)} for x, t in zip(X, y)]
    groups = [f"P{i % 12}" for i in range(120)]
    extra = [{"features": list(x + 0.1), "positive": bool(t), "score_only": True} for x, t in zip(X[:30], y[:30])]
    flipped = [dict(r, positive=not r["positive"]) for r in extra]
    a = out_of_fold(rows + extra, groups + groups[:30], 4)
    b = out_of_fold(rows + flipped, groups + groups[:30], 4)
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a[:120], out_of_fold(rows, groups, 4))  # the same regressions as without them
    assert fitted(rows + extra).tolist() == [True] * 120 + [False] * 30


def test_rates_and_report_count_per_kind() -> None:
    rows = [{"kind": "validation", "positive": True, "features": [0.0]},
            {"kind": "validation", "positive": True, "features": None},
            {"kind": "off-nerve", "positive": False, "features": [0.0]}]
    r = rates(rows, [True, False, False])
    assert r["validation"] == {"frames": 2, "detected": 1, "nerve_reported": 1, "wrong_structure": 0,
                               "positive": True, "rate": 0.5}
    assert r["off-nerve"]["rate"] == 0.0
    report = {"fit": {"images": "fit", "out_of_fold": r}, "check": {"images": "check", "rates": r,
              "perturbed": {"zoom 0.8": {"frames": 2, "detected": 2, "kept": 1, "kept_of_detected": 0.5}}},
              "command": "cmd", "keep": 0.01, "model": {"threshold": 0.25}}
    md = format_md(report)
    assert "| held out | validation | 2 | 1 | 1 (50.0 %) | 0 |" in md and "| zoom 0.8 | 2 | 2 | 1 (50.0 %) |" in md
    assert "| held out | off-nerve | 1 | 1 | 0 (0.0 %) |  |" in md  # no nerve: no wrong structure to count


def _scored(real: list[float], free: list[float]) -> tuple[list[dict], np.ndarray]:
    rows = [{"kind": "validation", "positive": True, "features": [s], "dsc": 0.9} for s in real]
    rows += [{"kind": "off-nerve", "positive": False, "features": [s], "dsc": None} for s in free]
    rows += [{"kind": "phantom-no-nerve", "positive": False, "features": [0.99], "dsc": None}]  # not a wrist frame
    return rows, np.array([r["features"][0] for r in rows])


def test_a_new_nerve_must_pass_a_threshold_that_reports_few_nerve_free_frames() -> None:
    """The entry threshold: the lowest score (not below the hold threshold) at which at most --max-false of the
    real nerve-free frames stay above it, capped where it would drop more than 1 - --min-keep real nerves."""
    real = [0.85 + 0.0015 * i for i in range(100)]  # 0.85 .. 0.9985
    free = [0.05 * i for i in range(20)]  # 0.00 .. 0.95: four of twenty >= 0.8
    rows, oof = _scored(real, free)
    # 5 % of 20 frames: one may stay above; the second highest (0.90) must fall below: the threshold is just above it
    t, c = entry_threshold(rows, oof, hold=0.3, max_false=0.05, min_keep=0.5)
    assert 0.9 < t < 0.9 + 1e-9 and c["false_entry"] == pytest.approx(1 / 20)
    assert c["false_hold"] == pytest.approx(14 / 20) and c["keep_hold"] == 1.0
    assert c["keep_entry"] == pytest.approx(np.mean(np.array(real) >= t))
    # nerve-free frames without a detection count in the share's denominator: 40 frames, two may stay above
    t40, c40 = entry_threshold(rows, oof, hold=0.3, max_false=0.05, min_keep=0.5, nerve_free=40)
    assert 0.85 < t40 < 0.85 + 1e-9 and c40["false_entry"] == pytest.approx(2 / 40)
    # --min-keep 0.95: the threshold stops at the 5 % quantile of the real nerves
    capped, cc = entry_threshold(rows, oof, hold=0.3, max_false=0.05, min_keep=0.95)
    assert capped == pytest.approx(np.quantile(real, 0.05)) and cc["keep_entry"] >= 0.95
    # already few nerve-free frames above the hold threshold: one threshold
    assert entry_threshold(rows, oof, hold=0.92, max_false=0.05, min_keep=0.5)[0] == 0.92
    assert entry_threshold(rows, oof, hold=0.3, max_false=1.0, min_keep=0.5)[0] == 0.3
    # a cap below the hold threshold never lowers it
    assert entry_threshold(rows, oof, hold=0.95, max_false=0.0, min_keep=0.99)[0] == 0.95


def test_a_nerve_frame_whose_outline_is_another_structure_is_a_negative_of_the_fit() -> None:
    """Positives are frames where the model found the true nerve (Dice >= 0.5): an outline of something else
    on a frame with a nerve is what the gate should turn away, so the fit learns it as a negative, it takes no
    part in the threshold's real nerves, and the report counts it as a wrong structure when kept."""
    rows = [{"kind": "validation", "positive": True, "features": [1.0], "dsc": 0.91},
            {"kind": "validation+changed", "positive": True, "features": [0.0], "dsc": 0.12},
            {"kind": "validation+changed", "positive": True, "features": [1.0], "dsc": 0.5},
            {"kind": "off-nerve", "positive": False, "features": [0.0], "dsc": None},
            {"kind": "validation", "positive": True, "features": [1.0]}]  # recorded before Dice was: found
    assert [found_nerve(r) for r in rows] == [True, False, True, False, True]
    assert labels(rows).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    r = rates(rows, [True, True, False, True, True])
    assert r["validation+changed"]["wrong_structure"] == 1 and r["validation"]["wrong_structure"] == 0
    assert r["off-nerve"]["wrong_structure"] == 0


def test_describe_records_the_dice_of_what_was_found_against_the_truth() -> None:
    """describe() runs the live path on each frame; with an engine that outlines a fixed square, the Dice is
    known: 1 on a frame whose truth is that square, 0 on one whose truth lies elsewhere, None without truth."""
    class Square:
        size = (64, 48)

        def infer(self, batch: np.ndarray) -> np.ndarray:
            prob = np.zeros((1, 1, 48, 64), np.float32)
            prob[0, 0, 14:34, 22:42] = 0.97
            return prob

    rng = np.random.default_rng(0)
    image = rng.integers(40, 90, (48, 64), dtype=np.uint8)
    on = np.zeros((48, 64), np.uint8)
    on[14:34, 22:42] = 1
    away = np.zeros((48, 64), np.uint8)
    away[2:10, 2:10] = 1
    items = [{"kind": "validation", "id": "a", "image": image, "mask": on, "positive": True},
             {"kind": "validation+changed", "id": "a", "image": image, "mask": away, "positive": True},
             {"kind": "off-nerve", "id": "a", "image": image, "mask": None, "positive": False}]
    rows = describe(Square(), items, progress=False)
    assert rows[0]["features"] is not None and rows[0]["dsc"] == pytest.approx(1.0)
    assert rows[1]["dsc"] == 0.0 and rows[2]["dsc"] is None
    assert labels(rows).tolist() == [1.0, 0.0, 0.0]


def test_the_fit_is_written_beside_the_model_it_describes(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """End to end on a synthetic dataset and a random network: the model's sidecar, recording the file's
    sha256, which a run of that model then reads as its own."""
    import json

    from engines.cache import file_sha256
    from realtime.appearance import appearance_for, sidecar
    from tests.conftest import make_dataset
    from tests.engines._helpers import make_checkpoint
    from tools.presence_fit import main

    data = make_dataset(tmp_path / "data", n_patients=6, per_patient=2, size=(128, 96))
    net = make_checkpoint(tmp_path / "net.pt", "lunet", (64, 48), seed=0)
    # a random network outlines no true nerve: said so, and nothing written
    with pytest.raises(UserError, match="found no nerve of the fit images"):
        main(["--data", str(data), "--model", str(net), "--folds", "2", "--phantom", "4", "--no-perturbed",
              "--threads", "1", "--json", str(tmp_path / "fit.json"), "-q"])
    assert not sidecar(net).exists() and not (tmp_path / "fit.json").exists()
    # --found-dice 0: every outline on a frame with a nerve is taken as the nerve (the fit before Dice counted)
    assert main(["--data", str(data), "--model", str(net), "--folds", "2", "--phantom", "4", "--no-perturbed",
                 "--animated", "--threads", "1", "--json", str(tmp_path / "fit.json"), "-q", "--found-dice", "0"]) == 0
    fit = appearance_for(net)
    assert fit.file == str(sidecar(net)) and sidecar(net).is_file()
    assert fit.provenance["model_sha256"] == file_sha256(net) and fit.provenance["model_file"] == str(net)
    report = json.loads((tmp_path / "fit.json").read_text())
    assert report["model"]["threshold"] == fit.threshold and (tmp_path / "fit.md").is_file()
    assert fit.hold_threshold is not None and fit.hold_threshold <= fit.threshold  # hysteresis
    assert fit.provenance["max_false"] == 0.05 and set(report["out_of_fold"]) == {
        "keep_entry", "false_entry", "keep_hold", "false_hold"}
    assert report["check"]["rates_tracked"].keys() == report["check"]["rates"].keys()
    assert "Threshold of a new nerve" in (tmp_path / "fit.md").read_text()
    assert "under acquisition changes: not checked (--no-perturbed)" in (tmp_path / "fit.md").read_text()
    assert fit.provenance["animated"] is True and report["check"]["previous"] is None
    assert fit.provenance["found_dice"] == 0.0
    assert {"validation+animated", "nerve-removed+animated"} <= set(report["fit"]["out_of_fold"])
    assert {"validation", "validation+animated"} <= set(report["check"]["rates"])
    # a second fit, on stills only (the default), reports the first one's rates on the same held-out frames
    assert main(["--data", str(data), "--model", str(net), "--folds", "2", "--phantom", "4", "--no-perturbed",
                 "--threads", "1", "--json", str(tmp_path / "fit2.json"), "-q", "--found-dice", "0"]) == 0
    second = json.loads((tmp_path / "fit2.json").read_text())
    # not fit on animated frames: only the real nerves come once more as frames of a clip, for the hold threshold
    assert [k for k in second["fit"]["out_of_fold"] if k.endswith("+animated")] == ["validation+animated"]
    assert second["model"]["provenance"]["hold_clips"] is True
    assert "validation+animated" in second["check"]["rates"]
    previous = second["check"]["previous"]
    assert previous["file"] == str(sidecar(net)) and previous["provenance"]["animated"] is True
    assert previous["rates"].keys() == second["check"]["rates"].keys()
    first_rates = {k: v["nerve_reported"] for k, v in report["check"]["rates"].items()}
    assert {k: v["nerve_reported"] for k, v in previous["rates"].items()} == first_rates  # the same frames
    assert "with the check this fit replaces" in (tmp_path / "fit2.md").read_text()
    assert main(["--data", str(data), "--model", str(net), "--folds", "2", "--phantom", "4", "--no-perturbed",
                 "--threads", "1", "--json", str(tmp_path / "fit3.json"), "-q", "--found-dice", "0",
                 "--no-hold-clips"]) == 0
    third = json.loads((tmp_path / "fit3.json").read_text())
    assert not any(k.endswith("+animated") for k in third["fit"]["out_of_fold"])
    assert third["model"]["provenance"]["hold_clips"] is False


def test_a_fold_of_the_patient_split_fits_on_its_training_side_and_checks_on_its_validation_side(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``--split kfold --fold K``: a cross-validation fold's model gets its appearance model from that fold's training
    patients only, and the held-out check is on that fold's validation patients (mn-cv's split, same seed)."""
    import json

    from tests.conftest import make_dataset
    from tests.engines._helpers import make_checkpoint
    from tools.presence_fit import cli, main
    from train.data import scan_dataset
    from train.splits import make_split

    data = make_dataset(tmp_path / "data", n_patients=6, per_patient=2, size=(128, 96))
    net = make_checkpoint(tmp_path / "net.pt", "lunet", (64, 48), seed=0)
    common = ["--data", str(data), "--model", str(net), "--found-dice", "0", "--folds", "2", "--phantom", "4",
              "--no-perturbed", "--threads", "1", "-q"]
    assert cli([*common, "--split", "kfold"]) == 2  # no --fold
    assert cli([*common, "--split", "kfold", "--fold", "5"]) == 2  # --split-folds 5: folds 0-4
    assert cli([*common, "--fold", "1"]) == 2  # --fold without --split kfold
    assert main([*common, "--split", "kfold", "--split-folds", "3", "--fold", "1", "--seed", "7",
                 "--json", str(tmp_path / "fit.json"), "--per-frame", str(tmp_path / "frames.json")]) == 0
    samples = scan_dataset(data)
    patients = [x.patient for x in samples]
    train_idx, val_idx = make_split("kfold", patients, folds=3, fold=1, seed=7).indices(patients)
    frames = json.loads((tmp_path / "frames.json").read_text())
    real_ids = lambda rows: {r["id"] for r in rows if r["kind"] == "validation"}  # noqa: E731
    assert real_ids(frames["fit"]) == {samples[i].stem for i in train_idx}
    assert real_ids(frames["check"]) == {samples[i].stem for i in val_idx}
    report = json.loads((tmp_path / "fit.json").read_text())
    assert report["model"]["provenance"]["fit_seed"] == 0 and report["model"]["provenance"]["draws"] == 4
    changes = lambda rows: [(r["id"], r["change"]) for r in rows if r["kind"].endswith("+changed")]  # noqa: E731
    assert sorted({r["draw"] for r in frames["fit"] if "draw" in r}) == [0, 1, 2, 3]  # four draws by default
    # --fit-seed: the same images under other draws (each frame's acquisition change), recorded
    assert main([*common, "--split", "kfold", "--split-folds", "3", "--fold", "1", "--seed", "7", "--fit-seed", "1",
                 "--json", str(tmp_path / "fit1.json"), "--per-frame", str(tmp_path / "frames1.json")]) == 0
    other = json.loads((tmp_path / "frames1.json").read_text())
    assert real_ids(other["fit"]) == real_ids(frames["fit"]) and real_ids(other["check"]) == real_ids(frames["check"])
    assert sorted(changes(other["fit"])) != sorted(changes(frames["fit"]))
    assert json.loads((tmp_path / "fit1.json").read_text())["model"]["provenance"]["fit_seed"] == 1
    # --draws 1: one copy of each (a fit before 2026-12-07), exactly the first draw of the default fit
    assert main([*common, "--split", "kfold", "--split-folds", "3", "--fold", "1", "--seed", "7", "--draws", "1",
                 "--json", str(tmp_path / "fit2.json"), "--per-frame", str(tmp_path / "frames2.json")]) == 0
    one = changes(json.loads((tmp_path / "frames2.json").read_text())["fit"])
    assert changes(frames["fit"])[:len(one)] == one and len(changes(frames["fit"])) == 4 * len(one)
    assert json.loads((tmp_path / "fit2.json").read_text())["model"]["provenance"]["draws"] == 1
    assert cli([*common, "--draws", "0"]) == 2
    where = "fold 1 of mn-cv's 3-fold patient split (seed 7)"
    assert report["fit"]["images"].startswith(f"{where}, training side (8 images")
    assert report["check"]["images"].startswith(f"{where}, validation side (4 ")
    assert report["model"]["provenance"]["fit_images"].startswith("fold 1 of mn-cv's 3-fold")


def test_animated_copies_move_the_nerve_and_keep_the_kinds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    from tools.presence_fit import animated_copies

    image = np.full((120, 160), 90, np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    cv2.ellipse(mask, (80, 60), (20, 12), 0, 0, 360, 1, -1)
    image[mask > 0] = 40
    items = [{"kind": "validation", "id": "a", "image": image, "mask": mask, "positive": True},
             {"kind": "off-nerve", "id": "a", "image": image, "mask": None, "positive": False}]
    copies = animated_copies(items, seed=3)
    assert [c["kind"] for c in copies] == ["validation+animated", "off-nerve+animated"]
    assert [c["positive"] for c in copies] == [True, False] and copies[1]["mask"] is None
    moved = copies[0]["mask"]
    assert moved.shape == mask.shape and 0.8 * mask.sum() <= moved.sum() <= 1.1 * mask.sum()
    assert not np.array_equal(copies[0]["image"], image)  # new speckle at least
    assert animated_copies(items, seed=3)[0]["change"] == copies[0]["change"]  # deterministic
