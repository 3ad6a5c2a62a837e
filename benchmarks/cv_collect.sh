#!/usr/bin/env bash
# Copy what every finished fold of mn-cv runs measured (not the weights) into a results folder that is committed,
# so that a fresh checkout keeps it: per recipe and fold the evaluations (eval-*.json, per-image-*.csv, the threshold
# sweep) and reports (presence, speckle, window clips, the appearance fit), each part's config, history and
# training time (PART-config.json, PART-history.csv, PART-done.json), and the recipe's cv-summary.
#
#   benchmarks/cv_collect.sh RUNS DEST      e.g. benchmarks/cv_collect.sh runs benchmarks/results/cv-cpu
#
# RUNS holds cv-RECIPE/ folders (benchmarks/cpu_cv.sh's work folder); DEST gets RECIPE/fold-K/. A fold counts
# when its eval-native.json exists. Each recipe's cv-summary is then aggregated again over every fold DEST holds
# (`mn-cv --aggregate --out DEST/RECIPE`), so folds collected in earlier sessions, whose runs are gone, still count.
# Only cv-RECIPE folders named after a recipe of this checkout (mn-cv --list-recipes) are collected; any other
# (an alias of a run under another name, a recipe since renamed) is skipped with a message. Back in a work folder
# (cp -r DEST/RECIPE RUNS/cv-RECIPE), the collected folds are what `mn-cv --final` takes its epochs and mask
# threshold from.
set -euo pipefail
RUNS=${1:?RUNS folder}; DEST=${2:?DEST folder}
PY=${PYTHON:-python}
shopt -s nullglob
recipes=$("$PY" -m train.crossval --list-recipes | awk '{print $1}')
for cv in "$RUNS"/cv-*/; do
  recipe=$(basename "$cv"); recipe=${recipe#cv-}
  if ! grep -qx -- "$recipe" <<< "$recipes"; then
    echo "skipped ${cv%/}: $recipe is not a recipe of this checkout (mn-cv --list-recipes)" >&2; continue
  fi
  for fold in "$cv"fold-*/; do
    [ -f "$fold/eval-native.json" ] || continue
    out="$DEST/$recipe/$(basename "$fold")"; mkdir -p "$out"
    for f in "$fold"/*.json "$fold"/*.md "$fold"/*.csv; do cp "$f" "$out/"; done
    for part in "$fold"*/; do
      p=$(basename "$part")
      [ -f "$part/.done" ] || continue
      cp "$part/config.json" "$out/$p-config.json"
      [ -f "$part/history.csv" ] && cp "$part/history.csv" "$out/$p-history.csv"
      cp "$part/.done" "$out/$p-done.json"
    done
    echo "$out"
  done
  if [ -d "$DEST/$recipe" ]; then
    "$PY" -m train.crossval --aggregate --recipe "$recipe" --out "$DEST/$recipe" -q > /dev/null
  fi
done
