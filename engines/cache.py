"""The engine cache: exported ONNX files and TensorRT plans, keyed by what makes them valid.

Location: ``--cache-dir`` flag > ``MN_SEG_CACHE`` > ``~/.cache/mn-seg/engines``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_VAR = "MN_SEG_CACHE"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder (created on first use)."""
    if override:
        path = Path(override)
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
    else:
        path = Path.home() / ".cache" / "mn-seg" / "engines"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
