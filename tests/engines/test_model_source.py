"""engines.model_source: a model's format and, for a checkpoint, its architecture, decided once when it is
resolved; the composites the registry dispatches on are registered from above (engines/__init__)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import registry
from engines.model_source import LoadOptions, ModelSource, checkpoint_architecture, format_of, model_source
from tests.engines._helpers import make_checkpoint


@pytest.mark.parametrize(("name", "fmt"), [("a.pt", "checkpoint"), ("a.onnx", "onnx"), ("a.ENGINE", "plan"),
                                           ("a.trt", "plan"), ("a.weights", "checkpoint")])
def test_format_of(name: str, fmt: str) -> None:
    assert format_of(Path(name)) == fmt


def test_the_architecture_is_read_once_from_the_checkpoint(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "best.pt", "lunet", (64, 48))
    source = model_source(ckpt)
    assert (source.kind, source.format, source.architecture, source.name) == ("checkpoint", "checkpoint", "lunet",
                                                                               "best")
    assert registry.resolve_model(ckpt) == source
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert checkpoint_architecture(tmp_path / "junk.pt") is None and checkpoint_architecture(tmp_path / "no.pt") is None
    assert ModelSource("onnx", "onnx", Path("m.onnx"), "m").architecture is None
    assert LoadOptions().notes == [] and LoadOptions().batch == 1


def test_composites_are_registered_from_above() -> None:
    import engines  # noqa: F401  registers the cascade

    assert "cascade" in registry.COMPOSITES
    calls = []
    registry.register_composite("test-composite", lambda source, backend, options: calls.append(source))
    try:
        registry.COMPOSITES["test-composite"]("s", None, None)
        assert calls == ["s"]
    finally:
        del registry.COMPOSITES["test-composite"]
