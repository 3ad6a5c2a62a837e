"""The 34 acquisition changes of mn-robustness pooled over folds from each fold's per-image rows (markdown):

    python pool34.py DIR FOLDS VARIANT    # e.g. python pool34.py runs/lens 0,1,2,3,4 acq

DIR/fold-K/VARIANT/robustness-per-image.csv is what benchmarks/localiser_ensemble.sh's rob34 step writes
(mn-robustness --split kfold --fold K --per-image). Perturbations are seeded by each image's index in the dataset,
so these rows are the ones an ``mn-robustness --cv-dir`` run over the same fold models would make, and the pooled
table is that run's (without --window-diagnosis): rows summarised by benchmarks.robustness.summarise_conditions.
"""
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from benchmarks.robustness import conditions_for, format_table, summarise_conditions  # noqa: E402


def read_rows(path):
    rows = []
    for r in csv.DictReader(open(path, newline="")):
        rows.append({"stem": r["stem"], "perturbation": r["perturbation"],
                     "level": float(r["level"]) if r["level"] else None, "dsc": float(r["dsc"]),
                     "csa_rel_error": float(r["csa_rel_error"]) if r["csa_rel_error"] else None,
                     "missed": r["missed"] == "True", "empty": r["empty"] == "True"})
    return rows


def main(argv):
    root, folds, variant = Path(argv[0]), [int(k) for k in argv[1].split(",")], argv[2]
    rows = [r for k in folds for r in read_rows(root / f"fold-{k}" / variant / "robustness-per-image.csv")]
    levels = {}
    for r in rows:
        if r["level"] is not None:
            levels.setdefault(r["perturbation"], {})[r["level"]] = None
    conditions = conditions_for(levels)
    table = summarise_conditions(rows, conditions)
    n = table[0]["n"]
    print(f"folds {','.join(map(str, folds))}, {variant}: {n} images\n")
    print(format_table({"rows": table, "n_images": n, "within_pts": 2.0, "model": variant, "split": "pooled",
                        "all_within_2pts": all(t["within_2pts"] for t in table[1:])}))


if __name__ == "__main__":
    main(sys.argv[1:])
