#!/bin/bash
# hold0.sh win|pres K...: the ensemble folds with the appearance check off for a tracked nerve (hold threshold 0)
source .venv/bin/activate
D=../shared/data/median-nerve; what=$1; shift
for k in "$@"; do O=runs/ens2/fold-$k; M=$O/model.pt; A=$O/appearance-hold0.json
  if [ $what = win ]; then
    [ -f $O/win-hold0.json ] || python -m benchmarks.window_bench --model $M --data $D --split kfold --folds 5 --fold $k --threads 1 --phantoms 0 --images 16 --frames 144 --modes tracked+fusion --compression-period 2 --presence on --appearance $A --json $O/win-hold0.json -q > $O/win-hold0.log 2>&1
  else
    [ -f $O/presence-clips-hold0.json ] || python -m benchmarks.presence --model $M --data $D --split kfold --folds 5 --fold $k --threads 1 --clips 48 --confirm 2 --appearance $A --json $O/presence-clips-hold0.json --md $O/presence-clips-hold0.md -q > $O/presence-clips-hold0.log 2>&1
  fi
done
