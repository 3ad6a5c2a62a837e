"""``python -m tools.bundle``: the maintainer's tool for the trained models shipped inside the package
("bundled models"). It lives apart from the runtime: it uses train's data and evaluation code, which
the installed package never needs to load a model.

The package data folder ``engines/bundled/`` holds ``manifest.json`` and one ``NAME.pt`` per model;
the runtime reads it as data (:class:`engines.catalogue.Catalogue`, on first use), so
``load_engine("mn-realtime")`` and ``mn-live --model mn-realtime`` find a model by name. The
manifest (``"format": 1``)::

    {"format": 1, "default": "mn-realtime",          # what mn-live runs without --model
     "fp32_default": "mn-fast" | absent,          # ... instead, where the CPU would run the default in float32
     "models": [{
        "name": "mn-realtime", "file": "mn-realtime.pt", "description": "...",
        "architecture": {"name": "lunet", "kwargs": {}},   # the checkpoint's config["model"]
        "input_size": [W, H], "parameters": N, "file_bytes": N, "sha256": "...",
        "weights_dtype": "float16",
        "val": {"protocol": "paper", "dsc": .., "dsc_std": .., "native_dsc": .. | null,
                "csa_median_rel_error": .., "split": "paper:val", "images": 38},
        "smoke": {"stems": [...], "dsc": [...]},   # per-image paper-protocol DSC (CI smoke test)
        "cv": {"recipe": .., "folds": K, "images": N, "dsc": .., "dsc_sd": .., "native_dsc": ..,
               "csa_median_rel_error": .., "missed": N, "results_file": "..."} | absent,  # mn-cv's estimate
        "cpu_latency_ms": {"p50": .., "p95": .., "fps": .., "dropped": N, "machine": "...",
                           "results_file": "benchmarks/results/...",
                           "int8": {"p50": .., "p95": .., "fps": .., "dropped": N} | absent} | null,
        "train_command": "...", "results_files": [...], "notes": "...",
        "source_checkpoint": {"path": "...", "sha256": "..."}, "added": "YYYY-MM-DD",
        "int8": {...} | absent}],                 # the shipped int8 ONNX files (``int8`` below)
     "renamed": {"OLD": {"name": "NEW", "why": "..."}}}   # old names still accepted, with a warning

File paths are relative to the manifest. Beside ``NAME.pt`` may lie ``NAME.appearance.json``, the presence
gate's appearance model fit on that model's outlines (``python -m tools.presence_fit --model NAME`` writes it;
:mod:`realtime.appearance`): ``add`` ships the one beside the checkpoint when there is one (else drops a stale
one), ``rename`` and ``remove`` move or delete it with the model. A model file is an mn-seg checkpoint
(``train.checkpoint``) whose floating-point weights are stored as float16 and without training state (half the size; a
float32 network loads them through ``load_state_dict``'s copy, so every backend runs them as usual).

Commands (exit codes: 0 done / check passed, 1 a check found a mismatch, 2 bad input)::

    python -m tools.bundle add NAME --checkpoint RUN/best.pt --description TEXT --eval-json paper.json \\
        [--native-json native.json] [--bench-json bench.json] [--train-command TEXT] \\
        [--results-file PATH ...] [--notes TEXT] [--default | --fp32-default] [--data DIR | --no-verify]
    python -m tools.bundle list
    python -m tools.bundle check [--data DIR] [--full] [--json OUT] [--model NAME ...]
    python -m tools.bundle remove NAME
    python -m tools.bundle rename OLD NEW --why TEXT [--description TEXT]
    python -m tools.bundle latency NAME --bench-json bench.json
    python -m tools.bundle int8 NAME [--data DIR] [--images 64] [--threads N]

``--dir DIR`` works on another bundled folder than the package's (a staging copy, the tests).
A model trained on every image (``mn-cv --final``: its config's split is ``none``) has no held-out images:
``add`` then needs ``--cv-summary`` (the recipe's ``mn-cv`` cv-summary.json, whose folds chose its epochs, or its
cv-summary-as-final.json, the final procedure run on every fold: ``cv.models`` says which), records
that estimate as ``cv`` and marks ``val.trained_on`` (its validation images were training images: the smoke check
still guards the file, the number is no estimate). ``add`` reads the accuracy from
``mn-eval --split paper --subset val --json`` files (paper protocol,
and optionally native), the smoke subset (the first 4 validation images by stem) and its per-image
DSC from the paper one, and the CPU latency from an ``mn-bench --json`` file (the realtime-mode
onnxruntime row); it then checks the float16 copy reproduces the smoke DSC on the data (``--data DIR``,
or the environment variable ``MN_SEG_DATA``) within 0.005. ``check`` re-evaluates every bundled model,
loaded by name, through :func:`train.evaluate.evaluate` (the code behind mn-eval): the smoke images
(per-image DSC), or with ``--full`` the paper's validation split (mean DSC against ``val.dsc``,
results written to ``benchmarks/results/bundled-check-HOST-DATE.json``).

``int8`` makes the int8 ONNX files a bundled model ships (:mod:`engines.quantize`; one per network of a cascade,
``NAME-localiser-int8.onnx`` and ``NAME-refiner-int8.onnx``, else ``NAME-model-int8.onnx``), so that ``--precision
int8`` (and ``auto`` on a CPU with VNNI) needs no dataset: calibrated on the first ``--images`` (64) of the paper
split's *training* images spread evenly (a cascade's refiner on the windows the fp32 localiser cuts from them), with
a dynamic batch. They are kept only when they pass the int8 verification on the paper's validation images (every
frame's mask Dice against the fp32 PyTorch model >= :data:`engines.verify.INT8_ACCEPTANCE_DICE`) and their mean DSC
is within :data:`TOLERANCE` of the fp32 engine's; the manifest entry's ``int8`` records the files (bytes, sha256),
the ``model_sha256`` they were made from (a replaced model's int8 record is ignored), the calibration (images,
selection, names and content hashes, settings, per-part digests), the verification, both engines' validation scores,
the command and the machine. No image or crop is stored: only file names and hashes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.cli import add_logging_args, setup_logging
from common.errors import EXIT_FAILURE, EXIT_OK, UserError, run_cli
from engines import registry
from engines.cache import file_sha256
from engines.catalogue import models_table as _table
from engines.catalogue import no_models_text

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 64_000_000
"""The most the bundled folder's model files may weigh together (64 MB; the ``*.pt`` files, and with ``int8`` its
ONNX files too): the wheel stays well under PyPI's 100 MB. Since 2026-12-05 it carries the paper's DL-UNet (30 MB),
the two-refiner default and the single-refiner model for CPUs without VNNI (40 MB before)."""
SMOKE_IMAGES = 4
"""How many validation images (the first by stem) the smoke check re-evaluates."""
TOLERANCE = 0.005
"""Largest accepted DSC difference between the manifest and a re-evaluation."""
VAL_SPLIT = "paper:val"
"""The split every manifest accuracy is measured on (mn-eval --split paper --subset val)."""
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "MN_SEG_DATA"
"""The environment variable naming the median-nerve dataset (the folder holding Images/ and Masks/) when
``--data`` is not given."""
PROG = "python -m tools.bundle"


# -- small helpers --------------------------------------------------------------------------------
def _shown_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies inside it (as results files are cited)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return os.fspath(path)


def _read_json(path: str | os.PathLike, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {path} cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is not a JSON object")
    return data


def default_data() -> Path | None:
    """The dataset named by ``$MN_SEG_DATA``, if set (a folder that does not exist is an error)."""
    value = os.environ.get(DATA_ENV)
    if not value:
        return None
    if not (Path(value) / "Images").is_dir():
        raise UserError(f"${DATA_ENV}={value} is not the median-nerve dataset (no Images/ folder in it)")
    return Path(value)


def _data_dir(data: str | os.PathLike | None) -> Path:
    if data is not None:
        return Path(data)
    found = default_data()
    if found is None:
        raise UserError(f"no dataset given: pass --data DIR or set {DATA_ENV} (the folder holding Images/ and "
                        "Masks/)")
    return found


def write_manifest(manifest: dict, folder: str | os.PathLike | None = None) -> Path:
    """Write ``manifest.json`` atomically (temporary file, then rename)."""
    path = Path(folder if folder is not None else registry.bundled_dir()) / registry.MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _reload_if_active(folder: Path) -> None:
    if folder.resolve() == registry.bundled_dir().resolve():
        registry.load_bundled(folder)


# -- the weights file ------------------------------------------------------------------------------
def half_state_dict(state_dict: dict) -> dict:
    """Every floating-point tensor as float16; integer buffers (BatchNorm's num_batches_tracked) unchanged."""
    return {k: v.detach().to("cpu").half() if v.is_floating_point() else v.detach().to("cpu")
            for k, v in state_dict.items()}


def write_bundled_checkpoint(checkpoint: str | os.PathLike, dest: str | os.PathLike, name: str) -> dict:
    """Copy ``checkpoint`` to ``dest`` with float16 weights and without training state; returns its config.

    The file stays an mn-seg checkpoint (``train.checkpoint.load_checkpoint`` reads it and
    ``model_from_checkpoint`` loads it into the float32 network); its config records where it came from.
    """
    import torch

    from train.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint

    payload = load_checkpoint(checkpoint)
    config = dict(payload["config"])
    config["bundled"] = {"name": name, "weights_dtype": "float16", "source": os.fspath(checkpoint),
                         "source_sha256": file_sha256(checkpoint)}
    json.dumps(config)
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "config": config,
                "state_dict": half_state_dict(payload["state_dict"])}, dest)
    return config


