"""mn-cv: recipes, the aggregation's arithmetic on hand-made fold results, resumption, refusals, and one
real (tiny) cross-validation of a cascade recipe end to end."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import make_dataset
from train import crossval
from train.checkpoint import load_checkpoint, save_checkpoint
from train.crossval import CrossValidation, cli, format_summary
from train.errors import UserError
from train.models import build_model
from train.recipes import (RECIPES, check_trainable, get_recipe, is_localiser_part, is_refiner_part, part_args,
                           shared_part_name)
from train.threshold import GRID, leave_one_fold_out, load_cv, read_sweep
from train.trainer import load_init_weights


def test_recipes_and_part_args() -> None:
    assert {"cascade-strong-ph", "cascade-acq", "dlunet-paper"} <= set(RECIPES)
    r = get_recipe("cascade-acq")
    assert r.is_cascade and r.needs_extra
    args = part_args(r, "refiner", extra=["ph1", "ph2"], epochs=7)
    assert args[-2:] == ["--epochs", "7"] and "--crop-negatives" in args and args.count("ph1") == 1
    assert args[args.index("--augment") + 1] == "acquisition"
    assert not get_recipe("dlunet-paper").is_cascade
    strong, cmp = get_recipe("cascade-strong-ph"), get_recipe("cascade-strong-ph-cmp")
    assert cmp.parts["localiser"] == strong.parts["localiser"] and cmp.epochs == strong.epochs
    ref = part_args(cmp, "refiner", extra=["ph"], epochs=3)
    assert ref == [("compress" if a == "strong" else a) for a in part_args(strong, "refiner", extra=["ph"], epochs=3)]
    assert ref[ref.index("--augment") + 1] == "compress"
    both = get_recipe("cascade-strong-ph-cmp-tc")
    assert both.parts["localiser"] == strong.parts["localiser"] and both.epochs == strong.epochs
    ref_both = part_args(both, "refiner", extra=["ph"], epochs=3)
    assert ref_both[ref_both.index("--augment") + 1] == "compress"
    assert ref_both[ref_both.index("--consistency") + 1] == "10"
    assert sorted(ref_both) == sorted(ref + ["--consistency", "10"])
    wide = part_args(get_recipe("cascade-strong-ph-cmp-tcw"), "refiner", extra=["ph"], epochs=3)
    assert sorted(wide) == sorted(ref_both + ["--crop-jitter", "0.5"])
    both_parts = get_recipe("cascade-acqloc-cmp")
    assert both_parts.parts == {"localiser": get_recipe("cascade-acqloc").parts["localiser"],
                                "refiner": cmp.parts["refiner"]}
    assert both_parts.epochs == {"localiser": get_recipe("cascade-acqloc").epochs["localiser"],
                                 "refiner": cmp.epochs["refiner"]}
    spk, neg = get_recipe("cascade-acqloc-cmp-spk"), get_recipe("cascade-acqloc-cmp-spk-neg")
    assert spk.parts["localiser"] == neg.parts["localiser"] == both_parts.parts["localiser"]
    ref_spk = part_args(spk, "refiner", extra=["ph"], epochs=3)
    ref_cmp = part_args(both_parts, "refiner", extra=["ph"], epochs=3)
    assert sorted(ref_spk) == sorted(ref_cmp + ["--speckle", "0", "0.6"])
    assert sorted(part_args(neg, "refiner", extra=["ph"], epochs=3)) == sorted(ref_spk + ["--crop-negatives", "0.15"])
    ens = get_recipe("cascade-acqloc-cmp-ens")
    assert ens.is_cascade and ens.refiner_parts == ["refiner", "refiner-2"]
    assert ens.parts == {"localiser": both_parts.parts["localiser"], "refiner": both_parts.parts["refiner"],
                         "refiner-2": spk.parts["refiner"]}
    assert get_recipe("cascade-acq").refiner_parts == ["refiner"]
    assert [is_refiner_part(p) for p in ("refiner", "refiner-2", "refiner-12", "refiner-1", "refiner-x", "model")] == \
        [True, True, True, False, False, False]
    assert [shared_part_name(p) for p in ("refiner-2", "refiner", "localiser", "localiser-3", "model")] == \
        ["refiner", "refiner", "localiser", "localiser", "model"]
    assert [is_localiser_part(p) for p in ("localiser", "localiser-2", "localiser-1", "localisers", "refiner")] == \
        [True, True, False, False, False]
    assert ens.localiser_parts == ["localiser"]
    with pytest.raises(UserError, match="extra-train"):
        part_args(r, "localiser", extra=[], epochs=1)
    with pytest.raises(UserError, match="cascade-acq"):
        get_recipe("nope")


def _fake_eval(folder: Path, protocol: str, dscs: list[float], areas: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"stem": f"s{i}", "dsc": d, "iou": d, "area_true_px": t, "area_pred_px": p,
             "csa_rel_error": abs(p - t) / t} for i, (d, (t, p)) in enumerate(zip(dscs, areas))]
    result = {"n": len(rows), "dsc": {"mean": statistics.fmean(dscs)}, "iou": {"mean": statistics.fmean(dscs)},
              "precision": {"mean": 0.9}, "recall": {"mean": 0.8},
              "csa_rel_error": {"median": statistics.median(r["csa_rel_error"] for r in rows)},
              "csa_agreement": {"bias_rel": statistics.fmean((p - t) / t for t, p in areas), "missed": 0},
              "per_image": rows}
    (folder / f"eval-{protocol}.json").write_text(json.dumps(result))


def test_summary_mean_sd_across_folds_and_pooled(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", n_patients=3, per_patient=1)
    cv = CrossValidation(get_recipe("dlunet-paper"), str(data), str(tmp_path / "cv"), folds=2)
    _fake_eval(cv.fold_dir(0), "paper", [0.9, 0.8], [(100, 110), (200, 180)])
    _fake_eval(cv.fold_dir(1), "paper", [0.7, 0.3], [(100, 100), (100, 50)])
    result = cv.write_summary()
    paper = result["protocols"]["paper"]
    assert paper["dsc"]["mean"] == pytest.approx((0.85 + 0.5) / 2)
    assert paper["dsc"]["sd"] == pytest.approx(statistics.stdev([0.85, 0.5]))
    assert paper["n_images"] == 4 and paper["folds_evaluated"] == [0, 1]
    pooled = paper["pooled"]["csa_agreement"]
    assert pooled["bias_rel"] == pytest.approx((0.1 - 0.1 + 0.0 - 0.5) / 4)
    assert pooled["missed"] == 1 and pooled["missed_stems"] == ["s1"]
    assert result["protocols"]["native"]["n_images"] == 0
    assert json.loads((tmp_path / "cv" / "cv-summary.json").read_text())["folds_done"] == [0, 1]
    table = format_summary(result)
    assert "| paper | 4 | 0.6750 ± 0.2475 |" in table
    assert result["models"] == "folds" and "as-final" not in table
    # the folds trained the way the final is: their own summary, beside the fold models'
    _fake_eval(cv.fold_dir(0) / "as-final", "paper", [0.95, 0.85], [(100, 100), (200, 200)])
    _fake_eval(cv.fold_dir(1) / "as-final", "paper", [0.75], [(100, 90)])
    as_final = cv.write_summary("as-final")
    assert as_final["models"] == "as-final" and as_final["protocols"]["paper"]["n_images"] == 3
    assert as_final["protocols"]["paper"]["dsc"]["mean"] == pytest.approx((0.9 + 0.75) / 2)
    written = json.loads((tmp_path / "cv" / "cv-summary-as-final.json").read_text())
    assert written["folds_done"] == [0, 1] and written["models"] == "as-final"
    assert "trained the way the final is" in (tmp_path / "cv" / "cv-summary-as-final.md").read_text()
    assert json.loads((tmp_path / "cv" / "cv-summary.json").read_text())["models"] == "folds"  # left as it was


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_dataset(tmp_path / "d", n_patients=3, per_patient=1)
    assert cli(["--recipe", "cascade-acq", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "--extra-train" in capsys.readouterr().err
    assert cli(["--recipe", "dlunet-paper", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert cli(["--recipe", "dlunet-paper", "--data", str(data), "--out", str(tmp_path / "o"), "--folds", "1"]) == 2
    assert cli(["--recipe", "dlunet-paper", "--data", str(data), "--out", str(tmp_path / "o"), "--final"]) == 2
    assert "every fold trained first" in capsys.readouterr().err
    assert cli(["--list-recipes"]) == 0 and "cascade-acq" in capsys.readouterr().out


def test_train_args_may_be_a_single_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--train-args --amp`` (one option, no space) reaches every part, not argparse's "expected one argument"."""
    seen: list[list[str]] = []

    class Recorder:
        def __init__(self, *args, train_args: list[str], **kwargs) -> None:  # type: ignore[no-untyped-def]
            seen.append(train_args)

        def run_fold(self, fold: int) -> None:
            raise UserError("recorded")

    monkeypatch.setattr(crossval, "CrossValidation", Recorder)
    base = ["--recipe", "dlunet-paper", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli([*base, "--train-args", "--amp"]) == 2
    assert cli([*base, "--train-args", "--threads 1 --amp", "-q"]) == 2
    assert cli([*base, "--train-args=--workers 0"]) == 2
    assert seen == [["--amp"], ["--threads", "1", "--amp"], ["--workers", "0"]]


def test_aggregate_needs_only_recipe_and_an_existing_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--recipe", "cascade-acq", "--aggregate"]) == 2
    assert "--aggregate needs --recipe NAME and --out DIR" in capsys.readouterr().err
    assert cli(["--recipe", "cascade-acq", "--out", str(tmp_path / "none"), "--aggregate"]) == 2
    assert "no cross-validation there to aggregate" in capsys.readouterr().err
    (tmp_path / "cv").mkdir()  # a recipe that needs extra frames, without --data or --extra-train: no fold yet
    assert cli(["--recipe", "cascade-acq", "--out", str(tmp_path / "cv"), "--aggregate", "-q"]) == 0
    assert json.loads((tmp_path / "cv" / "cv-summary.json").read_text())["folds_done"] == []


def _train_in_process(args: list[str], log_file) -> int:  # type: ignore[no-untyped-def]
    """``run_forwarding_sigterm`` without a new interpreter (six of them cost most of the test): the same
    ``mn-train`` command line run by ``train.train_cli.cli`` in this process, its output to the part's log.
    mn-cv's real subprocess (its command line, SIGTERM passed on to it) is run by
    tests/test_contracts_signals.py (test_cv_sigterm_stops_the_training_in_flight_exit_130) and
    tests/test_contracts_exit_codes.py (mn-cv exit 1: a training that fails)."""
    from train.train_cli import cli as train_cli

    assert args[:3] == [sys.executable, "-m", "train.train_cli"], args
    threads = torch.get_num_threads()  # --threads N sets it for the whole process
    try:
        with contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
            return train_cli(args[3:])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_cascade_cross_validation_end_to_end_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crossval, "run_forwarding_sigterm", _train_in_process)
    data = make_dataset(tmp_path / "d", n_patients=4, per_patient=1)
    extra = make_dataset(tmp_path / "ph", n_patients=1, per_patient=2, seed=5)
    out = tmp_path / "cv"
    argv = ["--recipe", "cascade-acq", "--data", str(data), "--extra-train", str(extra), "--out", str(out),
            "--folds", "2", "--epochs", "1", "--size", "128x96", "--crop", "64x32", "--train-args",
            "--threads 1 --width 0.25", "-q"]
    assert cli(argv) == 0
    for fold in (0, 1):
        for part in ("localiser", "refiner"):
            assert (out / f"fold-{fold}" / part / ".done").is_file()
        assert (out / f"fold-{fold}" / "model.pt").is_file()
        assert json.loads((out / f"fold-{fold}" / "eval-native.json").read_text())["n"] == 2
    summary = json.loads((out / "cv-summary.json").read_text())
    assert summary["folds_done"] == [0, 1] and summary["protocols"]["native"]["n_images"] == 4
    assert summary["best_epochs"] == {"localiser": [1, 1], "refiner": [1, 1]}
    assert summary["threshold"]["folds"] == [0, 1] and summary["threshold"]["chosen_all"] in GRID
    stamp = (out / "fold-0" / "model.pt").stat().st_mtime_ns
    (out / "fold-0" / "threshold-sweep.csv").unlink()  # a fold evaluated before sweeps existed
    assert cli(argv) == 0  # everything done: nothing retrained or rebuilt; the missing sweep is made
    assert (out / "fold-0" / "model.pt").stat().st_mtime_ns == stamp
    assert len(read_sweep(out / "fold-0" / "threshold-sweep.csv")) == 2 * len(GRID)
    assert cli([*argv, "--final"]) == 0
    assert (out / "final" / "model.pt").is_file()
    cfg = json.loads((out / "final" / "refiner" / "config.json").read_text())
    assert cfg["train"]["split"] == "none" and cfg["train"]["epochs"] == 1
    final = load_checkpoint(out / "final" / "model.pt")["config"]["postprocess"]
    assert final["threshold"] == json.loads((out / "cv-summary.json").read_text())["threshold"]["final"]
    assert "out-of-fold" in final["chosen_by"]
    # the same parts with the refiner's flip averaging: refused where they were joined without it, evaluated in a
    # new --out that copies them (nothing trained again)
    with pytest.raises(UserError, match="--tta none there, hflip here.*--share"):
        crossval.main([*argv, "--tta", "hflip"])
    flipped = tmp_path / "cv-hflip"
    at = argv.index("--out") + 1
    assert cli([*argv[:at], str(flipped), *argv[at + 1:], "--share", str(out), "--tta", "hflip"]) == 0
    for fold in (0, 1):
        assert (flipped / f"fold-{fold}" / "refiner" / ".done").read_text().startswith("copied from")
        assert load_checkpoint(flipped / f"fold-{fold}" / "model.pt")["config"]["model"]["kwargs"]["tta"] == "hflip"
        assert json.loads((flipped / f"fold-{fold}" / "eval-native.json").read_text())["n"] == 2
    assert json.loads((flipped / "cv-summary.json").read_text())["tta"] == "hflip"
    # what benchmarks/cv_collect.sh keeps of the folds (no weights) is enough for the summary and for --final
    kept, runs = tmp_path / "kept", tmp_path / "runs"
    runs.mkdir()
    (runs / "cv-cascade-acq").symlink_to(out)
    (runs / "cv-acq-alias").symlink_to(out)  # not a recipe's name: skipped, not collected as recipe "acq-alias"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "cv_collect.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(script), str(runs), str(kept)], check=True, capture_output=True, text=True,
                          env=env)
    assert "cv-acq-alias: acq-alias is not a recipe" in done.stderr
    assert sorted(p.name for p in kept.iterdir()) == ["cascade-acq"]
    kept = kept / "cascade-acq"
    assert not list(kept.rglob("*.pt")) and (kept / "fold-1" / "refiner-config.json").is_file()
    assert json.loads((kept / "cv-summary.json").read_text())["folds_done"] == [0, 1]
    again = CrossValidation(get_recipe("cascade-acq"), str(data), str(kept), folds=2, extra=[str(extra)])
    assert again.best_epochs() == {"localiser": [1, 1], "refiner": [1, 1]}
    assert again.threshold_report() == CrossValidation(
        get_recipe("cascade-acq"), str(data), str(out), folds=2, extra=[str(extra)]).threshold_report()
    assert again.write_summary()["protocols"]["native"]["n_images"] == 4
    # a later session whose runs/ holds only fold 1: the summary still counts fold 0, collected before
    shutil.rmtree(out / "fold-0")
    subprocess.run(["bash", str(script), str(runs), str(kept.parent)], check=True, capture_output=True, env=env)
    kept_summary = json.loads((kept / "cv-summary.json").read_text())
    assert kept_summary["folds_done"] == [0, 1] and kept_summary["protocols"]["native"]["n_images"] == 4
    assert cli(["--recipe", "cascade-acq", "--out", str(kept), "--folds", "2", "--aggregate", "-q"]) == 0


