"""Checkpoints with random weights for an architecture name: for speed measurements only.

``mn-bench --models lunet`` or ``mn-live --model lunet`` accept a bare architecture name; the
network is built with its Keras-style random initialisation (seed 0), saved once into the engine
cache and loaded like any checkpoint. Every engine made this way carries a note saying its masks
are meaningless, and the commands log a warning.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

from engines.base import RANDOM_WEIGHTS_NOTE  # noqa: F401  (re-exported: where its callers import it)
from engines.cache import cache_dir as default_cache_dir
from train.checkpoint import save_checkpoint
from train.models import build_model, check_input_size, list_models
from train.preprocess import DEFAULT_SIZE, preprocessing_config

log = logging.getLogger(__name__)


def is_architecture_name(model: str | os.PathLike) -> bool:
    """True for a registered architecture name that is not also an existing file."""
    text = os.fspath(model)
    return text in list_models() and not Path(text).exists()


def random_checkpoint(name: str, size: tuple[int, int] = DEFAULT_SIZE, cache_dir: str | os.PathLike | None = None,
                      seed: int = 0) -> Path:
    """Path of a checkpoint of ``name`` with random weights at ``size`` (written on first use)."""
    check_input_size(name, size)
    path = default_cache_dir(cache_dir) / f"random-{name}-{size[0]}x{size[1]}-seed{seed}.pt"
    if not path.is_file():
        torch.manual_seed(seed)
        model = build_model(name)
        config = {"model": {"name": name, "kwargs": {}}, "preprocessing": preprocessing_config(size),
                  "random_weights": True, "seed": seed}
        # runs sharing the cache may write it at once (each the same bytes): each through its own
        # temporary file, so no writer renames another's away or truncates it mid-write
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_checkpoint(tmp, model, config)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("wrote a random-weights %s checkpoint to %s", name, path)
    return path
