"""Fold 0's clips: the frames the appearance check turned away (presence on) against the outline the shape-only gate
measured on the same frames (on/CLIP.tracked+fusion.csv, shape/CLIP.tracked+fusion.csv beside this file).

python benchmarks/results/exploratory-appearance-rejections-fold0-vm-2026-12-05/analyse.py
"""
import csv
import statistics as st
from pathlib import Path

HERE = Path(__file__).resolve().parent


def describe(x: list[float]) -> str:
    below = 100 * sum(v < -0.25 for v in x) / len(x)
    return (f"n {len(x)}, median signed {100 * st.median(x):+.1f} %, median |err| "
            f"{100 * st.median(map(abs, x)):.1f} %, share below -25 %: {below:.0f} %")


def main() -> None:
    rejected: list[float] = []
    measured: list[float] = []
    per_clip: dict[str, list[float]] = {}
    for f in sorted((HERE / "on").glob("*.csv")):
        g = HERE / "shape" / f.name
        if not g.exists():
            continue
        with open(f, newline="") as a_file, open(g, newline="") as b_file:
            pairs = list(zip(csv.DictReader(a_file), csv.DictReader(b_file)))
        for a, b in pairs:
            if not b["area_rel_error"]:
                continue
            e = float(b["area_rel_error"])
            if a["rejected"].startswith("appearance"):
                rejected.append(e)
                per_clip.setdefault(f.name.split(".")[0], []).append(e)
            elif a["status"] == "ok":
                measured.append(e)
    print("frames turned away by the appearance check (shape gate's outline there):", describe(rejected))
    print("frames measured with presence on (shape gate's outline there):           ", describe(measured))
    for k, v in sorted(per_clip.items(), key=lambda kv: -len(kv[1])):
        print(f"  {k}: {len(v)} frames, median signed {100 * st.median(v):+.1f} %")


if __name__ == "__main__":
    main()
