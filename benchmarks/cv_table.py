"""One table of what every fold model of one or more ``mn-cv`` folders measured, recipe beside recipe.

    python -m benchmarks.cv_table runs/cv-cascade-strong-ph runs/cv-cascade-acqloc-cmp \\
        [--json F] [--md F]

Reads, per recipe folder and fold, what ``mn-cv`` and ``benchmarks/cpu_cv.sh`` (or ``gpu_cv.sh``) leave in
``fold-K/``: ``eval-paper.json`` and ``eval-native.json`` (stills), ``presence.json`` (the presence report, gate
``on`` with the fold model's own appearance fit), ``window-on.json``, ``window-shape.json`` and
``window-on-crop24.json`` (its validation patients animated into clips; the ``tracked+fusion`` setting) and
``speckle-stability.json``. A file that is not there leaves its cells empty. Each cell is the folds' values and,
from two folds on, their mean ± SD (sample SD); images missed and clip jumps are summed over the folds. These are
validation numbers of the folds: the images chose each fold's epoch, nothing else.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.report_files import print_and_write
from train.cli_util import add_logging_args, setup_logging
from train.errors import UserError, run_cli

CLIP_SETTING = "tracked+fusion"


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _clip(name: str, key: str) -> Callable[[Path], float | None]:
    def get(fold: Path) -> float | None:
        d = _load(fold / f"{name}.json")
        return None if d is None else ((d.get("pooled") or {}).get(CLIP_SETTING) or {}).get(key)
    return get


def _eval(protocol: str, *keys: str) -> Callable[[Path], float | None]:
    def get(fold: Path) -> float | None:
        d: Any = _load(fold / f"eval-{protocol}.json")
        for k in keys:
            if not isinstance(d, dict):
                return None
            d = d.get(k)
        return d
    return get


def _presence(kind: str, key: str) -> Callable[[Path], float | None]:
    def get(fold: Path) -> float | None:
        d = _load(fold / "presence.json")
        return None if d is None else (((d.get("summary") or {}).get("on") or {}).get(kind) or {}).get(key)
    return get


def _speckle(key: str) -> Callable[[Path], float | None]:
    def get(fold: Path) -> float | None:
        d = _load(fold / "speckle-stability.json")
        return None if d is None else (((d.get("result") or {}).get("area_change") or {}).get("speckle") or {}).get(key)
    return get


# (row label, getter, format: "dsc" 4 decimals, "pct" a fraction as %, "n" a count summed over folds)
ROWS: list[tuple[str, Callable[[Path], float | None], str]] = [
    ("stills: DSC, paper protocol", _eval("paper", "dsc", "mean"), "dsc"),
    ("stills: DSC, native", _eval("native", "dsc", "mean"), "dsc"),
    ("stills: CSA \\|error\\| median", _eval("native", "csa_rel_error", "median"), "pct"),
    ("stills: CSA bias (mean signed)", _eval("native", "csa_agreement", "bias_rel"), "pct"),
    ("stills: CSA SD", _eval("native", "csa_agreement", "sd_rel"), "pct"),
    ("stills: missed (DSC < 0.5)", _eval("native", "csa_agreement", "missed"), "n"),
    ("presence on: nerve-free frames with a nerve", _presence("all-negatives", "reported_rate"), "pct"),
    ("presence on: validation nerves found", _presence("validation", "found_rate"), "pct"),
    ("clips, presence on: frames ok", _clip("window-on", "ok_rate"), "pct"),
    ("clips, on: CSA \\|error\\| median", _clip("window-on", "csa_abs_rel_median"), "pct"),
    ("clips, on: CSA bias", _clip("window-on", "csa_bias"), "pct"),
    ("clips, on: FR \\|error\\| median", _clip("window-on", "fr_abs_rel_median"), "pct"),
    ("clips, on: area jitter median", _clip("window-on", "jitter_median"), "pct"),
    ("clips, on: truth's jitter median", _clip("window-on", "truth_jitter_median"), "pct"),
    ("clips, on: area jitter p95", _clip("window-on", "jitter_p95"), "pct"),
    ("clips, on: jumps", _clip("window-on", "jumps"), "n"),
    ("clips, presence shape: frames ok", _clip("window-shape", "ok_rate"), "pct"),
    ("clips, shape: CSA \\|error\\| median", _clip("window-shape", "csa_abs_rel_median"), "pct"),
    ("clips, shape: FR \\|error\\| median", _clip("window-shape", "fr_abs_rel_median"), "pct"),
    ("clips, shape: area jitter median", _clip("window-shape", "jitter_median"), "pct"),
    ("clips, 24 px cut: frames ok", _clip("window-on-crop24", "ok_rate"), "pct"),
    ("clips, 24 px cut: CSA \\|error\\| median", _clip("window-on-crop24", "csa_abs_rel_median"), "pct"),
    ("speckle: area change median", _speckle("median"), "pct"),
]


def collect(folders: Sequence[Path]) -> dict[str, Any]:
    """``{"recipes": [{"folder", "recipe", "tta", "folds": [K...], "rows": {label: [value per fold]}}]}`` (``tta``: the
    refiner's test-time augmentation the joined models ran, ``mn-cv --tta``)."""
    recipes = []
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder; give mn-cv --out folders")
        folds = sorted(int(p.name.split("-", 1)[1]) for p in folder.glob("fold-*")
                       if p.name.split("-", 1)[1].isdigit() and (p / "eval-paper.json").is_file())
        summary = _load(folder / "cv-summary.json") or {}
        recipes.append({"folder": str(folder), "recipe": summary.get("recipe") or folder.name,
                        "tta": summary.get("tta") or "none", "folds": folds,
                        "rows": {label: [get(folder / f"fold-{k}") for k in folds] for label, get, _ in ROWS}})
    return {"recipes": recipes, "clip_setting": CLIP_SETTING}


def _cell(values: list[float | None], kind: str) -> str:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return ""
    if kind == "n":
        return f"{int(sum(vals))}" + (f" ({' + '.join(str(int(v)) for v in vals)})" if len(vals) > 1 else "")
    scale, digits, unit = (1.0, 3, "") if kind == "dsc" else (100.0, 1, " %")
    each = " / ".join(f"{v * scale:.{digits}f}" for v in vals)
    if len(vals) < 2:
        return each + unit
    mean, sd = statistics.fmean(vals) * scale, statistics.stdev(vals) * scale
    return f"**{mean:.{digits}f} ± {sd:.{digits}f}**{unit} ({each})"


def format_table(result: dict[str, Any]) -> str:
    recipes = result["recipes"]
    head = "| | " + " | ".join(f"`{r['recipe']}`{', tta ' + r['tta'] if r.get('tta', 'none') != 'none' else ''} "
                               f"(folds {', '.join(map(str, r['folds'])) or 'none'})"
                               for r in recipes) + " |"
    lines = [head, "|---|" + "---|" * len(recipes)]
    for label, _, kind in ROWS:
        cells = [_cell(r["rows"][label], kind) for r in recipes]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Each cell: mean ± SD across folds (sample SD), then every fold's value; counts summed. Clips: "
                  f"the `{CLIP_SETTING}` setting of `benchmarks.window_bench`."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cv_table",
                                description="What every fold model of mn-cv folders measured, recipe beside recipe.")
    p.add_argument("folders", nargs="+", type=Path, help="mn-cv --out folders (one per recipe)")
    p.add_argument("--json", type=Path, default=None, help="write the values as JSON")
    p.add_argument("--md", type=Path, default=None, help="write the table as Markdown")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    result = collect(args.folders)
    text = format_table(result)
    print_and_write(text, result, args.json, args.md)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("python -m benchmarks.cv_table", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
