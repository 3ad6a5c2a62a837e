#!/usr/bin/env bash
# Cascade parts that a CPU session cannot afford, trained at once on one lent GPU, each as its own process
# (mn-cv --part); what comes back is the run folders (weights, config, history, log) for the CPU to join,
# evaluate and report on with the same mn-cv commands without --part (and benchmarks/cv_fold_reports.sh).
#
#   benchmarks/gpu_parts.sh DATA PHANTOM OUT
#
# DATA: the median-nerve folder; PHANTOM: phantom frames (mn-synth --phantom --dataset PHANTOM --frames 40
#   --every 12 --seed S, S = 1, 2, 3); OUT: folder for what comes back: parts.tgz.* (one gzip tar split in
#   15 MB pieces: cat OUT/parts.tgz.* | tar xz -C RUNS), log.txt.
# Environment:
#   FOLD_JOBS: RECIPE:PART trained for every fold of FOLD_LIST into RUNS/cv-RECIPE/fold-K/PART (default: the
#     four distinct parts of benchmarks/cpu_cv.sh's recipes and issue 18's consistency-trained refiner);
#   FOLD_LIST ("0");
#   FINAL_JOBS: RECIPE:PART trained by mn-cv --final --part PART into RUNS/final-RECIPE/final/PART, for the median
#     of the folds' best epochs of that part read from SEED/RECIPE (benchmarks/cv_collect.sh's folders, default
#     benchmarks/results/cv-cpu); a fold missing there that FOLD_JOBS trains here (same recipe and part) is taken
#     from this run, the final starting when that fold's part has finished;
#   AS_FINAL_JOBS: RECIPE:PART trained by mn-cv --as-final --fold K --part PART for every fold of FOLD_LIST into
#     RUNS/final-RECIPE/fold-K/as-final/PART (each fold the way --final trains: the folds' median best epochs,
#     mn-train --blind), to check the final procedure on patients it never saw (default none); AS_FINAL_ARGS: more
#     mn-cv arguments of those runs, e.g. "--epochs 104" with TRAIN_EXTRA="--lr-drops 84 94" (a final that ends at a
#     low, steady rate); TRAIN_EXTRA: more mn-train arguments of every training;
#   MAX_MIN (7: each training's time budget, mn-train --max-minutes; a part that does not finish says
#     stopped_by_time_budget in its config.json); WORKERS (1 data-loading process per training); DEVICE (cuda);
#   QUICK=1: a CPU rehearsal (16 images, 1 epoch, small frames); PY (python3); RUNS (/tmp/gpu-parts).
set -u
DATA=${1:?DATA folder}; PHANTOM=${2:?PHANTOM folder}; OUT=${3:?OUT folder}
DEVICE=${DEVICE:-cuda}; QUICK=${QUICK:-0}; PY=${PY:-python3}; RUNS=${RUNS:-/tmp/gpu-parts}; MAX_MIN=${MAX_MIN:-7}
FOLD_JOBS=${FOLD_JOBS-"cascade-acqloc:localiser cascade-acqloc:refiner cascade-strong-ph-cmp:localiser
  cascade-strong-ph-cmp:refiner cascade-strong-ph-cmp-tcw:refiner"}
FINAL_JOBS=${FINAL_JOBS-"cascade-strong-ph-cmp:localiser cascade-strong-ph-cmp:refiner cascade-strong-ph:refiner
  cascade-acqloc:localiser"}
AS_FINAL_JOBS=${AS_FINAL_JOBS-}; FOLD_LIST=${FOLD_LIST:-0}; WORKERS=${WORKERS:-1}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SEED=${SEED:-$REPO/benchmarks/results/cv-cpu}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RUNS" "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/log.txt"; }
TRAIN_ARGS="--threads 1 --workers $WORKERS --save-every-min 1 --max-minutes $MAX_MIN"; SIZE_ARGS=(); EPOCH_ARGS=()
TRAIN_EXTRA=${TRAIN_EXTRA:-}; read -r -a AS_FINAL_EXTRA <<<"${AS_FINAL_ARGS:-}"
if [ "$QUICK" = 1 ]; then
  TRAIN_ARGS="--threads 1 --max-images 16 --width 0.25"; SIZE_ARGS=(--size 128x96 --crop 64x32); EPOCH_ARGS=(--epochs 1)
fi
cv() {  # recipe, out folder, log, mn-cv arguments...
  local recipe=$1 out=$2 logf=$3; shift 3
  $PY -m train.crossval --recipe "$recipe" --data "$DATA" --extra-train "$PHANTOM" --out "$out" --device "$DEVICE" \
    "${SIZE_ARGS[@]}" --train-args "$TRAIN_ARGS $TRAIN_EXTRA" "$@" -q >"$logf" 2>&1
}
stamp "$($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1)"

declare -A PID
for job in $FOLD_JOBS; do
  recipe=${job%%:*}; part=${job#*:}
  for k in $FOLD_LIST; do
    cv "$recipe" "$RUNS/cv-$recipe" "$RUNS/fold$k-$recipe-$part.log" --fold "$k" --part "$part" "${EPOCH_ARGS[@]}" &
    PID[$recipe:$part:$k]=$!
  done
done
stamp "fold jobs [$FOLD_JOBS] x folds [$FOLD_LIST] started"

seed() {  # recipe: RUNS/final-RECIPE holding the folds collected in SEED (their best epochs and threshold sweeps)
  mkdir -p "$RUNS/final-$1"
  [ -d "$SEED/$1" ] && cp -rn "$SEED/$1/." "$RUNS/final-$1/"
  return 0
}
for job in $AS_FINAL_JOBS; do
  recipe=${job%%:*}; part=${job#*:}; seed "$recipe"
  for k in $FOLD_LIST; do
    $PY -m train.crossval --recipe "$recipe" --data "$DATA" --extra-train "$PHANTOM" --out "$RUNS/final-$recipe" \
      --device "$DEVICE" "${SIZE_ARGS[@]}" --train-args "$TRAIN_ARGS $TRAIN_EXTRA" --as-final --fold "$k" \
      --part "$part" "${AS_FINAL_EXTRA[@]}" -q \
      >"$RUNS/asfinal$k-$recipe-$part.log" 2>&1 &
  done
done
[ -n "$AS_FINAL_JOBS" ] && stamp "as-final jobs [$AS_FINAL_JOBS] x folds [$FOLD_LIST] started"

final() {  # recipe, part: waits for the folds of that part trained here and missing in SEED, then mn-cv --final
  local recipe=$1 part=$2 k dir="$RUNS/final-$1"
  seed "$recipe"
  rm -rf "$dir/final"
  for k in $FOLD_LIST; do
    [ -f "$dir/fold-$k/$part-config.json" ] && continue
    if [ -n "${PID[$recipe:$part:$k]:-}" ]; then
      while kill -0 "${PID[$recipe:$part:$k]}" 2>/dev/null; do sleep 5; done
      mkdir -p "$dir/fold-$k"
      cp "$RUNS/cv-$recipe/fold-$k/$part/config.json" "$dir/fold-$k/$part-config.json" 2>/dev/null
    fi
  done
  stamp "final $recipe $part starts"
  local budget=$(( MAX_MIN - ($(date +%s) - T0) / 60 ))
  [ "$QUICK" = 1 ] && budget=1
  if [ "$budget" -lt 1 ]; then stamp "final $recipe $part: no time left"; return 1; fi
  local args="$TRAIN_ARGS"; [ "$QUICK" = 1 ] || args="${TRAIN_ARGS% --max-minutes *} --max-minutes $budget"
  $PY -m train.crossval --recipe "$recipe" --data "$DATA" --extra-train "$PHANTOM" --out "$dir" --device "$DEVICE" \
    "${SIZE_ARGS[@]}" --train-args "$args $TRAIN_EXTRA" --final --part "$part" -q >"$RUNS/final-$recipe-$part.log" 2>&1
}
for job in $FINAL_JOBS; do final "${job%%:*}" "${job#*:}" & done
wait
stamp "trained"
for f in "$RUNS"/cv-*/fold-*/*/config.json "$RUNS"/final-*/final/*/config.json "$RUNS"/final-*/fold-*/as-final/*/config.json; do
  [ -f "$f" ] || continue
  $PY - "$f" <<'EOF' | tee -a "$OUT/log.txt"
import json, sys
c = json.load(open(sys.argv[1])); m = c.get("metrics", {})
print(sys.argv[1], "epochs run", m.get("epochs_run"), "best", m.get("best_epoch"), "val DSC", m.get("best_val_dsc"),
      "time budget hit" if m.get("stopped_by_time_budget") else "")
EOF
done
for f in "$RUNS"/*.log; do grep -q -E "Traceback|mn-cv: |mn-train: " "$f" && { stamp "$f:"; tail -n 5 "$f" | tee -a "$OUT/log.txt"; }; done
# what comes back (at most 64 MB): a fold part's best.pt (a fold model is joined from it), a final part's last.pt
# without the optimiser state, configs, histories, logs; in pieces under the 16 MB a file
rm -f "$RUNS"/cv-*/fold-*/*/last.pt "$RUNS"/final-*/final/*/best.pt "$RUNS"/final-*/fold-*/as-final/*/best.pt
$PY - "$RUNS" <<'EOF'
import sys
from pathlib import Path
import torch
for last in Path(sys.argv[1]).glob("*/*/*/last.pt"):
    payload = torch.load(last, map_location="cpu", weights_only=False)
    if payload.pop("train_state", None) is not None:
        torch.save(payload, last)
EOF
tar czf - -C "$RUNS" --exclude='*.sharing' --exclude='curves.png' . | split -b 15000000 - "$OUT/parts.tgz."
ls -la "$OUT" | tee -a "$OUT/log.txt"
stamp "done"