# -- reading mn-eval and mn-bench results --------------------------------------------------------------
def read_eval_json(path: str | os.PathLike, protocol: str, architecture: str | None = None) -> dict:
    """An ``mn-eval --json`` result of ``protocol`` on the paper's validation split, checked."""
    result = _read_json(path, "mn-eval result")
    fix = (f"write it with mn-eval --checkpoint RUN/best.pt --data DATA --split paper --subset val "
           f"--protocol {protocol} --json FILE")
    if result.get("protocol") != protocol:
        raise UserError(f"{path} is a {result.get('protocol')!r} protocol result, not {protocol!r}; {fix}")
    if result.get("split") != VAL_SPLIT:
        raise UserError(f"{path} was evaluated on split {result.get('split')!r}, not {VAL_SPLIT!r}; {fix}")
    if not isinstance(result.get("dsc"), dict) or not isinstance(result.get("per_image"), list):
        raise UserError(f"{path} has no 'dsc' summary or 'per_image' list: it is not an mn-eval result; {fix}")
    if architecture is not None and result.get("model") not in (None, architecture):
        raise UserError(f"{path} evaluated a {result.get('model')!r} network, but the checkpoint is {architecture!r}")
    return result


def smoke_subset(result: dict, n: int = SMOKE_IMAGES) -> dict:
    """The first ``n`` images by stem of an mn-eval result and their per-image DSC."""
    rows = result["per_image"]
    if not rows or any("stem" not in r or "dsc" not in r for r in rows):
        raise UserError("the mn-eval result has no per-image stems and DSC; re-run mn-eval with this mn-seg")
    rows = sorted(rows, key=lambda r: r["stem"])[:n]
    return {"stems": [r["stem"] for r in rows], "dsc": [float(r["dsc"]) for r in rows]}


def _machine(system: dict) -> str:
    parts = [system.get("cpu") or "unknown CPU"]
    if system.get("cores"):
        parts.append(f"{system['cores']} cores")
    parts.append(system["gpu"] if system.get("gpu") else "no GPU")
    return f"{system.get('host', '?')}: {', '.join(parts)}"


