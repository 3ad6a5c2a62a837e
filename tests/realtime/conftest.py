"""Fixtures of the realtime tests."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(scope="session")
def _engine_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The folder behind ``cache``, one for the session: a random-weights model and each of its ONNX exports
    (keyed by the checkpoint's sha256, size, batch and precision) are made by the first module that needs them
    instead of again by every module (mn-live's window test, test_live_cli and test_segment_cli all run the
    random L-UNet at 64x48 on onnxruntime)."""
    return str(tmp_path_factory.mktemp("engine-cache"))


@pytest.fixture(scope="module")
def cache(_engine_cache_folder: str) -> Iterator[str]:
    """An engine cache for the module's commands (random-weights checkpoints and ONNX exports), in
    ``MN_SEG_CACHE`` while the module's tests run and restored after them (the next module does not
    inherit the variable; the folder is shared by the session's realtime modules)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MN_SEG_CACHE", _engine_cache_folder)
        yield _engine_cache_folder
