"""Static checks over common, train, engines, realtime, benchmarks, tools and tests: no undefined names, unused
imports or syntax errors (ruff's F and E9) and no line longer than 120 characters (E501, at the line-length of
pyproject.toml's [tool.ruff]); and the shell scripts under benchmarks/ and .ci/ parse (``bash -n``), start with
a bash shebang and are executable."""

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


SHELL_SCRIPTS = sorted([*(REPO / "benchmarks").glob("*.sh"), REPO / ".ci" / "run"])


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shell_script_parses(script: Path) -> None:
    """The scripts the README runs (most only on a lent GPU or for hours) parse and run as ``benchmarks/X.sh``."""
    assert script.read_text().startswith("#!/usr/bin/env bash\n"), f"{script} does not start with a bash shebang"
    assert script.stat().st_mode & 0o111, f"{script} is not executable (git update-index --chmod=+x)"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
