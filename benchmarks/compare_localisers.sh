#!/usr/bin/env bash
# Two cascade localisers on one fold of an mn-cv cross-validation, in front of the same refiner, so that only
# the window's placement differs: mn-eval (both protocols), mn-robustness --window-diagnosis and mn-presence on
# the fold's validation patients.
#
#   benchmarks/compare_localisers.sh DATA CV_A CV_B FOLD TAG
#
# CV_A, CV_B: mn-cv --out folders (e.g. runs/cv-strong-ph, runs/cv-acqloc) whose FOLD has a localiser (best.pt);
# the refiner is CV_A's FOLD refiner best.pt as it is now (copied, so a training still running can go on).
# Writes benchmarks/results/exploratory-foldFOLD-{A,B}-TAG-HOST-DATE-{eval-paper,eval-native,robustness,presence}.*
# with A, B the folders' names without "cv-". CLIPS=N adds mn-presence's N-frame clips (default 0: stills);
# PRESENCE=0 leaves mn-presence out. REFINER=FILE: another refiner (a refiner's best.pt or a cascade whose refiner
# to take), e.g. when the fold's own is not trained: with a refiner that saw the fold's validation images (a
# shipped model) only the window's placement (robustness window_off) is a held-out measurement, label the rest.
set -euo pipefail
DATA=${1:?DATA} A=${2:?CV_A} B=${3:?CV_B} FOLD=${4:?FOLD} TAG=${5:?TAG}
WORK=runs/compare-fold$FOLD-$TAG
mkdir -p "$WORK"
cp "${REFINER:-$A/fold-$FOLD/refiner/best.pt}" "$WORK/refiner.pt"
SPLIT=(--split kfold --folds 5 --fold "$FOLD" --seed 42)
for CV in "$A" "$B"; do
  NAME=$(basename "$CV"); NAME=${NAME#cv-}; NAME=${NAME//-/}
  python -m train.cascade --localiser "$CV/fold-$FOLD/localiser/best.pt" --refiner "$WORK/refiner.pt" \
    --out "$WORK/$NAME.pt" -q
  P=benchmarks/results/exploratory-fold$FOLD-$NAME-$TAG-$(hostname)-$(date +%F)
  for PROTOCOL in paper native; do
    mn-eval --model "$WORK/$NAME.pt" --data "$DATA" "${SPLIT[@]}" --protocol $PROTOCOL --threads 1 \
      --json "$P-eval-$PROTOCOL.json" -q
  done
  mn-robustness --model "$WORK/$NAME.pt" --data "$DATA" "${SPLIT[@]}" --threads 1 --window-diagnosis \
    --json "$P-robustness.json" -q
  [ "${PRESENCE:-1}" = 0 ] || mn-presence --model "$WORK/$NAME.pt" --data "$DATA" "${SPLIT[@]}" --phantom 8 \
    --clips "${CLIPS:-0}" --threads 1 --json "$P-presence.json" -q
done
