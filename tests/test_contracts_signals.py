"""Ctrl-C (SIGINT) and SIGTERM end every long-running command with its documented exit code and finalised
outputs, checked on real processes.

- ``mn-live`` (SIGTERM; SIGINT: tests/realtime/test_live_cli.py::test_sigint_leaves_csv_playable_mp4_and_summary)
  and ``mn-segment`` (SIGINT and SIGTERM): exit 0, every CSV row is in the summary's frame count, the summary
  is final (not partial, exit code 0, says which signal), the video holds every row's frame.
- ``mn-bench`` (SIGTERM): exit 130, the JSON with the rows measured so far and ``interrupted``.
- ``mn-cv`` (SIGTERM to it alone): the training in flight gets it, saves ``last.pt`` and ``mn-cv`` exits 130.
- ``mn-synth``, ``mn-robustness``, ``mn-presence`` (Ctrl-C): exit 130, one line, no traceback.
- ``mn-train``: tests/train/test_trainer.py (SIGINT: ``test_sigint_saves_last_and_exits_130``; SIGTERM to
  its process group with workers: ``test_sigterm_to_the_process_group_with_workers_saves_last``).

All processes start at once (one fixture) and each gets its signal once it is under way, so the module
costs about as long as its slowest command's start, not the sum.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = ["--model", "lunet", "--size", "64x48", "--backend", "torch", "--threads", "1"]


@dataclass
class Stop:
    """One command, the signal it gets once ``ready(folder, stderr)`` says it is under way, and how it ended."""

    module: str
    argv: list[str]
    sig: signal.Signals
    ready: Callable[[Path, str], bool]
    folder: Path = Path()
    proc: subprocess.Popen | None = None
    log: object = None
    signalled: bool = False
    returncode: int | None = None
    stderr: str = ""


def _rows(path: Path) -> int:
    """Data rows written so far (the header row left out)."""
    try:
        return max(0, sum(1 for line in path.read_text().splitlines() if line and not line.startswith("#")) - 1)
    except FileNotFoundError:
        return 0


def _csv_rows_at_least(n: int, relative: str) -> Callable[[Path, str], bool]:
    return lambda folder, err: _rows(folder / relative) >= n


def _logged(text: str) -> Callable[[Path, str], bool]:
    return lambda folder, err: text in err


def _file_says(relative: str, text: str) -> Callable[[Path, str], bool]:
    def says(folder: Path, err: str) -> bool:
        try:
            return text in (folder / relative).read_text()
        except FileNotFoundError:
            return False

    return says


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default action, as in a terminal. A shell starts background jobs
    (``pytest ... &`` in a script) with SIGINT ignored, which Python keeps, so the commands would never
    see the test's SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Stop]:
    from tests.conftest import make_dataset
    from tests.engines._helpers import make_checkpoint
    from tests.realtime.sources._helpers import write_video

    root = tmp_path_factory.mktemp("signals")
    long_clip = write_video(root / "long.mp4", n=4000, size=(96, 64))  # minutes of frames: stopped long before
    data = make_dataset(root / "data", n_patients=4, per_patient=2)
    extra = make_dataset(root / "phantom", n_patients=1, per_patient=2, seed=5)
    checkpoint = make_checkpoint(root / "lunet.pt", "lunet", (64, 48))
    stops = {
        "live-SIGTERM": Stop("realtime.live_cli", ["--source", "synthetic", "--headless", "--presence", "off",
                                                   *ENGINE, "--out", "{folder}"], signal.SIGTERM,
                             _csv_rows_at_least(3, "measurements.csv")),
        **{f"segment-{s.name}": Stop("realtime.segment_cli", [str(long_clip), "--presence", "off", *ENGINE, "--out",
                                                              "{folder}"], s,
                                     _csv_rows_at_least(3, "long/measurements.csv"))
           for s in (signal.SIGINT, signal.SIGTERM)},
        "bench-SIGTERM": Stop("benchmarks.bench_cli", ["--models", "lunet", "--sizes", "64x48", "--backends", "torch",
                                                       "--precisions", "fp32", "--mode", "offline",
                                                       "--frames", "100000", "--warmup", "0", "--no-baseline",
                                                       "--no-plot", "--threads", "1",
                                                       "--json", "{folder}/bench.json"], signal.SIGTERM,
                              _logged("engines.registry: loaded")),
        "cv-SIGTERM": Stop("train.crossval", ["--recipe", "cascade-acq", "--data", str(data),
                                              "--extra-train", str(extra), "--out", "{folder}",
                                              "--folds", "2", "--fold", "0", "--epochs", "1000",
                                              "--size", "128x96", "--crop", "64x32",
                                              "--train-args=--threads 1 --width 0.25", "-q"], signal.SIGTERM,
                           # mn-train's progress bar of epoch 1: it is in its training loop, its handlers set
                           _file_says("fold-0/localiser.log", "epoch 1/1000")),
        "synth-SIGINT": Stop("realtime.synth_cli", ["--phantom", "--frames", "2000", "--out", "{folder}/p.mp4",
                                                    "--truth", "{folder}/p.npz"], signal.SIGINT, _logged("mn-synth:")),
        "robustness-SIGINT": Stop("benchmarks.robustness", [*ENGINE, "--data", str(data), "--split", "none",
                                                            "--json", "{folder}/r.json"], signal.SIGINT,
                                  _logged("engines.registry: loaded")),
        "presence-SIGINT": Stop("benchmarks.presence", ["--model", str(checkpoint), "--backend", "torch",
                                                        "--threads", "1", "--data", str(data), "--split", "none",
                                                        "--phantom", "48", "--json", "{folder}/p.json"], signal.SIGINT,
                                _logged("engines.registry: loaded")),
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "MN_SEG_CACHE": str(root / "cache")}
    env.pop("DISPLAY", None)
    for name, stop in stops.items():
        stop.folder = root / name
        if any(a.startswith("{folder}/") for a in stop.argv):
            stop.folder.mkdir()  # the command writes files into it (a run folder the command makes itself)
        argv = [a.replace("{folder}", str(stop.folder)) for a in stop.argv]
        stop.log = open(root / f"{name}.err", "w")
        stop.proc = subprocess.Popen([sys.executable, "-m", stop.module, *argv], cwd=root, env=env,
                                     stdout=subprocess.DEVNULL, stderr=stop.log, text=True, start_new_session=True,
                                     preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and any(s.proc.poll() is None and not s.signalled for s in stops.values()):
            for name, stop in stops.items():
                if not stop.signalled and stop.proc.poll() is None and stop.ready(stop.folder,
                                                                                  (root / f"{name}.err").read_text()):
                    stop.proc.send_signal(stop.sig)
                    stop.signalled = True
            time.sleep(0.1)
        for name, stop in stops.items():
            stop.returncode = stop.proc.wait(timeout=180) if stop.signalled else stop.proc.poll()
            stop.stderr = (root / f"{name}.err").read_text()
    finally:
        for stop in stops.values():  # only what was started here: each process's own group (mn-cv's mn-train)
            if stop.proc.poll() is None:
                os.killpg(stop.proc.pid, signal.SIGKILL)
                stop.proc.wait()
            stop.log.close()
    return stops


def _ended(stop: Stop, code: int) -> None:
    assert stop.signalled, (f"{stop.module} ended before it was signalled (exit {stop.returncode}):\n"
                            f"{stop.stderr[-2000:]}")
    assert stop.returncode == code, stop.stderr[-2000:]
    assert "Traceback" not in stop.stderr


def _finalised(folder: Path, sig: signal.Signals) -> dict:
    """Every row is counted in the final summary, which names the signal; the video has every row's frame."""
    from realtime.sinks.csv_sink import read_csv
    from tests.realtime._helpers import decoded_frames

    summary = json.loads((folder / "summary.json").read_text())
    rows = read_csv(folder / "measurements.csv")
    assert summary["partial"] is False and summary["exit_code"] == 0
    assert f"stopped by {sig.name}" in summary["ended_because"]
    assert len(rows) == summary["frames_processed"] >= 3
    assert decoded_frames(folder / "overlay.mp4") == len(rows)
    assert (folder / "plot.png").is_file() and (folder / "report.html").is_file()
    assert not [p for p in folder.iterdir() if ".tmp" in p.name or p.name == ".mn-seg.lock"]
    return summary


