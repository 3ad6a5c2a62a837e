"""Static checks over common, train, engines, realtime, benchmarks, tools and tests: no undefined names, unused
imports or syntax errors (ruff's F and E9) and no line longer than 120 characters (E501, at the line-length of
pyproject.toml's [tool.ruff])."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_pyflakes_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    proc = subprocess.run([ruff, "check", "--select", "F,E9,E501", "--no-cache", "common", "train", "engines",
                           "realtime", "benchmarks", "tools", "tests"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