def test_init_weights_from_a_cascade_part(tmp_path: Path) -> None:
    src = build_model("lunet", width=0.25)
    torch.nn.init.constant_(next(src.parameters()), 0.5)
    save_checkpoint(tmp_path / "c.pt", torch.nn.ModuleDict({"refiner": src}),
                    {"model": {"name": "cascade", "kwargs": {}}})
    dst = build_model("lunet", width=0.25)
    load_init_weights(dst, str(tmp_path / "c.pt"), "refiner")
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="no 'localiser'"):
        load_init_weights(dst, str(tmp_path / "c.pt"), "localiser")
    with pytest.raises(UserError, match="does not fit"):
        load_init_weights(build_model("lunet", width=0.5), str(tmp_path / "c.pt"), "refiner")


def test_init_weights_from_one_member_of_an_ensemble_part(tmp_path: Path) -> None:
    """--init-part refiner.members.1: the second refiner of a cascade whose refiner is an ensemble (mn-realtime's)."""
    members = [build_model("lunet", width=0.25) for _ in range(2)]
    for i, m in enumerate(members):
        torch.nn.init.constant_(next(m.parameters()), float(i + 1))
    ensemble = torch.nn.ModuleDict({"members": torch.nn.ModuleList(members)})
    save_checkpoint(tmp_path / "e.pt", torch.nn.ModuleDict({"refiner": ensemble}),
                    {"model": {"name": "cascade", "kwargs": {}}})
    dst = build_model("lunet", width=0.25)
    load_init_weights(dst, str(tmp_path / "e.pt"), "refiner.members.1")
    for a, b in zip(members[1].state_dict().values(), dst.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="does not fit"):  # the whole ensemble is not one network
        load_init_weights(dst, str(tmp_path / "e.pt"), "refiner")
    with pytest.raises(UserError, match="refiner.members.0, refiner.members.1"):
        load_init_weights(dst, str(tmp_path / "e.pt"), "refiner.members.2")


