"""The shipped fusion against the candidates on the folds measured, pooled (as the rule reads them).

    python benchmarks/results/exploratory-fusion-affine-amd-vm-2026-12-08/compare.py 0 1

Reads the recorded shipped pair (``../localiser-pair-five-folds-amd-vm-2026-12-06/fold-K/lens/``) and this folder's
``fold-K/{affine,shape}-025/`` (window clips ``win.json``, nerve-free clips ``presence-clips.json``); a setting is
pooled over the folds that have it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from benchmarks.window_bench import pool_reports  # noqa: E402

SHIPPED = HERE.parent / "localiser-pair-five-folds-amd-vm-2026-12-06"
SETTINGS = {"shipped (0.35, shift)": lambda k: SHIPPED / f"fold-{k}" / "lens",
            "0.25, affine": lambda k: HERE / f"fold-{k}" / "affine-025",
            "0.25, shape": lambda k: HERE / f"fold-{k}" / "shape-025"}


def nerve_free(folders: list[Path]) -> str:
    files = [f / "presence-clips.json" for f in folders]
    if not files or not all(f.exists() for f in files):
        return "-"
    frames = reported = 0
    for f in files:
        c = json.loads(f.read_text())["clips"]["summary"]["2"]["all-negatives"]
        frames, reported = frames + c["frames"], reported + c["reported"]
    return f"{100 * reported / frames:.2f} % ({reported} of {frames})"


def main(folds: list[int]) -> None:
    print(f"folds {', '.join(map(str, folds))}, pooled (medians over clips; frames and jumps summed)\n")
    print("| setting | folds | frames ok | CSA \\|error\\| | bias | FR \\|error\\| | lag | jitter / truth's | "
          "jitter p95 | jumps (away) | nerve-free frames with a nerve |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, folder in SETTINGS.items():
        have = [k for k in folds if (folder(k) / "win.json").exists()]
        if not have:
            continue
        wins = [folder(k) / "win.json" for k in have]
        report = pool_reports(wins) if len(wins) > 1 else json.loads(wins[0].read_text())
        p = report["pooled"]["tracked+fusion"]
        print(f"| {name} | {','.join(map(str, have))} | {100 * p['ok_rate']:.1f} % | "
              f"{100 * p['csa_abs_rel_median']:.1f} % | {100 * p['csa_bias']:+.1f} % | "
              f"{100 * p['fr_abs_rel_median']:.1f} % | {p['lag_frames']:g} | {p['jitter_ratio']:.2f}x | "
              f"{100 * p['jitter_p95']:.1f} % | {p['jumps']} ({p['jumps_away']}) | "
              f"{nerve_free([folder(k) for k in have])} |")


if __name__ == "__main__":
    main([int(k) for k in sys.argv[1:]] or [0, 1])
