#!/usr/bin/env bash
# The two-refiner cascade's refiners fine-tuned on stronger compression (issue 10, 2026-12-05): each refiner of a
# cascade-acqloc-cmp-ens model (mn-realtime's recipe) trained on for 24 epochs from its last weights, the nerve
# compressed in 70 % of the images at a vertical scale drawn from [0.65, 1] (mn-train --compress 0.65 0.7; the
# recipe's own is 50 % at [0.75, 1], and the animate: clips reach 0.75), learning rate 1e-4, then 1e-5 after
# epoch 18; then the localiser and both refiners joined again. For every fold of an mn-cv folder (each fold's
# as-final parts; the joined model evaluated on the fold's patients by both protocols, as mn-cv does) or for its
# final (every image). Recipe cascade-acqloc-cmp-ens-cft names the result: `mn-cv --recipe
# cascade-acqloc-cmp-ens-cft --out OUT --aggregate --as-final` summarises the folds. Resumable: run it again.
#
#   benchmarks/compress_finetune.sh DATA PHANTOM CV_DIR OUT [FOLD ... | final]
#
# DATA: the median-nerve folder; PHANTOM: the phantom frames the parts trained with (mn-synth --phantom ...);
# CV_DIR: mn-cv's folder of cascade-acqloc-cmp-ens (CV_DIR/fold-K/as-final/{localiser,refiner,refiner-2}/last.pt,
# CV_DIR/final/...); OUT: an mn-cv-shaped folder for the fine-tuned refiners and the joined models
# (OUT/fold-K/as-final/{refiner,refiner-2,model.pt,eval-*.json}, OUT/final/...). FOLDS default 0 1 2 3 4. Environment: PY (python3), TRAIN_ARGS
# (default '--amp --threads 1'), PAIR=1 (default): a fold's two refiners as two one-thread trainings at once,
# COMPRESS (default '0.65 0.7'; '0.75 0.5', the recipe's own, is the control: the same 24 epochs, no stronger
# compression).
# On 2 AVX512-BF16 cores a fold's pair takes about 7 minutes (24 epochs of 16 s), the final's about 9.
set -u
DATA=${1:?DATA folder}; PHANTOM=${2:?PHANTOM folder}; CV=${3:?CV_DIR}; OUT=${4:?OUT folder}; shift 4
TARGETS=${*:-0 1 2 3 4}; PY=${PY:-python3}; COMPRESS=${COMPRESS:-0.65 0.7}; TRAIN_ARGS=${TRAIN_ARGS:---amp --threads 1}; PAIR=${PAIR:-1}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2206
FT=(--model lunet --crop 128x96 --augment compress --compress $COMPRESS --lr 1e-4 --lr-drops 18 --epochs 24
    --seed 42 --device cpu)
finetune() {  # source dir (fold-K/as-final or final), target dir, part (refiner | refiner-2), split arguments...
  local src=$1 dst=$2 part=$3; shift 3
  grep -qs "done: best epoch" "$dst/$part.log" && return 0
  local extra=(); [ "$part" = refiner-2 ] && extra=(--speckle 0 0.6)  # the speckle-range refiner keeps its range
  local resume=(); [ -f "$dst/$part/last.pt" ] && resume=(--resume)
  local init_part=()  # a part kept as a whole cascade (e.g. a final's refiner taken from a bundled model): its refiner
  $PY -c "import sys; from train.checkpoint import load_checkpoint as l
sys.exit(0 if l(sys.argv[1])['config']['model']['name'] == 'cascade' else 1)" "$src/$part/last.pt" 2>/dev/null \
    && init_part=(--init-part refiner)
  mkdir -p "$dst"
  # shellcheck disable=SC2086
  $PY -m train.train_cli --data "$DATA" --out "$dst/$part" --extra-train "$PHANTOM" --init "$src/$part/last.pt" \
    "${init_part[@]}" "${FT[@]}" "${extra[@]}" "$@" $TRAIN_ARGS "${resume[@]}" >>"$dst/$part.log" 2>&1
}
for t in $TARGETS; do
  if [ "$t" = final ]; then src="$CV/final"; dst="$OUT/final"; split=(--split none)
  else src="$CV/fold-$t/as-final"; dst="$OUT/fold-$t/as-final"; split=(--split kfold --folds 5 --fold "$t" --blind); fi
  for p in localiser/last.pt refiner/last.pt refiner-2/last.pt; do
    [ -f "$src/$p" ] || { echo "compress_finetune: $src/$p is missing (train the fold with mn-cv first)" >&2; exit 2; }
  done
  echo "[$(date +%H:%M:%S)] $t: fine-tuning both refiners"
  if [ "$PAIR" = 1 ]; then
    finetune "$src" "$dst" refiner "${split[@]}" & a=$!
    finetune "$src" "$dst" refiner-2 "${split[@]}"; b=$?
    wait $a || exit $?; [ $b = 0 ] || exit $b
  else
    finetune "$src" "$dst" refiner "${split[@]}" || exit $?
    finetune "$src" "$dst" refiner-2 "${split[@]}" || exit $?
  fi
  [ -f "$dst/model.pt" ] || $PY -m train.cascade --localiser "$src/localiser/last.pt" --refiner "$dst/refiner/last.pt" \
    --refiner "$dst/refiner-2/last.pt" --out "$dst/model.pt" -q || exit $?
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
