"""The suite's own guard rails: a hung test fails within minutes (pytest-timeout) instead of eating CI's time."""

from __future__ import annotations

import pytest


def test_a_hang_fails_within_minutes(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed: pip install -e '.[dev]'"
    assert 0 < float(pytestconfig.getini("timeout")) <= 600


def test_the_suite_can_use_every_core(pytestconfig: pytest.Config) -> None:
    """`make test` spreads the test files over one worker per CPU (CI has 20 minutes; with the suite in one process
    a whole CI run took 18.5 of them): pytest-xdist is part of the dev extra."""
    assert pytestconfig.pluginmanager.hasplugin("xdist"), "pytest-xdist is not installed: pip install -e '.[dev]'"
