"""Saving matplotlib figures as files people open while a run may still be writing them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically: to a temporary file beside it (same extension, so the format is
    the path's), then ``os.replace``; ``path`` always holds a whole image, and the temporary file never stays
    behind, even when saving fails. The caller closes the figure."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
