#!/usr/bin/env bash
# Issue 10, exploratory: does training with the nerve compressed (mn-train --augment compress) keep the
# nerve outlined while it flattens, at no cost on stills? Continues mn-realtime's refiner for EPOCHS more
# epochs once per arm, identically but for the arm's training options, on the paper split's training
# patients, then measures each last.pt (no epoch chosen by any image) behind mn-realtime's own localiser,
# beside the shipped model, on the paper split's validation patients. Arms (ARMS, default "ctl cmp"):
#   ctl: --augment strong (as mn-realtime was trained); cmp: --augment compress;
#   tc:  --augment compress --consistency 10 (issue 18: the temporal training signal on top of cmp);
#   tcw: tc with --crop-jitter 0.5 (windows up to 32 px off the nerve instead of 16: does an outline that
#        depends less on where its window sits steady the tracked window's feedback?).
# Measured per arm:
#   - stills, clean and under every perturbation of the robustness report, compressed by 15 and 25 % among them;
#   - every image animated and segmented as stills at 12 phases of one compression cycle (compression_phases);
#   - IMAGES of them animated into FRAMES-frame clips (one compression cycle: 144), through the live loop
#     (benchmarks.window_bench, tracked window and fusion, presence gate on);
#   - the refiner's outline under new speckle patterns and 1-3 px window moves (speckle_stability).
# These validation images chose mn-realtime's epoch (not the fine-tunes'): the shipped row is optimistic.
#
#   [ARMS="ctl cmp tc"] benchmarks/compress_ab.sh DATA PHANTOM EPOCHS OUT [IMAGES] [FRAMES]
#
# Writes OUT/ARM/ (the runs), OUT/ARM.pt (the cascades) and
# OUT/{shipped,ARM}-{robustness,phases,window,speckle}.{json,md}. Steps already done are skipped, a
# stopped training is resumed (run the same command again).
# The trainings run at once, THREADS (1) each; then the evaluations, one after the other.
set -euo pipefail
DATA=${1:?DATA} PHANTOM=${2:?PHANTOM} EPOCHS=${3:?EPOCHS} OUT=${4:?OUT} IMAGES=${5:-8} FRAMES=${6:-144}
T=${THREADS:-1}
ARMS=${ARMS:-ctl cmp}
COMMON=(--data "$DATA" --split paper --model lunet --crop 128x96 --lr 1e-4 --extra-train "$PHANTOM" --seed 42
        --epochs "$EPOCHS" --threads "$T" --init engines/bundled/mn-realtime.pt --init-part refiner -q)
arm_args() {
  case "$1" in
    ctl) echo "--augment strong" ;;
    cmp) echo "--augment compress" ;;
    tc) echo "--augment compress --consistency 10" ;;
    tcw) echo "--augment compress --consistency 10 --crop-jitter 0.5" ;;
    *) echo "unknown arm $1 (ctl, cmp, tc, tcw)" >&2; return 2 ;;
  esac
}
for r in $ARMS; do
  args=$(arm_args "$r")
  resume=$([ -f "$OUT/$r/last.pt" ] && echo --resume || true)  # a stopped training continues where it was
  # shellcheck disable=SC2086  # the arm's options are words
  [ -f "$OUT/$r/.done" ] || { mn-train "${COMMON[@]}" $args $resume --out "$OUT/$r" && touch "$OUT/$r/.done"; } &
done
wait
for r in $ARMS; do
  [ -f "$OUT/$r/.done" ] || { echo "the $r training did not finish" >&2; exit 1; }
  [ -f "$OUT/$r.pt" ] || python -m train.cascade --localiser engines/bundled/mn-realtime.pt \
    --refiner "$OUT/$r/last.pt" --out "$OUT/$r.pt" -q
done
for r in shipped $ARMS; do
  model=$([ "$r" = shipped ] && echo mn-realtime || echo "$OUT/$r.pt")
  refiner=$([ "$r" = shipped ] && echo engines/bundled/mn-realtime.pt || echo "$OUT/$r/last.pt")
  [ -f "$OUT/$r-robustness.json" ] || mn-robustness --model "$model" --data "$DATA" --split paper --threads "$T" \
    --json "$OUT/$r-robustness.json" -q
  [ -f "$OUT/$r-phases.json" ] || python -m benchmarks.compression_phases --model "$model" --data "$DATA" \
    --split paper --threads "$T" --json "$OUT/$r-phases.json" -q
  [ -f "$OUT/$r-window.json" ] || python -m benchmarks.window_bench --model "$model" --data "$DATA" --split paper \
    --phantoms 0 --images "$IMAGES" --frames "$FRAMES" --threads "$T" --modes tracked+fusion --presence on \
    --json "$OUT/$r-window.json" -q
  [ -f "$OUT/$r-speckle.json" ] || python -m benchmarks.speckle_stability --refiner "$refiner" --data "$DATA" \
    --threads "$T" --json "$OUT/$r-speckle.json" -q
done
