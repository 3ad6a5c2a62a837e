#!/bin/bash
# ensfus.sh W K...: the ensemble fold models' clips at fusion W (one core each)
source .venv/bin/activate
D=../shared/data/median-nerve; W=$1; shift
for k in "$@"; do O=runs/ens2/fold-$k; M=$O/model.pt
  [ -f $O/win-$W.json ] || python -m benchmarks.window_bench --model $M --data $D --split kfold --folds 5 --fold $k --threads 1 --phantoms 0 --images 16 --frames 144 --modes tracked+fusion --compression-period 2 --presence on --appearance $O/appearance.json --fusion $W --json $O/win-$W.json -q > $O/win-$W.log 2>&1
done
