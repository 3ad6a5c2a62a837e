#!/usr/bin/env bash
# Two localisers averaged (issue 10, 2026-12-06): mn-realtime's acquisition localiser and the one trained with the
# nerve compressed too (recipe cascade-acqcmploc-ens-mir) as one ensemble localiser (python -m train.cascade
# --localiser A --localiser B), their mean probability placing the window; the refiners are mn-realtime's two, the
# second shown the mirror image. The compress localiser alone had put more windows on the compressed nerve (clips
# `ok` 94.1 -> 95.8 %) but cost the clean stills a little on every fold; the mean may keep both.
#
#   benchmarks/localiser_ensemble.sh train DATA PHANTOM OUT FOLD:PART ...
#   benchmarks/localiser_ensemble.sh eval DATA OUT FOLD VARIANT [STEP ...]
#
# train: each FOLD:PART (PART = localiser, cmploc, refiner, refiner-2; loc2 and cmploc2 are the two localisers as
# lunet-coarse2, the frame pooled 2x2 instead of 4x4, an exploration of 2026-12-06; acqref and acqref-2 are the two
# refiners trained with the acquisition augmentation, an exploration of 2026-12-06 late; fovref and fovref-2 the two
# with its geometry alone, --augment fov, 2026-12-07; swaref and swaref-2 the fold's refiner and refiner-2 trained
# on for 24 epochs at a steady rate 3e-4 with their weights averaged, mn-train --swa-from 1, 2026-12-07; arearef and
# arearef-2 the two refiners trained with each image's soft-area error in the loss, mn-train --loss bce_dice_area,
# 2026-12-07; wideref and wideref-2 the two refiners with 1.5 times the filters, mn-train --width 1.5, 2026-12-07)
# trained from
# the start on the fold's training patients the way its final is (mn-train --blind, the as-final schedules of
# cascade-acqloc-cmp-ens that benchmarks/results/cv-cpu/cascade-acqloc-cmp-ens/fold-K/as-final/*-config.json record:
# localisers 62 epochs, rate drops after 38 and 52; refiners 104, drops after 84 and 94), into OUT/fold-K/PART/, one
# after another (run two of these at once on two cores). Resumable: run it again. PHANTOM: mn-synth --phantom
# --dataset PHANTOM --frames 40 --every 12 --seed S for S = 1, 2, 3 (120 frames).
# eval: joins the fold's parts as VARIANT into OUT/fold-K/VARIANT/model.pt and writes the as-final reports beside
# it, on the fold's own patients, one thread: STEPs join eval (mn-eval, both protocols) fit (tools.presence_fit on
# the fold's training patients) win (its patients animated into clips, the live loop's tracked window, fusion and
# presence check; every clip's frames in win-frames/) rob (compress 0.75, 0.85) rob34 (all 34 acquisition changes) clips (mn-presence: 48 nerve-free
# clips); default all. VARIANT: base (mn-realtime's procedure: the acquisition localiser), lens (both localisers
# averaged), lensmir (the same, the compress localiser shown the mirrored frame), cmploc (the compress localiser
# alone), loctta (the acquisition localiser and its mirror image), fine (loc2 alone), lens2 (loc2 and cmploc2), mix
# (loc2 and cmploc), acq (lens's localisers, the refiners acqref and acqref-2), acq1 (lens with acqref instead of
# refiner), fov (lens's localisers, the refiners fovref and fovref-2), fov1 (lens with fovref instead of refiner), swa
# (lens's localisers, the averaged refiners swaref/swa.pt and swaref-2/swa.pt), swalast (their last weights, not
# averaged: what the 24 more epochs alone do), area (lens's localisers, the refiners arearef and arearef-2), wide
# (lens's localisers, the refiners wideref and wideref-2).
# Environment: PY (python3), THREADS (1), DEVICE (mn-train's, cpu; cuda on a GPU machine), TRAIN_ARGS (more
# mn-train arguments, after the script's own: a rehearsal's '--epochs 1 --width 0.25'), FIT_SEED (eval: the presence
# fit's --fit-seed; other than 0, the steps fit, win and clips read and write OUT/fold-K/VARIANT/fit-seed-S/, the
# fit of one draw unless FIT_DRAWS says, skipping its held-out check under acquisition changes: how much of a variant's
# clips is the fit's chance), FIT_DRAWS (the fit's --draws; alone, those steps use OUT/fold-K/VARIANT/draws-R/;
# neither set: the fit takes tools.presence_fit's default, four draws since 2026-12-07, one before, into VARIANT/ itself),
# PRESENCE_REFRESH (seconds: win and clips with the tracker's --presence-refresh, into that fit's folder's refresh-S/),
# LANES (eval: 1, the steps one after another; 2: join, then fit, win and clips in one lane and the other steps in a
# second beside it, for two cores).
set -u
MODE=${1:?train or eval}; shift
PY=${PY:-python3}; THREADS=${THREADS:-1}; read -r -a MORE <<<"${TRAIN_ARGS:-}"
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
LOC=(--model lunet-coarse --augment acquisition --nerve-removed 0.15 --lr 0.01 --epochs 62 --lr-drops 38 52)
REFNET=(--model lunet --crop 128x96 --augment compress)  # the shipped refiners' network, window and augmentation
REF=("${REFNET[@]}" --lr 0.001 --epochs 104 --lr-drops 84 94)
# the refiners shown what another scanner brings (zoom, field of view with black borders, aspect, gain, codec) as the
# localisers are, the nerve still compressed as the compress augmentation does (the last --augment wins)
ACQ=(--augment acquisition --compress 0.75 0.5)
# the same geometry (zoom, field of view, aspect) without depth gain, gain and JPEG
FOV=(--augment fov --compress 0.75 0.5)
# stochastic weight averaging: a trained refiner trained on at a steady rate, the mean of its 24 epochs' weights
# (swa.pt)
SWA=(--lr 0.0003 --epochs 24 --lr-patience 1000 --swa-from 1)

