"""The suite's own guard rails: a hung test fails within minutes (pytest-timeout) instead of eating CI's time."""

from __future__ import annotations

import pytest


def test_a_hang_fails_within_minutes(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed: pip install -e '.[dev]'"
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
