"""The tracked-window benchmark's scoring on scripted frames with known answers, and a tiny real run
on the phantom with a stand-in cascade engine."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks import window_bench
from benchmarks.window_bench import clip_specs, lag_frames, pooled, score
from realtime.fusion import DEFAULT_WEIGHT


def row(area, true_area, c=(100.0, 50.0), tc=(100.0, 50.0), window="tracked", ms=2.0, fr=None, true_fr=None):
    return {"measured": area is not None, "window": window, "infer_ms": ms, "area": area,
            "centroid": None if area is None else c, "true_area": true_area, "true_centroid": tc,
            "fr": fr, "true_fr": true_fr}


def test_score_counts_errors_jitter_ok_and_jumps() -> None:
    rows = [row(1000, 1000, window="localiser"), row(1100, 1000), row(None, 1000),
            row(1000, 1000, c=(150.0, 50.0)), row(1000, 1000, c=(150.0, 50.0), tc=(120.0, 50.0))]
    s = score(rows)
    assert (s["frames"], s["ok"], s["tracked_windows"]) == (5, 4, 4)
    assert s["csa_abs_rel_median"] == pytest.approx(0.0)  # errors 0, 0.1, 0, 0
    assert s["csa_bias"] == pytest.approx(0.025)  # their signed mean
    # area changes between consecutive measured frames: 1000->1100 (+10 %), and 1000->1000 (0)
    assert s["jitter"]["median"] == pytest.approx(0.05) and s["truth_jitter"]["median"] == 0.0
    # frame 3 -> 4: the measured centroid stays, the truth moves 20 px: no jump; 2 -> 3 has no measurement
    assert s["jumps"] == 0
    jump = score([row(1000, 1000), row(1000, 1000, c=(130.0, 50.0))])
    assert jump["jumps"] == 1 and jump["jumps_away"] == 1  # moved 30 px off the still truth
    back = score([row(1000, 1000, c=(130.0, 50.0)), row(1000, 1000, c=(102.0, 50.0))])
    assert back["jumps"] == 1 and back["jumps_away"] == 0  # 28 px back onto it: a jump, not away
    assert pooled({"a": jump, "b": back})["jumps_away"] == 1


def test_the_fr_error_is_relative_over_measured_frames() -> None:
    s = score([row(1000, 1000, fr=2.2, true_fr=2.0), row(1000, 1000, fr=1.5, true_fr=2.0),
               row(None, 1000, true_fr=2.0), row(1000, 1000, fr=3.0, true_fr=3.0)])
    assert s["fr_abs_rel_median"] == pytest.approx(0.1)  # errors 0.1, 0.25, 0
    assert score([row(1000, 1000)])["fr_abs_rel_median"] is None


@pytest.mark.parametrize("delay", [0, 1, 3, 6])
def test_lag_finds_a_known_delay(delay: int) -> None:
    """The true area a cosine; the measured one the same, ``delay`` frames late, plus a little noise."""
    rng = np.random.default_rng(delay)
    truth = [1000 + 100 * np.cos(2 * np.pi * t / 48) for t in range(144)]
    measured = [truth[max(0, t - delay)] + rng.normal(0, 3) for t in range(144)]
    assert lag_frames(measured, truth) == delay
    rows = [row(a, t) for a, t in zip(measured, truth)]
    assert score(rows)["lag_frames"] == delay


def test_lag_needs_enough_frames_and_a_changing_truth() -> None:
    truth = [1000 + 100 * np.cos(2 * np.pi * t / 48) for t in range(144)]
    assert lag_frames(truth[:20], truth[:20]) is None  # under 24 pairs
    assert lag_frames([1000.0] * 144, [1000.0] * 144) is None  # nothing changes
    gaps = [None if t % 2 else a for t, a in enumerate(truth)]  # every other frame missed: still 72 pairs at k=0
    assert lag_frames(gaps, truth) == 0


def test_pooled_takes_medians_and_sums() -> None:
    a = score([row(1000, 1000), row(1000, 1000)])
    b = score([row(1200, 1000), row(None, 1000)])
    p = pooled({"a": a, "b": b})
    assert p["clips"] == 2 and p["frames"] == 4 and p["ok_rate"] == 0.75
    assert p["csa_abs_rel_median"] == pytest.approx(0.1)
    assert p["csa_bias"] == pytest.approx(0.1)  # the median of the clips' 0 and +0.2
    assert score([row(800, 1000), row(900, 1000)])["csa_bias"] == pytest.approx(-0.15)  # areas too small


def test_clip_specs_without_data_are_the_phantoms() -> None:
    assert clip_specs(None, 2, 5) == [("phantom-1", "synthetic"), ("phantom-2", "synthetic")]


def test_a_model_without_a_window_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.engines._helpers import make_checkpoint

    monkeypatch.setenv("MN_SEG_CACHE", str(tmp_path / "cache"))
    plain = make_checkpoint(tmp_path / "lunet.pt", "lunet", (64, 48))
    code = window_bench.cli(["--model", str(plain), "--phantoms", "1", "--frames", "3",
                             "--json", str(tmp_path / "w.json"), "-q"])
    assert code == 2 and "not a cascade" in capsys.readouterr().err
    assert not (tmp_path / "w.json").exists()


@pytest.mark.slow
def test_a_real_run_on_the_phantom(tmp_path: Path) -> None:
    out = tmp_path / "w.json"
    assert window_bench.cli(["--phantoms", "1", "--frames", "6", "--threads", "1", "--confirm", "1", "--json",
                             str(out), "-q"]) == 0
    report = json.loads(out.read_text())
    clip = report["clips"]["phantom-1"]
    loc, tracked, fused = clip["localiser"], clip["tracked"], clip["tracked+fusion"]
    assert loc["tracked_windows"] == 0 and tracked["tracked_windows"] >= 3  # from the 3rd frame on
    assert loc["fused"] == tracked["fused"] == 0 and fused["fused"] == 5  # every frame after the first
    assert (loc["ok"] == tracked["ok"] == fused["ok"] == 6
            and report["fusion"] == DEFAULT_WEIGHT and report["confirm"] == 1)
    assert (tmp_path / "w.md").read_text().startswith("# What the last frames know")
    assert "Animated validation images" not in (tmp_path / "w.md").read_text()  # phantoms only
    assert ("every setting with --confirm 1, --area-step 0.25 and --presence on (appearance model: the model's own)."
            in (tmp_path / "w.md").read_text())
    assert report["appearance_file"].endswith("mn-realtime.appearance.json")  # the file the gate read
    # by default a new track is confirmed as mn-live confirms it (2 frames): the first frame is not measured
    assert window_bench.cli(["--phantoms", "1", "--frames", "6", "--threads", "1", "--modes", "tracked+fusion",
                             "--json", str(out), "--per-frame", str(tmp_path / "frames"), "-q"]) == 0
    report = json.loads(out.read_text())
    assert report["confirm"] == 2 and report["clips"]["phantom-1"]["tracked+fusion"]["ok"] == 5
    with open(tmp_path / "frames" / "phantom-1.tracked+fusion.csv", newline="") as f:
        frames = list(csv.DictReader(f))
    assert [r["frame"] for r in frames] == [str(i) for i in range(6)]
    assert frames[0]["rejected"] == "unconfirmed: 1 of 2 frames" and frames[0]["area_px"] == ""
    assert all(r["status"] == "ok" and r["area_px"] and r["true_area_px"] for r in frames[1:])
    assert "cpu_features" in report["machine"]
    # the default (auto) is mn-live's engine: int8 where the CPU has VNNI (mn-realtime ships its int8 parts)
    from engines.quantize import cpu_vnni

    assert report["precision"] == ("int8" if cpu_vnni()[0] else "fp32")


def test_the_engine_precision_is_chosen_and_recorded(tmp_path: Path) -> None:
    out = tmp_path / "w.json"
    for precision in ("fp32", "int8"):  # mn-realtime ships its int8 parts: no calibration data needed
        assert window_bench.cli(["--phantoms", "1", "--frames", "3", "--threads", "1", "--modes", "tracked",
                                 "--precision", precision, "--json", str(out), "-q"]) == 0
        assert json.loads(out.read_text())["precision"] == precision
        assert f"Engine: onnxruntime {precision}" in (tmp_path / "w.md").read_text()
    assert json.loads(out.read_text())["tta"] == "none"
    assert window_bench.cli(["--phantoms", "1", "--frames", "3", "--threads", "1", "--modes", "tracked",
                             "--precision", "int8", "--tta", "hflip", "--json", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["tta"] == "hflip"
    assert "Engine: onnxruntime int8, refiner test-time augmentation hflip" in (tmp_path / "w.md").read_text()


def test_clip_specs_of_a_kfold_fold_are_its_validation_patients(synthetic_dataset_shared: Path) -> None:
    from train.data import scan_dataset
    from train.splits import make_split

    samples = scan_dataset(synthetic_dataset_shared)
    patients = [s.patient for s in samples]
    by_fold = []
    for fold in range(4):
        specs = clip_specs(str(synthetic_dataset_shared), 0, 100, split="kfold", folds=4, fold=fold, seed=42)
        val = make_split("kfold", patients, folds=4, fold=fold, seed=42).indices(patients)[1]
        assert [name for name, _ in specs] == [samples[i].stem for i in val]
        assert all(spec == f"animate:{samples[i].image_path}" for (_, spec), i in zip(specs, val))
        by_fold.append({name for name, _ in specs})
    assert set().union(*by_fold) == {s.stem for s in samples} and sum(map(len, by_fold)) == len(samples)
    paper = clip_specs(str(synthetic_dataset_shared), 1, 100)
    assert paper[0] == ("phantom-1", "synthetic")


def test_per_frame_rows_are_written_with_the_truth_beside_them(tmp_path: Path) -> None:
    rows = [{"measured": False, "status": "no_detection", "rejected": "appearance 0.05 < 0.10 (tracked)",
             "presence_score": 0.05, "window": "tracked", "fused": False, "infer_ms": 5.0, "post_ms": 1.0,
             "area": None, "fr": None,
             "true_fr": 5.0, "centroid": None, "true_area": 2000.0, "true_centroid": (100.0, 50.0)},
            {"measured": True, "status": "ok", "rejected": None, "window": "tracked", "fused": True, "infer_ms": 5.5,
             "post_ms": 1.0, "area": 1800.0, "fr": 4.0, "true_fr": 5.0, "centroid": (101.0, 52.0), "true_area": 2000.0,
             "true_centroid": (100.0, 50.0)}]
    window_bench.write_frames(tmp_path / "sub" / "c.csv", rows)
    with open(tmp_path / "sub" / "c.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == list(window_bench.FRAME_COLUMNS)
    assert got[0]["rejected"] == "appearance 0.05 < 0.10 (tracked)" and got[0]["area_px"] == ""
    assert got[0]["presence_score"] == "0.05" and got[1]["presence_score"] == ""  # the second row has none
    assert got[0]["area_rel_error"] == "" and got[0]["true_centroid_x"] == "100"
    assert got[1]["area_rel_error"] == "-0.1" and got[1]["fused"] == "1" and got[1]["centroid_y"] == "52"


@pytest.mark.parametrize("args", [["--fold", "0"], ["--split", "kfold"]])
def test_fold_and_kfold_go_together(args: list, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = window_bench.cli(["--phantoms", "1", "--frames", "3", "--json", str(tmp_path / "w.json"), *args])
    assert code == 2 and "--fold K goes with --split kfold" in capsys.readouterr().err
    assert not (tmp_path / "w.json").exists()


def test_the_glide_scale_reaches_animated_clips_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.clips

    seen = []
    monkeypatch.setattr(benchmarks.clips, "stream_clip", lambda engine, spec, frames, collect, **k: seen.append(k))
    window_bench.run_clip(None, "animate:x.png", 0, 3, "tracked", glide_scale=3.0, compression_period_s=2.0)
    window_bench.run_clip(None, "synthetic", 0, 3, "tracked", glide_scale=3.0)
    window_bench.run_clip(None, "animate:x.png", 0, 3, "tracked")
    assert seen[0]["glide_scale"] == 3.0 and seen[0]["compression_period_s"] == 2.0
    assert "glide_scale" not in seen[1] and "glide_scale" not in seen[2]
    window_bench.run_clip(None, "animate:x.png", 0, 3, "tracked", border_crop=24)
    window_bench.run_clip(None, "synthetic", 0, 3, "tracked", border_crop=24)
    assert seen[3]["border_crop"] == 24 and "border_crop" not in seen[4] and "border_crop" not in seen[0]


@pytest.mark.parametrize("bad", ["-1", "nan"])
def test_a_bad_glide_scale_is_refused(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert window_bench.cli(["--phantoms", "1", "--glide-scale", bad, "--json", str(tmp_path / "w.json")]) == 2
    assert "--glide-scale" in capsys.readouterr().err


def test_the_report_names_the_split() -> None:
    from benchmarks.window_bench import format_md

    base = {"model": "m", "command": "c", "fusion": 0.5, "confirm": 2, "clips": {}, "pooled": {}}
    assert "fold 1 of the patient 5-fold split (seed 42, as mn-cv)" in format_md(
        {**base, "split": {"name": "kfold", "folds": 5, "fold": 1, "seed": 42}})
    assert "the paper split's (they chose the shipped models)" in format_md({**base, "split": {"name": "paper"}})


def test_the_presence_gate_reaches_the_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_stream_clip(engine, spec, frames, collect, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw)

    monkeypatch.setattr("benchmarks.clips.stream_clip", fake_stream_clip)
    window_bench.run_clip(None, "synthetic", 1, 3, "tracked+fusion", 0.5, 2, "shape", "gate.json")
    assert (seen["presence"], seen["window"], seen["fusion"], seen["confirm_frames"], seen["appearance"]) == (
        "shape", "tracked", 0.5, 2, "gate.json")
    window_bench.run_clip(None, "synthetic", 1, 3, "localiser", compression_period_s=2.0)
    assert (seen["presence"], seen["fusion"], seen["appearance"]) == ("on", None, None)
    assert "compression_period_s" not in seen  # the phantom has no compression cycle
    window_bench.run_clip(None, "animate:x.png", 1, 3, "localiser", compression_period_s=2.0)
    assert seen["compression_period_s"] == 2.0
    window_bench.run_clip(None, "synthetic", 1, 3, "tracked", presence_refresh=0.5)
    assert seen["presence_refresh"] == 0.5
    assert window_bench.build_parser().parse_args([]).presence_refresh is None
    assert window_bench.build_parser().parse_args(["--presence-refresh", "1"]).presence_refresh == 1.0
    assert window_bench.build_parser().parse_args(["--presence", "off"]).presence == "off"
    with pytest.raises(SystemExit):
        window_bench.build_parser().parse_args(["--presence", "maybe"])


def _report(path: Path, fold: int, clips: dict, fusion: float = 0.35) -> Path:
    report = {"benchmark": "window", "model": f"fold-{fold}/model.pt", "command": f"window_bench --fold {fold}",
              "split": {"name": "kfold", "folds": 5, "fold": fold, "seed": 42}, "frames_per_clip": 2,
              "fusion": fusion, "confirm": 2, "presence": "on", "area_step": 0.25, "precision": "fp32",
              "clips": {n: {"tracked+fusion": c} for n, c in clips.items()},
              "pooled": {"tracked+fusion": pooled(clips)}}
    path.write_text(json.dumps(report))
    return path


def test_pool_joins_the_folds_clips_as_one_run(tmp_path: Path) -> None:
    steady = score([row(1000, 1000), row(1010, 1005), row(1000, 1010)])  # jitter 1 % vs the truth's 0.5 %
    shaky = score([row(1000, 1000), row(1100, 1010), row(1000, 1000)])   # 10 % vs 1 %
    small = score([row(900, 1000), row(None, 1000)])
    a = _report(tmp_path / "a.json", 0, {"Pz001-001": steady, "Pz002-001": small})
    b = _report(tmp_path / "b.json", 3, {"Pz009-001": shaky, "Pz002-001": steady})  # a name met twice
    assert window_bench.cli(["--pool", str(a), str(b), "--json", str(tmp_path / "p.json"), "-q"]) == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert list(report["clips"]) == ["Pz001-001", "Pz002-001", "Pz009-001", "Pz002-001 (b.json)"]
    p = report["pooled"]["tracked+fusion"]
    assert p == pooled({n: c["tracked+fusion"] for n, c in report["clips"].items()})
    assert (p["clips"], p["frames"]) == (4, 11)
    assert p["ok_rate"] == pytest.approx(10 / 11)
    # each clip's own jitter over its truth's, then the median over the clips: 2, 2, 10 (small: one frame, none)
    assert p["jitter_ratio"] == pytest.approx(2.0, rel=0.02)
    assert report["split"]["fold"] == [0, 3]
    md = (tmp_path / "p.md").read_text()
    assert "folds 0, 3 of the patient 5-fold split" in md and "| 2.00x |" in md


def test_pool_refuses_reports_measured_differently(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip = score([row(1000, 1000), row(1000, 1000)])
    a = _report(tmp_path / "a.json", 0, {"x": clip}, fusion=0.35)
    b = _report(tmp_path / "b.json", 1, {"y": clip}, fusion=0.2)
    (tmp_path / "c.json").write_text('{"benchmark": "presence"}')
    for argv, message in (([a, b], "other settings than .*fusion 0.2 vs 0.35"), ([a], "two or more"),
                          ([a, tmp_path / "c.json"], "not a benchmarks.window_bench report"),
                          ([a, tmp_path / "none.json"], "cannot read")):
        assert window_bench.cli(["--pool", *map(str, argv), "-q"]) == 2
        assert re.search(message, capsys.readouterr().err)