train_part() {  # data phantom out fold part
  local data=$1 phantom=$2 out=$3/fold-$4/$5 fold=$4 part=$5 args
  case $part in
    localiser) args=("${LOC[@]}");;
    cmploc) args=("${LOC[@]}" --compress 0.75 0.5);;
    loc2) args=("${LOC[@]}" --model lunet-coarse2);;
    cmploc2) args=("${LOC[@]}" --model lunet-coarse2 --compress 0.75 0.5);;
    refiner) args=("${REF[@]}");;
    refiner-2) args=("${REF[@]}" --speckle 0 0.6);;
    acqref) args=("${REF[@]}" "${ACQ[@]}");;
    acqref-2) args=("${REF[@]}" "${ACQ[@]}" --speckle 0 0.6);;
    fovref) args=("${REF[@]}" "${FOV[@]}");;
    fovref-2) args=("${REF[@]}" "${FOV[@]}" --speckle 0 0.6);;
    arearef) args=("${REF[@]}" --loss bce_dice_area);;
    arearef-2) args=("${REF[@]}" --speckle 0 0.6 --loss bce_dice_area);;
    wideref) args=("${REF[@]}" --width 1.5);;
    wideref-2) args=("${REF[@]}" --speckle 0 0.6 --width 1.5);;
    swaref) args=("${REFNET[@]}" "${SWA[@]}" --init "$3/fold-$4/refiner/last.pt");;
    swaref-2) args=("${REFNET[@]}" --speckle 0 0.6 "${SWA[@]}" --init "$3/fold-$4/refiner-2/last.pt");;
    *) echo "localiser_ensemble: unknown part $part (localiser, cmploc, loc2, cmploc2, refiner, refiner-2, acqref," \
         "acqref-2, fovref, fovref-2, swaref, swaref-2, arearef, arearef-2, wideref, wideref-2)" >&2; return 2;;
  esac
  # finished: mn-train prints its summary line (whatever the log level) only after the last epoch
  grep -qs '^{"best_checkpoint"' "$out.log" && return 0
  local resume=(); [ -f "$out/last.pt" ] && resume=(--resume)
  mkdir -p "$(dirname "$out")"
  echo "[$(date +%H:%M:%S)] fold $fold $part"
  "$PY" -m train.train_cli --data "$data" --out "$out" --extra-train "$phantom" --seed 42 --device "${DEVICE:-cpu}" \
    --split kfold --folds 5 --fold "$fold" --blind --amp --threads "$THREADS" "${args[@]}" "${MORE[@]}" \
    "${resume[@]}" >>"$out.log" 2>&1
}