def latency_from_bench(path: str | os.PathLike, input_size: Sequence[int], names: Sequence[str] = ()) -> dict:
    """The CPU latency of the realtime-mode onnxruntime row of an ``mn-bench --json`` file.

    Rows at the model's input size (batch 1, status ok) are kept; with several models, the one named
    in ``names`` (the bundled name or the checkpoint path); with several precisions, fp32.
    """
    bench = _read_json(path, "mn-bench result")
    size = f"{input_size[0]}x{input_size[1]}"
    fix = (f"run mn-bench --models RUN/best.pt --sizes {size} --backends onnxruntime --mode realtime --json FILE "
           "on the CPU machine whose numbers should ship")
    if not isinstance(bench.get("runs"), list):
        raise UserError(f"{path} has no 'runs' list: it is not an mn-bench result; {fix}")
    rows = [r for r in bench["runs"] if isinstance(r, dict) and r.get("backend") == "onnxruntime"
            and r.get("mode") == "realtime" and r.get("status") == "ok" and r.get("batch", 1) == 1
            and r.get("size") == size and (r.get("latency_ms") or {}).get("e2e")]
    if not rows:
        raise UserError(f"{path} has no successful realtime-mode onnxruntime row at {size}; {fix}")
    models = sorted({str(r.get("model")) for r in rows})
    if len(models) > 1:
        wanted = {os.fspath(n) for n in names} | {os.path.realpath(n) for n in names}
        rows = [r for r in rows if str(r.get("model")) in wanted or os.path.realpath(str(r.get("model"))) in wanted]
        if not rows:
            raise UserError(f"{path} has realtime onnxruntime rows at {size} for several models ({', '.join(models)}) "
                            "and none is this one; give a result of this model alone")
    rows.sort(key=lambda r: r.get("precision") not in ("fp32", "default"))
    row = rows[0]
    e2e = row["latency_ms"]["e2e"]
    out = {"p50": e2e.get("p50"), "p95": e2e.get("p95"), "fps": row.get("fps"), "dropped": row.get("dropped"),
           "machine": _machine(bench.get("system") or {}), "results_file": _shown_path(path),
           "what": f"end-to-end (capture -> measurement) latency of mn-bench's realtime mode, onnxruntime "
                   f"{row.get('precision')}, batch 1, model {row.get('model')}"}
    int8 = next((r for r in rows if r.get("precision") == "int8"), None)
    if int8 is not None:  # what auto runs on a CPU with VNNI when int8 files ship
        q = int8["latency_ms"]["e2e"]
        out["int8"] = {"p50": q.get("p50"), "p95": q.get("p95"), "fps": int8.get("fps"), "dropped": int8.get("dropped")}
    if any("random weights" in str(note) for note in row.get("notes") or []):
        out["what"] += " (random weights of the same architecture and size: the speed is the same)"
    return out


def _bundled_entry(name: str, folder: str | os.PathLike | None = None) -> tuple[Path, dict, dict]:
    """``(folder, manifest, entry)`` of the bundled model ``name`` (folder default: the active catalogue's).

    Raises:
        UserError: ``name`` is not bundled (the message lists what is).
    """
    folder = Path(folder if folder is not None else registry.bundled_dir())
    manifest = registry.read_manifest(folder)
    entry = next((m for m in manifest["models"] if m["name"] == name), None)
    if entry is None:
        names = ", ".join(m["name"] for m in manifest["models"]) or "none"
        raise UserError(f"no bundled model {name!r} (bundled: {names})")
    return folder, manifest, entry


def set_latency(name: str, bench_json: str | os.PathLike, folder: str | os.PathLike | None = None) -> dict:
    """Replace the bundled model ``name``'s ``cpu_latency_ms`` by that of an ``mn-bench --json`` file (the model
    measured again, on another machine or after a change of the pipeline); the weights and int8 files stay.
    Returns the new record.

    Raises:
        UserError: ``name`` is not bundled, or the file has no realtime onnxruntime row of it.
    """
    folder, manifest, entry = _bundled_entry(name, folder)
    size = entry.get("input_size") or []
    if len(size) != 2:
        raise UserError(f"{name}'s manifest entry has no input_size; add it again with python -m tools.bundle add")
    entry["cpu_latency_ms"] = latency_from_bench(bench_json, size, (name, str(folder / entry["file"])))
    write_manifest(manifest, folder)
    _reload_if_active(folder)
    return entry["cpu_latency_ms"]


# -- add / remove ---------------------------------------------------------------------------------
def read_cv_summary(path: str | os.PathLike) -> dict:
    """The cross-validation estimate of an ``mn-cv`` cv-summary.json, as a manifest ``cv`` entry; every fold must
    have been evaluated."""
    summary = _read_json(path, "mn-cv summary")
    fix = "give the cv-summary.json of the mn-cv run whose --final trained this checkpoint"
    protocols = summary.get("protocols") or {}
    paper, native = protocols.get("paper") or {}, protocols.get("native") or {}
    if not summary.get("recipe") or not (paper.get("dsc") or {}).get("mean"):
        raise UserError(f"{path} has no recipe or paper-protocol DSC: it is not an mn-cv summary; {fix}")
    folds, done = int(summary.get("folds") or 0), list(summary.get("folds_done") or [])
    if folds < 2 or len(done) < folds:
        raise UserError(f"{path} has {len(done)} of {summary.get('folds')} folds evaluated: run every fold "
                        f"(mn-cv without --fold) before shipping its final model; {fix}")
    pooled = (paper.get("pooled") or {}).get("csa_agreement") or {}
    models = summary.get("models") or "folds"  # summaries before 2026-12-05 are the fold models'
    whose = ("each fold trained the way the final model is (mn-cv --as-final: the folds' schedule, last weights)"
             if str(models).startswith("as-final") else "each fold model")
    return {"recipe": summary["recipe"], "folds": folds, "seed": summary.get("seed"),
            "images": paper.get("n_images"), "protocol": "paper", "dsc": paper["dsc"]["mean"],
            "dsc_sd": paper["dsc"].get("sd"), "native_dsc": (native.get("dsc") or {}).get("mean"),
            "csa_median_rel_error": (paper.get("csa_rel_error_median") or {}).get("mean"),
            "csa_bias_rel": pooled.get("bias_rel"), "missed": pooled.get("missed"),
            "threshold": _final_threshold(summary.get("threshold") or {}),
            "best_epochs": summary.get("best_epochs"), "results_file": _shown_path(path),
            "models": models,
            "what": f"mean (and SD) across patient folds of {whose} on its validation patients; CSA bias and "
                    "missed images pooled over every image"}


def _final_threshold(report: dict) -> float | None:
    """The mask threshold ``mn-cv --final`` writes by a summary's leave-one-fold-out report (``final``; reports
    before 2026-12-05 have only ``chosen_all``, which it always wrote)."""
    return report.get("final", report.get("chosen_all"))


