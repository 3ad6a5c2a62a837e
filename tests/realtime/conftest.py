"""Fixtures of the realtime tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An engine cache for the module's commands (random-weights checkpoints and ONNX exports)."""
    path = str(tmp_path_factory.mktemp("engine-cache"))
    os.environ["MN_SEG_CACHE"] = path
    return path