if [ "$MODE" = train ]; then
  DATA=${1:?DATA}; PHANTOM=${2:?PHANTOM}; OUT=${3:?OUT}; shift 3
  status=0
  for job in "$@"; do
    train_part "$DATA" "$PHANTOM" "$OUT" "${job%%:*}" "${job#*:}" || { echo "localiser_ensemble: $job failed, see" \
      "$OUT/fold-${job%%:*}/${job#*:}.log" >&2; status=1; }
  done
  exit $status
fi
[ "$MODE" = eval ] || { echo "localiser_ensemble: $MODE: use train or eval" >&2; exit 2; }
DATA=${1:?DATA}; OUT=${2:?OUT}; F=${3:?FOLD}; V=${4:?VARIANT}; shift 4
STEPS=${*:-join eval fit win rob rob34 clips}
P=$OUT/fold-$F; O=$P/$V; mkdir -p "$O"
FS=${FIT_SEED:-0}; FR=${FIT_DRAWS:-}; FD=$O; FITMORE=()  # where the presence fit and what depends on it go
if [ "$FS" != 0 ]; then
  FD=$O/fit-seed-$FS${FR:+-draws-$FR}; FITMORE=(--fit-seed "$FS" --no-perturbed --draws "${FR:-1}")
elif [ -n "$FR" ]; then FD=$O/draws-$FR; FITMORE=(--draws "$FR" --no-perturbed); fi
mkdir -p "$FD"
# PRESENCE_REFRESH=S: win and clips with the tracker's --presence-refresh S, into FD/refresh-S/ (the fit stays FD's)
RD=$FD; REFRESH=()
if [ -n "${PRESENCE_REFRESH:-}" ]; then RD=$FD/refresh-$PRESENCE_REFRESH; REFRESH=(--presence-refresh "$PRESENCE_REFRESH")
  mkdir -p "$RD"; fi
# the refiners: mn-realtime's two unless the variant says otherwise
R=(--refiner "$P/refiner/last.pt" --refiner "$P/refiner-2/last.pt")
LENS=(--localiser "$P/localiser/last.pt" --localiser "$P/cmploc/last.pt")  # the shipped pair's two localisers
case $V in
  base) L=(--localiser "$P/localiser/last.pt");;
  lens) L=("${LENS[@]}");;
  lensmir) L=("${LENS[@]}" --localiser-mirror alternate);;
  cmploc) L=(--localiser "$P/cmploc/last.pt");;
  loctta) L=(--localiser "$P/localiser/last.pt" --localiser "$P/localiser/last.pt" --localiser-mirror alternate);;
  fine) L=(--localiser "$P/loc2/last.pt");;
  lens2) L=(--localiser "$P/loc2/last.pt" --localiser "$P/cmploc2/last.pt");;
  mix) L=(--localiser "$P/loc2/last.pt" --localiser "$P/cmploc/last.pt");;
  acq) L=("${LENS[@]}") R=(--refiner "$P/acqref/last.pt" --refiner "$P/acqref-2/last.pt");;
  acq1) L=("${LENS[@]}") R=(--refiner "$P/acqref/last.pt" --refiner "$P/refiner-2/last.pt");;
  fov) L=("${LENS[@]}") R=(--refiner "$P/fovref/last.pt" --refiner "$P/fovref-2/last.pt");;
  fov1) L=("${LENS[@]}") R=(--refiner "$P/fovref/last.pt" --refiner "$P/refiner-2/last.pt");;
  swa) L=("${LENS[@]}") R=(--refiner "$P/swaref/swa.pt" --refiner "$P/swaref-2/swa.pt");;
  swalast) L=("${LENS[@]}") R=(--refiner "$P/swaref/last.pt" --refiner "$P/swaref-2/last.pt");;
  area) L=("${LENS[@]}") R=(--refiner "$P/arearef/last.pt" --refiner "$P/arearef-2/last.pt");;
  wide) L=("${LENS[@]}") R=(--refiner "$P/wideref/last.pt" --refiner "$P/wideref-2/last.pt");;
  *) echo "localiser_ensemble: unknown variant $V (base, lens, lensmir, cmploc, loctta, fine, lens2, mix, acq," \
       "acq1, fov, fov1, swa, swalast, area, wide)" >&2; exit 2;;
