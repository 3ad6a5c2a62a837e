"""Every documented exit code of every command, in one literal table, each produced by a real run.

``EXIT_CODES`` lists, per console script, the codes its ``--help`` documents and what produces each: a
run in this module (``HERE``: :data:`RUNS`, the console script's entry point called with arguments that
cause the code, or the signal runs of tests/test_contracts_signals.py) or, for a run that is slow or
already made elsewhere, the test that makes it (it must exist and assert that code). The table is checked
against ``setup.cfg``'s console scripts, each command's ``--help`` and README's exit-code table, so a code
that is documented but never produced, produced but not documented, or documented in one place only
fails here.
"""

from __future__ import annotations

import ast
import configparser
import errno
import importlib
import json
import os
import re
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
HERE = "tests/test_contracts_exit_codes.py::test_a_real_run_exits_with_its_documented_code"
SIGNALS = "tests/test_contracts_signals.py"
CONTRACTS = "tests/test_contracts.py"

EXIT_CODES: dict[str, dict[int, str]] = {
    "mn-live": {
        0: f"{CONTRACTS}::test_live_csv_header_uncalibrated",  # and stopped by SIGINT / SIGTERM: 0 as well
        2: HERE, 3: HERE, 4: HERE, 5: HERE,
    },
    "mn-segment": {0: f"{CONTRACTS}::test_segment_csv_header", 2: HERE, 3: HERE, 4: HERE, 5: HERE, 6: HERE},
    "mn-eval": {0: f"{CONTRACTS}::test_eval_json", 2: HERE},
    "mn-bench": {0: f"{CONTRACTS}::test_bench_json", 2: HERE, 130: f"{SIGNALS}::test_bench_stopped_exits_130"},
    "mn-export": {
        0: f"{CONTRACTS}::test_export_json",
        1: "tests/engines/test_export_cli.py::test_failed_verification_exits_1_and_deletes_the_export",
        2: HERE,
    },
    "mn-train": {
        0: "tests/train/test_crossval.py::test_time_budget_ends_the_run_normally",
        2: HERE,
        130: "tests/train/test_trainer.py::test_sigint_saves_last_and_exits_130",
    },
    "mn-cv": {
        0: "tests/train/test_crossval.py::test_tiny_cascade_cross_validation_end_to_end_and_resume",
        1: HERE, 2: HERE,
        130: f"{SIGNALS}::test_cv_sigterm_stops_the_training_in_flight_exit_130",
    },
    "mn-synth": {0: HERE, 2: HERE, 130: f"{SIGNALS}::test_interrupted_commands_exit_130"},
    "mn-robustness": {
        0: "tests/benchmarks/test_robustness.py::test_cli_end_to_end_with_a_small_real_engine",
        2: HERE, 130: f"{SIGNALS}::test_interrupted_commands_exit_130",
    },
    "mn-presence": {
        0: "tests/benchmarks/test_presence.py::test_command_writes_json_and_markdown",
        2: HERE, 130: f"{SIGNALS}::test_interrupted_commands_exit_130",
    },
}
"""command -> {documented exit code: the test whose real run produces it}."""

ANY_COMMAND: tuple[tuple[int, str], ...] = (
    (1, "tests/common/test_errors.py::test_output_errors_exit_5_and_bugs_one_line_exit_1"),
    (141, "tests/common/test_errors.py::test_a_reader_that_stops_reading_ends_the_command_quietly"),
)
"""README: any command exits 1 on an unexpected error (a bug), one line, no traceback, and 141, quietly, when
the reader of its output has gone (``run_cli``); not in each command's ``--help``."""

ENGINE = ["--model", "lunet", "--size", "64x48", "--backend", "torch", "--threads", "1", "-q"]


# --------------------------------------------------------------------------------------------- the table
def console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def entry_point(command: str) -> Callable:
    module, func = console_scripts()[command].split(":")
    return getattr(importlib.import_module(module), func)


def documented_in_help(text: str) -> set[int]:
    """The codes of the help's ``Exit codes:`` paragraph: each number that opens it or follows ``,`` / ``;``."""
    paragraph = " ".join(text[text.index("Exit codes:"):].split())
    return {int(n) for n in re.findall(r"(?:Exit codes:|[,;])\s*(\d+)\s", paragraph)}


