"""Checkpoint -> something that segments a frame fast (ONNX export, backends behind one Engine
interface, engine cache). Imports flow one way: ``realtime -> engines -> train``."""

from engines.base import Engine, EngineError, EngineInfo
from engines.registry import list_backends, load_engine

__all__ = ["Engine", "EngineError", "EngineInfo", "list_backends", "load_engine"]
