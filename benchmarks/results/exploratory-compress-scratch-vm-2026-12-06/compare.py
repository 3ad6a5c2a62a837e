"""Fold by fold, two procedures' evaluation files side by side: stills (both protocols), compressed stills, clips,
nerve-free clips; and, over the folds given, the pooled nerve-free rates.

    python compare.py BASE_PATTERN NEW_PATTERN FOLD [FOLD ...]

Each pattern is a folder with ``{}`` for the fold, holding eval-paper.json, eval-native.json (mn-eval or
train.evaluate), rob.json (mn-robustness --perturb compress=0.75,0.85), win.json (window_bench, tracked+fusion)
and presence-clips.json (benchmarks.presence --confirm 2); missing files are left out of the line. Of the robustness
report (rob.json, else robustness.json: all 34 changes) only the compression rows are shown.
"""
import json
import sys
from pathlib import Path


def load(path):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def line(tag, d):
    out = [tag]
    for protocol in ("paper", "native"):
        e = load(f"{d}/eval-{protocol}.json")
        if e:
            out.append(f"{protocol[:3]} DSC {e['dsc']['mean']:.4f} csa {100 * e['csa_rel_error']['median']:.1f} "
                       f"bias {100 * e['csa_agreement']['bias_rel']:+.1f} missed {e['csa_agreement'].get('missed')}")
    r = load(f"{d}/rob.json") or load(f"{d}/robustness.json")
    for row in (x for x in (r or {}).get("rows", []) if x["perturbation"] == "compress"):
        out.append(f"c{row['level']}: {row['dsc_mean']:.3f} {100 * row['csa_abs_median']:.1f}% m{row['missed']}")
    w = load(f"{d}/win.json")
    if w:
        p = w["pooled"]["tracked+fusion"]
        out.append(f"clips ok {100 * p['ok_rate']:.1f} csa {100 * p['csa_abs_rel_median']:.1f} "
                   f"fr {100 * p['fr_abs_rel_median']:.1f} jitter {p['jitter_ratio']:.2f}x jumps {p['jumps']}"
                   f"({p['jumps_away']})")
    pc = load(f"{d}/presence-clips.json")
    if pc:
        c = pc["clips"]["summary"]["2"]
        out.append("nerve-free: all {:.2f} removed {:.2f} off {:.2f} % | validation found {:.1f} %".format(
            *(100 * c[x]["reported_rate"] for x in ("all-negatives", "nerve-removed", "off-nerve")),
            100 * c["validation"]["found_rate"]))
    return " | ".join(out)


def pooled(tag, pattern, folds):
    tot = {}
    for k in folds:
        pc = load(pattern.format(k) + "/presence-clips.json")
        for kind, c in (pc["clips"]["summary"]["2"].items() if pc else ()):
            t = tot.setdefault(kind, [0, 0])
            t[0] += c["frames"]
            t[1] += c["reported"]
    rates = ", ".join(f"{kind} {100 * t[1] / t[0]:.2f} %" for kind, t in tot.items()
                      if kind not in ("validation", "phantom"))
    return f"{tag} pooled nerve-free clip frames with a nerve: {rates}"


def main(argv):
    base, new, folds = argv[0], argv[1], [int(k) for k in argv[2:]]
    for k in folds:
        print(line(f"fold {k} base", base.format(k)))
        print(line(f"fold {k} new ", new.format(k)))
    print(pooled("base", base, folds))
    print(pooled("new ", new, folds))


if __name__ == "__main__":
    main(sys.argv[1:])