def add_model(
    name: str,
    checkpoint: str | os.PathLike,
    *,
    description: str,
    eval_json: str | os.PathLike,
    native_json: str | os.PathLike | None = None,
    bench_json: str | os.PathLike | None = None,
    train_command: str | None = None,
    results_files: Sequence[str] = (),
    notes: str | None = None,
    make_default: bool = False,
    make_fp32_default: bool = False,
    folder: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    verify: bool = True,
    cv_summary: str | os.PathLike | None = None,
) -> dict:
    """Copy ``checkpoint`` into the bundled folder as ``NAME.pt`` (float16 weights) and write its manifest
    entry (replacing one of the same name). Returns the entry.

    With ``verify`` and a dataset (``data``, else ``$MN_SEG_DATA`` when set), the float16 copy must
    reproduce the smoke images' DSC of ``eval_json`` within :data:`TOLERANCE`.

    Raises:
        UserError: a bad name, unreadable inputs, results of another split or network, bundled files
            over :data:`MAX_BUNDLE_BYTES`, or a copy that does not reproduce the smoke DSC.
    """
    from train.checkpoint import load_checkpoint, model_from_checkpoint
    from train.models import list_models

    folder = Path(folder if folder is not None else registry.bundled_dir())
    if not NAME_PATTERN.match(name) or name.endswith((".pt", ".pth", ".onnx", ".engine")):
        raise UserError(f"bundled model name {name!r}: use lower-case letters, digits, '.', '_' and '-' "
                        "(e.g. mn-realtime), without a file suffix")
    if name in list_models():
        raise UserError(f"{name!r} is an architecture name (it means random weights to mn-live and mn-bench); "
                        "give the bundled model another name, e.g. mn-realtime")
    if not description.strip():
        raise UserError("--description must say what the model is for")
    manifest = registry.read_manifest(folder)
    config = load_checkpoint(checkpoint)["config"]
    architecture = config["model"]
    size = [int(x) for x in config.get("preprocessing", {}).get("size", [])]
    if len(size) != 2:
        raise UserError(f"{checkpoint} records no preprocessing size; it was not written by mn-train")
    paper = read_eval_json(eval_json, "paper", architecture["name"])
    native = read_eval_json(native_json, "native", architecture["name"]) if native_json else None
    if native is not None and native.get("n") != paper.get("n"):
        raise UserError(f"{native_json} covers {native.get('n')} images but {eval_json} {paper.get('n')}; "
                        "evaluate both on the same data")
    evaluated = paper.get("checkpoint")
    if evaluated and os.path.realpath(evaluated) != os.path.realpath(checkpoint):
        log.warning("%s evaluated %s, not %s: make sure it is the same checkpoint", eval_json, evaluated, checkpoint)
    smoke = smoke_subset(paper)
    trained_on = any((c.get("train") or {}).get("split") == "none"
                     for c in [config, *((part.get("config") or {}) for part in (config.get("parts") or {}).values())])
    if trained_on and cv_summary is None:
        raise UserError(f"{checkpoint} was trained on every image (split none, mn-cv --final): its validation images "
                        "were training images, so give the accuracy it ships with as --cv-summary OUT/cv-summary.json "
                        "(the mn-cv run whose folds chose its epochs)")
    cv = read_cv_summary(cv_summary) if cv_summary is not None else None
    latency = latency_from_bench(bench_json, size, (name, os.fspath(checkpoint))) if bench_json else None
    for extra in results_files:
        if not Path(extra).exists():
            log.warning("results file %s does not exist (recorded anyway)", extra)

    file = f"{name}.pt"
    dest = folder / file
    tmp = folder / f"{file}.tmp"
    try:
        write_bundled_checkpoint(checkpoint, tmp, name)
        file_bytes = tmp.stat().st_size
        others = sum(p.stat().st_size for p in folder.glob("*.pt") if p.name != file)
        if others + file_bytes > MAX_BUNDLE_BYTES:
            raise UserError(f"{name}.pt would weigh {file_bytes / 1e6:.1f} MB and the other bundled models "
                            f"{others / 1e6:.1f} MB: more than the {MAX_BUNDLE_BYTES / 1e6:.0f} MB the package may "
                            f"carry; remove a model (python -m tools.bundle remove NAME) or bundle a smaller one")
        model, _ = model_from_checkpoint(tmp, "cpu")  # the float16 copy loads into the float32 network
        parameters = sum(p.numel() for p in model.parameters())
        if verify:
            verify_smoke(tmp, smoke, data)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)

    entry = {
        "name": name,
        "file": file,
        "description": description.strip(),
        "architecture": architecture,
        "input_size": size,
        "parameters": parameters,
        "file_bytes": dest.stat().st_size,
        "sha256": file_sha256(dest),
        "weights_dtype": "float16",
        "val": {
            "protocol": "paper",
            "dsc": paper["dsc"]["mean"],
            "dsc_std": paper["dsc"].get("std"),
            "native_dsc": native["dsc"]["mean"] if native else None,
            "csa_median_rel_error": (paper.get("csa_rel_error") or {}).get("median"),
            "split": paper["split"],
            "images": paper.get("n", len(paper["per_image"])),
            **({"trained_on": True} if trained_on else {}),
        },
        "smoke": smoke,
        **({"cv": cv} if cv is not None else {}),
        "cpu_latency_ms": latency,
        "train_command": train_command,
        "results_files": [_shown_path(p) for p in results_files],
        "notes": notes,
        "source_checkpoint": {"path": os.fspath(checkpoint), "sha256": file_sha256(checkpoint)},
        "added": dt.date.today().isoformat(),
    }
    if not train_command:
        log.warning("no --train-command given: the manifest will not say how %s was trained", name)
    models = [m for m in manifest["models"] if m["name"] != name]
    _drop_int8_files(next((m for m in manifest["models"] if m["name"] == name), None), folder)  # made from the old file
    _bundle_appearance(Path(checkpoint), dest, entry["sha256"])
    manifest["models"] = [*models, entry]
    if make_default:
        manifest["default"] = name
    if make_fp32_default:
        manifest["fp32_default"] = name
    path = write_manifest(manifest, folder)
    _reload_if_active(folder)
    log.info("bundled %s: %s (%.1f MB, sha256 %s), manifest %s", name, dest, entry["file_bytes"] / 1e6,
             entry["sha256"][:12], path)
    return entry


def _bundle_appearance(checkpoint: Path, dest: Path, sha256: str) -> None:
    """Ship the presence appearance model fit on ``checkpoint`` (its sidecar) beside the bundled copy ``dest``,
    recorded as describing the copy (float16 weights: the same outlines); without one, drop a stale one."""
    from realtime.appearance import load_appearance_model, sidecar

    source, target = sidecar(checkpoint), sidecar(dest)
    if not source.is_file():
        target.unlink(missing_ok=True)  # fit on the file this one replaces
        log.warning("%s has no appearance model (%s): runs of %s fall back to the default model's; fit one with "
                    "python -m tools.presence_fit --model %s", checkpoint, source, dest.stem, dest.stem)
        return
    model = load_appearance_model(source)
    provenance = {**model.provenance, "segmentation_model": dest.stem, "model_file": _shown_path(dest),
                  "model_sha256": sha256,
                  "fit_on": {"path": str(checkpoint), "sha256": model.provenance.get("model_sha256"),
                             "segmentation_model": model.provenance.get("segmentation_model")}}
    dataclasses.replace(model, provenance=provenance).save(target)
    log.info("bundled its appearance model %s as %s", source, target)


