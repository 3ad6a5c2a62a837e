"""Checkpoint -> something that segments a frame fast (ONNX export, backends behind one Engine
interface, engine cache). Imports flow one way: ``realtime -> engines -> train``.

Composites (models made of several networks with glue between them) are registered here, above
both the registry and their own modules: the registry never imports them. Importing ``engines``
is light (no numpy, no torch): :class:`~engines.base.Engine` and :class:`~engines.base.EngineInfo`
load on first use.
"""

from typing import Any

from engines.errors import EngineError
from engines.registry import list_backends, load_engine, register_composite

register_composite("cascade", "engines.cascade:load_cascade")

__all__ = ["Engine", "EngineError", "EngineInfo", "list_backends", "load_engine"]


def __getattr__(name: str) -> Any:
    if name in ("Engine", "EngineInfo"):
        from engines import base

        return getattr(base, name)
    raise AttributeError(f"module 'engines' has no attribute {name!r}")
