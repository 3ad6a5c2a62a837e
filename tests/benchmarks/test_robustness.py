"""mn-robustness: scoring, deltas and the 2-point goal, determinism, files, errors, one real tiny run.

The fake engines know the truth: the test images are the mask itself (0 / 255), so an "oracle"
that thresholds each preprocessed input halfway between its darkest and brightest pixel returns the
perturbed mask, and the expected numbers are exact (clean Dice 1, CSA error 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import robustness as rb
from engines.base import Engine, EngineInfo
from tests.conftest import make_dataset
from train.splits import make_split

SIZE = (96, 72)  # (W, H) of the test images and the fakes' input: no resampling on the clean pass


class Oracle(Engine):
    """Thresholds the preprocessed image halfway between its min and max; ``dilate`` px more around it."""

    def __init__(self, size: tuple[int, int] = SIZE, dilate: int = 0) -> None:
        super().__init__(EngineInfo(name="oracle", backend="fake", precision="fp32", device="cpu",
                                    input_shape=(-1, 1, size[1], size[0])))
        self.dilate = dilate
        self.calls: list[int] = []

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        out = np.zeros_like(batch)
        for i, x in enumerate(batch[:, 0]):
            mask = (x >= (x.min() + x.max()) / 2).astype(np.uint8)
            if self.dilate:
                mask = cv2.dilate(mask, np.ones((2 * self.dilate + 1,) * 2, np.uint8))
            out[i, 0] = mask
        return out


def ellipse_mask(size: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int], angle: float = 0.0
                 ) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), np.uint8)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 255, -1)
    return mask


def make_items(n: int = 4, size: tuple[int, int] = SIZE) -> list[rb.Item]:
    rng = np.random.default_rng(1)
    items = []
    for i in range(n):
        w, h = size
        mask = ellipse_mask(size, (int(w * rng.uniform(0.4, 0.6)), int(h * rng.uniform(0.4, 0.6))),
                            (int(w * rng.uniform(0.12, 0.18)), int(h * rng.uniform(0.10, 0.15))), rng.uniform(-20, 20))
        items.append(rb.Item(f"Pz{i:03d}-001", mask.astype(np.float32), mask.astype(np.float32) / 255, index=i))
    return items


def row(result: dict, perturbation: str, level: float | None = None) -> dict:
    return next(r for r in result["rows"] if r["perturbation"] == perturbation and r["level"] == level)


# ------------------------------------------------------------------------------ pure parts
def test_score_known_masks() -> None:
    truth = np.zeros((10, 10), np.float32)
    truth[2:6, 2:7] = 1  # 20 px
    prob = np.zeros((10, 10), np.float32)
    prob[2:7, 2:7] = 0.5  # 25 px, >= 0.5 counts
    s = rb.score(prob, truth)
    assert s["area_true_px"] == 20 and s["area_pred_px"] == 25
    assert s["dsc"] == pytest.approx(2 * 20 / 45) and s["csa_rel_error"] == pytest.approx(0.25)
    assert not s["missed"] and not s["empty"]
    s = rb.score(np.zeros((10, 10)), truth)
    assert s["dsc"] == 0.0 and s["missed"] and s["empty"] and s["csa_rel_error"] == -1.0
    s = rb.score(np.zeros((10, 10)), np.zeros((10, 10)))  # the nerve cut away, nothing predicted
    assert s["dsc"] == 1.0 and s["csa_rel_error"] is None and s["empty"]


def test_deltas_and_the_two_point_goal() -> None:
    def r(name: str, level: float | None, csa: float | None, dsc: float = 0.9) -> dict:
        return {"perturbation": name, "level": level, "csa_abs_median": csa, "dsc_mean": dsc}

    rows = rb.add_deltas([r("none", None, 0.05), r("zoom", 0.8, 0.069, 0.85), r("zoom", 1.2, 0.071),
                          r("gain", 0.6, 0.029), r("gain", 1.5, 0.07), r("crop", 0.08, None)])
    assert [x["within_2pts"] for x in rows] == [True, True, False, False, True, None]
    assert rows[1]["delta_csa_abs_median_pts"] == pytest.approx(1.9)
    assert rows[3]["delta_csa_abs_median_pts"] == pytest.approx(-2.1)
    assert rows[1]["delta_dsc"] == pytest.approx(-0.05) and rows[0]["delta_dsc"] == 0.0
    assert not rb.all_within(rows) and rb.all_within(rows[:2] + rows[4:5])
    with pytest.raises(ValueError):
        rb.add_deltas([r("zoom", 0.8, 0.1)])


def test_conditions_clean_first_and_levels_checked_early() -> None:
    conds = rb.conditions_for({"zoom": (0.8, 0.8, 1.2), "jpeg": (40,)})
    assert [c.label for c in conds] == ["clean", "zoom 0.8", "zoom 1.2", "jpeg 40"]
    with pytest.raises(rb.UserError, match="jpeg"):
        rb.check_conditions(rb.conditions_for({"jpeg": (500,)}))
    with pytest.raises(rb.UserError, match="unknown perturbation"):
        rb.conditions_for({"nosuch": (1,)})


# ------------------------------------------------------------------------------ run_report with oracles
@pytest.fixture(scope="module")
def oracle_result() -> dict:
    conds = rb.conditions_for({"zoom": (0.8, 1.2), "crop": (0.08,), "pad": (0.1,), "jpeg": (40,), "speckle": (0.15,)})
    return rb.run_report(Oracle(), make_items(), conds, seed=3, batch=3)


def test_clean_is_exact_and_the_oracle_follows_the_perturbed_image(oracle_result: dict) -> None:
    clean = row(oracle_result, "none")
    assert clean["n"] == 4 and clean["dsc_mean"] == 1.0 and clean["csa_abs_median"] == 0.0
    assert clean["csa_bias"] == 0.0 and clean["missed"] == 0 and clean["empty"] == 0
    assert clean["delta_dsc"] == 0.0 and clean["delta_csa_abs_median_pts"] == 0.0 and clean["within_2pts"] is True
    for perturbation, level in [("zoom", 0.8), ("zoom", 1.2), ("crop", 0.08), ("pad", 0.1), ("jpeg", 40.0)]:
        r = row(oracle_result, perturbation, level)
        assert r["n"] == 4 and r["dsc_mean"] > 0.97, r
        assert r["csa_abs_median"] < 0.03 and r["within_2pts"] is True and r["missed"] == 0, r
    assert row(oracle_result, "zoom", 0.8)["dsc_mean"] > 0.99
    assert [set(r) for r in oracle_result["rows"]] == [set(rb.ROW_KEYS)] * len(oracle_result["rows"])
    assert oracle_result["levels"] == {"zoom": [0.8, 1.2], "crop": [0.08], "pad": [0.1], "jpeg": [40.0],
                                       "speckle": [0.15]}
    # the mask follows a size change: crop makes the frame smaller, pad larger
    sizes = {(p["perturbation"], p["width"], p["height"]) for p in oracle_result["per_image"]}
    assert ("crop", 96 - 2 * 8, 72 - 2 * 6) in sizes and ("pad", 96 + 2 * 10, 72 + 2 * 7) in sizes


def test_a_biased_engine_fails_the_goal_where_the_nerve_shrinks() -> None:
    conds = rb.conditions_for({"zoom": (0.8, 1.0)})
    result = rb.run_report(Oracle(dilate=2), make_items(), conds)
    clean, small, same = row(result, "none"), row(result, "zoom", 0.8), row(result, "zoom", 1.0)
    assert clean["csa_bias"] > 0.1 and clean["dsc_mean"] < 1.0  # a dilated mask overestimates the area
    # a fixed 2-px rim is a larger fraction of a smaller nerve
    assert small["delta_csa_abs_median_pts"] > 2.0 and small["within_2pts"] is False
    assert same["within_2pts"] is True and same["delta_csa_abs_median_pts"] == pytest.approx(0.0, abs=0.5)
    assert result["all_within_2pts"] is False
    table = rb.format_table(result)
    assert "| zoom | 0.8 |" in table and "**no**" in table and "outside: zoom 0.8" in table


def test_deterministic_and_noise_depends_on_the_image(oracle_result: dict) -> None:
    conds = rb.conditions_for({"zoom": (0.8, 1.2), "crop": (0.08,), "pad": (0.1,), "jpeg": (40,), "speckle": (0.15,)})
    again = rb.run_report(Oracle(), make_items(), conds, seed=3, batch=1)
    assert again["rows"] == oracle_result["rows"] and again["per_image"] == oracle_result["per_image"]
    item = make_items(1)[0]
    cond = rb.Condition("speckle", 0.3)
    a, _ = rb.apply_condition(item, cond, seed=3)
    b, _ = rb.apply_condition(item, cond, seed=3)
    other = rb.Item(item.stem, item.image, item.mask, index=7)
    c, _ = rb.apply_condition(other, cond, seed=3)
    d, _ = rb.apply_condition(item, cond, seed=4)
    assert a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_batching_goes_through_the_engine_in_chunks() -> None:
    engine = Oracle()
    rows = rb.measure(engine, make_items(3), rb.conditions_for({"gain": (0.6,)}), batch=4)
    assert engine.calls == [4, 2] and len(rows) == 6
    assert [(r["stem"], r["perturbation"]) for r in rows[:2]] == [("Pz000-001", "none"), ("Pz000-001", "gain")]


# ------------------------------------------------------------------------------ the command
def mask_dataset(root: Path, n_patients: int = 6, per_patient: int = 2, size: tuple[int, int] = SIZE) -> Path:
    """A dataset whose images are their masks (so the oracle is exact); file names as the real data's."""
    rng = np.random.default_rng(0)
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir(parents=True)
    for p in range(1, n_patients + 1):
        for k in range(1, per_patient + 1):
            w, h = size
            mask = ellipse_mask(size, (int(w * rng.uniform(0.4, 0.6)), int(h * rng.uniform(0.4, 0.6))),
                                (int(w * 0.15), int(h * 0.12)))
            cv2.imwrite(str(root / "Images" / f"Pz{p:03d}-{k:03d}.png"), mask)
            cv2.imwrite(str(root / "Masks" / f"Pz{p:03d}-{k:03d}.png"), mask)
    return root


