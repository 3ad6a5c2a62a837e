#!/usr/bin/env bash
# What benchmarks/gpu_parts.sh brought back, made into models on the CPU: every fold model of the four
# recipes of benchmarks/cpu_cv.sh (and of cascade-strong-ph-cmp-tcw) joined from the parts trained there and
# evaluated (mn-cv without --part, which trains nothing that is finished), each fold model's own reports
# (benchmarks/cv_fold_reports.sh), and the final models joined with their mask threshold (mn-cv --final).
#
#   benchmarks/gpu_parts_join.sh DATA PHANTOM GPU_RUNS [FOLD ...]
#
# GPU_RUNS: where OUT/parts.tgz.* was unpacked (cat OUT/parts.tgz.* | tar xz -C GPU_RUNS). FOLDS (default 0):
# the folds gpu_parts.sh trained. A part is taken from the recipe that trained it: cascade-strong-ph's
# localiser is cascade-strong-ph-cmp's, its refiner cascade-acqloc's; cascade-acqloc-cmp joins
# cascade-acqloc's localiser and cascade-strong-ph-cmp's refiner; -tcw takes cascade-strong-ph-cmp's
# localiser. The finals: the same joins in GPU_RUNS/final-RECIPE (whose folds are benchmarks/cv_collect.sh's
# and, for a fold missing there, the fold trained here). Environment: REPORTS (the recipes whose fold models
# get the reports, default all five; empty: none), CLIPS (16), PY (python3). Resumable.
set -u
DATA=${1:?DATA folder}; PHANTOM=${2:?PHANTOM folder}; G=${3:?GPU_RUNS folder}; shift 3
FOLDS=${*:-0}; PY=${PY:-python3}; CLIPS=${CLIPS:-16}
REPORTS=${REPORTS-cascade-strong-ph cascade-strong-ph-cmp cascade-acqloc cascade-acqloc-cmp cascade-strong-ph-cmp-tcw}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SEED=${SEED:-$REPO/benchmarks/results/cv-cpu}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$G" ] || { echo "gpu_parts_join: $G is not a folder: unpack gpu_parts.sh's parts.tgz.* there" >&2; exit 2; }
take() {  # source part folder, destination part folder: a finished part copied, unless there already
  local src=$1 dst=$2
  [ -f "$dst/.done" ] && return 0
  [ -f "$src/.done" ] || { echo "gpu_parts_join: $src did not finish (see its log); $dst stays missing" >&2; return 1; }
  mkdir -p "$(dirname "$dst")"; rm -rf "$dst"; cp -r "$src" "$dst"
}
cv() {  # recipe, out, mn-cv arguments...
  local recipe=$1 out=$2; shift 2
  $PY -m train.crossval --recipe "$recipe" --data "$DATA" --extra-train "$PHANTOM" --out "$out" --device cpu "$@" -q \
    >>"$out.log" 2>&1 || { echo "gpu_parts_join: mn-cv $recipe failed, see $out.log" >&2; return 1; }
}
status=0
for k in $FOLDS; do
  take "$G/cv-cascade-strong-ph-cmp/fold-$k/localiser" "$G/cv-cascade-strong-ph/fold-$k/localiser" || status=1
  take "$G/cv-cascade-acqloc/fold-$k/refiner" "$G/cv-cascade-strong-ph/fold-$k/refiner" || status=1
  take "$G/cv-cascade-acqloc/fold-$k/localiser" "$G/cv-cascade-acqloc-cmp/fold-$k/localiser" || status=1
  take "$G/cv-cascade-strong-ph-cmp/fold-$k/refiner" "$G/cv-cascade-acqloc-cmp/fold-$k/refiner" || status=1
  take "$G/cv-cascade-strong-ph-cmp/fold-$k/localiser" "$G/cv-cascade-strong-ph-cmp-tcw/fold-$k/localiser" || status=1
  for recipe in cascade-strong-ph cascade-strong-ph-cmp cascade-acqloc cascade-acqloc-cmp cascade-strong-ph-cmp-tcw; do
    [ -f "$G/cv-$recipe/fold-$k/localiser/.done" ] && [ -f "$G/cv-$recipe/fold-$k/refiner/.done" ] || continue
    echo "[$(date +%H:%M:%S)] $recipe fold $k: joined and evaluated"
    cv "$recipe" "$G/cv-$recipe" --fold "$k" || status=1
  done
done
for k in $FOLDS; do
  for recipe in $REPORTS; do
    F="$G/cv-$recipe/fold-$k"
    [ -f "$F/model.pt" ] || continue
    echo "[$(date +%H:%M:%S)] $recipe fold $k reports"
    CLIPS=$CLIPS PY=$PY CROP=24 "$REPO/benchmarks/cv_fold_reports.sh" "$DATA" "$F" "$k" & 
  done
  wait
done
# the final models: each recipe's folder holds every fold's best epochs and threshold sweeps (benchmarks/cv_collect.sh's
# and the folds trained on the GPU), and its final parts, taken from where they were trained
final_dir() {  # recipe: GPU_RUNS/final-RECIPE seeded with the collected folds and this run's folds
  local recipe=$1 d="$G/final-$1" k f
  mkdir -p "$d"
  [ -d "$SEED/$recipe" ] && cp -rn "$SEED/$recipe/." "$d/"
  for k in $FOLDS; do
    [ -f "$d/fold-$k/eval-native.json" ] && continue  # a collected fold: kept as it was measured
    mkdir -p "$d/fold-$k"
    for f in threshold-sweep.csv eval-paper.json eval-native.json per-image-paper.csv per-image-native.csv; do
      [ -f "$G/cv-$recipe/fold-$k/$f" ] && cp "$G/cv-$recipe/fold-$k/$f" "$d/fold-$k/"
    done
    for part in localiser refiner; do
      [ -f "$G/cv-$recipe/fold-$k/$part/config.json" ] && cp "$G/cv-$recipe/fold-$k/$part/config.json" "$d/fold-$k/$part-config.json"
    done
  done
}
for recipe in cascade-strong-ph cascade-strong-ph-cmp cascade-acqloc cascade-acqloc-cmp; do final_dir "$recipe"; done
take "$G/final-cascade-strong-ph-cmp/final/localiser" "$G/final-cascade-strong-ph/final/localiser" || status=1
take "$G/final-cascade-strong-ph/final/refiner" "$G/final-cascade-acqloc/final/refiner" || status=1
take "$G/final-cascade-acqloc/final/localiser" "$G/final-cascade-acqloc-cmp/final/localiser" || status=1
take "$G/final-cascade-strong-ph-cmp/final/refiner" "$G/final-cascade-acqloc-cmp/final/refiner" || status=1
for recipe in cascade-strong-ph cascade-strong-ph-cmp cascade-acqloc cascade-acqloc-cmp; do
  [ -f "$G/final-$recipe/final/localiser/.done" ] && [ -f "$G/final-$recipe/final/refiner/.done" ] || continue
  echo "[$(date +%H:%M:%S)] $recipe final model"
  cv "$recipe" "$G/final-$recipe" --final || status=1
done
exit $status
