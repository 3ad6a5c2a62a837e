"""Checkpoints: weights plus a JSON-able config, loaded with ``torch.load(weights_only=True)``.

A checkpoint file is a dict::

    {"format": "mn-seg-checkpoint", "format_version": 1,
     "config": {...JSON-able...},          # architecture, preprocessing, data, split, metrics, code version
     "state_dict": {name: tensor},         # model weights (and BN buffers)
     "train_state": {...} | absent}        # only in last.pt: optimiser, scheduler, epoch, RNG

``config["model"] = {"name": ..., "kwargs": {...}}`` is enough to rebuild the network from the
registry; nothing in the file is ever executed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT = "mn-seg-checkpoint"
FORMAT_VERSION = 1


def code_version() -> str:
    """The installed package version, plus the git commit when run from a checkout."""
    try:
        version = metadata.version("mn-seg")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+g{commit}" if commit else version


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model behind DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: dict, train_state: dict | None = None) -> None:
    """Write a checkpoint atomically (temporary file, then rename), so a crash never leaves half a file."""
    json.dumps(config)  # fail early on a config that is not JSON-able
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_failure(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` failed, in a few words (torch's own message is a page about ``weights_only``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return err.strerror or str(err)
    if not head.startswith(b"PK"):
        return "not a PyTorch file (mn-train writes zip-based .pt files; this one is something else or empty)"
    text = str(exc)
    if "Weights only load failed" in text or "weights_only" in text:
        return "it holds pickled Python objects, not only tensors (a whole pickled model?), which mn-seg does not load"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{first[:160]} (truncated or damaged?)"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate a checkpoint; raise :class:`CheckpointError` with a fix for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (mn-train writes RUN_DIR/best.pt and RUN_DIR/last.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / foreign / pickled-code files
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure(path, exc)}. Use a best.pt or "
                              "last.pt written by mn-train") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an mn-seg checkpoint (no 'format': '{FORMAT}' entry). "
            "Use a best.pt or last.pt written by mn-train."
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload['format_version']}, newer than this mn-seg "
            f"understands ({FORMAT_VERSION}); upgrade mn-seg."
        )
    config = payload.get("config")
    if not isinstance(config, dict) or "model" not in config or "name" not in config["model"]:
        raise CheckpointError(f"{path} has no model description in its config; it cannot be rebuilt.")
    if not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path} holds no weights (state_dict missing).")
    return payload


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network a checkpoint describes, load its weights, and return ``(model.eval(), config)``."""
    import train.cascade_net  # noqa: F401  the composite models register themselves when imported
    from train.models import build_model

    payload = load_checkpoint(path)
    config = payload["config"]
    spec = config["model"]
    try:
        model = build_model(spec["name"], **spec.get("kwargs", {}))
    except KeyError as exc:
        raise CheckpointError(f"{path} names an architecture this mn-seg does not know: {exc.args[0]}") from None
    try:
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{path}: weights do not fit architecture {spec['name']!r}: "
                              f"{str(exc).splitlines()[0]}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit architecture {spec['name']!r} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[:3]})."
        )
    return model.to(device).eval(), config