def test_time_budget_ends_the_run_normally(tmp_path: Path) -> None:
    from train.train_cli import cli as train_cli

    data = make_dataset(tmp_path / "d", n_patients=4, per_patient=1)
    out = tmp_path / "run"
    code = train_cli(["--data", str(data), "--model", "lunet", "--width", "0.25", "--size", "64x64", "--epochs", "5",
                      "--folds", "2", "--fold", "0", "--max-minutes", "0.0001", "--out", str(out), "-q"])
    assert code == 0
    metrics = json.loads((out / "config.json").read_text())["metrics"]
    assert metrics["epochs_run"] == 1 and metrics["stopped_by_time_budget"] is True
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()


def _counted_trainings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path, Path]:
    """Trainings run in this process and their --out folders recorded in order; a tiny dataset and phantom."""
    trained: list[str] = []

    def counting(args: list[str], log_file) -> int:  # type: ignore[no-untyped-def]
        trained.append(args[args.index("--out") + 1])
        return _train_in_process(args, log_file)

    monkeypatch.setattr(crossval, "run_forwarding_sigterm", counting)
    data = make_dataset(tmp_path / "d", n_patients=4, per_patient=1)
    extra = make_dataset(tmp_path / "ph", n_patients=1, per_patient=2, seed=5)
    return trained, data, extra


