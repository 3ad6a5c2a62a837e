"""benchmarks.report_files: where a report goes (checked before any work) and how it is written."""

from __future__ import annotations

import json
import platform
import sys
from datetime import date
from pathlib import Path

import pytest

from benchmarks.report_files import report_header, report_paths, write_report
from common.errors import UserError


def test_report_paths_default_given_and_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="benchmarks/results does not exist"):  # no results folder here
        report_paths(None, None, "window", "mn-realtime")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    out, md = report_paths(None, None, "window", "mn-realtime")
    assert out == Path(f"benchmarks/results/window-mn-realtime-{platform.node()}-{date.today()}.json")
    assert md == out.with_suffix(".md")
    out, md = report_paths(str(tmp_path / "a.json"), None, "x", "y")
    assert (out, md) == (tmp_path / "a.json", tmp_path / "a.md")
    with pytest.raises(UserError, match=r"cannot write .*b\.md: the folder .*nowhere does not exist"):
        report_paths(str(tmp_path / "a.json"), str(tmp_path / "nowhere" / "b.md"), "x", "y")


def test_write_report_writes_both_and_prints_the_markdown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    md = write_report(tmp_path / "r.json", {"a": 1}, "# R\n")
    assert md == tmp_path / "r.md" and md.read_text() == "# R\n"
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert "# R" in capsys.readouterr().out


def test_report_header_names_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    head = report_header("window", "python -m benchmarks.window_bench", ["--fold", "2"])
    assert head == {"benchmark": "window", "date": date.today().isoformat(),
                    "machine": {"host": platform.node(), "platform": platform.platform()},
                    "command": "python -m benchmarks.window_bench --fold 2"}
    monkeypatch.setattr(sys, "argv", ["x", "--images", "4"])
    assert report_header("b", "prog", None)["command"] == "prog --images 4"
    assert report_header("b", "prog", [])["command"] == "prog"
