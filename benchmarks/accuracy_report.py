"""Collect training runs and their evaluations into one accuracy results file (JSON + Markdown).

    python -m benchmarks.accuracy_report --out benchmarks/results/accuracy-NAME.json \\
        --machine "one NVIDIA H100 (lent), 16 CPU cores" \\
        --run unet=RUNS/unet-paper --run cascade=RUNS/cascade-ph-lr3:RUNS/loc-strong-ph,RUNS/ref-strong-ph-lr3 ...

Each ``--run NAME=DIR[:PART_DIR,...]`` names a run folder written by ``mn-train`` (``config.json``,
``history.csv``) holding the ``mn-eval --json`` results ``eval-paper.json`` and
``eval-native.json`` (paper validation patients) and optionally ``phantom.json`` (an
``mn-segment --truth`` summary). A cascade's folder holds only its evaluations; its parts'
training runs follow the colon. The Markdown table (``.md`` beside the JSON) is what the README
shows.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from train.cli_util import add_logging_args, setup_logging
from train.errors import UserError, run_cli

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def training_record(run: Path) -> dict[str, Any]:
    """Settings and course of one mn-train run: model, size, augmentation, epochs run, best epoch."""
    config = _read_json(run / "config.json")
    if config is None:
        raise UserError(f"{run} has no config.json: is it a folder written by mn-train?")
    train = config.get("train", {})
    rows = []
    if (run / "history.csv").is_file():
        with open(run / "history.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    epochs_run = len(rows)
    return {
        "run": run.name,
        "model": config["model"],
        "size": train.get("size"),
        "crop": train.get("crop"),
        "augment": train.get("augment"),
        "extra_train_images": sum(int(e.get("images", 0)) for e in config.get("data", {}).get("extra_train", [])),
        "lr": train.get("lr"),
        "batch_size": train.get("batch_size"),
        "epochs_planned": train.get("epochs"),
        "epochs_run": epochs_run,
        "best_epoch": config.get("metrics", {}).get("best_epoch"),
        "stopped_early": epochs_run < int(train.get("epochs") or 0),
        "train_seconds": round(sum(float(r.get("seconds") or 0) for r in rows), 1),
        "device": train.get("device"),
        "amp_dtype": (train.get("amp_dtype", "float16 (before --amp-dtype existed)")
                      if train.get("device", "").startswith("cuda") else None),
        "val_dsc_in_training": config.get("metrics", {}).get("val_dsc"),
    }


def _metric(result: dict, key: str) -> float | None:
    value = result.get(key)
    if isinstance(value, dict):
        value = value.get("mean", value.get("median"))
    return None if value is None else round(float(value), 4)


def evaluation_record(result: dict | None) -> dict[str, Any] | None:
    """The headline numbers of one mn-eval JSON."""
    if result is None:
        return None
    csa = result.get("csa_rel_error", {})
    return {"protocol": result.get("protocol"), "n": result.get("n"), "dsc": _metric(result, "dsc"),
            "dsc_std": round(float(result["dsc"]["std"]), 4), "iou": _metric(result, "iou"),
            "precision": _metric(result, "precision"), "recall": _metric(result, "recall"),
            "csa_rel_error_median": round(float(csa.get("median")), 4) if csa else None,
            "csa_rel_error_mean": round(float(csa.get("mean")), 4) if csa else None,
            "split": result.get("split")}


def collect(name: str, folder: Path, parts: Sequence[Path]) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "folder": folder.name}
    if (folder / "config.json").is_file():
        row["training"] = training_record(folder)
    if parts:
        row["parts"] = [training_record(p) for p in parts]
    row["paper"] = evaluation_record(_read_json(folder / "eval-paper.json"))
    row["native"] = evaluation_record(_read_json(folder / "eval-native.json"))
    phantom = _read_json(folder / "phantom.json")
    if phantom is not None:
        truth = phantom.get("truth", phantom)
        row["phantom"] = {k: truth.get(k) for k in ("frames", "dice_mean", "dice_min", "csa_rel_error_median")}
    if row["paper"] is None:
        raise UserError(f"{folder} has no eval-paper.json: run mn-eval --protocol paper --json "
                        f"{folder}/eval-paper.json")
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| model | DSC (paper) | DSC (native) | IoU | precision | recall | CSA error median | phantom Dice | "
             "epochs (best) | settings |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, n = r["paper"], r["native"] or {}
        runs = r.get("parts") or ([r["training"]] if "training" in r else [])
        epochs = ", ".join(f"{t['epochs_run']}/{t['epochs_planned']} ({t['best_epoch']})" for t in runs)
        settings = "; ".join(
            f"{t['model']['name']}{' ' + json.dumps(t['model']['kwargs']) if t['model'].get('kwargs') else ''} "
            f"{t['size'][0]}x{t['size'][1]}" + (f" crop {t['crop'][0]}x{t['crop'][1]}" if t.get("crop") else "")
            + f", {t['augment']} aug" + (f" + {t['extra_train_images']} phantom" if t["extra_train_images"] else "")
            + f", lr {t['lr']:g}" for t in runs)
        ph = r.get("phantom", {}).get("dice_mean")
        lines.append(f"| {r['name']} | {p['dsc']:.4f} ± {p['dsc_std']:.3f} | {n.get('dsc', float('nan')):.4f} | "
                     f"{p['iou']:.4f} | {p['precision']:.4f} | {p['recall']:.4f} | "
                     f"{100 * p['csa_rel_error_median']:.1f} % | {'' if ph is None else f'{ph:.3f}'} | {epochs} | "
                     f"{settings} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="NAME=DIR[:PART,...]", help="a run to include")
    p.add_argument("--out", required=True, help="JSON file to write (the Markdown table goes beside it, .md)")
    p.add_argument("--machine", required=True, help="where the runs trained, in words")
    p.add_argument("--note", default="", help="anything a reader must know (deviations from the paper)")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    rows = []
    for spec in args.run:
        name, sep, rest = spec.partition("=")
        if not sep or not rest:
            raise UserError(f"--run {spec!r}: write NAME=DIR or NAME=DIR:PART_DIR,PART_DIR")
        folder, _, parts = rest.partition(":")
        folder_path = Path(folder)
        if not folder_path.is_dir():
            raise UserError(f"--run {name}: {folder} is not a folder")
        rows.append(collect(name, folder_path, [Path(x) for x in parts.split(",") if x]))
    result = {"benchmark": "accuracy", "date": dt.date.today().isoformat(), "machine": args.machine,
              "data": "median-nerve, the paper's validation patients (38 images, 18 patients)",
              "command": "python -m benchmarks.accuracy_report " + " ".join(argv if argv is not None else sys.argv[1:]),
              "note": args.note, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    log.info("wrote %s and %s", out, out.with_suffix(".md"))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("accuracy_report", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