def _tiny_fold_args(data: Path, extra: Path) -> list[str]:
    """mn-cv arguments of one fold of two, one epoch of quarter-width networks on small frames."""
    return ["--data", str(data), "--extra-train", str(extra), "--folds", "2", "--fold", "0", "--epochs", "1",
            "--size", "128x96", "--crop", "64x32", "--train-args", "--threads 1 --width 0.25", "-q"]


def test_share_copies_the_same_finished_training_and_trains_the_rest(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """cascade-acqloc's refiner is trained exactly as cascade-strong-ph's: with --share it is copied from that
    cross-validation (bit for bit, marked as copied), while its localiser, trained otherwise, is trained here."""
    trained, data, extra = _counted_trainings(tmp_path, monkeypatch)
    common = _tiny_fold_args(data, extra)
    strong, acqloc = tmp_path / "cv-strong", tmp_path / "cv-acqloc"
    assert cli(["--recipe", "cascade-strong-ph", "--out", str(strong), *common]) == 0
    assert len(trained) == 2
    assert cli(["--recipe", "cascade-acqloc", "--out", str(acqloc), "--share", str(strong), *common]) == 0
    assert trained[2:] == [str(acqloc / "fold-0" / "localiser")]  # the refiner was not trained again
    copied = acqloc / "fold-0" / "refiner"
    assert (copied / "best.pt").read_bytes() == (strong / "fold-0" / "refiner" / "best.pt").read_bytes()
    assert (copied / ".done").read_text().startswith("copied from ")
    assert json.loads((acqloc / "fold-0" / "localiser" / "config.json").read_text())["train"]["augment"] == \
        "acquisition"
    assert (acqloc / "fold-0" / "model.pt").is_file() and not list(acqloc.glob("fold-0/*.sharing"))
    # the same training begun in the shared folder and not finished: stop before it instead of training a copy
    other = tmp_path / "cv-acqloc-2"
    (strong / "fold-0" / "refiner" / ".done").unlink()
    assert cli(["--recipe", "cascade-acqloc", "--out", str(other), "--share", str(strong), *common]) == 2
    assert trained[3:] == [str(other / "fold-0" / "localiser")] and (other / "fold-0" / "localiser" / ".done").is_file()
    assert not (other / "fold-0" / "refiner").exists() and not (other / "fold-0" / "model.pt").exists()
    # another fold count is another training: nothing is copied, and the folder shared is left as it was
    assert crossval.same_training(json.loads((copied / "config.json").read_text())["train"],
                                  ["--data", str(data), "--out", "x", "--folds", "3", "--fold", "0"]) != []
    with pytest.raises(UserError, match="--share .* is this run's own --out"):
        CrossValidation(get_recipe("cascade-acqloc"), str(data), str(acqloc), extra=[str(extra)], share=[str(acqloc)])
    with pytest.raises(UserError, match="--share .*nope is not a folder"):
        CrossValidation(get_recipe("cascade-acqloc"), str(data), str(acqloc), extra=[str(extra)],
                        share=[str(tmp_path / "nope")])


@pytest.mark.slow
def test_an_ensemble_recipe_copies_each_refiner_from_its_own_recipes_folder(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """cascade-acqloc-cmp-ens's parts are cascade-acqloc-cmp's localiser and refiner and cascade-acqloc-cmp-spk's
    refiner (as "refiner-2"): with --share it trains nothing, and its model's refiner is the mean of the two."""
    from train.ensemble_net import ENSEMBLE_NAME

    trained, data, extra = _counted_trainings(tmp_path, monkeypatch)
    common = _tiny_fold_args(data, extra)
    cmp, spk, ens = tmp_path / "cv-cmp", tmp_path / "cv-spk", tmp_path / "cv-ens"
    assert cli(["--recipe", "cascade-acqloc-cmp", "--out", str(cmp), *common]) == 0
    assert cli(["--recipe", "cascade-acqloc-cmp-spk", "--out", str(spk), "--share", str(cmp), *common]) == 0
    assert trained[2:] == [str(spk / "fold-0" / "refiner")]
    assert cli(["--recipe", "cascade-acqloc-cmp-ens", "--out", str(ens), "--share", str(cmp), str(spk), *common]) == 0
    assert len(trained) == 3  # nothing trained for the ensemble
    fold = ens / "fold-0"
    assert (fold / "refiner" / "best.pt").read_bytes() == (cmp / "fold-0" / "refiner" / "best.pt").read_bytes()
    assert (fold / "refiner-2" / "best.pt").read_bytes() == (spk / "fold-0" / "refiner" / "best.pt").read_bytes()
    assert str(spk.resolve()) in (fold / "refiner-2" / ".done").read_text()
    model = load_checkpoint(fold / "model.pt")["config"]["model"]["kwargs"]["refiner"]
    assert model["name"] == ENSEMBLE_NAME and len(model["kwargs"]["members"]) == 2
    assert json.loads((fold / "eval-native.json").read_text())["n"] == 2
    summary = json.loads((ens / "cv-summary.json").read_text())
    assert summary["best_epochs"] == {"localiser": [1], "refiner": [1], "refiner-2": [1]}
    # its mirrored twin: the same parts copied, nothing trained, the second refiner shown the mirror image; not in
    # the ensemble's own folder, whose model was joined without
    mir = tmp_path / "cv-ens-mir"
    assert cli(["--recipe", "cascade-acqloc-cmp-ens-mir", "--out", str(mir), "--share", str(ens), *common]) == 0
    assert len(trained) == 3
    refiner = load_checkpoint(mir / "fold-0" / "model.pt")["config"]["model"]["kwargs"]["refiner"]
    assert refiner["kwargs"]["mirrored"] == [False, True]
    assert json.loads((mir / "fold-0" / "eval-native.json").read_text())["n"] == 2
    with pytest.raises(UserError, match="--mirror none there, alternate here"):
        crossval.main(["--recipe", "cascade-acqloc-cmp-ens-mir", "--out", str(ens), *common])


def test_the_localiser_pair_recipe_is_the_mirrored_ensemble_with_the_compress_localiser_beside_its_own() -> None:
    pair, mir = get_recipe("cascade-2loc-cmp-ens-mir"), get_recipe("cascade-acqloc-cmp-ens-mir")
    cmploc = get_recipe("cascade-acqcmploc-ens-mir")
    assert pair.is_cascade and pair.localiser_parts == ["localiser", "localiser-2"]
    assert pair.refiner_parts == mir.refiner_parts and pair.mirror == mir.mirror == "alternate"
    assert pair.localiser_mirror == "none" and pair.made_by is None
    assert {p: pair.parts[p] for p in ("localiser", *pair.refiner_parts)} == dict(mir.parts)
    assert pair.parts["localiser-2"] == cmploc.parts["localiser"]
    assert pair.epochs == {**mir.epochs, "localiser-2": mir.epochs["localiser"]}
    check_trainable(pair)


@pytest.mark.slow
def test_a_localiser_pair_recipe_copies_its_second_localiser_from_another_recipes_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cascade-2loc-cmp-ens-mir's localiser-2 is cascade-acqcmploc-ens-mir's localiser: with --share it is copied
    from a folder that holds it (as "localiser"), the rest from the mirrored ensemble's; nothing is trained, and the
    fold's model places its window by the two localisers' mean."""
    from train.ensemble_net import ENSEMBLE_NAME

    trained, data, extra = _counted_trainings(tmp_path, monkeypatch)
    common = _tiny_fold_args(data, extra)
    mir, pair = tmp_path / "cv-mir", tmp_path / "cv-pair"
    assert cli(["--recipe", "cascade-acqloc-cmp-ens-mir", "--out", str(mir), *common]) == 0
    assert len(trained) == 3
    # the compress localiser, as its recipe's folder holds it (compress_finetune.sh trains it so, outside mn-cv)
    cmploc = tmp_path / "cv-cmploc"
    assert cli(["--recipe", "cascade-2loc-cmp-ens-mir", "--out", str(pair), "--share", str(mir), "--part",
                "localiser-2", *common]) == 0
    assert trained[3:] == [str(pair / "fold-0" / "localiser-2")]
    (cmploc / "fold-0").mkdir(parents=True)
    (pair / "fold-0" / "localiser-2").rename(cmploc / "fold-0" / "localiser")
    trained.clear()
    shutil.rmtree(pair)
    assert cli(["--recipe", "cascade-2loc-cmp-ens-mir", "--out", str(pair), "--share", str(mir), str(cmploc),
                *common]) == 0
    assert trained == []  # every part copied
    fold = pair / "fold-0"
    assert (fold / "localiser-2" / "best.pt").read_bytes() == (cmploc / "fold-0" / "localiser" / "best.pt").read_bytes()
    assert (fold / "localiser" / "best.pt").read_bytes() == (mir / "fold-0" / "localiser" / "best.pt").read_bytes()
    kwargs = load_checkpoint(fold / "model.pt")["config"]["model"]["kwargs"]
    assert kwargs["localiser"]["name"] == ENSEMBLE_NAME and len(kwargs["localiser"]["kwargs"]["members"]) == 2
    assert not any(kwargs["localiser"]["kwargs"].get("mirrored") or [])
    assert kwargs["refiner"]["kwargs"]["mirrored"] == [False, True]
    assert json.loads((fold / "eval-native.json").read_text())["n"] == 2
    assert json.loads((pair / "cv-summary.json").read_text())["best_epochs"] == {
        "localiser": [1], "localiser-2": [1], "refiner": [1], "refiner-2": [1]}
    # joined with the localisers as they are; a run asking for the second shown the mirror image refuses the model
    flipped = dataclasses.replace(get_recipe("cascade-2loc-cmp-ens-mir"), localiser_mirror="alternate")
    with pytest.raises(UserError, match="--localiser-mirror none there, alternate here"):
        CrossValidation(flipped, str(data), str(pair), extra=[str(extra)]).check_joined(fold / "model.pt")


def test_same_training_ignores_where_and_how_a_run_was_kept(tmp_path: Path) -> None:
    from dataclasses import asdict

    from train.train_cli import build_parser, training_config

    base = ["--data", str(tmp_path), "--model", "lunet", "--folds", "5", "--fold", "1", "--epochs", "3"]
    recorded = json.loads(json.dumps(asdict(training_config(build_parser().parse_args(["--out", "a", *base]),
                                                            "cuda"))))
    assert crossval.same_training(recorded, ["--out", "elsewhere", "--resume", "--workers", "3",
                                             "--save-every-min", "1", *base]) == []
    assert crossval.same_training(recorded, ["--out", "a", *base, "--lr", "1e-2"]) == ["lr"]
    assert crossval.same_training(recorded, ["--out", "a", *base[:-1], "4"]) == ["epochs"]


def _fake_part(run: Path, seconds: list[float], best: list[int], epochs: int = 150, done: bool = False) -> None:
    run.mkdir(parents=True)
    lines = ["epoch,lr,train_loss,train_soft_dice,val_loss,val_soft_dice,val_dsc,best,seconds"]
    for i, s in enumerate(seconds, 1):
        lines.append(f"{i},0.001,0.2,0.8,0.2,0.8,{0.8 + i / 1000:.3f},{int(i in best)},{s}")
    (run / "history.csv").write_text("\n".join(lines) + "\n")
    (run / "config.json").write_text(json.dumps({"train": {"epochs": epochs}}))
    (run / "last.pt").write_bytes(b"x")
    if done:
        (run / ".done").write_text("10 s\n")


def test_status_reads_where_every_part_stands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cv"
    _fake_part(out / "fold-0" / "localiser", [20.0] * 12, best=[3, 7], epochs=12, done=True)
    # 20 epochs: the last 10 took 100 s except one of 400 s (the median ignores it)
    _fake_part(out / "fold-0" / "refiner", [50.0] * 10 + [100.0] * 9 + [400.0], best=[5, 18])
    _fake_eval(out / "fold-1", "paper", [0.9, 0.8], [(100, 100), (100, 90)])
    rows = crossval.status(out, get_recipe("cascade-strong-ph"), 2)
    assert [(r["fold"], r["part"], r["state"]) for r in rows] == [
        (0, "localiser", "done"), (0, "refiner", "training"), (1, "localiser", "not started"),
        (1, "refiner", "not started")]
    loc, ref, other = rows[0], rows[1], rows[2]
    assert (loc["epochs_done"], loc["epochs"], loc["best_epoch"], loc["eta_h"]) == (12, 12, 7, None)
    assert loc["best_val_dsc"] == pytest.approx(0.807)
    assert (ref["epochs_done"], ref["epochs"], ref["best_epoch"], ref["seconds_per_epoch"]) == (20, 150, 18, 100.0)
    assert ref["eta_h"] == pytest.approx(130 * 100 / 3600)
    assert 0 <= ref["last_saved_min_ago"] < 60
    assert (other["epochs_done"], other["epochs"], other["last_saved_min_ago"]) == (0, 150, None)
    assert other["evaluated"] == ["paper"] and other["dsc"] == pytest.approx(0.85)
    assert rows[0]["evaluated"] == [] and rows[0]["dsc"] is None

    assert cli(["--status", "--recipe", "cascade-strong-ph", "--out", str(out), "--folds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| 0 | refiner | training | 20 of 150 | 18 (0.8180) | 100 | 0 min ago | <= 3.6 h | - |" in printed
    assert "| 1 | localiser | not started | 0 of 150 | - | - | - | - | paper (DSC 0.8500) |" in printed
    assert cli(["--status", "--recipe", "cascade-strong-ph", "--out", str(tmp_path / "none")]) == 2
    assert "no cross-validation there yet" in capsys.readouterr().err
    assert cli(["--status", "--out", str(out)]) == 2
    assert "--status needs --recipe" in capsys.readouterr().err


def test_parts_train_apart_and_a_run_without_part_joins_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--part trains one part only (a cascade's two parts as two processes on one GPU); neither part run joins
    or evaluates; the same command without --part then trains nothing again and evaluates the joined model."""
    trained, data, extra = _counted_trainings(tmp_path, monkeypatch)
    out = tmp_path / "cv"
    argv = ["--recipe", "cascade-strong-ph", "--data", str(data), "--extra-train", str(extra), "--out", str(out),
            "--folds", "2", "--fold", "1", "--epochs", "1", "--size", "128x96", "--crop", "64x32", "--train-args",
            "--threads 1 --width 0.25", "-q"]
    assert cli([*argv, "--part", "refiner"]) == 0
    assert trained == [str(out / "fold-1" / "refiner")]
    assert not (out / "fold-1" / "localiser").exists() and not (out / "fold-1" / "model.pt").exists()
    assert cli([*argv, "--part", "localiser"]) == 0
    assert trained[1:] == [str(out / "fold-1" / "localiser")] and not (out / "fold-1" / "model.pt").exists()
    assert cli(argv) == 0
    assert len(trained) == 2  # nothing trained again
    assert json.loads((out / "fold-1" / "eval-native.json").read_text())["n"] == 2
    assert cli([*argv, "--part", "head"]) == 2  # not a part of the recipe: a clear refusal


def test_as_final_trains_a_fold_the_way_final_does_and_evaluates_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--as-final: after the folds, each fold is trained again for the folds' median best epoch with --blind (its
    validation images choose nothing) and its last weights are evaluated on the fold's patients."""
    trained, data, extra = _counted_trainings(tmp_path, monkeypatch)
    out = tmp_path / "cv"
    argv = ["--recipe", "cascade-strong-ph", "--data", str(data), "--extra-train", str(extra), "--out", str(out),
            "--folds", "2", "--size", "128x96", "--crop", "64x32", "--train-args", "--threads 1 --width 0.25", "-q"]
    assert cli([*argv, "--fold", "0", "--as-final"]) == 2  # the folds first: they choose the epochs
    assert cli([*argv, "--epochs", "2"]) == 0
    assert len(trained) == 4
    assert cli([*argv, "--fold", "1", "--as-final"]) == 0
    folder = out / "fold-1" / "as-final"
    assert trained[4:] == [str(folder / "localiser"), str(folder / "refiner")]
    for part in ("localiser", "refiner"):
        train = json.loads((folder / part / "config.json").read_text())["train"]
        best = json.loads((out / "fold-0" / part / "config.json").read_text())["metrics"]["best_epoch"]
        assert train["blind"] is True and train["fold"] == 1
        assert train["epochs"] in {best, round((best + json.loads((out / "fold-1" / part / "config.json").read_text())
                                                ["metrics"]["best_epoch"]) / 2)}
    assert json.loads((folder / "eval-native.json").read_text())["n"] == 2
    assert (out / "fold-1" / "eval-native.json").is_file()  # the fold's own evaluation is left as it was
    assert json.loads((out / "cv-summary-as-final.json").read_text())["folds_done"] == [1]
    assert cli([*argv, "--final", "--as-final"]) == 2
    # the final's mask threshold chosen on the sweeps of the folds trained as the final is
    assert (folder / "threshold-sweep.csv").is_file()
    assert cli([*argv, "--fold", "0", "--as-final"]) == 0
    assert cli([*argv, "--final", "--threshold-from", "as-final"]) == 0
    post = load_checkpoint(out / "final" / "model.pt")["config"]["postprocess"]
    assert post["threshold"] == leave_one_fold_out(load_cv(out, "as-final"))["final"]
    assert "folds 0, 1 of 2, each trained the way the final is" in post["chosen_by"]
    with pytest.raises(SystemExit) as refused:  # argparse: the choices named
        cli([*argv, "--final", "--threshold-from", "best"])
    assert refused.value.code == 2


def _fold_records(out: Path, fold: int, part: str, best: int, lrs: list[float], patience: int = 10) -> None:
    folder = out / f"fold-{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{part}-config.json").write_text(json.dumps({"metrics": {"best_epoch": best},
                                                            "train": {"lr_patience": patience}}))
    rows = ["epoch,lr"] + [f"{i + 1},{lr}" for i, lr in enumerate(lrs)]
    (folder / f"{part}-history.csv").write_text("\n".join(rows) + "\n")


