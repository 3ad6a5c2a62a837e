"""How much of the stills' CSA error two refiners share: their per-image signed errors, side by side.

    python shared_error.py A.csv B.csv [PAIR.csv]

A, B (and PAIR): ``mn-eval --per-image`` files of the same images (one refiner each behind the same localisers,
and optionally the two together). Images that either misses (DSC < 0.5) are left out. Prints the correlation of
the two signed relative errors (pred - true) / true, each one's median |error|, the median |difference| between them,
and how much of the spread lies between patients (images of one patient share it) rather than within them.
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict


def signed_errors(path: str) -> dict[str, tuple[float, float]]:
    """stem -> (signed relative CSA error, DSC)."""
    with open(path, newline="") as f:
        return {r["stem"]: ((float(r["area_pred_px"]) - float(r["area_true_px"])) / float(r["area_true_px"]),
                            float(r["dsc"])) for r in csv.DictReader(f)}


def main(paths: list[str]) -> None:
    runs = [signed_errors(p) for p in paths]
    stems = sorted(s for s in runs[0] if all(s in r and r[s][1] >= 0.5 for r in runs))
    errors = [[r[s][0] for s in stems] for r in runs]
    print(f"images (none missed by any): {len(stems)}")
    print(f"correlation of the signed errors, A and B: {statistics.correlation(errors[0], errors[1]):.2f}")
    for name, e in zip(paths, errors):
        print(f"median |error| {statistics.median(abs(v) for v in e):.1%}, mean {statistics.fmean(e):+.1%}: {name}")
    print(f"median |A - B|: {statistics.median(abs(a - b) for a, b in zip(errors[0], errors[1])):.1%}")
    by_patient: dict[str, list[float]] = defaultdict(list)
    for s, e in zip(stems, errors[-1]):
        by_patient[s.rsplit("-", 1)[0]].append(e)
    within = [e - statistics.fmean(v) for v in by_patient.values() if len(v) > 1 for e in v]
    total = statistics.pvariance(errors[-1])
    print(f"last file: variance of the signed error {total:.4f}, within patients (of those with 2+ images) "
          f"{statistics.fmean(w * w for w in within):.4f}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(sys.argv[1:])
