#!/usr/bin/env bash
# Issue 10's cross-validation on a CPU, fold by fold (what benchmarks/gpu_cv.sh does at once on a GPU): for each
# fold, mn-realtime's recipe, the compress-augmented refiner (its localiser shared), the acquisition localiser (its
# refiner shared) and both changes together (nothing trained), then each fold model's reports: its own appearance
# fit, the presence report, the refiner's speckle stability, its validation patients animated into clips (2 s
# compression; presence on and shape, and on with 24 px cut from every edge): benchmarks/cv_fold_reports.sh.
# Resumable: run it again after a stop.
#
#   benchmarks/cpu_cv.sh DATA PHANTOM RUNS [FOLD ...]
#
# DATA: the median-nerve folder; PHANTOM: phantom frames (mn-synth --phantom --dataset PHANTOM --frames 40
# --every 12 --seed S, S = 1, 2, 3); RUNS: the work folder (RUNS/cv-RECIPE/fold-K/...); FOLDS: which (default
# 0 1 2 3 4). Environment: TRAIN_ARGS (mn-train arguments of every part, default '--amp': bfloat16, twice as
# fast on a CPU with AVX512-BF16 or AMX, float32 with a warning elsewhere), EPOCHS (every part's, default the
# recipes' 150), CLIPS (validation images animated per fold model, default 16), REPORTS (the recipes whose fold
# models get the reports, default all four), PY (python3), PAIR=1: each fold's four distinct parts as two
# one-thread trainings at once (the acquisition localiser with the shipped refiner, the shipped localiser with the
# compress refiner; the other two recipes copy them), and the reports likewise: on two cores a fold's training
# takes 1.3 times less time than one two-thread chain. A rehearsal:
# TRAIN_ARGS='--max-images 16 --width 0.25' EPOCHS=1 CLIPS=1 FIT_ARGS='--found-dice 0' \
#   benchmarks/cpu_cv.sh DATA PHANTOM /tmp/r 0   (a one-epoch model finds few true nerves to fit the gate on)
# On 2 cores with AVX512-BF16 a fold takes about 2 hours (the shipped recipe's localiser 20 min and refiner 45,
# the compress refiner 45, the acquisition localiser 20, the reports 10). Without BF16 (--amp trains in float32,
# e.g. an AVX2-only EPYC) a refiner epoch takes 113 s on one thread against 17 s: a fold is GPU work there.
set -u
DATA=${1:?DATA folder}; PHANTOM=${2:?PHANTOM folder}; RUNS=${3:?RUNS folder}; shift 3
FOLDS=${*:-0 1 2 3 4}; PY=${PY:-python3}; TRAIN_ARGS=${TRAIN_ARGS:---amp}; CLIPS=${CLIPS:-16}
REPORTS=${REPORTS:-cascade-strong-ph cascade-strong-ph-cmp cascade-acqloc cascade-acqloc-cmp}; PAIR=${PAIR:-0}
EPOCH_ARGS=(); [ -n "${EPOCHS:-}" ] && EPOCH_ARGS=(--epochs "$EPOCHS")
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RUNS"
cv() {  # recipe, fold, extra mn-cv arguments...
  local recipe=$1 fold=$2; shift 2
  echo "[$(date +%H:%M:%S)] $recipe fold $fold"
  $PY -m train.crossval --recipe "$recipe" --data "$DATA" --extra-train "$PHANTOM" --out "$RUNS/cv-$recipe" \
    --fold "$fold" --device cpu --train-args="$TRAIN_ARGS" "${EPOCH_ARGS[@]}" "$@" -q >>"$RUNS/cv-$recipe.log" 2>&1
}
reports() {  # recipe, fold: benchmarks/cv_fold_reports.sh (what gpu_cv.sh writes too)
  local F="$RUNS/cv-$1/fold-$2"
  [ -f "$F/window-on-crop24.json" ] && return 0  # done before
  echo "[$(date +%H:%M:%S)] $1 fold $2 reports"
  CLIPS=$CLIPS PY=$PY CROP=24 "$REPO/benchmarks/cv_fold_reports.sh" "$DATA" "$F" "$2"
}
for k in $FOLDS; do
  if [ "$PAIR" = 1 ]; then  # the four distinct parts as two one-thread chains at once, the other recipes copy them
    TRAIN_ARGS="$TRAIN_ARGS --threads 1" cv cascade-acqloc "$k" & a=$!
    TRAIN_ARGS="$TRAIN_ARGS --threads 1" cv cascade-strong-ph-cmp "$k" & b=$!
    wait $a || exit $?
    wait $b || exit $?
    cv cascade-strong-ph "$k" --share "$RUNS/cv-cascade-acqloc" "$RUNS/cv-cascade-strong-ph-cmp" || exit $?
  else
    cv cascade-strong-ph "$k" || exit $?
    cv cascade-strong-ph-cmp "$k" --share "$RUNS/cv-cascade-strong-ph" || exit $?
    cv cascade-acqloc "$k" --share "$RUNS/cv-cascade-strong-ph" || exit $?
  fi
  cv cascade-acqloc-cmp "$k" --share "$RUNS/cv-cascade-acqloc" "$RUNS/cv-cascade-strong-ph-cmp" || exit $?
  if [ "$PAIR" = 1 ]; then
    for recipe in $REPORTS; do reports "$recipe" "$k" & done
    wait
  else
    for recipe in $REPORTS; do reports "$recipe" "$k"; done
  fi
done
echo "[$(date +%H:%M:%S)] done: $RUNS/cv-*/cv-summary.md"
