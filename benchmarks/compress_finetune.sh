#!/usr/bin/env bash
# The two-refiner cascade's refiners trained on stronger compression (issue 10, 2026-12-05/06), either fine-tuned
# (FROM=finetune, the default): each refiner of a cascade-acqloc-cmp-ens model (mn-realtime's recipe) trained on
# for 24 epochs from its last weights, learning rate 1e-4, then 1e-5 after epoch 18; or trained again from the
# start (FROM=scratch): each refiner with exactly its source part's own schedule (epochs, learning rate and its
# drops, read from the part's config.json, e.g. the folds' as-final 104 epochs, drops after 84 and 94). Either way
# the nerve is compressed in 70 % of the images at a vertical scale drawn from [0.65, 1] (mn-train --compress
# 0.65 0.7; the recipe's own is 50 % at [0.75, 1], and the animate: clips reach 0.75); then the localiser and both
# refiners are joined again. For every fold of an mn-cv folder (each fold's as-final parts; the joined model
# evaluated on the fold's patients by both protocols, as mn-cv does) or for its final (every image). Recipes
# cascade-acqloc-cmp-ens-cft (fine-tune) and cascade-acqloc-cmp-ens-c65 (from the start) name the results:
# `mn-cv --recipe RECIPE --out OUT --aggregate --as-final` summarises the folds. Resumable: run it again.
# PARTS=localiser FROM=scratch COMPRESS='0.75 0.5' MIRROR=alternate (recipe cascade-acqcmploc-ens-mir, 2026-12-06)
# trains the localiser again instead, from the start with its own schedule and arguments (acquisition
# augmentation, 15 % of the frames with the nerve painted over) and the nerve compressed as the compress refiner
# saw it, and joins it with the source's two refiners, the second shown the mirror image.
#
#   [FROM=scratch] benchmarks/compress_finetune.sh DATA PHANTOM CV_DIR OUT [FOLD ... | final]
#
# DATA: the median-nerve folder; PHANTOM: the phantom frames the parts trained with (mn-synth --phantom ...);
# CV_DIR: mn-cv's folder of cascade-acqloc-cmp-ens (CV_DIR/fold-K/as-final/{localiser,refiner,refiner-2}/last.pt,
# CV_DIR/final/...); OUT: an mn-cv-shaped folder for the new refiners and the joined models
# (OUT/fold-K/as-final/{refiner,refiner-2,model.pt,eval-*.json}, OUT/final/...). FOLDS default 0 1 2 3 4. Environment: PY (python3), TRAIN_ARGS
# (default '--amp --threads 1'), PAIR=1 (default): a fold's two refiners as two one-thread trainings at once,
# PARTS (default 'refiner refiner-2', or 'localiser'), MIRROR (the join's --mirror, default none),
# COMPRESS (default '0.65 0.7'; '0.75 0.5', the recipe's own, is the fine-tune's control: the same 24 epochs, no
# stronger compression), FROM (finetune | scratch).
# On 2 AVX512-BF16 cores a fold's fine-tuned pair takes about 7 minutes (24 epochs of 16 s), the final's about 9;
# from the start about 32 minutes (104 epochs of 18 s).
set -u
DATA=${1:?DATA folder}; PHANTOM=${2:?PHANTOM folder}; CV=${3:?CV_DIR}; OUT=${4:?OUT folder}; shift 4
TARGETS=${*:-0 1 2 3 4}; PY=${PY:-python3}; COMPRESS=${COMPRESS:-0.65 0.7}; TRAIN_ARGS=${TRAIN_ARGS:---amp --threads 1}; PAIR=${PAIR:-1}
FROM=${FROM:-finetune}; PARTS=${PARTS:-refiner refiner-2}; MIRROR=${MIRROR:-none}
case $FROM in finetune|scratch) ;; *) echo "compress_finetune: FROM=$FROM: use finetune or scratch" >&2; exit 2;; esac
case $PARTS in "refiner refiner-2") ;; localiser) [ "$FROM" = scratch ] || {
  echo "compress_finetune: PARTS=localiser trains it from the start: set FROM=scratch" >&2; exit 2; } ;;
  *) echo "compress_finetune: PARTS='$PARTS': use 'refiner refiner-2' or localiser" >&2; exit 2;; esac
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2206
REFINER=(--model lunet --crop 128x96 --augment compress --compress $COMPRESS --seed 42 --device cpu)
# shellcheck disable=SC2206
LOCALISER=(--model lunet-coarse --augment acquisition --nerve-removed 0.15 --compress $COMPRESS --seed 42 --device cpu)
FT=(--lr 1e-4 --lr-drops 18 --epochs 24)
schedule() {  # a trained part's own schedule as mn-train arguments: --lr L --epochs E [--lr-drops A B ...]
  $PY -c "import json, sys; t = json.load(open(sys.argv[1]))['train']
drops = t.get('lr_drops') or []
print('--lr', t['lr'], '--epochs', t['epochs'], *(['--lr-drops', *drops] if drops else []))" "$1/config.json"
}
train_part() {  # source dir (fold-K/as-final or final), target dir, part (localiser | refiner | refiner-2), split...
  local src=$1 dst=$2 part=$3; shift 3
  # finished: mn-train prints its summary line (whatever the log level) only after the last epoch
  grep -qs '^{"best_checkpoint"' "$dst/$part.log" && return 0
  local common=("${REFINER[@]}"); [ "$part" = localiser ] && common=("${LOCALISER[@]}")
  local extra=(); [ "$part" = refiner-2 ] && extra=(--speckle 0 0.6)  # the speckle-range refiner keeps its range
  local resume=(); [ -f "$dst/$part/last.pt" ] && resume=(--resume)
  local start=()
  if [ "$FROM" = scratch ]; then
    # shellcheck disable=SC2207
    start=($(schedule "$src/$part")) || { echo "compress_finetune: cannot read $src/$part/config.json's schedule" >&2; return 2; }
  else
    start=(--init "$src/$part/last.pt" "${FT[@]}")
    # a part kept as a whole cascade (e.g. a final's refiner taken from a bundled model): its refiner
    $PY -c "import sys; from train.checkpoint import load_checkpoint as l
sys.exit(0 if l(sys.argv[1])['config']['model']['name'] == 'cascade' else 1)" "$src/$part/last.pt" 2>/dev/null \
      && start+=(--init-part refiner)
  fi
  mkdir -p "$dst"
  # shellcheck disable=SC2086
  $PY -m train.train_cli --data "$DATA" --out "$dst/$part" --extra-train "$PHANTOM" "${start[@]}" "${common[@]}" \
    "${extra[@]}" "$@" $TRAIN_ARGS "${resume[@]}" >>"$dst/$part.log" 2>&1
}
for t in $TARGETS; do
  if [ "$t" = final ]; then src="$CV/final"; dst="$OUT/final"; split=(--split none)
  else src="$CV/fold-$t/as-final"; dst="$OUT/fold-$t/as-final"; split=(--split kfold --folds 5 --fold "$t" --blind); fi
  for p in localiser/last.pt refiner/last.pt refiner-2/last.pt; do
    [ -f "$src/$p" ] || { echo "compress_finetune: $src/$p is missing (train the fold with mn-cv first)" >&2; exit 2; }
  done
  echo "[$(date +%H:%M:%S)] $t: training $PARTS ($FROM)"
  if [ "$PARTS" = localiser ]; then
    train_part "$src" "$dst" localiser "${split[@]}" || exit $?
  elif [ "$PAIR" = 1 ]; then
    train_part "$src" "$dst" refiner "${split[@]}" & a=$!
    train_part "$src" "$dst" refiner-2 "${split[@]}"; b=$?
    wait $a || exit $?; [ $b = 0 ] || exit $b
  else
    train_part "$src" "$dst" refiner "${split[@]}" || exit $?
    train_part "$src" "$dst" refiner-2 "${split[@]}" || exit $?
  fi
  loc=$src; ref=$dst; [ "$PARTS" = localiser ] && { loc=$dst; ref=$src; }
  [ -f "$dst/model.pt" ] || $PY -m train.cascade --localiser "$loc/localiser/last.pt" --refiner "$ref/refiner/last.pt" \
    --refiner "$ref/refiner-2/last.pt" --mirror "$MIRROR" --out "$dst/model.pt" -q || exit $?
  if [ "$t" != final ]; then
    for protocol in paper native; do  # as mn-cv evaluates a fold (the native one with its threshold sweep)
      sweep=(); [ $protocol = native ] && sweep=(--sweep "$dst/threshold-sweep.csv")
      [ -f "$dst/eval-$protocol.json" ] || $PY -m train.evaluate --checkpoint "$dst/model.pt" --data "$DATA" \
        --split kfold --folds 5 --fold "$t" --seed 42 --protocol $protocol --device cpu \
        --json "$dst/eval-$protocol.json" --per-image "$dst/per-image-$protocol.csv" "${sweep[@]}" -q || exit $?
    done
  fi
  echo "[$(date +%H:%M:%S)] $t: $dst/model.pt"
done
