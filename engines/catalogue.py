"""The bundled models as data: the manifest of ``engines/bundled/`` read into a :class:`Catalogue`.

The package data folder ``engines/bundled/`` holds ``manifest.json`` and one ``NAME.pt`` per model
(the maintainer's tool ``python -m tools.bundle`` writes them and documents the manifest's fields).
Nothing is read when this module is imported: :func:`engines.registry.bundled` reads the package's
catalogue on first use, and any other folder can be read with :meth:`Catalogue.load`. JSON only (no
numpy, no torch): ``mn-live --help`` and ``--list-models`` stay light.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import EngineError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
"""The package data folder of the shipped models: ``manifest.json`` and one ``NAME.pt`` per model."""
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
"""The manifest layout this mn-seg reads and writes (``tools.bundle`` documents it)."""
REPAIR_HINT = "reinstall mn-seg, or repair it with python -m tools.bundle (in a checkout)"


def read_manifest(folder: str | os.PathLike) -> dict:
    """The checked manifest of the bundled models in ``folder``.

    Raises:
        EngineError: the manifest is missing, not JSON, newer than this mn-seg, or malformed.
    """
    path = Path(folder) / MANIFEST_NAME
    fix = REPAIR_HINT
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"the bundled-model manifest {path} is missing; {fix}") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"the bundled-model manifest {path} cannot be read ({exc}); {fix}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format"), int):
        raise EngineError(f"the bundled-model manifest {path} has no integer 'format'; {fix}")
    if manifest["format"] > MANIFEST_FORMAT:
        raise EngineError(f"the bundled-model manifest {path} has format {manifest['format']}, newer than this "
                          f"mn-seg reads ({MANIFEST_FORMAT}); upgrade mn-seg")
    models = manifest.get("models")
    if not isinstance(models, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("file"), str) for m in models):
        raise EngineError(f"the bundled-model manifest {path} needs 'models': a list of entries with 'name' and "
                          f"'file'; {fix}")
    names = [m["name"] for m in models]
    if len(set(names)) != len(names):
        raise EngineError(f"the bundled-model manifest {path} names a model twice ({', '.join(names)}); {fix}")
    for m in models:
        int8 = m.get("int8")
        if int8 is not None and not (isinstance(int8, dict) and isinstance(int8.get("files"), dict) and int8["files"]
                                     and all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in int8["files"].items())):
            raise EngineError(f"the bundled-model manifest {path}: {m['name']}'s 'int8' needs 'files': a mapping of "
                              f"part ('model', or 'localiser' and 'refiner') to .onnx file; {fix}")
    renamed = manifest.get("renamed", {})
    if not (isinstance(renamed, dict) and all(isinstance(k, str) and isinstance(v, dict) and v.get("name") in names
                                               for k, v in renamed.items())):
        raise EngineError(f"the bundled-model manifest {path}: 'renamed' must map an old name to "
                          f"{{'name': a bundled model, 'why': text}}; {fix}")
    for key in ("default", "fp32_default"):
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise EngineError(f"the bundled-model manifest {path}: '{key}' must be a model name; {fix}")
    return manifest


@dataclass(frozen=True)
class Catalogue:
    """The bundled models of one folder: ``models`` (name -> file), the manifest's ``default`` when it is
    one of them, and ``error``: why the manifest could not be read (then there are no models; the error
    is repeated wherever a bundled model is asked for)."""

    folder: Path
    models: dict[str, Path] = field(default_factory=dict)
    default: str | None = None
    error: str | None = None
    int8: dict[str, dict[str, Path]] = field(default_factory=dict)
    """name -> the int8 ONNX files shipped for it (``{"model": path}``, or one per cascade part), for the models
    whose manifest entry has an ``int8`` record made from the very file shipped (``int8.model_sha256`` equal to
    its ``sha256``); a stale record (the model was replaced since) is left out."""
    renamed: dict[str, tuple[str, str]] = field(default_factory=dict)
    """old name -> (current name, why it was renamed): names that earlier versions shipped, still accepted
    with a warning so scripts keep working."""
    fp32_default: str | None = None
    """The default on a machine that would run ``default`` in float32 on the CPU (no GPU, no VNNI for its int8
    files): a model that keeps real time there (the manifest's ``fp32_default`` when it is bundled);
    :func:`engines.registry.machine_default` applies it."""

    @classmethod
    def load(cls, folder: str | os.PathLike = BUNDLED_DIR) -> "Catalogue":
        """Read ``folder``'s manifest; never raises (a broken manifest gives an empty catalogue with its error)."""
        folder = Path(folder)
        try:
            manifest = read_manifest(folder)
        except EngineError as exc:
            return cls(folder=folder, error=str(exc))
        models = {m["name"]: folder / m["file"] for m in manifest["models"]}
        default = manifest.get("default") if manifest.get("default") in models else None
        int8 = {m["name"]: {part: folder / file for part, file in m["int8"]["files"].items()}
                for m in manifest["models"]
                if m.get("int8") and m["int8"].get("model_sha256") == m.get("sha256")}
        renamed = {old: (new["name"], str(new.get("why", ""))) for old, new in manifest.get("renamed", {}).items()}
        fp32_default = manifest.get("fp32_default") if manifest.get("fp32_default") in models else None
        return cls(folder=folder, models=models, default=default, int8=int8, renamed=renamed,
                   fp32_default=fp32_default)

    def int8_files(self, name: str | None = None, path: str | os.PathLike | None = None) -> dict[str, Path] | None:
        """The shipped int8 files of the bundled model ``name``, or of the bundled model whose file is ``path``;
        ``None`` when it ships none.

        Raises:
            EngineError: the manifest lists int8 files that are missing (a broken installation).
        """
        if name is None and path is not None:
            target = Path(path).resolve()
            name = next((n for n, f in self.models.items() if Path(f).resolve() == target), None)
        files = self.int8.get(name) if name is not None else None
        if files is None:
            return None
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise EngineError(f"bundled model {name!r} lists int8 files that are missing ({', '.join(missing)}); "
                              f"{REPAIR_HINT}")
        return dict(files)

    def manifest(self) -> dict:
        """The folder's manifest, read again (:func:`read_manifest`; raises its :class:`EngineError`)."""
        return read_manifest(self.folder)


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def models_table(manifest: dict) -> str:
    """The bundled models of ``manifest`` as a table (``mn-live --list-models``, ``python -m tools.bundle
    list``); ``""`` when it lists none."""
    if not manifest["models"]:
        return ""
    default, fp32_default = manifest.get("default"), manifest.get("fp32_default")
    header = ["", "name", "MB", "input", "CV DSC", "val DSC", "CSA err", "CPU p95", "CPU fps", "measured on",
              "description"]
    rows = [header]
    for m in manifest["models"]:
        val, lat, cv = m.get("val") or {}, m.get("cpu_latency_ms") or {}, m.get("cv") or {}
        csa, p95 = (cv or val).get("csa_median_rel_error"), lat.get("p95")
        cv_dsc = "-" if cv.get("dsc") is None else f"{cv['dsc']:.3f}±{cv.get('dsc_sd') or 0:.3f}"
        mark = "*" if m["name"] == default else "f" if m["name"] == fp32_default else ""
        rows.append([mark, m["name"], _fmt((m.get("file_bytes") or 0) / 1e6, ".1f"),
                     "x".join(map(str, m.get("input_size") or [])) or "-", cv_dsc,
                     "trained on" if val.get("trained_on") else _fmt(val.get("dsc"), ".3f"),
                     "-" if csa is None else f"{100 * csa:.1f} %", "-" if p95 is None else f"{p95:.1f} ms" + (
                         f" / {lat['int8']['p95']:.1f}" if (lat.get("int8") or {}).get("p95") is not None else ""),
                     _fmt(lat.get("fps"), ".1f"), lat.get("machine") or "-", m.get("description", "")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 4, 5, 6, 7, 8}
    lines = ["  ".join((c.rjust(w) if i in right else c.ljust(w)) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.append("* default (used without --model); f: the default where the CPU would run the default in float "
                 "(no GPU, no VNNI for its int8 files), which keeps real time there. CV DSC: paper protocol, "
                 "mean ± SD over patient folds of mn-cv "
                 "(each fold model on patients it never saw); val DSC: paper protocol, paper validation split "
                 "('trained on': a model trained on every image); CSA err: median relative cross-sectional-area "
                 "error (CV's when there is one); CPU p95 / fps: end-to-end latency and rate of mn-bench's realtime "
                 "mode (onnxruntime fp32, then int8 when measured) on the machine shown.")
    return "\n".join(lines)


def no_models_text() -> str:
    """What to pass to --model when no model is bundled."""
    from train.models import list_models

    return ("no trained model is bundled with this version of mn-seg yet. Pass --model with a checkpoint from "
            "mn-train (RUN_DIR/best.pt), an .onnx or a TensorRT plan, or an architecture name "
            f"({', '.join(list_models())}) for random weights (speed measurements only, meaningless masks).")
