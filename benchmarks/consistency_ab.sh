#!/usr/bin/env bash
# Issue 18, exploratory: does --consistency make a refiner's outline follow the speckle less, at no cost in
# accuracy? Continues one refiner for EPOCHS more epochs twice, identically but for --consistency W, on the
# training patients of one mn-cv fold, then measures both last.pt (no epoch chosen by any image) with
# benchmarks.speckle_stability on that fold's held-out patients.
#
#   benchmarks/consistency_ab.sh DATA PHANTOM REFINER FOLD EPOCHS W OUT
#
# REFINER: a cascade-strong-ph refiner of fold FOLD (mn-cv's fold-FOLD/refiner/best.pt, copied if it still trains).
# Writes OUT/{ctl,tc}/ (the runs) and OUT/{ctl,tc}-stability.{json,md}. THREADS (1) per training.
set -euo pipefail
DATA=${1:?DATA} PHANTOM=${2:?PHANTOM} REFINER=${3:?REFINER} FOLD=${4:?FOLD} EPOCHS=${5:?EPOCHS} W=${6:?W} OUT=${7:?OUT}
COMMON=(--data "$DATA" --model lunet --crop 128x96 --lr 1e-3 --augment strong --extra-train "$PHANTOM"
        --folds 5 --fold "$FOLD" --seed 42 --epochs "$EPOCHS" --threads "${THREADS:-1}" --init "$REFINER" -q)
mn-train "${COMMON[@]}" --out "$OUT/ctl"
mn-train "${COMMON[@]}" --out "$OUT/tc" --consistency "$W"
for r in ctl tc; do
  python -m benchmarks.speckle_stability --refiner "$OUT/$r/last.pt" --data "$DATA" --split kfold --fold "$FOLD" \
    --threads "${THREADS:-1}" --json "$OUT/$r-stability.json" -q
done
