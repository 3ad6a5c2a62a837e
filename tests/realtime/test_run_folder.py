"""realtime.run_folder: a real second process is refused while the first holds the folder, a killed
run's lock is taken over with a warning, earlier results need --overwrite, bad output paths fail first."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import UserError
from realtime.run_folder import LOCK_NAME, FolderInUse, check_output_path, claim_folder

REPO = Path(__file__).resolve().parents[2]
HOLDER = ("import sys\nfrom realtime.run_folder import claim_folder\n"
          "held = claim_folder(sys.argv[1], command='holder')\nprint('held', flush=True)\nsys.stdin.read()\n"
          "held.release()\n")


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_first_and_gets_it_once_released(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    proc = _holder(folder)
    try:
        with pytest.raises(FolderInUse, match=f"PID {proc.pid}") as info:
            claim_folder(folder)
        assert str(folder) in str(info.value) and info.value.exit_code == 2
    finally:
        proc.communicate("")  # the holder releases and ends
    assert not (folder / LOCK_NAME).exists()
    with claim_folder(folder) as held:
        assert f"pid: {os.getpid()}" in held.lock_path.read_text()
    assert not (folder / LOCK_NAME).exists()


def test_the_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "out"
    proc = _holder(folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"pid: {proc.pid}" in (folder / LOCK_NAME).read_text()  # left behind by the dead run
    with caplog.at_level(logging.WARNING), claim_folder(folder):
        pass
    assert f"PID {proc.pid}" in caplog.text and "stale" in caplog.text


def test_earlier_results_need_overwrite_and_are_removed_with_it(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    (folder / "masks").mkdir(parents=True)
    (folder / "masks" / "000001.png").write_bytes(b"x")
    (folder / "summary.json").write_text("{}")
    outputs = [folder / "measurements.csv", folder / "summary.json", folder / "masks"]
    with pytest.raises(UserError, match="--overwrite") as info:
        claim_folder(folder, outputs)
    assert "summary.json" in str(info.value) and "measurements.csv" not in str(info.value)
    assert not (folder / LOCK_NAME).exists()  # a refused run leaves no lock behind
    with claim_folder(folder, outputs, overwrite=True):
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]
    with claim_folder(tmp_path / "fresh", [tmp_path / "fresh" / "summary.json"]):
        pass  # nothing there yet: no --overwrite needed


@pytest.mark.parametrize("path, suffixes, needle", [
    ("o/v.txt", (".mp4", ".mkv"), "must end in .mp4 or .mkv"),
    ("o", (".png",), "must end in .png"),
    ("/proc/x.mp4", (".mp4",), "cannot write in /proc"),
    (".", None, "is a folder"),
])
def test_bad_output_paths_fail_before_the_run(path: str, suffixes, needle: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=needle):
        check_output_path(path, "--record", suffixes)
    assert check_output_path(tmp_path / "new" / "v.mp4", "--record", (".mp4",)) == tmp_path / "new" / "v.mp4"
    assert [p.name for p in (tmp_path / "new").iterdir()] == []  # the probe file is gone
