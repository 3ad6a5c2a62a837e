"""Versions of the libraries that decide what an engine computes and how fast (recorded in every
results file and run summary)."""

from __future__ import annotations

from importlib import metadata

from train.checkpoint import code_version

LIBRARIES = ("torch", "onnxruntime", "onnx", "tensorrt", "opencv-python", "av", "numpy")


def library_versions() -> dict[str, str | None]:
    """``{"mn-seg": version+commit, library: version or None}``."""
    out: dict[str, str | None] = {"mn-seg": code_version()}
    for dist in LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
