"""common.cli: the logging flags and levels every command shares."""

from __future__ import annotations

import argparse
import logging

from common.cli import NOISY_LIBRARIES, add_logging_args, setup_logging


def test_logging_flags() -> None:
    p = argparse.ArgumentParser()
    add_logging_args(p)
    assert p.parse_args(["-vv"]).verbose == 2 and p.parse_args(["-q"]).quiet
    setup_logging(verbose=0)
    assert logging.getLogger(NOISY_LIBRARIES[0]).level == logging.WARNING
    setup_logging(verbose=2)
    assert logging.getLogger(NOISY_LIBRARIES[0]).level == logging.DEBUG


def test_help_shows_only_defaults_that_say_something() -> None:
    import argparse

    from common.cli import HelpFormatter

    p = argparse.ArgumentParser(prog="mn-x", formatter_class=HelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default a new one)")
    p.add_argument("--fps", type=float, default=None, help="frame rate")
    p.add_argument("--flag", action="store_true", help="a switch")
    p.add_argument("--threshold", type=float, default=0.5, help="mask threshold")
    p.add_argument("--batch", type=int, default=4, help="frames per batch (default 4)")
    text = " ".join(p.format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "mask threshold (default: 0.5)" in text and "(default 4) (default" not in text
