#!/usr/bin/env bash
# Issue 10 on a lent GPU, in one call: 5-fold patient cross-validation of the candidate recipes for
# the shipped default model (every fold of every recipe at once on the one GPU), their robustness
# and presence reports on the validation folds, then the final models trained on all 202 images for
# the folds' median best epochs; packs what comes back.
#
#   benchmarks/gpu_cv.sh DATA PHANTOM OUT
#
# DATA: the median-nerve folder; PHANTOM: phantom frames written by
#   mn-synth --phantom --dataset PHANTOM --frames 40 --every 12 --seed S (S = 1, 2, 3);
# OUT: folder for what comes back: cv-results.tar.gz (every fold's config, history, evaluations,
#   the CV summaries, robustness and presence reports, logs) and final-fp16.tar (the final models'
#   float16 checkpoints, for python -m tools.bundle add).
# Environment: DEVICE (cuda), RECIPES (the recipes trained at once, "cascade-acqloc cascade-strong-ph-cmp cascade-acq":
#   together every distinct part of benchmarks/cpu_cv.sh's four recipes and of the acquisition-augmented one), JOINED
#   (recipes run after them with mn-cv --share of their folders: a part trained alike there is copied, any other
#   trained; "cascade-strong-ph cascade-acqloc-cmp": mn-realtime's recipe and both changes together, nothing
#   trained), so the folds are those cpu_cv.sh makes fold by fold and benchmarks/cv_collect.sh can pool them.
#   Add cascade-strong-ph-tc to RECIPES for issue 18's consistency-trained refiner, or cascade-strong-ph-cmp-tc for
#   both changes, or cascade-strong-ph-cmp-tcw for both with windows up to 32 px off the nerve (the exploratory
#   favourite), whose batches cost twice: give them
#   CV_MIN to match), FOLDS (5), CV_MIN (minutes
#   each training part may run in the CV: mn-train --max-minutes; 3), FINAL_MIN (2), CANDIDATES (2:
#   cascade windows refined per frame, in the CV and the final models), QUICK=1 (a tiny CPU rehearsal: 16 images,
#   1 epoch, small frames), PY (python3), RUNS (work folder, /tmp/gpu-cv).
set -u
DATA=${1:?DATA folder}; PHANTOM=${2:?PHANTOM folder}; OUT=${3:?OUT folder}
DEVICE=${DEVICE:-cuda}; QUICK=${QUICK:-0}; PY=${PY:-python3}; RUNS=${RUNS:-/tmp/gpu-cv}
RECIPES=${RECIPES:-"cascade-acqloc cascade-strong-ph-cmp cascade-acq"}; JOINED=${JOINED-"cascade-strong-ph cascade-acqloc-cmp"}
FOLDS=${FOLDS:-5}
J=""; for r in $JOINED; do case " $RECIPES " in *" $r "*) ;; *) J="$J $r" ;; esac; done; JOINED=${J# }  # trained, not joined
CV_MIN=${CV_MIN:-3}; FINAL_MIN=${FINAL_MIN:-2}; CANDIDATES=${CANDIDATES:-2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RUNS" "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

TRAIN_ARGS="--threads 1 --workers 2 --save-every-min 1"
SIZE_ARGS=(); EPOCH_ARGS=(); REPORT_ARGS=(); CLIPS=8; FRAMES=144; CROP=24; FIT_ARGS=""
if [ "$QUICK" = 1 ]; then
  TRAIN_ARGS="--threads 1 --max-images 16 --width 0.25"; SIZE_ARGS=(--size 128x96 --crop 64x32)
  EPOCH_ARGS=(--epochs 1); REPORT_ARGS=(--perturb zoom=0.8 jpeg=40 compress=0.75); CLIPS=1; FRAMES=6
  FIT_ARGS="--no-perturbed --phantom 4 --folds 2 --found-dice 0"  # a one-epoch model finds few true nerves
fi

folds() {  # recipe, extra mn-cv arguments...: every fold of it at once, in the background
  local recipe=$1 fold; shift
  for fold in $(seq 0 $(( FOLDS - 1 ))); do
    $PY -m train.crossval --recipe "$recipe" --data "$DATA" --extra-train "$PHANTOM" --out "$RUNS/cv-$recipe" \
      --folds "$FOLDS" --fold "$fold" --device "$DEVICE" --candidates "$CANDIDATES" "${SIZE_ARGS[@]}" "${EPOCH_ARGS[@]}" \
      --train-args "$TRAIN_ARGS --max-minutes $CV_MIN" "$@" -q >"$RUNS/cv-$recipe-fold$fold.log" 2>&1 &
  done
}
stamp "cross-validation: recipes [$RECIPES] x $FOLDS folds at once on $DEVICE, at most $CV_MIN min per part"
for recipe in $RECIPES; do folds "$recipe"; done
wait
SHARE=(); for recipe in $RECIPES; do SHARE+=("$RUNS/cv-$recipe"); done
[ -n "$JOINED" ] && stamp "joined from their parts: [$JOINED]"
for recipe in $JOINED; do folds "$recipe" --share "${SHARE[@]}"; done
wait
ALL="$RECIPES $JOINED"
for recipe in $ALL; do
  $PY -m train.crossval --recipe "$recipe" --out "$RUNS/cv-$recipe" \
    --folds "$FOLDS" --candidates "$CANDIDATES" --aggregate -q >"$RUNS/cv-$recipe-summary.txt" 2>&1
  stamp "$recipe"; cat "$RUNS/cv-$recipe/cv-summary.md" 2>/dev/null || tail -n 5 "$RUNS/cv-$recipe"-fold*.log
done

stamp "final models on all images (in the background) and reports on the validation folds"
final() {  # recipe, extra mn-cv arguments...
  local recipe=$1; shift
  $PY -m train.crossval --recipe "$recipe" --data "$DATA" --extra-train "$PHANTOM" --out "$RUNS/cv-$recipe" \
    --folds "$FOLDS" --final --device "$DEVICE" --candidates "$CANDIDATES" "${SIZE_ARGS[@]}" \
    --train-args "$TRAIN_ARGS --max-minutes $FINAL_MIN" "$@" -q >"$RUNS/final-$recipe.log" 2>&1
}
(  # the joined recipes' final models copy the parts the others' trained
  for recipe in $RECIPES; do final "$recipe" & done
  wait
  for recipe in $JOINED; do final "$recipe" --share "${SHARE[@]}" & done
  wait
) &
for recipe in $ALL; do
  [ -f "$RUNS/cv-$recipe/fold-0/model.pt" ] || continue
  case $recipe in cascade-*) WINDOW=(--window-diagnosis) ;; *) WINDOW=() ;; esac  # which part fails, for a cascade
  $PY -m benchmarks.robustness --cv-dir "$RUNS/cv-$recipe" --folds "$FOLDS" "${WINDOW[@]}" "${REPORT_ARGS[@]}" \
    --json "$RUNS/cv-$recipe/robustness.json" -q >"$RUNS/robustness-$recipe.log" 2>&1 &
  for fold in $(seq 0 $(( FOLDS - 1 ))); do  # each fold model's own reports (benchmarks/cv_fold_reports.sh)
    [ -f "$RUNS/cv-$recipe/fold-$fold/model.pt" ] || continue
    FOLDS=$FOLDS CLIPS=$CLIPS FRAMES=$FRAMES CROP=$CROP FIT_ARGS="$FIT_ARGS" PY=$PY \
      "$REPO/benchmarks/cv_fold_reports.sh" "$DATA" "$RUNS/cv-$recipe/fold-$fold" "$fold" \
      >"$RUNS/reports-$recipe-fold$fold.log" 2>&1 &
  done
