"""Small pieces shared by the command-line entry points of every package (torch-free)."""

from __future__ import annotations

import argparse
import logging

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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with a flag's default only where it says something: not for ``None`` (the help says what
    happens then) or ``False`` (a switch), nor when the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)
