"""benchmarks/localiser_ensemble.sh: two localisers averaged, run for real on a synthetic dataset.

``train`` trains one fold's four parts (one epoch each here) the way the final is (``--blind``, the script's
schedules but for the rehearsal's ``TRAIN_ARGS``); ``eval`` joins them as a variant and evaluates it on the fold's
patients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_dataset
from train.checkpoint import load_checkpoint

SCRIPT = REPO / "benchmarks" / "localiser_ensemble.sh"
REHEARSAL = "--epochs 1 --lr-drops 1 --width 0.25 --batch-size 4 --save-every-min 0 -q"


def _run(*args: object, **more_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PY": sys.executable, "TRAIN_ARGS": REHEARSAL, **more_env}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.mark.slow
def test_trains_a_folds_parts_and_joins_the_two_localisers(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n_patients=5, per_patient=2)
    extra = make_dataset(tmp_path / "extra", n_patients=2, per_patient=2, seed=3)
    out = tmp_path / "out"
    parts = ("localiser", "cmploc", "refiner", "refiner-2", "fovref", "arearef")
    done = _run("train", data, extra, out, *(f"0:{p}" for p in parts))
    assert done.returncode == 0, done.stderr + done.stdout
    for part in parts:
        train = json.loads((out / "fold-0" / part / "config.json").read_text())["train"]
        assert train["blind"] and train["fold"] == 0 and train["extra_train"] == [str(extra)]
        assert train["model"] == ("lunet-coarse" if part in ("localiser", "cmploc") else "lunet")
        assert train["compress"] == ([0.75, 0.5] if part in ("cmploc", "fovref") else None)
        assert train["speckle"] == ([0.0, 0.6] if part == "refiner-2" else None)
        assert train["loss"] == ("bce_dice_area" if part == "arearef" else "bce_dice")
        assert train["augment"] == {"localiser": "acquisition", "cmploc": "acquisition", "fovref": "fov"}.get(part,
                                                                                                           "compress")
    again = _run("train", data, extra, out, "0:localiser")  # finished: not trained again
    assert again.returncode == 0 and (out / "fold-0" / "localiser.log").read_text().count('"best_checkpoint"') == 1

    done = _run("eval", data, out, 0, "lens", "join", "eval", "rob", LANES="2")  # eval and rob side by side
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.index("lens join") < min(done.stdout.index("lens eval"), done.stdout.index("lens rob"))
    fold = out / "fold-0" / "lens"
    kwargs = load_checkpoint(fold / "model.pt")["config"]["model"]["kwargs"]
    assert kwargs["localiser"]["name"] == "ensemble" and len(kwargs["localiser"]["kwargs"]["members"]) == 2
    assert kwargs["refiner"]["kwargs"]["mirrored"] == [False, True]
    for protocol in ("paper", "native"):
        assert json.loads((fold / f"eval-{protocol}.json").read_text())["n"] == 2  # fold 0: one patient
    assert (fold / "rob.md").is_file()
    loctta = _run("eval", data, out, 0, "loctta", "join")
    assert loctta.returncode == 0, loctta.stderr
    flip = load_checkpoint(out / "fold-0" / "loctta" / "model.pt")["config"]["model"]["kwargs"]["localiser"]
    assert flip["kwargs"]["mirrored"] == [False, True]
    fov1 = _run("eval", data, out, 0, "fov1", "join")  # fovref with mn-realtime's second refiner
    assert fov1.returncode == 0, fov1.stderr
    refiners = load_checkpoint(out / "fold-0" / "fov1" / "model.pt")["config"]["model"]["kwargs"]["refiner"]
    assert len(refiners["kwargs"]["members"]) == 2 and refiners["kwargs"]["mirrored"] == [False, True]


def test_unknown_modes_parts_variants_and_steps_are_refused(tmp_path: Path) -> None:
    bad = _run("bogus")
    assert bad.returncode == 2 and "bogus: use train or eval" in bad.stderr
    part = _run("train", tmp_path, tmp_path, tmp_path / "out", "0:decoder")
    assert part.returncode == 1 and "unknown part decoder" in part.stderr
    variant = _run("eval", tmp_path, tmp_path / "out", 0, "bogus")
    assert variant.returncode == 2 and "unknown variant bogus" in variant.stderr
    step = _run("eval", tmp_path, tmp_path / "out", 0, "base", "dance")
    assert step.returncode == 1 and "unknown step dance" in step.stderr
    missing = _run("eval", tmp_path, tmp_path / "out", 0, "base", "join")  # no parts trained
    assert missing.returncode == 1 and "fold 0 base: join failed" in missing.stderr
    lanes = _run("eval", tmp_path, tmp_path / "out", 0, "base", "dance", LANES="2")  # the second lane's failure
    assert lanes.returncode == 1 and "unknown step dance" in lanes.stderr
    lanes = _run("eval", tmp_path, tmp_path / "out", 0, "base", "fit", LANES="2")  # the first lane's
    assert lanes.returncode == 1 and "fold 0 base: fit failed" in lanes.stderr


@pytest.mark.parametrize("env, folder", [({}, "lens"), ({"FIT_DRAWS": "4"}, "lens/draws-4"),
                                         ({"FIT_DRAWS": "4", "PRESENCE_REFRESH": "0.5"}, "lens/draws-4/refresh-0.5")])
def test_the_presence_steps_read_and_write_the_fit_folder_the_environment_names(tmp_path: Path, env: dict,
                                                                                folder: str) -> None:
    """The commands of the fit, win and clips steps, recorded by a stand-in for Python: the fit in the folder of its
    draws, win and clips reading that fit and writing beside it, or with PRESENCE_REFRESH into its refresh-S/."""
    record = tmp_path / "commands.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {record}\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), *map(str, ("eval", tmp_path, out, 1, "lens", "fit", "win", "clips"))],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PY": str(fake), **env})
    assert done.returncode == 0, done.stderr
    fit_cmd, win_cmd, clips_cmd = record.read_text().splitlines()
    fit_dir = out / "fold-1" / folder.split("/refresh-")[0]
    assert f"--out {fit_dir}/appearance.json" in fit_cmd
    assert ("--draws 4 --no-perturbed" in fit_cmd) == ("FIT_DRAWS" in env)
    for cmd, name in ((win_cmd, "win.json"), (clips_cmd, "presence-clips.json")):
        assert f"--appearance {fit_dir}/appearance.json" in cmd
        assert f"--json {out / 'fold-1' / folder}/{name}" in cmd
        assert ("--presence-refresh 0.5" in cmd) == ("PRESENCE_REFRESH" in env)
