"""Fixtures of the realtime tests."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An engine cache for the module's commands (random-weights checkpoints and ONNX exports), in
    ``MN_SEG_CACHE`` while the module's tests run and restored after them (the next module does not
    inherit it)."""
    path = str(tmp_path_factory.mktemp("engine-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MN_SEG_CACHE", path)
        yield path