esac
S=(--data "$DATA" --split kfold --folds 5 --fold "$F" --threads "$THREADS")
evaluate() {  # protocol: mn-eval on the fold's patients
  "$PY" -m engines.evaluate_cli --checkpoint "$O/model.pt" "${S[@]}" --protocol "$1" --json "$O/eval-$1.json" \
    --per-image "$O/per-image-$1.csv" -q
}
step() {  # one eval step; 1 when it failed
  echo "[$(date +%H:%M:%S)] fold $F $V $1"
  case $1 in
    join) "$PY" -m train.cascade "${L[@]}" "${R[@]}" --mirror alternate --out "$O/model.pt" -q;;
    eval) evaluate paper && evaluate native;;
    fit) "$PY" -m tools.presence_fit --model "$O/model.pt" --data "$DATA" --split kfold --fold "$F" \
            --split-folds 5 --threads "$THREADS" --out "$FD/appearance.json" --json "$FD/presence-fit.json" \
            --md "$FD/presence-fit.md" "${FITMORE[@]}" -q;;
    win) "$PY" -m benchmarks.window_bench --model "$O/model.pt" "${S[@]}" --phantoms 0 --images 16 --frames 144 \
            --modes tracked+fusion --compression-period 2 --presence on --appearance "$FD/appearance.json" \
            "${REFRESH[@]}" --json "$RD/win.json" --per-frame "$RD/win-frames" -q;;
    rob) "$PY" -m benchmarks.robustness --model "$O/model.pt" "${S[@]}" --perturb compress=0.75,0.85 \
            --json "$O/rob.json" --md "$O/rob.md" -q >/dev/null;;
    rob34) "$PY" -m benchmarks.robustness --model "$O/model.pt" "${S[@]}" --json "$O/robustness.json" \
            --md "$O/robustness.md" --per-image "$O/robustness-per-image.csv" -q >/dev/null;;
    clips) "$PY" -m benchmarks.presence --model "$O/model.pt" "${S[@]}" --clips 48 --confirm 2 \
            --appearance "$FD/appearance.json" "${REFRESH[@]}" --json "$RD/presence-clips.json" -q;;
    *) echo "localiser_ensemble: unknown step $1" >&2; false;;
  esac || { echo "localiser_ensemble: fold $F $V: $1 failed" >&2; return 1; }
}
steps() { local s st=0; for s in "$@"; do step "$s" || st=1; done; return $st; }
status=0
if [ "${LANES:-1}" = 2 ]; then
  # join first; then the steps that need the presence fit (fit, win, clips) in this process and the others (eval,
  # rob, rob34) beside them, each lane with THREADS threads
  FIRST=(); FITTED=(); OTHERS=()
  for s in $STEPS; do case $s in join) FIRST+=("$s");; fit|win|clips) FITTED+=("$s");; *) OTHERS+=("$s");; esac; done
  steps "${FIRST[@]}" || status=1
  steps "${OTHERS[@]}" & lane=$!
  steps "${FITTED[@]}" || status=1
  wait $lane || status=1
else
  # shellcheck disable=SC2086
  steps $STEPS || status=1
fi
echo "[$(date +%H:%M:%S)] fold $F $V done"
exit $status
