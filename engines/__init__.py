"""Checkpoint -> something that segments a frame fast (ONNX export, backends behind one Engine
interface, engine cache). Imports flow one way: ``realtime -> engines -> train``.

Composites (models made of several networks with glue between them) are registered here, above
both the registry and their own modules: the registry never imports them.
"""

from engines.base import Engine, EngineError, EngineInfo
from engines.registry import list_backends, load_engine, register_composite

register_composite("cascade", "engines.cascade:load_cascade")

__all__ = ["Engine", "EngineError", "EngineInfo", "list_backends", "load_engine"]
