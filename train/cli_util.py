"""Command-line helpers that need torch (devices, threads) or the preprocessing (sizes).

The torch-free ones (logging set-up and flags) live in :mod:`common.cli` and are re-exported here. torch is
imported where a device or the threads are set, not here: a command's ``--help`` builds its parser without it.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from common.cli import NOISY_LIBRARIES, add_logging_args, setup_logging
from train.errors import UserError
from train.preprocess import DEFAULT_SIZE, parse_size

if TYPE_CHECKING:
    import torch


__all__ = ["NOISY_LIBRARIES", "add_logging_args", "add_size_arg", "resolve_device", "set_threads", "setup_logging"]


def add_size_arg(parser: argparse.ArgumentParser, default: tuple[int, int] | None = DEFAULT_SIZE) -> None:
    parser.add_argument(
        "--size",
        type=_size_type,
        default=default,
        metavar="WxH",
        help=f"network input size, width x height (default {default[0]}x{default[1]})" if default else
        "network input size, width x height (default: the checkpoint's)",
    )


def _size_type(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a clear error when CUDA is asked for and absent."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was requested but this PyTorch sees no CUDA GPU "
                            f"(torch {torch.__version__}); use --device cpu")
        return torch.device(name)
    if name != "cpu":
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    return torch.device("cpu")


def set_threads(threads: int | None) -> None:
    """Set the intra-op thread count (default: all cores)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    else:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                                  os.cpu_count() or 1))
