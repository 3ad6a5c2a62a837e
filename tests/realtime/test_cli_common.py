"""realtime.cli_common: the shared flags agree with the modules they configure, and the commands start
light (no numpy, torch or OpenCV before the arguments are known good)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from realtime.cli_common import CONFIRM_DEFAULT, PRESENCE_CHOICES, SMOOTHING_CHOICES
from realtime.presence import PRESENCE_MODES
from realtime.tracker import DEFAULT_CONFIRM_FRAMES, SMOOTHING_METHODS

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "cv2", "av", "onnxruntime", "matplotlib", "pyigtl", "nrrd", "nibabel")


def test_choices_agree_with_the_modules() -> None:
    assert tuple(SMOOTHING_CHOICES) == tuple(SMOOTHING_METHODS)
    assert tuple(PRESENCE_CHOICES) == tuple(PRESENCE_MODES)
    assert CONFIRM_DEFAULT == DEFAULT_CONFIRM_FRAMES == 2
    from benchmarks.clips import DEFAULT_AREA_STEP as CLIPS_AREA_STEP
    from realtime.cli_common import AREA_STEP_DEFAULT, area_step
    from realtime.tracker import DEFAULT_AREA_STEP

    assert AREA_STEP_DEFAULT == DEFAULT_AREA_STEP == CLIPS_AREA_STEP == 0.25
    assert area_step("0.3") == 0.3 and area_step("0") is None
    for bad in ("-0.1", "inf", "nan", "a quarter"):
        with pytest.raises(Exception, match="needs a fraction >= 0"):
            area_step(bad)


def test_confirm_flag_and_the_single_image_exception() -> None:
    """--confirm N reaches the tracker; a one-frame input is measured without confirmation (nothing could
    confirm it), any other length or an unknown one keeps N; N < 1 or not a whole number is refused."""
    import argparse

    from realtime.cli_common import add_measure_args, confirm_frames, make_tracker

    p = argparse.ArgumentParser()
    add_measure_args(p)
    assert p.parse_args([]).confirm == 2
    args = p.parse_args(["--confirm", "3"])
    assert make_tracker(args, None, 24.0).confirm_frames == 3
    assert make_tracker(args, None, 24.0, frames=2).confirm_frames == 3
    assert make_tracker(args, None, 24.0, frames=1).confirm_frames == 1
    assert make_tracker(p.parse_args(["--confirm", "1"]), None, 24.0).confirm_frames == 1
    assert confirm_frames("4") == 4
    for bad in ("0", "-2", "1.5", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole number of frames >= 1"):
            confirm_frames(bad)


def test_presence_refresh_flag_reaches_the_tracker_in_frames() -> None:
    """--presence-refresh S: S seconds at the stream's rate (at least one frame); 0, the default, is off."""
    import argparse

    from realtime.cli_common import add_measure_args, make_tracker, refresh_seconds

    p = argparse.ArgumentParser()
    add_measure_args(p)
    assert make_tracker(p.parse_args([]), None, 24.0).refresh_frames is None
    assert make_tracker(p.parse_args(["--presence-refresh", "0"]), None, 24.0).refresh_frames is None
    assert make_tracker(p.parse_args(["--presence-refresh", "1"]), None, 24.0).refresh_frames == 24
    assert make_tracker(p.parse_args(["--presence-refresh", "0.5"]), None, 30.0).refresh_frames == 15
    assert make_tracker(p.parse_args(["--presence-refresh", "0.01"]), None, 24.0).refresh_frames == 1
    for bad in ("-1", "inf", "nan", "soon"):
        with pytest.raises(argparse.ArgumentTypeError, match="needs seconds >= 0"):
            refresh_seconds(bad)


def _loaded_after(code: str) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["realtime.live_cli", "realtime.segment_cli", "engines", "engines.registry"])
def test_importing_a_command_loads_nothing_heavy(module: str) -> None:
    assert _loaded_after(f"import {module}") == []


@pytest.mark.parametrize("argv", [["--help"], ["--frames", "x"], ["--frames", "-1"], ["--smoothing", "spline"],
                                  ["--masks", "tiff"], ["--igtl-out", "0"], ["--fusion", "0"]])
def test_help_and_bad_arguments_load_nothing_heavy(argv: list[str]) -> None:
    code = ("import sys\nfrom realtime.live_cli import cli\n"
            f"try:\n    code = cli({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
            "assert code in (0, 2), code")
    assert _loaded_after(code) == []


@pytest.mark.parametrize("argv, message", [
    (["--masks", "tiff"], "argument --masks: invalid choice: 'tiff'"),
    (["--igtl-out", "70000"], "is not a TCP port"),
    (["--fusion", "0"], "argument --fusion: 0: the current frame's weight must be in (0, 1] (1 turns fusion off)"),
    (["--fusion", "half"], "argument --fusion: expected the current frame's weight, a number in (0, 1], got 'half'"),
    (["--record-raw", "raw.mp4"], "--record-raw raw.mp4: the raw recording is FFV1 in Matroska"),
    (["--igtl-out", "18944", "--igtl-device", "A" * 21], "an OpenIGTLink device name has 1 to 20 characters"),
])
def test_bad_output_flags_exit_2_in_one_line(argv: list[str], message: str, tmp_path: Path, monkeypatch,
                                             capsys: pytest.CaptureFixture) -> None:
    from realtime.live_cli import cli

    monkeypatch.chdir(tmp_path)
    try:
        code = cli(["--out", str(tmp_path / "out"), *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "measurements.csv").exists()  # refused before the run


def test_igtl_port_in_use_exit_2_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import socket

    from realtime.live_cli import cli

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        code = cli(["--out", str(tmp_path / "out"), "--igtl-out", str(taken.getsockname()[1]), "-q"])
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert code == 2 and "the port is in use" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "measurements.csv").exists()


def test_a_negative_value_is_the_flags_value_not_a_missing_argument() -> None:
    from realtime.cli_common import attach_signed_values

    assert attach_signed_values(["--roi", "-10,0,100,100", "--frames", "-1"]) == ["--roi=-10,0,100,100", "--frames",
                                                                                   "-1"]
    assert attach_signed_values(["--roi", "--headless"]) == ["--roi", "--headless"]
    assert attach_signed_values(["--mm-per-px", "-.1"]) == ["--mm-per-px=-.1"]
