"""Small pieces shared by the command-line entry points of every package."""

from __future__ import annotations

import argparse
import logging
import os

import torch

from train.errors import UserError
from train.preprocess import DEFAULT_SIZE, parse_size


#: Third-party loggers kept at WARNING unless -vv.
NOISY_LIBRARIES = ("onnx_ir", "onnxscript", "torch.onnx", "torch._dynamo", "torch.export")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in NOISY_LIBRARIES:  # their INFO lines (ONNX graph passes) drown ours; -vv shows them
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v debug, -vv also the libraries' own)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


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
    if threads:
        torch.set_num_threads(threads)
    else:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
