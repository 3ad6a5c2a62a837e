"""``mn-live``: the phantom headless with every output, calibration, SIGINT finalising every file, bad input
in one line with exit 2; ``--list-models`` and the default model taken from the bundled manifest."""

from __future__ import annotations

import argparse
import logging
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import realtime.live_cli as live_cli_mod
from engines import registry
from engines.base import Engine, EngineInfo
from realtime.cli_common import DEFAULT_MODEL, default_model, open_engine
from realtime.live_cli import cli as live_cli
from realtime.postprocess import postprocess
from realtime.sinks.csv_sink import read_csv
from tests.engines._helpers import make_checkpoint
from tests.realtime._helpers import FAST, decoded_frames
from train.errors import UserError

REPO = Path(__file__).resolve().parents[2]
ENTRY = {
    "name": "mn-small", "file": "mn-small.pt", "description": "small real-time L-UNet",
    "architecture": {"name": "lunet", "kwargs": {}}, "input_size": [64, 48], "parameters": 1949669,
    "file_bytes": 3_930_819, "sha256": "0" * 64,
    "val": {"protocol": "paper", "dsc": 0.8375, "native_dsc": 0.8288, "csa_median_rel_error": 0.1249,
            "split": "paper:val", "images": 38},
    "smoke": {"stems": ["Pz004-001"], "dsc": [0.92]},
    "cpu_latency_ms": {"p50": 23.9, "p95": 26.1, "fps": 24.0, "machine": "vm: AMD EPYC, 2 cores, no GPU",
                       "results_file": "benchmarks/results/bench.json"},
}


