"""Variants of benchmarks/localiser_ensemble.sh pooled over the folds given, as one table (markdown):

    python pooled.py DIR FOLDS VARIANT [VARIANT ...]    # e.g. python pooled.py runs/lens 0,1,2,3,4 base lens

DIR is the script's OUT (DIR/fold-K/VARIANT/{eval-*.json, per-image-*.csv, rob.json, win.json,
presence-clips.json}). Stills: DSC mean +- SD of the fold means; CSA |error| median, bias (mean signed relative
error) and images missed (DSC < 0.5) over every image pooled (paper protocol). Compressed stills (rob.json): DSC
mean over every image, images missed; CSA |error| the median of the folds' medians (no per-image rows). Clips
(win.json, tracked+fusion): every fold's clips pooled as benchmarks.window_bench --pool does. Nerve-free clips
(presence-clips.json, --confirm 2): frames with a nerve reported over every fold's negatives.
"""
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from benchmarks.window_bench import pool_reports  # noqa: E402


def load(path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def column(root, folds, variant):
    out = {}
    dirs = [Path(root) / f"fold-{k}" / variant for k in folds]
    for protocol in ("paper", "native"):
        means = [load(d / f"eval-{protocol}.json")["dsc"]["mean"] for d in dirs]
        out[f"DSC {protocol}, mean +- SD of {len(dirs)} folds"] = \
            f"{statistics.mean(means):.3f} +- {statistics.stdev(means) if len(means) > 1 else 0:.3f}"
    rows = [r for d in dirs for r in csv.DictReader(open(d / "per-image-paper.csv"))]
    signed = [(float(r["area_pred_px"]) - float(r["area_true_px"])) / float(r["area_true_px"]) for r in rows]
    out["stills CSA |error| median (pooled)"] = f"{100 * statistics.median(abs(s) for s in signed):.1f} %"
    out["stills CSA bias (pooled)"] = f"{100 * statistics.mean(signed):+.1f} %"
    out["stills missed (DSC < 0.5)"] = (f"{sum(float(r['dsc']) < 0.5 for r in rows)} of {len(rows)}: "
                                        + ", ".join(r["stem"] for r in rows if float(r["dsc"]) < 0.5))
    for level in (0.75, 0.85):
        got = [x for d in dirs for x in (load(d / "rob.json") or {"rows": []})["rows"]
               if x["perturbation"] == "compress" and x["level"] == level]
        if len(got) == len(dirs):
            n = sum(x["n"] for x in got)
            out[f"compress {level}: DSC; CSA |error| (median of folds); missed"] = (
                f"{sum(x['dsc_mean'] * x['n'] for x in got) / n:.3f}; "
                f"{100 * statistics.median(x['csa_abs_median'] for x in got):.1f} %; {sum(x['missed'] for x in got)}")
    wins = [d / "win.json" for d in dirs if (d / "win.json").exists()]
    if len(wins) == len(dirs):
        p = (pool_reports(wins) if len(wins) > 1 else load(wins[0]))["pooled"]["tracked+fusion"]
        out["clips: frames ok"] = f"{100 * p['ok_rate']:.1f} % of {p['frames']}"
        out["clips: CSA |error|, bias; FR |error| (medians of clips)"] = (
            f"{100 * p['csa_abs_rel_median']:.1f} %, {100 * p['csa_bias']:+.1f} %; "
            f"{100 * p['fr_abs_rel_median']:.1f} %")
        out["clips: jitter median over the truth's; p95; jumps (away)"] = (
            f"{p['jitter_ratio']:.2f}x; {100 * p['jitter_p95']:.1f} %; {p['jumps']} ({p['jumps_away']})")
    clips = [load(d / "presence-clips.json") for d in dirs]
    if all(clips):
        tot = {}
        for pc in clips:
            for kind, c in pc["clips"]["summary"]["2"].items():
                if "reported" in c:
                    t = tot.setdefault(kind, [0, 0])
                    t[0], t[1] = t[0] + c["frames"], t[1] + c["reported"]
        out["nerve-free clip frames with a nerve (all; removed; off)"] = "; ".join(
            f"{100 * tot[k][1] / tot[k][0]:.1f} %" for k in ("all-negatives", "nerve-removed", "off-nerve") if k in tot)
    return out


def main(argv):
    root, folds, variants = argv[0], [int(k) for k in argv[1].split(",")], argv[2:]
    cols = {v: column(root, folds, v) for v in variants}
    keys = list(dict.fromkeys(k for c in cols.values() for k in c))
    print(f"| folds {','.join(map(str, folds))} | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for k in keys:
        print(f"| {k.replace('|', chr(92) + '|')} | " + " | ".join(cols[v].get(k, "-") for v in variants) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