def _rename_appearance(old: Path, new: Path) -> None:
    """Move a renamed model file's appearance model along with it (its provenance names the new file)."""
    from realtime.appearance import load_appearance_model, sidecar

    if sidecar(old).is_file():
        model = load_appearance_model(sidecar(old))
        provenance = {**model.provenance, "model_file": _shown_path(new)}
        if provenance.get("segmentation_model") == old.stem:
            provenance["segmentation_model"] = new.stem
        dataclasses.replace(model, provenance=provenance).save(sidecar(new))
        sidecar(old).unlink()


def _drop_int8_files(entry: dict | None, folder: Path) -> None:
    """Delete the int8 ONNX files an (old) manifest entry lists."""
    for file in ((entry or {}).get("int8") or {}).get("files", {}).values():
        (folder / file).unlink(missing_ok=True)


def rename_model(old: str, new: str, *, why: str, description: str | None = None,
                 folder: str | os.PathLike | None = None) -> dict:
    """Rename the bundled model ``old`` to ``new``: its entry, its file (``NEW.pt``), the default if it was
    one; ``old`` goes into the manifest's ``renamed`` record with ``why``, so the runtime still accepts it
    with a warning. Returns the renamed entry.

    Raises:
        UserError: ``old`` is not bundled, or ``new`` is already a bundled or a retired name.
    """
    folder, manifest, entry = _bundled_entry(old, folder)
    renamed = dict(manifest.get("renamed", {}))
    if any(m["name"] == new for m in manifest["models"]) or new in renamed:
        raise UserError(f"{new!r} is already a bundled model's name, or an old one; choose another")
    file = f"{new}{Path(entry['file']).suffix}"
    if (folder / file).exists():
        raise UserError(f"{folder / file} already exists; remove it or choose another name")
    (folder / entry["file"]).rename(folder / file)
    _rename_appearance(folder / entry["file"], folder / file)
    entry.update(name=new, file=file, **({"description": description} if description else {}))
    renamed = {o: ({**n, "name": new} if n["name"] == old else n) for o, n in renamed.items()}
    renamed[old] = {"name": new, "why": why}
    manifest["renamed"] = renamed
    for key in ("default", "fp32_default"):
        if manifest.get(key) == old:
            manifest[key] = new
    write_manifest(manifest, folder)
    _reload_if_active(folder)
    log.info("renamed %s -> %s (%s); commit %s and the manifest", old, new, folder / file, folder / file)
    return entry


def remove_model(name: str, folder: str | os.PathLike | None = None) -> None:
    """Drop ``name`` from the manifest and delete its file (and its int8 files)."""
    folder, manifest, entry = _bundled_entry(name, folder)
    manifest["models"] = [m for m in manifest["models"] if m["name"] != name]
    if manifest.get("fp32_default") == name:
        manifest.pop("fp32_default")
    renamed = {old: new for old, new in manifest.get("renamed", {}).items() if new["name"] != name}
    if renamed:
        manifest["renamed"] = renamed
    else:
        manifest.pop("renamed", None)
    write_manifest(manifest, folder)
    (folder / entry["file"]).unlink(missing_ok=True)
    _drop_int8_files(entry, folder)
    from realtime.appearance import sidecar

    sidecar(folder / entry["file"]).unlink(missing_ok=True)
    _reload_if_active(folder)
    log.info("removed %s", name)


# -- evaluation (the code behind mn-eval) ------------------------------------------------------------
def _evaluate_paper(checkpoint: Path, samples: list, device: str = "cpu", progress: bool = False) -> dict:
    """``train.evaluate.evaluate`` with the paper protocol on ``samples``, as mn-eval computes it."""
    import torch

    from train.checkpoint import model_from_checkpoint
    from train.data import load_samples
    from train.evaluate import evaluate

    model, config = model_from_checkpoint(checkpoint, device)
    data = load_samples(samples, tuple(config["preprocessing"]["size"]), progress=progress)
    result, _ = evaluate(model, data, "paper", torch.device(device), progress=progress)
    return result


def _smoke_samples(data: Path, stems: Sequence[str]) -> list:
    from train.data import scan_dataset

    by_stem = {s.stem: s for s in scan_dataset(data)}
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise UserError(f"the dataset {data} lacks the smoke images {', '.join(missing)}; pass --data with the "
                        "median-nerve dataset the models were validated on")
    return [by_stem[s] for s in stems]


def _val_samples(data: Path) -> list:
    from train.data import scan_dataset
    from train.splits import make_split

    samples = scan_dataset(data)
    patients = [s.patient for s in samples]
    _, val_idx = make_split("paper", patients).indices(patients)
    return [samples[i] for i in val_idx]


def _compare_smoke(expected: dict, result: dict, tolerance: float) -> dict:
    measured = {r["stem"]: r["dsc"] for r in result["per_image"]}
    rows = [{"stem": s, "expected": e, "measured": measured[s], "diff": measured[s] - e}
            for s, e in zip(expected["stems"], expected["dsc"])]
    worst = max((abs(r["diff"]) for r in rows), default=0.0)
    return {"per_image": rows, "max_abs_diff": worst, "ok": worst <= tolerance}


def verify_smoke(checkpoint: Path, smoke: dict, data: str | os.PathLike | None = None,
                 tolerance: float = TOLERANCE) -> dict | None:
    """Check ``checkpoint`` reproduces ``smoke``'s per-image DSC; ``None`` (with a warning) without data."""
    folder = Path(data) if data is not None else default_data()
    if folder is None:
        log.warning("not verified: no dataset (pass --data DIR or set %s); run python -m tools.bundle check later",
                    DATA_ENV)
        return None
    report = _compare_smoke(smoke, _evaluate_paper(checkpoint, _smoke_samples(folder, smoke["stems"])), tolerance)
    if not report["ok"]:
        lines = "; ".join(f"{r['stem']} {r['expected']:.4f} -> {r['measured']:.4f}" for r in report["per_image"])
        raise UserError(f"the float16 copy does not reproduce the smoke DSC of the mn-eval result within {tolerance} "
                        f"({lines}); check that --eval-json was computed from this checkpoint on {folder}")
    log.info("verified on %s: smoke DSC reproduced (largest difference %.5f)", folder, report["max_abs_diff"])
    return report