def readme_table() -> dict[int, str]:
    start = README.index("| exit code | meaning |")
    table = README[start:README.index("\n\n", start)]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.*) \|$", table, flags=re.M)}


def test_the_table_covers_every_console_script() -> None:
    assert set(EXIT_CODES) == set(console_scripts())


@pytest.mark.parametrize("command", sorted(EXIT_CODES))
def test_help_documents_exactly_these_codes(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        entry_point(command)(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert documented_in_help(text) == set(EXIT_CODES[command])
    # a flag's default is shown only where it says something (common.cli.HelpFormatter)
    assert "(default: None)" not in text and "(default: False)" not in text


def test_the_readme_table_documents_exactly_these_codes() -> None:
    """A row naming commands (`mn-...`) is theirs; a row naming none, or saying "any command", is every
    command's. Every command also has the README's codes of :data:`ANY_COMMAND`."""
    every = set(EXIT_CODES)
    readme: dict[str, set[int]] = {c: set() for c in every}
    for code, meaning in readme_table().items():
        named = set(re.findall(r"`(mn-[a-z]+)`", meaning))
        for command in (every if not named or "any command" in meaning else named):
            readme[command].add(code)
    assert readme == {c: set(codes) | {code for code, _ in ANY_COMMAND} for c, codes in EXIT_CODES.items()}


def _test_source(nodeid: str) -> str:
    path, name = nodeid.split("::")
    tree = ast.parse((REPO / path).read_text())
    funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    assert funcs, f"{nodeid} does not exist"
    return ast.get_source_segment((REPO / path).read_text(), funcs[0]) or ""


@pytest.mark.parametrize("command, code, nodeid", [
    (command, code, nodeid) for command, codes in EXIT_CODES.items() for code, nodeid in codes.items()
] + [("any", *code) for code in ANY_COMMAND])
def test_every_code_is_produced_by_a_named_real_run(command: str, code: int, nodeid: str) -> None:
    source = _test_source(nodeid)
    if nodeid == HERE:
        assert (command, code) in {(c, k) for c, k, _ in RUNS}, f"no run in RUNS makes {command} exit {code}"
    elif code != 0:  # the test must assert this very code
        assert re.search(rf"\b{code}\b", source), f"{nodeid} does not mention exit code {code}"


# --------------------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic inputs: a 24-frame clip, the same cut in half (it ends after about 10 frames), a small
    annotated dataset and a random-weights checkpoint."""
    from tests.conftest import make_dataset
    from tests.engines._helpers import make_checkpoint
    from tests.realtime.sources._helpers import write_video

    root = tmp_path_factory.mktemp("exit-codes")
    good = write_video(root / "good.mp4", n=24, size=(160, 120))
    cut = root / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {"root": root, "good": good, "cut": cut, "data": make_dataset(root / "data", n_patients=3, per_patient=1),
            "ckpt": make_checkpoint(root / "lunet.pt", "lunet", (64, 48)), "cache": root / "cache"}


def _engine_fails_after_3_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.backends.torch_backend import TorchEngine

    real, calls = TorchEngine._infer, {"n": 0}

    def infer(self, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("the GPU fell off the bus")
        return real(self, batch)

    monkeypatch.setattr(TorchEngine, "_infer", infer)


def _disk_full_after_3_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC on measurements.csv once its header and 3 rows are written (other files write on)."""
    import realtime.sinks.csv_sink as csv_sink

    real, writes = csv_sink.os.write, {"n": 0}

    def write(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("measurements.csv"):
            writes["n"] += 1
            if writes["n"] > 4:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(csv_sink.os, "write", write)


FAULTS = {"engine": _engine_fails_after_3_calls, "disk-full": _disk_full_after_3_rows}
LIVE = ["--headless", "--no-video", "--out", "{out}", *ENGINE, "--cache-dir", "{cache}"]
SEGMENT = ["--no-video", "--out", "{out}", *ENGINE, "--cache-dir", "{cache}"]
PHANTOM = ["--source", "synthetic", "--no-drop", "--frames", "8", "--presence", "off"]
RUNS: list[tuple[str, int, list[str]]] = [
    ("mn-live", 2, ["--source", "{root}/missing.mp4", *LIVE]),
    ("mn-live", 3, ["--source", "{cut}", *LIVE]),
    ("mn-live", 4, [*PHANTOM, *LIVE, "fault=engine"]),
    ("mn-live", 5, [*PHANTOM, *LIVE, "fault=disk-full"]),
    ("mn-segment", 2, ["{root}/missing.mp4", *SEGMENT]),
    ("mn-segment", 3, ["{cut}", *SEGMENT]),
    ("mn-segment", 4, ["{good}", *SEGMENT, "fault=engine"]),
    ("mn-segment", 5, ["{good}", *SEGMENT, "fault=disk-full"]),
    ("mn-segment", 6, ["{good}", "{cut}", *SEGMENT]),
    ("mn-eval", 2, ["--checkpoint", "{ckpt}", "--data", "{root}/missing"]),
    ("mn-bench", 2, ["--models", "lunet", "--batch", "0", "--json", "{out}/b.json"]),
    ("mn-export", 2, ["--checkpoint", "{root}/missing.pt"]),
    ("mn-train", 2, ["--data", "{root}/missing", "--out", "{out}"]),
    ("mn-cv", 1, ["--recipe", "dlunet-paper", "--data", "{data}", "--out", "{out}", "--folds", "3", "--fold", "0",
                  "--train-args=--no-such-flag", "-q"]),
    ("mn-cv", 2, ["--recipe", "no-such-recipe", "--data", "{data}", "--out", "{out}"]),
    ("mn-synth", 0, ["--phantom", "--frames", "2", "--out", "{out}/p.mp4", "--truth", "{out}/p.npz", "-q"]),
    ("mn-synth", 2, ["--image", "{root}/missing.png", "--frames", "2", "--out", "{out}/x.mp4", "--truth",
                     "{out}/x.npz"]),
    ("mn-robustness", 2, ["--model", "lunet", "--data", "{root}/missing", "--json", "{out}/r.json"]),
    ("mn-presence", 2, ["--data", "{root}/missing", "--json", "{out}/p.json"]),
]
"""(command, exit code, arguments): ``{name}`` is an input of the fixture, ``{out}`` a fresh folder;
``fault=NAME`` injects a fault into the run (:data:`FAULTS`): an engine or a disk that fails mid-run."""


@pytest.mark.parametrize("command, code, argv", RUNS, ids=[f"{c}-{k}" for c, k, _ in RUNS])
def test_a_real_run_exits_with_its_documented_code(command: str, code: int, argv: list[str], inputs: dict[str, Path],
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    names = {k: str(v) for k, v in inputs.items()} | {"out": str(out)}
    args = [a.format(**names) for a in argv if not a.startswith("fault=")]
    for fault in (a.split("=", 1)[1] for a in argv if a.startswith("fault=")):
        FAULTS[fault](monkeypatch)
    try:
        got = entry_point(command)(args)
    except SystemExit as exc:  # argparse's own refusals
        got = exc.code
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    if code in (1, 2):  # refused or failed: one line saying why, from the command (exit 1 of mn-cv names the log)
        assert [line for line in err.splitlines() if line.startswith(f"{command}: error: ")], err
    if command in ("mn-live", "mn-segment") and code in (3, 4, 5, 6):
        check_finalised(out, code)


def check_finalised(out: Path, code: int) -> None:
    """README: the frames before a failure are measured and kept, and every file is finalised."""
    from realtime.sinks.csv_sink import read_csv

    folders = [out] if (out / "summary.json").is_file() else sorted(p for p in out.iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["partial"] is False and summary["exit_code"] in (0, code if code != 6 else 3)
        rows = len(read_csv(folder / "measurements.csv"))
        if summary["exit_code"] == 5:  # the frame in flight is measured; its row is what the disk refused
            assert rows == summary["frames_processed"] - 1 > 0
        else:
            assert rows == summary["frames_processed"] > 0
    if (out / "batch-summary.json").is_file():
        assert json.loads((out / "batch-summary.json").read_text())["exit_code"] == code
