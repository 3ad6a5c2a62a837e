"""``mn-live``: the phantom headless with every output, calibration, SIGINT finalising every file, bad input
in one line with exit 2; ``--list-models`` and the default model taken from the bundled manifest."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines import registry
from realtime.cli_common import DEFAULT_MODEL, default_model, open_engine
from realtime.live_cli import cli as live_cli
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
    assert summary["frames_processed"] == len(rows) and "No space left on device" in summary["ended_because"]
    assert {p.name for p in out.iterdir()} <= {"measurements.csv", "overlay.mp4", "plot.png", "report.html",
                                               "summary.json"}