def check_bundled(data: str | os.PathLike | None = None, full: bool = False, names: Sequence[str] | None = None,
                  tolerance: float = TOLERANCE, device: str = "cpu", progress: bool = False) -> dict:
    """Re-evaluate the bundled models (of the active folder), each loaded by name; returns the results.

    Smoke: per-image DSC of the manifest's smoke stems; ``full``: the mean DSC of the paper's
    validation split against ``val.dsc``. The file's sha256 must match the manifest too.
    """
    folder = registry.bundled_dir()
    manifest = registry.read_manifest(folder)
    entries = manifest["models"]
    if names:
        unknown = sorted(set(names) - {m["name"] for m in entries})
        if unknown:
            raise UserError(f"not bundled: {', '.join(unknown)} (bundled: "
                            f"{', '.join(m['name'] for m in entries) or 'none'})")
        entries = [m for m in entries if m["name"] in names]
    data_dir = _data_dir(data) if entries else (Path(data) if data else default_data())
    val_samples = _val_samples(data_dir) if full and entries else None
    out_models = []
    for entry in entries:
        source = registry.resolve_model(entry["name"])  # by name, as mn-live loads it
        sha = file_sha256(source.path)
        row: dict[str, Any] = {"name": entry["name"], "file": _shown_path(source.path), "sha256": sha,
                               "sha256_ok": sha == entry.get("sha256")}
        if full:
            result = _evaluate_paper(source.path, val_samples, device, progress)
            expected = entry["val"]["dsc"]
            diff = result["dsc"]["mean"] - expected
            row.update(images=result["n"], expected_images=entry["val"].get("images"), expected_dsc=expected,
                       dsc=result["dsc"]["mean"], diff=diff,
                       csa_median_rel_error=result["csa_rel_error"]["median"],
                       expected_csa_median_rel_error=entry["val"].get("csa_median_rel_error"),
                       ok=abs(diff) <= tolerance and entry["val"].get("images") in (None, result["n"]))
        else:
            result = _evaluate_paper(source.path, _smoke_samples(data_dir, entry["smoke"]["stems"]), device, progress)
            row.update(images=len(entry["smoke"]["stems"]), **_compare_smoke(entry["smoke"], result, tolerance))
        if not row["sha256_ok"]:
            row["ok"] = False
            log.error("%s: sha256 %s does not match the manifest's %s", entry["name"], sha, entry.get("sha256"))
        log.info("%s: %s", entry["name"], "ok" if row["ok"] else "MISMATCH")
        out_models.append(row)
    from engines.versions import library_versions

    return {
        "what": "bundled-model check: each bundled model loaded by name and re-evaluated with the paper protocol "
                "(train.evaluate.evaluate, the code behind mn-eval)",
        "mode": "full" if full else "smoke",
        "comparison": ("mean DSC of the paper validation split vs the manifest's val.dsc" if full else
                       "per-image DSC of the manifest's smoke images"),
        "tolerance": tolerance,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": os.fspath(data_dir) if data_dir else None,
        "manifest": _shown_path(folder / registry.MANIFEST_NAME),
        "system": {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
                   "device": device, "versions": library_versions()},
        "models": out_models,
        "ok": all(m["ok"] for m in out_models),
    }


def default_check_output() -> Path:
    """``benchmarks/results/bundled-check-HOST-DATE.json`` in a checkout, else in the current folder."""
    name = f"bundled-check-{socket.gethostname()}-{dt.date.today().isoformat()}.json"
    results = REPO_ROOT / "benchmarks" / "results"
    return results / name if results.is_dir() else Path(name)


# -- int8 ------------------------------------------------------------------------------------------
def int8_file_name(name: str, part: str) -> str:
    """``mn-realtime-refiner-int8.onnx``: the bundled int8 file of one part (``model`` for a single network)."""
    return f"{name}-{part}-int8.onnx"


def _machine_line() -> str:
    from engines.quantize import cpu_vnni

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{socket.gethostname()}: {cpu}, {os.cpu_count()} cores; {cpu_vnni()[1]}"


def _int8_engines(model_file: Path, made: dict[str, Path], threads: int | None, cache_dir: str | None) -> tuple:
    """``(int8 engine, fp32 engine)`` of ``model_file`` on onnxruntime, the int8 one from the files ``made``."""
    from engines.model_source import LoadOptions

    backend = registry.get_backend("onnxruntime")
    source = registry.resolve_model(model_file)
    options = LoadOptions(precision="int8", threads=threads, cache_dir=cache_dir, int8_files=dict(made))
    composite = registry.COMPOSITES.get(source.architecture)
    int8 = composite(source, backend, options) if composite is not None else backend.load(source, options)
    fp32 = registry.load_engine(model_file, backend="onnxruntime", precision="fp32", threads=threads,
                                cache_dir=cache_dir)
    return int8, fp32


