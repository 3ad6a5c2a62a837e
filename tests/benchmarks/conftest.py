"""Fixtures of the benchmark tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One engine cache for the benchmark tests: a random-weights model (``--models lunet``) and each of its
    ONNX exports (one per size, batch and precision, keyed by the checkpoint's sha256) are made once, by the
    first test that needs it, instead of once per test. What is benchmarked does not depend on who exported it;
    the exports themselves are tested in tests/engines."""
    return tmp_path_factory.mktemp("bench-engine-cache")
