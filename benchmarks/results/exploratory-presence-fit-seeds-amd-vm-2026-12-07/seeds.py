"""Clip frames `ok` and presence thresholds of each variant, fold and fit seed.

    python seeds.py OUT FOLDS SEEDS VARIANT ...    e.g. python seeds.py runs/lens 0,1,2,3,4 0,1,2 lens swa

Reads OUT/fold-K/VARIANT/win.json and appearance.json (fit seed 0) and OUT/fold-K/VARIANT/fit-seed-S/ (others), as
benchmarks/localiser_ensemble.sh writes them; prints a Markdown table per variant and the pooled counts per seed
(only seeds present on every fold are pooled), their mean and range.
"""
import json
import sys
from pathlib import Path


def ok_frames(win: Path) -> int:
    return sum(c["tracked+fusion"]["ok"] for c in json.loads(win.read_text())["clips"].values())


def main(argv: list[str]) -> None:
    root, folds, seeds, variants = Path(argv[0]), argv[1].split(","), argv[2].split(","), argv[3:]
    for v in variants:
        print(f"\n{v}: clip frames `ok` of 2304 a fold (entry / hold threshold)\n")
        head = " | ".join(f"fold {k}" for k in folds)
        print(f"| fit seed | {head} | pooled of {2304 * len(folds)} |")
        print("|---" * (len(folds) + 2) + "|")
        pooled = {}
        for s in seeds:
            cells, total = [], 0
            for k in folds:
                d = root / f"fold-{k}" / v / ("" if s == "0" else f"fit-seed-{s}")
                if not (d / "win.json").is_file():
                    cells.append("-")
                    total = None  # a fold missing: this seed is not pooled
                    continue
                a = json.loads((d / "appearance.json").read_text())
                n = ok_frames(d / "win.json")
                total = None if total is None else total + n
                cells.append(f"{n} ({a['threshold']:.3f} / {a.get('hold_threshold') or a['threshold']:.3f})")
            if total is not None:
                pooled[s] = total
            print(f"| {s} | " + " | ".join(cells) + f" | {'-' if total is None else total} |")
        if pooled:
            vals = list(pooled.values())
            print(f"\npooled over seeds {','.join(pooled)}: mean {sum(vals) / len(vals):.1f}, "
                  f"range {min(vals)}-{max(vals)}")


if __name__ == "__main__":
    main(sys.argv[1:])