def make_int8(name: str, data: str | os.PathLike | None = None, *, images: int | None = None,
              folder: str | os.PathLike | None = None, threads: int | None = None, cache_dir: str | None = None,
              command: str | None = None, progress: bool = False) -> tuple[dict, bool]:
    """Quantise the bundled model ``name`` to int8 (module docstring, ``int8``), verify it and, when it passes,
    ship its int8 files and record them in the manifest. Returns ``(report, passed)``; nothing is written when it
    does not pass.

    Raises:
        UserError: an unknown name, a model file that is not the manifest's, no dataset, or files over
            :data:`MAX_BUNDLE_BYTES`.
    """
    import shutil

    from engines.cascade import cascade_geometry, part_checkpoints, quantize_parts
    from engines.export import read_onnx_metadata
    from engines.model_source import LoadOptions
    from engines.quantize import (DEFAULT_CALIBRATION_IMAGES, META_CALIBRATION, QUANTISATION, cached_int8_onnx,
                                  calibration_from_files, preprocessed)
    from engines.verify import INT8_ACCEPTANCE_DICE, VerifyFrame, run_engine, verify_engine
    from train.data import load_samples, read_image, read_mask, scan_dataset
    from train.evaluate import score
    from train.splits import make_split

    import onnxruntime

    folder, manifest, entry = _bundled_entry(name, folder)
    model_file = folder / entry["file"]
    if not model_file.is_file() or file_sha256(model_file) != entry.get("sha256"):
        raise UserError(f"{model_file} is missing or not the file the manifest lists (sha256 differs); repair the "
                        "bundle first (python -m tools.bundle check)")
    data_dir = _data_dir(data)
    samples = scan_dataset(data_dir)
    patients = [s.patient for s in samples]
    split = make_split("paper", patients)
    train_idx, val_idx = split.indices(patients)
    calibration = calibration_from_files(
        [samples[i].image_path for i in train_idx], count=images or DEFAULT_CALIBRATION_IMAGES,
        source=f"{data_dir.name}: the paper split's training images ({len(train_idx)} images of "
               f"{len(split.train)} patients)")

    # the int8 files, in the engine cache; dynamic batch, so every caller's batch runs them
    backend = registry.get_backend("onnxruntime")
    backend.require("int8")
    source = registry.resolve_model(model_file)
    options = LoadOptions(precision="int8", threads=threads, batch=1, dynamic_batch=True, cache_dir=cache_dir)
    if source.architecture == "cascade":
        paths, config = part_checkpoints(model_file, cache_dir)
        made = quantize_parts(source, paths, cascade_geometry(config, model_file), backend, options, calibration)
    else:
        path, _ = cached_int8_onnx(model_file, calibration, lambda size: preprocessed(calibration.read(), size),
                                   batch=1, dynamic_batch=True, cache_dir=cache_dir)
        made = {"model": path}

    # verify and score on the validation images, never calibrated on
    val = [samples[i] for i in val_idx]
    int8, fp32 = _int8_engines(model_file, made, threads, cache_dir)
    with int8, fp32:
        frames = [VerifyFrame(s.stem, read_image(s.image_path), read_mask(s.mask_path)) for s in val]
        verified = verify_engine(int8, model_file, frames, threshold=INT8_ACCEPTANCE_DICE, progress=progress)
        loaded = load_samples(val, int8.size, progress=progress)
        scores = {}
        for label, engine in (("int8", int8), ("fp32", fp32)):
            prob = run_engine(engine, loaded.images, progress=progress, desc=label)[:, 0]
            scores[label] = {protocol: score(prob, loaded, protocol) for protocol in ("paper", "native")}
    dsc = {k: v["paper"]["dsc"]["mean"] for k, v in scores.items()}
    passed = bool(verified["passed"]) and abs(dsc["int8"] - dsc["fp32"]) <= TOLERANCE
    report = {
        "name": name, "files": {part: str(p) for part, p in made.items()},
        "verify": {k: verified[k] for k in ("threshold", "dice_vs_torch", "max_abs_prob_diff", "area_diff_px",
                                             "frames", "failed_frames", "passed")},
        "val": {label: {"dsc": v["paper"]["dsc"]["mean"], "native_dsc": v["native"]["dsc"]["mean"],
                        "csa_median_rel_error": v["paper"]["csa_rel_error"]["median"],
                        "native_csa_median_rel_error": v["native"]["csa_rel_error"]["median"]}
                for label, v in scores.items()},
        "passed": passed,
    }
    if not passed:
        log.error("int8 %s not shipped: verification %s, val DSC int8 %.4f vs fp32 %.4f (tolerance %.3f)", name,
                  "passed" if verified["passed"] else f"failed on {len(verified['failed_frames'])} frame(s)",
                  dsc["int8"], dsc["fp32"], TOLERANCE)
        return report, False

    others = sum(p.stat().st_size for p in (*folder.glob("*.pt"), *folder.glob("*.onnx"))
                 if not p.name.startswith(f"{name}-") or not p.name.endswith("-int8.onnx"))
    new_bytes = sum(p.stat().st_size for p in made.values())
    if others + new_bytes > MAX_BUNDLE_BYTES:
        raise UserError(f"the int8 files of {name} ({new_bytes / 1e6:.1f} MB) and the other bundled files "
                        f"({others / 1e6:.1f} MB) exceed the {MAX_BUNDLE_BYTES / 1e6:.0f} MB the package may carry")
    _drop_int8_files(entry, folder)
    files, meta = {}, {}
    for part, path in made.items():
        file = int8_file_name(name, part)
        tmp = folder / f".{file}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, folder / file)
        files[part] = file
        meta[part] = read_onnx_metadata(folder / file).get(META_CALIBRATION) or {}
    first = next(iter(meta.values()))
    entry["int8"] = {
        "files": files,
        "file_bytes": {part: (folder / f).stat().st_size for part, f in files.items()},
        "sha256": {part: file_sha256(folder / f) for part, f in files.items()},
        "model_sha256": entry["sha256"],
        "batch": "dynamic",
        "calibration": {
            **{k: first.get(k) for k in ("source", "images", "available", "selection", "names_sha256",
                                         "contents_sha256", "method", "float_nodes")},
            "split": "paper:train",
            "digest": {part: m.get("digest") for part, m in meta.items()},
            "windows": next((m["windows"] for m in meta.values() if "windows" in m), None),
        },
        "quantisation": {**QUANTISATION, "onnxruntime": onnxruntime.__version__},
        "verify": {"split": VAL_SPLIT, **report["verify"]},
        "val": {"protocol": "paper", "split": VAL_SPLIT, "images": len(val), **report["val"]},
        "command": command,
        "machine": _machine_line(),
        "added": dt.date.today().isoformat(),
    }
    write_manifest(manifest, folder)
    _reload_if_active(folder)
    log.info("bundled the int8 files of %s: %s", name, ", ".join(files.values()))
    return report, True


# -- the table ------------------------------------------------------------------------------------
def models_table(manifest: dict | None = None) -> str:
    """The bundled models of ``manifest`` (default: the active folder's) as a table; ``""`` when it lists none
    (:func:`engines.catalogue.models_table`, what ``mn-live --list-models`` prints)."""
    return _table(manifest if manifest is not None else registry.read_manifest())