@pytest.fixture
def bundled(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Make a temporary bundled folder the active one; ``write(manifest)`` fills it."""
    folder = tmp_path / "bundled"
    folder.mkdir()

    def write(manifest: dict) -> Path:
        (folder / registry.MANIFEST_NAME).write_text(json.dumps(manifest))
        registry.load_bundled(folder)
        return folder

    try:
        yield write
    finally:
        registry.load_bundled()


def test_list_models_without_bundled_models_explains_model(bundled, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    bundled({"format": 1, "default": "mn-realtime", "models": []})
    assert live_cli(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "no trained model is bundled" in out
    assert "--model" in out and "RUN_DIR/best.pt" in out and "random weights" in out and "lunet" in out


def test_list_models_table(bundled, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    other = {**ENTRY, "name": "mn-other", "file": "mn-other.pt", "cpu_latency_ms": None, "description": "other"}
    bundled({"format": 1, "default": "mn-small", "models": [ENTRY, other]})
    assert live_cli(["--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(h in lines[0] for h in ("name", "MB", "input", "val DSC", "CSA err", "CPU p95", "fps", "description"))
    small = next(x for x in lines if "mn-small" in x)
    assert small.startswith("*")
    for text in ("3.9", "64x48", "0.838", "12.5 %", "26.1 ms", "24.0", "vm: AMD EPYC, 2 cores, no GPU",
                 "small real-time L-UNet"):
        assert text in small, text
    plain = next(x for x in lines if "mn-other" in x)
    assert not plain.startswith("*") and "ms" not in plain  # no latency measured: dashes
    assert any(x.startswith("* default") for x in lines)


def test_list_models_broken_manifest_exit_2(bundled, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    folder = bundled({"format": 1, "models": []})
    (folder / registry.MANIFEST_NAME).write_text("{broken")
    registry.load_bundled(folder)
    assert live_cli(["--list-models"]) == 2
    assert "manifest" in capsys.readouterr().err


def test_default_model_comes_from_the_manifest(bundled, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = argparse.Namespace(model=None, size=None, backend="torch", precision=None, threads=None,
                              cache_dir=str(tmp_path / "cache"))
    bundled({"format": 1, "default": "mn-realtime", "models": []})
    assert default_model() == DEFAULT_MODEL == "mn-realtime"
    with pytest.raises(UserError, match="no trained model is bundled"):
        open_engine(args)
    folder = bundled({"format": 1, "default": "mn-small", "models": [ENTRY]})
    make_checkpoint(folder / "mn-small.pt", "lunet", (64, 48))
    assert default_model() == "mn-small"
    with open_engine(args) as engine:
        assert engine.info.source == str(folder / "mn-small.pt") and engine.size == (64, 48)
    bundled({"format": 1, "default": "not-bundled", "models": [ENTRY]})
    assert default_model() == DEFAULT_MODEL  # a default that is not bundled is ignored


def test_a_float_cpu_runs_the_fp32_default_live_unless_a_model_or_precision_is_named(  # type: ignore[no-untyped-def]
        bundled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    folder = bundled({"format": 1, "default": "mn-small", "fp32_default": "mn-light",
                      "models": [ENTRY, {**ENTRY, "name": "mn-light", "file": "mn-light.pt"}]})
    make_checkpoint(folder / "mn-small.pt", "lunet", (64, 48))
    make_checkpoint(folder / "mn-light.pt", "lunet", (64, 48))
    monkeypatch.setattr(registry, "machine_default", lambda probes=None: ("mn-light", "mn-small would run in float32"))
    args = argparse.Namespace(model=None, size=None, backend="auto", precision=None, threads=None,
                              cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING), open_engine(args, live=True) as engine:
        assert engine.info.source == str(folder / "mn-light.pt")
    assert "mn-small would run in float32" in caplog.text
    for named in ({"precision": "fp32"}, {"backend": "onnxruntime"}, {"model": "mn-small"}):
        with open_engine(argparse.Namespace(**{**vars(args), **named}), live=True) as engine:
            assert engine.info.source == str(folder / "mn-small.pt")
    with open_engine(args) as engine:  # offline (mn-segment, the benchmarks): every frame, the most accurate default
        assert engine.info.source == str(folder / "mn-small.pt")


def test_live_synthetic_headless_writes_all_outputs(tmp_path: Path, cache: str) -> None:
    out = tmp_path / "live"
    assert live_cli(["--source", "synthetic:1", "--headless", "--frames", "12", "--out", str(out), *FAST]) == 0
    rows = read_csv(out / "measurements.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == summary["frames_processed"] == 12
    assert decoded_frames(out / "overlay.mp4") == 12
    assert (out / "plot.png").stat().st_size > 0
    assert summary["calibration"] == "uncalibrated" and summary["backend"] == "onnxruntime"
    assert "random weights" in summary["engine_notes"] and "truth" in summary


def test_live_tta_reaches_the_engine_and_the_summary(tmp_path: Path, cache: str) -> None:
    out = tmp_path / "live"
    assert live_cli(["--source", "synthetic:1", "--headless", "--frames", "4", "--no-video", "--out", str(out),
                     "--model", "mn-realtime", "--precision", "fp32", "--tta", "hflip", "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tta"] == "hflip" and "test-time augmentation hflip (asked for" in summary["engine_notes"]
    assert live_cli(["--source", "synthetic:1", "--headless", "--frames", "2", "--no-video", "--out",
                     str(tmp_path / "plain"), "--model", "mn-realtime", "--precision", "fp32", "-q"]) == 0
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["tta"] == "none"  # the model's own
    assert live_cli(["--source", "synthetic:1", "--headless", "--frames", "2", "--out", str(tmp_path / "single"),
                     "--tta", "hflip", *FAST]) == 2  # a single network has no refiner to flip


def test_live_calibrated_depth(tmp_path: Path, cache: str) -> None:
    out = tmp_path / "live"
    assert live_cli(["--source", "synthetic", "--headless", "--frames", "5", "--depth-mm", "46.8", "--no-video",
                     "--out", str(out), *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration_detail"]["mm_per_px_y"] == pytest.approx(0.1)  # 46.8 mm over 468 rows
    assert summary["units"]["area"] == "mm2" and summary["latency_ms"]["n"] == 5
    assert not (out / "overlay.mp4").exists()


def test_sigint_leaves_csv_playable_mp4_and_summary(tmp_path: Path, cache: str) -> None:
    out = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-m", "realtime.live_cli", "--source", "synthetic", "--headless",
                             "--out", str(out), *FAST], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), "MN_SEG_CACHE": cache})
    csv_path = out / "measurements.csv"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not csv_path.exists() or len(read_csv(csv_path)) < 10):
        time.sleep(0.25)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    rows = read_csv(csv_path)
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) >= 10 and summary["frames_processed"] == len(rows)
    assert decoded_frames(out / "overlay.mp4") == len(rows)
    assert "SIGINT" in summary["ended_because"]


@pytest.mark.parametrize("argv, needle", [
    (["--source", "/dev/video97"], "/dev/video97"),
    (["--source", "no-such-file.mp4"], "no-such-file.mp4"),
    (["--source", "synthetic", "--roi", "0,0,9999,10"], "roi"),
    (["--source", "synthetic", "--mm-per-px", "-1"], "mm-per-px"),
    (["--source", "synthetic", "--model", "nope.pt"], "nope.pt"),
])
def test_live_bad_input_one_line_exit_2(argv: list[str], needle: str, tmp_path: Path, cache: str,
                                        capsys: pytest.CaptureFixture) -> None:
    base = ["--headless", "--frames", "3", "--out", str(tmp_path / "o"), "-q"]
    if "--model" not in argv:
        base += ["--model", "lunet", "--size", "64x48"]
    code = live_cli([*argv, *base])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle.lower() in err.lower() and "Traceback" not in err and err.count("\n") == 1


LIGHT = [*FAST, "--presence", "off"]


def _live_process(out: Path, cache: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "realtime.live_cli", "--source", "synthetic", "--headless",
                             "--out", str(out), *LIGHT, *extra], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "MN_SEG_CACHE": cache})


def _wait_rows(proc: subprocess.Popen, csv_path: Path, n: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not csv_path.exists() or len(read_csv(csv_path)) < n):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.25)


def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(tmp_path: Path, cache: str,
                                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "same"
    first = _live_process(out, cache)
    try:
        _wait_rows(first, out / "measurements.csv", 3)
        code = live_cli(["--source", "synthetic", "--headless", "--frames", "5", "--out", str(out), *LIGHT])
        err = capsys.readouterr().err
        assert code == 2 and str(out) in err and f"PID {first.pid}" in err and err.count("\n") == 1
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    rows = read_csv(out / "measurements.csv")  # the first run's alone, not interleaved with a second
    assert [int(r["frame"]) for r in rows] == sorted({int(r["frame"]) for r in rows})
    assert json.loads((out / "summary.json").read_text())["frames_processed"] == len(rows)
    assert decoded_frames(out / "overlay.mp4") == len(rows)


def test_earlier_results_are_kept_unless_overwrite(tmp_path: Path, cache: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    argv = ["--source", "synthetic", "--headless", "--frames", "3", "--no-video", "--out", str(out), *LIGHT]
    assert live_cli(argv) == 0
    before = (out / "measurements.csv").read_bytes()
    assert live_cli(argv) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "measurements.csv" in err and "Traceback" not in err
    assert (out / "measurements.csv").read_bytes() == before
    assert live_cli([*argv, "--frames", "4", "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["frames_processed"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["measurements.csv", "plot.png", "report.html", "summary.json"]


@pytest.mark.parametrize("flag, value, needle", [
    ("--record", "o/v.txt", "must end in .mp4"),
    ("--record", "/proc/x.mp4", "/proc"),
    ("--summary", "/proc/x.json", "/proc"),
    ("--plot", "o", "must end in .png"),
])
def test_bad_output_paths_fail_before_the_first_frame(flag: str, value: str, needle: str, tmp_path: Path, cache: str,
                                                      capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = live_cli(["--source", "synthetic", "--headless", "--frames", "3", "--out", "run", flag, value, *LIGHT])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and flag in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "measurements.csv").exists()  # nothing ran
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []  # no probe or .tmp left


def test_sigkill_leaves_whole_rows_a_playable_video_and_a_partial_summary(tmp_path: Path, cache: str) -> None:
    """A power cut, as near as a test gets: SIGKILL mid-run. Every CSV row is whole, the overlay video
    decodes (with PyAV) up to its last whole one-second fragment, summary.json is a whole partial summary,
    and no temporary file stays behind."""
    import av

    out = tmp_path / "killed"
    proc = _live_process(out, cache)
    _wait_rows(proc, out / "measurements.csv", 60)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    rows = read_csv(out / "measurements.csv")
    assert len(rows) >= 60 and all(None not in r.values() and r["status"] for r in rows)
    decoded = 0
    try:
        with av.open(str(out / "overlay.mp4")) as container:
            for _ in container.decode(video=0):
                decoded += 1
    except av.error.FFmpegError:
        pass  # the fragment being written when the process died
    assert 24 <= decoded <= len(rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and summary["exit_code"] is None
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_a_negative_roi_is_named_not_a_missing_argument(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = live_cli(["--roi", "-10,0,100,100", "--headless", "--frames", "2", "--out", str(tmp_path / "o"), *LIGHT])
    err = capsys.readouterr().err
    assert code == 2 and "x=-10" in err and "expected one argument" not in err


@pytest.fixture
def full_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MB tmpfs (needs root and a kernel that lets this process mount; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root, or not allowed); the ENOSPC tests with a "
                    "monkeypatched writer cover the same paths")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_disk_full_exit_5_names_the_file_and_finalises_what_is_written(full_disk: Path, cache: str,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """mn-live into a 2 MB tmpfs until it is full: exit code 5 and the file named; every CSV row whole;
    the video plays up to its last whole fragment; summary.json is the final one (written in the space
    held for it) with the same frames as the CSV and the process's exit code; no temporary file left."""
    import av

    out = full_disk / "run"
    code = live_cli(["--source", "synthetic", "--headless", "--no-drop", "--frames", "5000", "--out", str(out),
                     *LIGHT])
    printed = capsys.readouterr().out
    assert code == 5 and "ended: output failed" in printed and "No space left on device" in printed
    assert str(out / "overlay.mp4") in printed or str(out / "measurements.csv") in printed
    rows = read_csv(out / "measurements.csv")
    assert rows and all(None not in r.values() for r in rows)
    decoded = 0
    try:
        with av.open(str(out / "overlay.mp4")) as container:
            for _ in container.decode(video=0):
                decoded += 1
    except av.error.FFmpegError:
        pass  # the fragment the disk had no room for
    assert 24 <= decoded <= len(rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is False and summary["exit_code"] == 5
    # the frame in flight when the disk filled up is in the summary, and in the CSV unless the CSV's own write of
    # that frame failed too (then the CSV ends one frame earlier)
    assert len(rows) <= summary["frames_processed"] <= len(rows) + 1
    assert "No space left on device" in summary["ended_because"]
    assert {p.name for p in out.iterdir()} <= {"measurements.csv", "overlay.mp4", "plot.png", "report.html",
                                               "summary.json"}


# --- the flags a run is shaped by: each has its documented effect -----------------------------------------


class DiscEngine(Engine):
    """A stand-in network whose answer is known: call k outputs a disc whose probability falls linearly from 1
    at its centre to 0 at radius ``8 + k / 4`` model pixels, whatever the frame (the disc grows from frame to
    frame, so the smoothed and raw columns differ and each threshold gives another area)."""

    SIZE = (64, 48)  # W, H

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(EngineInfo(name="disc", backend="fake", precision="fp32", device="cpu",
                                    input_shape=(-1, 1, self.SIZE[1], self.SIZE[0])))
        self.delay_s = delay_s
        self.calls = 0

    @classmethod
    def prob(cls, k: int) -> np.ndarray:
        yy, xx = np.mgrid[0:cls.SIZE[1], 0:cls.SIZE[0]]
        return np.clip(1.0 - np.hypot(xx - 30.5, yy - 22.5) / (8.0 + k / 4), 0.0, 1.0).astype(np.float32)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        out = []
        for _ in range(len(batch)):
            out.append(self.prob(self.calls))
            self.calls += 1
        time.sleep(self.delay_s)  # a network this slow: frames keep coming meanwhile
        return np.stack(out)[:, None]


def expected_area(k: int, threshold: float = 0.5, min_area: int = 100) -> int | None:
    """The nerve area of frame k (the disc engine's k-th answer) on the phantom's 606x468 frames, or None when
    nothing is left."""
    post = postprocess(DiscEngine.prob(k), (606, 468), threshold=threshold, min_area_px=min_area)
    assert len(post.components) <= 1
    return post.components[0].area_px if post.components else None


class DiscRuns:
    """The disc engines mn-live opened, in order; ``delay_s`` is the next one's time per call."""

    def __init__(self) -> None:
        self.made: list[DiscEngine] = []
        self.delay_s = 0.0

    def open(self, args, batch: int = 1, live: bool = False) -> DiscEngine:  # type: ignore[no-untyped-def]
        self.made.append(DiscEngine(self.delay_s))
        return self.made[-1]


@pytest.fixture
def disc(monkeypatch: pytest.MonkeyPatch) -> DiscRuns:
    """mn-live runs on :class:`DiscEngine` instead of a network."""
    runs = DiscRuns()
    monkeypatch.setattr(live_cli_mod, "open_engine", runs.open)
    return runs


PLAIN = ["--source", "synthetic", "--headless", "--presence", "off", "--confirm", "1", "--fusion", "1", "-q"]
"""Each frame's own disc, measured exactly from the first frame on (no presence gate, no confirmation, no
temporal fusion with the previous discs)."""


def test_no_drop_smoothing_and_output_paths_one_by_one(tmp_path: Path, disc: DiscRuns) -> None:
    """--no-drop: every phantom frame, none dropped, though the engine is slower than the frame rate;
    --smoothing ema: extra *_smooth columns, the EMA (span 5) of the raw ones, which are kept;
    --log / --record / --summary: those files where named, not in --out (the plot and report stay there)."""
    named, out = tmp_path / "named", tmp_path / "out"
    disc.delay_s = 0.05  # slower than 24 fps: live, frames would be dropped
    assert live_cli([*PLAIN, "--no-drop", "--frames", "24", "--smoothing", "ema", "--log", str(named / "m.csv"),
                     "--record", str(named / "v.mp4"), "--summary", str(named / "s.json"), "--out", str(out)]) == 0
    rows = read_csv(named / "m.csv")
    summary = json.loads((named / "s.json").read_text())
    assert [int(r["frame"]) for r in rows] == list(range(24)) and disc.made[0].calls == 24
    assert {r["dropped_before"] for r in rows} == {"0"} and summary["frames_dropped"] == 0
    assert summary["mode"] == "every frame"
    areas = [int(r["area_px"]) for r in rows]
    assert areas == [expected_area(k) for k in range(24)]  # the raw values, unsmoothed
    ema, alpha = [], 2 / (5 + 1)
    for a in areas:
        ema.append(a if not ema else alpha * a + (1 - alpha) * ema[-1])
    assert [float(r["area_px_smooth"]) for r in rows] == pytest.approx(ema, abs=1e-4)
    assert summary["tracker"]["smoothing"] == "ema" and summary["tracker"]["smoothing_window"] == 5
    assert decoded_frames(named / "v.mp4") == 24
    assert sorted(p.name for p in named.iterdir()) == ["m.csv", "s.json", "v.mp4"]
    assert sorted(p.name for p in out.iterdir()) == ["plot.png", "report.html"]
    assert (summary["outputs"]["csv"], summary["outputs"]["video"], summary["outputs"]["summary"]) == \
        (str(named / "m.csv"), str(named / "v.mp4"), str(named / "s.json"))


def test_threshold_and_min_area(tmp_path: Path, disc: DiscRuns) -> None:
    """--threshold 0.3: the nerve is where the probability is >= 0.3 (a larger disc than at 0.5);
    --min-area N: a frame whose only region has fewer than N pixels has no nerve."""
    bigger = [expected_area(k, 0.3, 0) for k in range(24)]
    assert all(b > expected_area(k) for k, b in enumerate(bigger)) and bigger == sorted(set(bigger))
    min_area = bigger[12]  # frames 12.. keep their disc, 0..11 lose it
    out = tmp_path / "out"
    assert live_cli([*PLAIN, "--no-drop", "--frames", "24", "--threshold", "0.3", "--min-area", str(min_area),
                     "--no-video", "--out", str(out)]) == 0
    rows = read_csv(out / "measurements.csv")
    assert [r["status"] for r in rows] == ["no_detection"] * 12 + ["ok"] * 12
    assert [r["area_px"] for r in rows[:12]] == [""] * 12
    assert [int(r["area_px"]) for r in rows[12:]] == bigger[12:]


def test_live_drops_stale_frames_without_no_drop(tmp_path: Path, disc: DiscRuns) -> None:
    """Without --no-drop the phantom plays live: an engine taking 100 ms (2.4 frame periods at 24 fps) gets the
    newest frame each time, at least 2 indices after the last one, and the skipped frames are counted."""
    disc.delay_s = 0.1
    out = tmp_path / "out"
    assert live_cli([*PLAIN, "--frames", "6", "--no-video", "--out", str(out)]) == 0
    rows = read_csv(out / "measurements.csv")
    summary = json.loads((out / "summary.json").read_text())
    frames = [int(r["frame"]) for r in rows]
    assert len(frames) == 6 and all(b - a >= 2 for a, b in zip(frames, frames[1:]))
    assert sum(int(r["dropped_before"]) for r in rows) == summary["frames_dropped"] == frames[-1] + 1 - 6
    assert summary["mode"] == "live"


def test_duration_ends_an_endless_run(tmp_path: Path, disc: DiscRuns) -> None:
    """--duration S: the run stops once S seconds have passed, with exit code 0 and every file finalised.
    (--frames 500 only guards against a hang: played live at 24 fps, 500 frames take 20 s.)"""
    out = tmp_path / "out"
    assert live_cli([*PLAIN, "--duration", "0.5", "--frames", "500", "--no-video", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_because"] == "duration 0.5 s reached" and summary["exit_code"] == 0
    assert summary["partial"] is False and summary["wall_time_s"] >= 0.5  # it did not stop before
    assert len(read_csv(out / "measurements.csv")) == summary["frames_processed"] >= 1


def test_reconnect_s_and_capture_size_reach_the_device(tmp_path: Path, disc: DiscRuns,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--capture-size WxH and --fps are asked of the frame grabber; --reconnect-s S: a grabber that stops
    delivering is reopened for S seconds, then the run ends with exit code 3 and the frames before it kept."""
    import cv2

    import realtime.sources.device as device_mod
    from tests.realtime.sources._helpers import Factory, FakeCapture

    cam = FakeCapture(period=0.002, fail_after=5, make=lambda k: np.full((48, 64), 100 + k, np.uint8))
    factory = Factory(cam)  # then only captures that do not open
    monkeypatch.setattr(device_mod, "opencv_capture", factory)
    out = tmp_path / "out"
    code = live_cli(["--source", "/dev/video0", "--headless", "--presence", "off", "-q", "--reconnect-s", "0.3",
                     "--capture-size", "64x48", "--fps", "30", "--no-video", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 3 and summary["exit_code"] == 3
    assert "could not be reopened within 0.3 s" in summary["ended_because"]
    assert (cam.props[cv2.CAP_PROP_FRAME_WIDTH], cam.props[cv2.CAP_PROP_FRAME_HEIGHT]) == (64, 48)
    assert cam.props[cv2.CAP_PROP_FPS] == 30
    rows = read_csv(out / "measurements.csv")
    assert 1 <= len(rows) <= 5 and len(rows) == summary["frames_processed"] and len(factory.calls) >= 2
