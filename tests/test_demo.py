"""``make demo``: the README's first command, run headless on 12 frames with the default model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engines.registry import BUNDLED_MODELS

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 12  # the frame count is not what is tested (the default, 120, is the Makefile's)


@pytest.mark.slow
def test_make_demo_writes_the_four_files(tmp_path):
    venv = Path(sys.prefix)
    if not (venv / ".installed").is_file():
        pytest.skip("not running inside the Makefile's virtual environment (run the tests with make test)")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    assert "mn-realtime" in BUNDLED_MODELS  # the package ships its default model: its absence is a failure
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MN_SEG_CACHE"] = str(tmp_path / "cache")
    out = tmp_path / "demo"
    proc = subprocess.run(["make", "-C", str(ROOT), "demo", f"VENV={venv}", f"DEMO_FRAMES={FRAMES}", f"DEMO_OUT={out}"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = {p.suffix: p for p in out.rglob("*") if p.is_file()}
    for suffix in (".csv", ".mp4", ".json", ".png"):
        assert suffix in files, f"demo wrote no {suffix}: {sorted(map(str, out.rglob('*')))}"
        assert files[suffix].stat().st_size > 0
    rows = [line for line in files[".csv"].read_text().splitlines() if line and not line.startswith("#")]
    assert len(rows) == 1 + FRAMES  # header + one row per frame
    assert f"frames processed {FRAMES}" in proc.stdout
    assert "random weights" not in proc.stdout
    # the README's first command, run a second time: it replaces the first run's files instead of refusing
    first = files[".csv"].stat().st_mtime_ns
    again = subprocess.run(["make", "-C", str(ROOT), "demo", f"VENV={venv}", f"DEMO_FRAMES={FRAMES}",
                            f"DEMO_OUT={out}"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert files[".csv"].stat().st_mtime_ns > first