# -- the command ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Manage the trained models bundled with mn-seg "
                                "(engines/bundled/: manifest.json and NAME.pt files). Exit codes: 0 done / "
                                "check passed, 1 check found a mismatch, 2 bad input.")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--dir", default=None,
                        help=f"bundled folder to work on (default: the package's, {registry.BUNDLED_DIR})")
    add_logging_args(shared)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("add", parents=[shared],
                       help="bundle a trained checkpoint (float16 copy) and write its manifest entry")
    a.add_argument("name", help="the bundled name (e.g. mn-realtime); an entry of the same name is replaced")
    a.add_argument("--checkpoint", required=True, help="the checkpoint to ship, e.g. RUN_DIR/best.pt")
    a.add_argument("--description", required=True, help="one line: what the model is and is for")
    a.add_argument("--eval-json", required=True, metavar="FILE",
                   help="mn-eval --split paper --subset val --protocol paper --json FILE of this checkpoint")
    a.add_argument("--native-json", default=None, metavar="FILE",
                   help="the same with --protocol native (adds val.native_dsc)")
    a.add_argument("--bench-json", default=None, metavar="FILE",
                   help="an mn-bench --json result with a realtime-mode onnxruntime row of this model at its size "
                        "(adds the CPU latency; without it cpu_latency_ms is null)")
    a.add_argument("--train-command", default=None, help="the mn-train command that produced the checkpoint")
    a.add_argument("--results-file", action="append", default=[], metavar="PATH",
                   help="a results file to cite (repeatable), e.g. benchmarks/results/accuracy-....json")
    a.add_argument("--notes", default=None, help="anything a user of the model must know")
    a.add_argument("--cv-summary", default=None, metavar="FILE",
                   help="the mn-cv cv-summary.json of the recipe (records its cross-validation estimate as 'cv'); "
                        "required for a model trained on every image (mn-cv --final)")
    a.add_argument("--default", action="store_true", help="make it the default model (mn-live without --model)")
    a.add_argument("--fp32-default", action="store_true",
                   help="make it the default where the CPU would run the default model in float32 (no GPU, no VNNI "
                        "for its int8 files): a model that keeps real time there")
    a.add_argument("--data", default=None, metavar="DIR",
                   help=f"dataset to verify the float16 copy on (default ${DATA_ENV} when set; without either "
                        "the copy is not verified)")
    a.add_argument("--no-verify", action="store_true", help="do not re-evaluate the smoke images")

    sub.add_parser("list", parents=[shared], help="table of the bundled models")

    c = sub.add_parser("check", parents=[shared],
                       help="re-evaluate every bundled model (loaded by name) against its manifest")
    c.add_argument("--data", default=None, metavar="DIR",
                   help=f"the median-nerve dataset (default ${DATA_ENV})")
    c.add_argument("--full", action="store_true",
                   help="the whole paper validation split (mean DSC vs val.dsc) instead of the smoke images")
    c.add_argument("--json", default=None, metavar="FILE",
                   help="results file (default with --full: benchmarks/results/bundled-check-HOST-DATE.json; "
                        "without --full: none)")
    c.add_argument("--model", action="append", default=None, metavar="NAME", help="check only this model "
                   "(repeatable)")
    c.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest accepted DSC difference")
    c.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")

    r = sub.add_parser("remove", parents=[shared], help="drop a bundled model (manifest entry and file)")
    r.add_argument("name", help="the bundled name")

    n = sub.add_parser("rename", parents=[shared],
                       help="give a bundled model a new name (its file follows); the old name stays accepted with a "
                            "warning that says why")
    n.add_argument("old", help="the bundled name now")
    n.add_argument("new", help="the new name")
    n.add_argument("--why", required=True, help="why, shown to whoever still uses the old name")
    n.add_argument("--description", default=None, help="a new description for the manifest entry")

    t = sub.add_parser("latency", parents=[shared],
                       help="replace a bundled model's CPU latency record by an mn-bench --json result of it")
    t.add_argument("name", help="the bundled name")
    t.add_argument("--bench-json", required=True, metavar="FILE",
                   help="an mn-bench --json result with a realtime-mode onnxruntime row of this model (fp32 recorded, "
                        "and int8 beside it when measured)")

    q = sub.add_parser("int8", parents=[shared],
                       help="quantise a bundled model to int8 on the paper split's training images, verify it on the "
                            "validation images and ship its int8 ONNX files")
    q.add_argument("name", help="the bundled name (e.g. mn-realtime)")
    q.add_argument("--data", default=None, metavar="DIR", help=f"the median-nerve dataset (default ${DATA_ENV})")
    q.add_argument("--images", type=int, default=None, metavar="N",
                   help="calibration images of the training side, spread evenly (default 64)")
    q.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    q.add_argument("--cache-dir", default=None, metavar="DIR", help="engine cache for the exports")
    q.add_argument("--json", default=None, metavar="FILE", help="write the verification and scores as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.dir is not None:
        if not Path(args.dir).is_dir():
            raise UserError(f"--dir {args.dir} is not a folder")
        registry.load_bundled(args.dir)
    if args.command == "add":
        entry = add_model(args.name, args.checkpoint, description=args.description, eval_json=args.eval_json,
                          native_json=args.native_json, bench_json=args.bench_json, train_command=args.train_command,
                          results_files=args.results_file, notes=args.notes, make_default=args.default,
                          make_fp32_default=args.fp32_default,
                          data=args.data, verify=not args.no_verify, cv_summary=args.cv_summary)
        print(models_table())
        print(f"added {entry['name']}: {registry.bundled_dir() / entry['file']}; commit it and the manifest")
    elif args.command == "list":
        print(models_table() or no_models_text())
    elif args.command == "remove":
        remove_model(args.name)
    elif args.command == "rename":
        rename_model(args.old, args.new, why=args.why, description=args.description)
        print(models_table())
    elif args.command == "latency":
        set_latency(args.name, args.bench_json)
        print(models_table())
    elif args.command == "int8":
        command = " ".join([PROG, *(argv if argv is not None else sys.argv[1:])])
        report, passed = make_int8(args.name, args.data, images=args.images, threads=args.threads,
                                   cache_dir=args.cache_dir, command=command, progress=log.isEnabledFor(logging.INFO))
        report["command"] = command
        for label, v in report["val"].items():
            print(f"{label}: val DSC {v['dsc']:.4f} (native {v['native_dsc']:.4f}), CSA error median "
                  f"{100 * v['csa_median_rel_error']:.1f} %")
        d = report["verify"]["dice_vs_torch"]
        print(f"int8 vs fp32 torch: per-frame Dice min {d['min']:.4f} mean {d['mean']:.4f} (need >= "
              f"{report['verify']['threshold']:.2f}): {'shipped' if passed else 'NOT shipped'}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return EXIT_OK if passed else EXIT_FAILURE
    else:
        from train.cli_util import resolve_device

        device = str(resolve_device(args.device))
        results = check_bundled(args.data, full=args.full, names=args.model, tolerance=args.tolerance,
                                device=device, progress=log.isEnabledFor(logging.INFO))
        results["command"] = " ".join([PROG, *(argv if argv is not None else sys.argv[1:])])
        for m in results["models"]:
            if args.full:
                print(f"{m['name']:<16} {'ok' if m['ok'] else 'MISMATCH':<8} DSC {m['dsc']:.4f} (manifest "
                      f"{m['expected_dsc']:.4f}, {m['images']} images){'' if m['sha256_ok'] else ', sha256 differs'}")
            else:
                print(f"{m['name']:<16} {'ok' if m['ok'] else 'MISMATCH':<8} largest per-image DSC difference "
                      f"{m['max_abs_diff']:.4f} over {m['images']} smoke images"
                      f"{'' if m['sha256_ok'] else ', sha256 differs'}")
        if not results["models"]:
            print("no bundled models to check")
        out = Path(args.json) if args.json else (default_check_output() if args.full else None)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {out}")
        return EXIT_OK if results["ok"] else EXIT_FAILURE
    return EXIT_OK


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
