"""Writing a benchmark's report: its JSON, the same as Markdown beside it, the Markdown printed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_report(out: Path, report: dict[str, Any], markdown: str, md: Path | None = None) -> Path:
    """Write ``report`` as JSON to ``out`` and ``markdown`` to ``md`` (default: ``out`` with ``.md``), print the
    Markdown and log both paths; returns the Markdown's path."""
    md = md or out.with_suffix(".md")
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md.write_text(markdown, encoding="utf-8")
    print(markdown)
    log.info("wrote %s and %s", out, md)
    return md