done
wait
for recipe in $ALL; do
  stamp "$recipe robustness"; cat "$RUNS/cv-$recipe/robustness.md" 2>/dev/null || tail -n 3 "$RUNS/robustness-$recipe.log"
  for f in "$RUNS/cv-$recipe"/fold-*/speckle-stability.md; do [ -f "$f" ] && { echo "$f"; tail -n 4 "$f"; }; done
  for f in "$RUNS/cv-$recipe"/fold-*/window-{on,shape,on-crop$CROP}.md; do [ -f "$f" ] && { echo "$f"; tail -n 1 "$f"; }; done
done

stamp "packing"
$PY - "$RUNS" <<'EOF'
import json, sys
from pathlib import Path
import torch
from tools.bundle import half_state_dict
runs = Path(sys.argv[1])
out = runs / "final-fp16"
out.mkdir(exist_ok=True)
for model in sorted(runs.glob("cv-*/final/model.pt")):
    payload = torch.load(model, map_location="cpu", weights_only=True)
    payload.pop("train_state", None)
    payload["state_dict"] = half_state_dict(payload["state_dict"])
    name = model.parent.parent.name.removeprefix("cv-")
    torch.save(payload, out / f"{name}.pt")
    print(f"kept {name}: {out / (name + '.pt')}")
# presence per recipe: pooled over folds
for cv in sorted(runs.glob("cv-*")):
    frames = {}
    for f in sorted(cv.glob("fold-*/presence.json")):
        for gate, kinds in json.loads(f.read_text())["summary"].items():
            for kind, e in kinds.items():
                acc = frames.setdefault(gate, {}).setdefault(kind, {"frames": 0, "reported": 0, "found": 0})
                acc["frames"] += e["frames"]; acc["reported"] += e["reported"]; acc["found"] += e.get("found", 0)
    if frames:
        (cv / "presence-pooled.json").write_text(json.dumps(frames, indent=2) + "\n")
        print(cv.name, json.dumps(frames["on"]))
EOF
tar czf "$OUT/cv-results.tar.gz" -C "$RUNS" --exclude='*.pt' --exclude='*.onnx' .
tar cf "$OUT/final-fp16.tar" -C "$RUNS" final-fp16
ls -la "$OUT"
stamp "done"