def test_final_schedule_rules_give_each_part_its_epochs_and_rate_drops(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--schedule PART=RULE: --final and --as-final train each part for the epochs and with the rate drops the rule
    takes from the folds' records (PART-config.json / PART-history.csv as cv_collect keeps them), and say so in
    schedule.json."""
    data = make_dataset(tmp_path / "d", n_patients=3, per_patient=1)
    extra = make_dataset(tmp_path / "ph", n_patients=1, per_patient=1, seed=5)
    out = tmp_path / "cv"
    # localiser drops: fold 0 at epochs 5, 9, 12; fold 1 at 7, 11, 14 -> medians 6, 10, 13
    _fold_records(out, 0, "localiser", 8, [1e-2] * 4 + [1e-3] * 4 + [1e-4] * 3 + [1e-5] * 2)
    _fold_records(out, 1, "localiser", 10, [1e-2] * 6 + [1e-3] * 4 + [1e-4] * 3 + [1e-5] * 2)
    _fold_records(out, 0, "refiner", 20, [1e-3] * 30, patience=5)
    _fold_records(out, 1, "refiner", 24, [1e-3] * 30, patience=5)
    calls: list[tuple[str, list[str], int]] = []
    monkeypatch.setattr(CrossValidation, "train_part",
                        lambda self, run, part, split, epochs: calls.append((part, list(split), epochs)))
    monkeypatch.setattr(CrossValidation, "all_done", lambda self, folder: False)
    cv = CrossValidation(get_recipe("cascade-strong-ph"), str(data), str(out), folds=2, extra=[str(extra)],
                         schedules=["localiser=fold-drops", "refiner=best-drops"])
    assert cv.run_final() is None
    assert calls == [("localiser", ["--split", "none", "--lr-drops", "6", "10"], 13),
                     ("refiner", ["--split", "none", "--lr-drops", "22", "27"], 32)]
    written = json.loads((out / "final" / "schedule.json").read_text())
    assert written["localiser"]["lr_drops"] == [6, 10] and written["refiner"]["from"]["patience"] == 5
    calls.clear()
    cv.run_as_final(1)
    assert calls[0] == ("localiser", ["--folds", "2", "--fold", "1", "--blind", "--lr-drops", "6", "10"], 13)
    assert json.loads((out / "fold-1" / "as-final" / "schedule.json").read_text())["refiner"]["epochs"] == 32
    calls.clear()
    CrossValidation(get_recipe("cascade-strong-ph"), str(data), str(out), folds=2, extra=[str(extra)],
                    epochs=9).run_final()  # the default rule: the given epochs, no drops
    assert [(c[1], c[2]) for c in calls] == [(["--split", "none"], 9)] * 2

    base = ["--recipe", "cascade-strong-ph", "--data", str(data), "--extra-train", str(extra), "--out", str(out),
            "--folds", "2", "-q"]
    for argv, message in ((["--schedule", "refiner=best-drops"], "--schedule says how --final"),
                          (["--final", "--schedule", "refiner=best-drops", "--epochs", "3"], "drop --epochs"),
                          (["--final", "--schedule", "refiner=best-drops", "--train-args", "--lr-drops 4"],
                           "drop one"),
                          (["--final", "--schedule", "refiner=warm"], "the rules are")):
        with pytest.raises(UserError, match=message):
            crossval.main([*base, *argv])
    (out / "fold-1" / "localiser-history.csv").unlink()
    with pytest.raises(UserError, match=r"folds \[1\] have none"):
        CrossValidation(get_recipe("cascade-strong-ph"), str(data), str(out), folds=2, extra=[str(extra)],
                        schedules=["localiser=fold-drops"]).run_final()


def test_aggregate_without_data_reads_the_dataset_of_any_earlier_summary(tmp_path: Path) -> None:
    assert crossval._recorded_data(tmp_path) == ""
    (tmp_path / "cv-summary-as-final.json").write_text(json.dumps({"data": "/data/as-final"}))
    assert crossval._recorded_data(tmp_path) == "/data/as-final"  # a folder that holds only the as-final estimate
    (tmp_path / "cv-summary.json").write_text("{broken")
    assert crossval._recorded_data(tmp_path) == "/data/as-final"
    (tmp_path / "cv-summary.json").write_text(json.dumps({"data": "/data/folds"}))
    assert crossval._recorded_data(tmp_path) == "/data/folds"


def test_the_from_scratch_compression_recipe_is_the_ensembles_with_stronger_compression_and_not_trainable() -> None:
    c65, ens = get_recipe("cascade-acqloc-cmp-ens-c65"), get_recipe("cascade-acqloc-cmp-ens")
    assert c65.is_cascade and c65.refiner_parts == ["refiner", "refiner-2"] and c65.epochs == ens.epochs
    assert c65.parts["localiser"] == ens.parts["localiser"]
    for part in c65.refiner_parts:
        assert c65.parts[part] == (*ens.parts[part], "--compress", "0.65", "0.7")
    with pytest.raises(UserError, match="FROM=scratch benchmarks/compress_finetune.sh"):
        check_trainable(c65)


def test_a_recipe_made_by_another_step_is_aggregated_not_trained(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """cascade-acqloc-cmp-ens-cft's folds are made by benchmarks/compress_finetune.sh: mn-cv refuses to train it
    (saying what makes it) and summarises the folds that script evaluated."""
    cft, ens = get_recipe("cascade-acqloc-cmp-ens-cft"), get_recipe("cascade-acqloc-cmp-ens")
    assert cft.parts == ens.parts and cft.epochs == ens.epochs and cft.is_cascade
    assert "compress_finetune.sh" in (cft.made_by or "") and ens.made_by is None
    check_trainable(ens)
    with pytest.raises(UserError, match="made by a step mn-cv does not run: benchmarks/compress_finetune.sh"):
        check_trainable(cft)
    data = make_dataset(tmp_path / "d", n_patients=3, per_patient=1)
    out = tmp_path / "cv"
    assert cli(["--recipe", cft.name, "--data", str(data), "--out", str(out), "--as-final", "--fold", "0"]) == 2
    assert "--aggregate [--as-final] summarises its folds" in capsys.readouterr().err
    assert not out.exists()  # nothing trained, nothing written
    for fold, dscs in ((0, [0.9, 0.8]), (1, [0.7, 0.6])):
        _fake_eval(out / f"fold-{fold}" / "as-final", "paper", dscs, [(100, 110), (200, 180)])
    assert cli(["--recipe", cft.name, "--out", str(out), "--folds", "2", "--aggregate", "--as-final", "-q"]) == 0
    summary = json.loads((out / "cv-summary-as-final.json").read_text())
    assert summary["recipe"] == cft.name and summary["folds_done"] == [0, 1]
    assert summary["protocols"]["paper"]["dsc"]["mean"] == pytest.approx(0.75)
