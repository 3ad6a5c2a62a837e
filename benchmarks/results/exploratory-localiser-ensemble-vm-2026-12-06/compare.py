"""Each fold's variants side by side (the lines of ../exploratory-compress-scratch-vm-2026-12-06/compare.py):

    python compare.py DIR FOLDS VARIANT [VARIANT ...]     # e.g. python compare.py runs/lens 2,3 base lens cmploc

DIR is benchmarks/localiser_ensemble.sh's OUT (DIR/fold-K/VARIANT/{eval-*.json, rob.json, win.json, ...}) or this
folder.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exploratory-compress-scratch-vm-2026-12-06"))
from compare import line  # noqa: E402

root, folds, variants = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
for fold in folds:
    for variant in variants:
        print(line(f"fold {fold} {variant:7s}", f"{root}/fold-{fold}/{variant}"))
