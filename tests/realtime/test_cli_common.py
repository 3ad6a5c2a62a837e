"""realtime.cli_common: the shared flags agree with the modules they configure, and the commands start
light (no numpy, torch or OpenCV before the arguments are known good)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from realtime.cli_common import PRESENCE_CHOICES, SMOOTHING_CHOICES
from realtime.presence import PRESENCE_MODES
from realtime.tracker import SMOOTHING_METHODS

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "cv2", "av", "onnxruntime", "matplotlib")


def test_choices_agree_with_the_modules() -> None:
    assert tuple(SMOOTHING_CHOICES) == tuple(SMOOTHING_METHODS)
    assert tuple(PRESENCE_CHOICES) == tuple(PRESENCE_MODES)


def _loaded_after(code: str) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["realtime.live_cli", "realtime.segment_cli", "engines", "engines.registry"])
def test_importing_a_command_loads_nothing_heavy(module: str) -> None:
    assert _loaded_after(f"import {module}") == []


@pytest.mark.parametrize("argv", [["--help"], ["--frames", "x"], ["--frames", "-1"], ["--smoothing", "spline"]])
def test_help_and_bad_arguments_load_nothing_heavy(argv: list[str]) -> None:
    code = ("import sys\nfrom realtime.live_cli import cli\n"
            f"try:\n    code = cli({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
            "assert code in (0, 2), code")
    assert _loaded_after(code) == []
