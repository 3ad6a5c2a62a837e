#!/usr/bin/env bash
# The reports of one mn-cv fold model on that fold's own validation patients (issues 10 and 18), the one set
# benchmarks/cpu_cv.sh and benchmarks/gpu_cv.sh both write, so the two cannot drift apart:
#
#   benchmarks/cv_fold_reports.sh DATA FOLD_DIR FOLD
#
# FOLD_DIR: an mn-cv fold folder holding model.pt (RUNS/cv-RECIPE/fold-K). In order, each file beside model.pt:
# 1. (a cascade) speckle-stability.json: how far the refiner's outline follows the speckle;
# 2. presence-fit.json: the fold model's own appearance model, fit on the fold's training patients and written
#    beside model.pt (model.appearance.json), where the gate of every later report finds it (without it they
#    would judge with another model's: when the fit fails, they are not run);
# 3. presence.json: the presence report (nerve-free frames with a nerve reported, nerves found);
# and for a cascade (a model with a window):
# 4. window-on.json, window-shape.json: the validation patients animated into clips (2 s compression cycle)
#    through the live loop with the tracked window and fusion, presence gate on and shape-only (frames ok,
#    CSA and flattening-ratio error, area jitter, jumps);
# 5. window-on-crop24.json (with CROP > 0): the same clips with CROP px cut from every edge (a narrower field
#    of view than the training images').
# Each report's log is FOLD_DIR/NAME.log. Resumable: a report whose JSON exists is not run again.
# Environment: FOLDS (mn-cv's folds, 5), CLIPS (validation images animated, 16), FRAMES (frames a clip, 144),
# CROP (24; 0: no cropped clips), FIT_ARGS (more tools.presence_fit arguments), THREADS (each engine's CPU
# threads, 1), PY (python3). Exit status: 0, or 1 when a report failed (its log says why; the rest still run).
set -u
DATA=${1:?DATA folder}; F=${2:?FOLD_DIR}; FOLD=${3:?FOLD}
FOLDS=${FOLDS:-5}; CLIPS=${CLIPS:-16}; FRAMES=${FRAMES:-144}; CROP=${CROP:-24}; PY=${PY:-python3}
THREADS=${THREADS:-1}; read -r -a FIT <<<"${FIT_ARGS:-}"
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
M="$F/model.pt"
[ -f "$M" ] || { echo "cv_fold_reports: $M does not exist: run that fold's mn-cv first" >&2; exit 2; }
SPLIT=(--data "$DATA" --split kfold --fold "$FOLD" --threads "$THREADS")
status=0
report() {  # name, command...: run unless NAME.json exists
  local name=$1; shift
  [ -f "$F/$name.json" ] && return 0
  "$@" --json "$F/$name.json" -q >"$F/$name.log" 2>&1 || { echo "cv_fold_reports: $name failed, see $F/$name.log" >&2
    status=1; }
}
CASCADE=0
"$PY" -c "import sys; from engines.cascade import is_cascade; sys.exit(0 if is_cascade(sys.argv[1]) else 3)" "$M" &&
  CASCADE=1
[ $CASCADE = 1 ] && report speckle-stability "$PY" -m benchmarks.speckle_stability --refiner "$M" "${SPLIT[@]}" \
  --folds "$FOLDS"
report presence-fit "$PY" -m tools.presence_fit --model "$M" "${SPLIT[@]}" --split-folds "$FOLDS" "${FIT[@]}"
[ -f "$F/presence-fit.json" ] || exit 1  # every report below reads the fold's own appearance model
report presence "$PY" -m benchmarks.presence --model "$M" "${SPLIT[@]}" --folds "$FOLDS"
if [ $CASCADE = 1 ]; then
  CLIP=(--model "$M" "${SPLIT[@]}" --folds "$FOLDS" --phantoms 0 --images "$CLIPS" --frames "$FRAMES"
        --modes tracked+fusion --compression-period 2)
  report window-on "$PY" -m benchmarks.window_bench "${CLIP[@]}" --presence on
  report window-shape "$PY" -m benchmarks.window_bench "${CLIP[@]}" --presence shape
  [ "$CROP" -gt 0 ] && report "window-on-crop$CROP" "$PY" -m benchmarks.window_bench "${CLIP[@]}" --presence on \
    --crop-border "$CROP"
fi
exit $status
