"""``mn-segment``: every frame of recorded videos (a folder too), scored against known truth; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.segment_cli import cli as segment_cli
from realtime.sinks.csv_sink import read_csv
from realtime.synth_cli import cli as synth_cli
from train.metrics import dice_hard
from tests.realtime._helpers import FAST, decoded_frames


def test_synth_then_segment_with_truth(tmp_path: Path, cache: str) -> None:
    clip, truth = tmp_path / "clip.mp4", tmp_path / "truth.npz"
    assert synth_cli(["--phantom", "--frames", "10", "--seed", "2", "--out", str(clip), "--truth", str(truth),
                      "-q"]) == 0
    out = tmp_path / "seg"
    # presence, confirmation and fusion off: the random network's blob is measured on every frame, so every number is
    # non-trivial (fused, a random network's near-0.5 map can fall under the threshold on a frame)
    assert segment_cli([str(clip), "--truth", str(truth), "--out", str(out), "--batch", "4", "--masks", *FAST,
                        "--presence", "off", "--confirm", "1", "--fusion", "1"]) == 0
    folder = out / "clip"
    rows = read_csv(folder / "measurements.csv")
    assert [int(r["frame"]) for r in rows] == list(range(10))
    summary = json.loads((folder / "summary.json").read_text())
    assert decoded_frames(folder / "overlay.mp4") == 10
    # the truth section is what the run's own outputs say against the truth file, whatever the random network
    # found: Dice of each frame's written mask (none is written for a frame without a measurement: an empty
    # mask), |CSA error| of the CSV's area (empty: 0), |FR error| where the CSV has a flattening ratio
    known = np.load(truth)
    dices, csa_errors, fr_errors, centroid_errors = [], [], [], []
    for r in rows:
        f = int(r["frame"])
        png = folder / "masks" / f"{f:06d}.png"
        assert png.exists() == (r["status"] in ("ok", "reacquired")), (f, r["status"])
        pred = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE) > 0 if png.exists() else np.zeros((468, 606), bool)
        dices.append(dice_hard(pred, known["masks"][f] > 0))
        true_area = float(known["area_px"][f])
        csa_errors.append(abs(float(r["area_px"] or 0) - true_area) / true_area)
        if r["flattening_ratio"]:
            fr_errors.append(abs(float(r["flattening_ratio"]) - float(known["flattening_ratio"][f])))
        if r["centroid_x_px"]:
            centroid_errors.append(np.hypot(float(r["centroid_x_px"]) - float(known["centroid_x_px"][f]),
                                            float(r["centroid_y_px"]) - float(known["centroid_y_px"][f])))
    t = summary["truth"]
    assert t["frames"] == 10
    assert t["dice_mean"] == pytest.approx(np.mean(dices)) and t["dice_min"] == pytest.approx(min(dices))
    assert t["csa_rel_error_median"] == pytest.approx(np.median(csa_errors))
    assert t["csa_rel_error_p95"] == pytest.approx(np.percentile(csa_errors, 95))
    assert len(fr_errors) == len(centroid_errors) == 10  # every frame measured
    assert t["fr_abs_error_median"] == pytest.approx(np.median(fr_errors), abs=1e-4)  # the CSV has 4 decimals
    assert t["centroid_error_px_median"] == pytest.approx(np.median(centroid_errors), abs=1e-3)


def test_segment_folder_input_takes_every_video(tmp_path: Path, cache: str) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in (1, 2):
        assert synth_cli(["--phantom", "--frames", "4", "--seed", str(seed), "--out", str(videos / f"s{seed}.mp4"),
                          "--truth", str(tmp_path / f"t{seed}.npz"), "-q"]) == 0
    out = tmp_path / "seg"
    assert segment_cli([str(videos), "--out", str(out), "--no-video", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["batch-summary.json", "s1", "s2"]
    assert len(read_csv(out / "s2" / "measurements.csv")) == 4


def test_segment_unreadable_file_exit_2(tmp_path: Path, cache: str, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    code = segment_cli([str(bad), "--out", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "bad.mp4" in err and "Traceback" not in err


@pytest.mark.parametrize("given", ["nope.mp4", "igtl://127.0.0.1:18944"])
def test_segment_missing_input_names_it_and_what_is_read(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        given: str) -> None:
    text = given if "://" in given else str(tmp_path / given)
    assert segment_cli([text, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"input {text} does not exist" in err and "mn-live --source" in err and "Traceback" not in err


LIGHT = [*FAST, "--presence", "off"]


def test_a_broken_file_in_a_batch_fails_alone(tmp_path: Path, cache: str, capsys: pytest.CaptureFixture,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """a.mp4 broken.mp4 c.mp4: the broken file is reported as it happens, c.mp4 is still processed, the
    final table and batch-summary.json list all three, and the exit code says the batch is incomplete."""
    for name in ("a", "c"):
        assert synth_cli(["--phantom", "--frames", "4", "--out", str(tmp_path / f"{name}.mp4"), "--truth",
                          str(tmp_path / f"{name}.npz"), "-q"]) == 0
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video")
    out = tmp_path / "seg"
    code = segment_cli([str(tmp_path / n) for n in ("a.mp4", "broken.mp4", "c.mp4")]
                       + ["--out", str(out), "--no-video", *LIGHT])
    captured = capsys.readouterr()
    assert code == 6
    assert len(read_csv(out / "c" / "measurements.csv")) == 4
    assert "broken.mp4 failed (exit code 2): cannot open" in caplog.text and "Traceback" not in captured.err
    table = captured.out[captured.out.index("input"):].splitlines()
    assert table[1].split()[:3] == ["a.mp4", "0", "4"] and table[2].split()[:3] == ["broken.mp4", "2", "0"]
    assert table[-1] == "2 of 3 inputs done, 1 failed"
    batch = json.loads((out / "batch-summary.json").read_text())
    assert batch["exit_code"] == 6 and batch["failed"] == 1
    assert [(Path(r["input"]).name, r["exit_code"]) for r in batch["results"]] == [("a.mp4", 0), ("broken.mp4", 2),
                                                                                  ("c.mp4", 0)]


def test_default_folder_is_timestamped_and_results_need_overwrite(tmp_path: Path, cache: str,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    clip = tmp_path / "clip.mp4"
    assert synth_cli(["--phantom", "--frames", "3", "--out", str(clip), "--truth", str(tmp_path / "t.npz"),
                      "-q"]) == 0
    monkeypatch.chdir(tmp_path)
    assert segment_cli([str(clip), "--no-video", *LIGHT]) == 0
    (folder,) = tmp_path.glob("mn-segment-*")
    assert folder.name[len("mn-segment-"):].replace("-", "").isdigit()
    assert json.loads((folder / "batch-summary.json").read_text())["results"][0]["frames_processed"] == 3
    assert segment_cli([str(clip), "--out", folder.name, "--no-video", *LIGHT]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert segment_cli([str(clip), "--out", folder.name, "--no-video", "--overwrite", *LIGHT]) == 0


def test_frames_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert segment_cli([str(tmp_path), "--frames=-1", "--out", str(tmp_path / "o")]) == 2
    assert "--frames must be positive" in capsys.readouterr().err


def test_the_presence_gate_reads_the_model_own_appearance_model_or_the_given_one(tmp_path: Path) -> None:
    """The bundled model's run records its own appearance model (its sidecar); ``--appearance FILE`` replaces
    it: one that rejects every region leaves every frame unmeasured, with the reason in the CSV."""
    from engines import registry
    from realtime.appearance import FEATURES, AppearanceModel, sidecar

    clip, truth = tmp_path / "clip.mp4", tmp_path / "truth.npz"
    assert synth_cli(["--phantom", "--frames", "4", "--seed", "2", "--out", str(clip), "--truth", str(truth),
                      "-q"]) == 0
    common = [str(clip), "--threads", "1", "--confirm", "1", "--model", "mn-realtime", "-q"]
    assert segment_cli([*common, "--out", str(tmp_path / "own")]) == 0
    gate = json.loads((tmp_path / "own" / "clip" / "summary.json").read_text())["tracker"]["presence_gate"]
    assert gate["appearance"]["file"] == str(sidecar(registry.BUNDLED_MODELS["mn-realtime"]))
    rows = read_csv(tmp_path / "own" / "clip" / "measurements.csv")
    assert any(r["status"] == "ok" for r in rows)  # the phantom's nerve passes its own model's check
    nothing = AppearanceModel(features=FEATURES[:4], mean=(0.0,) * 4, scale=(1.0,) * 4, weights=(0.0,) * 4, bias=-10.0,
                              threshold=0.5).save(tmp_path / "nothing.json")
    assert segment_cli([*common, "--out", str(tmp_path / "given"), "--appearance", str(nothing)]) == 0
    rows = read_csv(tmp_path / "given" / "clip" / "measurements.csv")
    assert {r["status"] for r in rows} == {"no_detection"}
    assert all(r["rejected"].startswith("appearance 0.00 < 0.50") for r in rows)
    summary = json.loads((tmp_path / "given" / "clip" / "summary.json").read_text())
    assert summary["tracker"]["presence_gate"]["appearance"]["file"] == str(nothing)
