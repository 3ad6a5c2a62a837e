"""Writing a benchmark's report: its JSON, the same as Markdown beside it, the Markdown printed."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from datetime import date
from pathlib import Path
from typing import Any, Sequence

from common.errors import UserError

log = logging.getLogger(__name__)


def report_paths(json_path: str | None, md_path: str | None, kind: str, stem: str) -> tuple[Path, Path]:
    """Where a report goes: ``json_path`` (default ``benchmarks/results/KIND-STEM-HOST-DATE.json``) and
    ``md_path`` (default the JSON's with ``.md``), both checked writable before any work is done.

    Raises:
        UserError: a folder that does not exist or cannot be written (named, with the file).
    """
    out = Path(json_path or f"benchmarks/results/{kind}-{stem}-{platform.node()}-{date.today()}.json")
    md = Path(md_path) if md_path else out.with_suffix(".md")
    for path in (out, md):
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise UserError(f"cannot write {path}: the folder {path.parent} does not exist or is not writable")
    return out, md


def report_header(benchmark: str, prog: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """The keys every benchmark report starts with: ``benchmark``, ``date``, ``machine`` (host and platform) and
    ``command`` (``prog`` and ``argv``, the process's own arguments when ``argv`` is None), to be extended."""
    return {"benchmark": benchmark, "date": date.today().isoformat(),
            "machine": {"host": platform.node(), "platform": platform.platform()},
            "command": " ".join([prog, *(argv if argv is not None else sys.argv[1:])])}


def write_report(out: Path, report: dict[str, Any], markdown: str, md: Path | None = None) -> Path:
    """Write ``report`` as JSON to ``out`` and ``markdown`` to ``md`` (default: ``out`` with ``.md``), print the
    Markdown and log both paths; returns the Markdown's path."""
    md = md or out.with_suffix(".md")
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md.write_text(markdown, encoding="utf-8")
    print(markdown)
    log.info("wrote %s and %s", out, md)
    return md


def print_and_write(markdown: str, report: dict[str, Any], json_path: Path | None, md_path: Path | None) -> None:
    """Print ``markdown``; write ``report`` as JSON to ``json_path`` and ``markdown`` to ``md_path`` where given."""
    print(markdown)
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if md_path:
        md_path.write_text(markdown + "\n", encoding="utf-8")
