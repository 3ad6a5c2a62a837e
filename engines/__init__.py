"""Checkpoint -> something that segments a frame fast (ONNX export, backends behind one Engine
interface, engine cache). Imports flow one way: ``realtime -> engines -> train``."""