@pytest.fixture
def oracle_cli(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Route the command's engine loading to an oracle; records the model each load asked for."""
    asked: list[str | None] = []

    def fake_open_engine(args, batch: int = 1) -> Engine:
        asked.append(args.model)
        return Oracle()

    monkeypatch.setattr(rb, "open_engine", fake_open_engine)
    return asked


def test_cli_writes_json_md_and_per_image(tmp_path: Path, oracle_cli: list, capsys: pytest.CaptureFixture) -> None:
    data = mask_dataset(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    code = rb.cli(["--data", str(data), "--split", "kfold", "--folds", "3", "--fold", "1", "--perturb", "zoom=0.8",
                   "jpeg=40", "--json", str(out / "r.json"), "--per-image", str(out / "r.csv"), "--batch", "4", "-q"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["r.csv", "r.json", "r.md"]  # no temporary files
    result = json.loads((out / "r.json").read_text())
    for key in ("model", "engine", "data", "split", "n_images", "levels", "rows", "all_within_2pts", "seed",
                "within_pts", "date", "command", "system"):
        assert key in result, key
    assert result["model"] == "mn-realtime" and oracle_cli == [None]  # the default model was asked for
    assert result["engine"]["backend"] == "fake" and result["levels"] == {"zoom": [0.8], "jpeg": [40.0]}
    patients = sorted({f"Pz{p:03d}" for p in range(1, 7)})
    expected_val = make_split("kfold", [p for p in patients for _ in range(2)], folds=3, fold=1, seed=42).val
    assert result["split"] == "kfold-3/1:val"
    assert result["n_images"] == 2 * len(expected_val)
    assert [(r["perturbation"], r["level"]) for r in result["rows"]] == [("none", None), ("zoom", 0.8), ("jpeg", 40.0)]
    assert result["rows"][0]["dsc_mean"] == 1.0 and result["rows"][0]["csa_abs_median"] == 0.0
    assert result["all_within_2pts"] is True
    md = (out / "r.md").read_text()
    assert md.strip() == capsys.readouterr().out.strip() and "| clean | - |" in md
    lines = (out / "r.csv").read_text().splitlines()
    assert lines[0].split(",") == list(rb.PER_IMAGE_FIELDS) and len(lines) == 1 + 3 * result["n_images"]
    assert {line.split(",")[0][:5] for line in lines[1:]} == set(expected_val)


def test_cli_cv_dir_pools_each_folds_validation_images(tmp_path: Path, oracle_cli: list) -> None:
    data = mask_dataset(tmp_path / "data")
    cv = tmp_path / "cv"
    for k in range(3):
        (cv / f"fold-{k}").mkdir(parents=True)
        (cv / f"fold-{k}" / "model.pt").write_bytes(b"not read by the fake")
    (cv / "cv-summary.json").write_text(json.dumps({"folds": 3, "seed": 7, "data": str(data)}))
    out = tmp_path / "cv.json"
    assert rb.cli(["--cv-dir", str(cv), "--perturb", "gain=0.6", "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    assert oracle_cli == [str(cv / f"fold-{k}" / "model.pt") for k in range(3)]
    assert result["n_images"] == 12 and result["seed"] == 7 and [f["fold"] for f in result["folds"]] == [0, 1, 2]
    assert sum(f["images"] for f in result["folds"]) == 12 and result["rows"][0]["dsc_mean"] == 1.0
    # a --folds that disagrees with the summary is refused
    assert rb.cli(["--cv-dir", str(cv), "--folds", "5", "--json", str(out), "-q"]) == 2


@pytest.mark.parametrize("extra, message", [
    (["--perturb", "nosuch=1"], "unknown perturbation"),
    (["--perturb", "zoom=a,b"], "numbers"),
    (["--perturb", "jpeg=500"], "jpeg"),
    (["--data", "{tmp}/does-not-exist"], "not a folder"),
    (["--model", "no-such-model"], "unknown model"),
    (["--json", "{tmp}/no-such-dir/r.json"], "does not exist"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str],
                                             message: str, synthetic_dataset: Path) -> None:
    argv = ["--data", str(synthetic_dataset), "--split", "none", "--perturb", "zoom=0.8", "--json",
            str(tmp_path / "r.json"), "--cache-dir", str(tmp_path / "cache"), "-q"]
    argv += [x.format(tmp=tmp_path) for x in extra]  # argparse: the last occurrence wins
    code = rb.cli(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r.json").exists()


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(rb.os, "replace", boom)
    with pytest.raises(OSError):
        rb.write_atomic(tmp_path / "r.json", "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_end_to_end_with_a_small_real_engine(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_dataset(tmp_path / "data", n_patients=2, per_patient=2, size=(64, 48))
    out = tmp_path / "robust.json"
    code = rb.cli(["--model", "lunet", "--size", "64x48", "--backend", "torch", "--threads", "1", "--data", str(data),
                   "--split", "none", "--perturb", "zoom=0.9", "jpeg=40", "--json", str(out),
                   "--cache-dir", str(tmp_path / "cache"), "-q"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["n_images"] == 4 and len(result["rows"]) == 3 and result["rows"][0]["n"] == 4
    assert any("random weights" in n for n in result["engine"]["notes"])
    assert out.with_suffix(".md").read_text().startswith("# Robustness of lunet")


# ------------------------------------------------------------------------------ --window-diagnosis
class Corner(Engine):
    """A localiser that always finds its nerve in the top-left corner (away from every test nerve)."""

    def __init__(self, size: tuple[int, int] = SIZE) -> None:
        super().__init__(EngineInfo(name="corner", backend="fake", precision="fp32", device="cpu",
                                    input_shape=(-1, 1, size[1], size[0])))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros_like(batch)
        out[:, :, 2:10, 2:14] = 1.0
        return out


def cascade(localiser: Engine, crop: tuple[int, int] = (48, 32)) -> Engine:
    from engines.cascade import CascadeEngine

    return CascadeEngine(localiser, Oracle(size=crop))


def test_window_diagnosis_tells_the_localiser_from_the_refiner() -> None:
    items = make_items(4)
    conditions = rb.conditions_for({})
    # a localiser that finds the nerve: no window off, and the true window changes nothing
    good = rb.run_report(cascade(Oracle()), items, conditions, diagnose_window=True)
    clean = row(good, rb.CLEAN)
    assert clean["window_off"] == 0 and clean["dsc_mean"] == pytest.approx(1.0)
    assert clean["dsc_true_window"] == pytest.approx(1.0) and clean["csa_bias_true_window"] == pytest.approx(0.0)
    for r in good["per_image"]:
        assert abs(r["window_offset_x"]) <= 2 and abs(r["window_offset_y"]) <= 2 and r["window_off"] is False
    # a localiser that looks elsewhere: every window off, the refiner alone would have been exact
    bad = rb.run_report(cascade(Corner()), items, conditions, diagnose_window=True)
    clean = row(bad, rb.CLEAN)
    assert clean["window_off"] == 4 and clean["missed"] == 4
    assert clean["dsc_true_window"] == pytest.approx(1.0) and clean["csa_abs_median_true_window"] == pytest.approx(0.0)
    for r, item in zip(bad["per_image"], items):
        ys, xs = np.nonzero(item.mask > 0.5)
        # the window's centre is that of the corner's blob's window (clamped at 0, 0): (24, 16)
        assert r["window_offset_x"] == pytest.approx(xs.mean() - 24, abs=0.6)
        assert r["window_offset_y"] == pytest.approx(ys.mean() - 16, abs=0.6)
    table = rb.format_table({**bad, "model": "fake"})
    assert "window off | true window: DSC" in table and "| 4 | 1.0000 | 0.0 % | +0.0 % |" in table
    csv_text = rb.per_image_csv(bad["per_image"])
    assert csv_text.splitlines()[0].endswith(",".join(rb.WINDOW_FIELDS))
    # without the flag nothing changes: the same keys as before
    plain = rb.run_report(cascade(Corner()), items, conditions)
    assert set(plain["rows"][0]) == set(rb.ROW_KEYS) and "window_off" not in rb.per_image_csv(plain["per_image"])
    assert row(plain, rb.CLEAN)["dsc_mean"] == pytest.approx(clean["dsc_mean"])


def test_window_diagnosis_counts_a_window_clamped_at_the_top_as_training_clamps_it() -> None:
    # nerves 7 px below the top edge: the window (32 px high) is clamped to y0 = 0, its centre 9 px below the
    # nerve's, more than the 4 px training shifts it; but training clamps it there too, so it is not off
    items = []
    for i, cx in enumerate((30, 48, 66)):
        mask = ellipse_mask(SIZE, (cx, 7), (10, 5), 0.0).astype(np.float32)
        items.append(rb.Item(f"Pz{i:03d}-001", mask, mask / 255, index=i))
    report = rb.run_report(cascade(Oracle()), items, rb.conditions_for({}), diagnose_window=True)
    for r in report["per_image"]:
        assert r["window_offset_y"] == pytest.approx(-9.0, abs=0.6) and r["window_off"] is False
    assert row(report, rb.CLEAN)["window_off"] == 0


def test_window_diagnosis_needs_a_cascade() -> None:
    with pytest.raises(rb.UserError, match="needs a cascade"):
        rb.measure(Oracle(), make_items(1), rb.conditions_for({}), diagnose_window=True)
