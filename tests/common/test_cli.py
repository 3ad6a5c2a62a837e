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