def test_live_sigterm_finalises_every_file(stopped: dict[str, Stop]) -> None:
    stop = stopped["live-SIGTERM"]
    _ended(stop, 0)
    _finalised(stop.folder, signal.SIGTERM)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_segment_stopped_finalises_every_file(stopped: dict[str, Stop], sig: signal.Signals) -> None:
    stop = stopped[f"segment-{sig.name}"]
    _ended(stop, 0)
    summary = _finalised(stop.folder / "long", sig)
    assert summary["frames_processed"] < 4000
    batch = json.loads((stop.folder / "batch-summary.json").read_text())
    assert batch["exit_code"] == 0 and batch["failed"] == 0
    (result,) = batch["results"]
    assert result["exit_code"] == 0 and result["frames_processed"] == summary["frames_processed"]
    assert f"stopped by {sig.name}" in result["ended_because"]


def test_bench_stopped_exits_130(stopped: dict[str, Stop]) -> None:
    """mn-bench --help: 130 stopped by Ctrl-C / SIGTERM (the rows measured so far are written)."""
    stop = stopped["bench-SIGTERM"]
    _ended(stop, 130)
    result = json.loads((stop.folder / "bench.json").read_text())
    assert "SIGTERM" in result["interrupted"]
    (run,) = result["runs"]  # the row of the combination it was measuring, with the frames measured so far
    assert run["status"] == "stopped" and run["frames"] < 100000


def test_cv_sigterm_stops_the_training_in_flight_exit_130(stopped: dict[str, Stop]) -> None:
    """mn-cv passes SIGTERM on to its mn-train, which finishes its batch, saves last.pt and exits 130; so does
    mn-cv (run it again to continue)."""
    stop = stopped["cv-SIGTERM"]
    _ended(stop, 130)
    part = stop.folder / "fold-0" / "localiser"
    assert (part / "last.pt").is_file() and not (part / ".done").exists()
    log = (stop.folder / "fold-0" / "localiser.log").read_text()
    assert "SIGTERM received" in log and f"saved {part / 'last.pt'}; continue" in log  # saved on the way out


@pytest.mark.parametrize("name", ["synth-SIGINT", "robustness-SIGINT", "presence-SIGINT"])
def test_interrupted_commands_exit_130(stopped: dict[str, Stop], name: str) -> None:
    stop = stopped[name]
    _ended(stop, 130)
    assert stop.stderr.rstrip().endswith("interrupted"), stop.stderr[-500:]
