#!/bin/bash
# Issue 10, exploratory: does training with the nerve compressed (mn-train --augment compress) keep the
# nerve outlined while it flattens, at no cost on stills? Continues mn-realtime's refiner for EPOCHS more
# epochs twice, identically but for the augmentation (ctl: strong, as it was trained; cmp: compress), on
# the paper split's training patients, then measures each last.pt (no epoch chosen by any image) behind
# mn-realtime's own localiser, beside the shipped model, on the paper split's validation patients:
#   - stills, clean and under every perturbation of the robustness report, compressed by 15 and 25 % among them;
#   - every image animated and segmented as stills at 12 phases of one compression cycle (compression_phases);
#   - IMAGES of them animated into FRAMES-frame clips (one compression cycle: 144), through the live loop
#     (benchmarks.window_bench, tracked window and fusion, presence gate on).
# These validation images chose mn-realtime's epoch (not the fine-tunes'): the shipped row is optimistic.
#
#   benchmarks/compress_ab.sh DATA PHANTOM EPOCHS OUT [IMAGES] [FRAMES]
#
# Writes OUT/{ctl,cmp}/ (the runs), OUT/{ctl,cmp}.pt (the cascades) and
# OUT/{shipped,ctl,cmp}-{robustness,phases,window}.{json,md}.
# The two trainings run at once, THREADS (1) each; then the evaluations, one after the other.
set -euo pipefail
DATA=${1:?DATA} PHANTOM=${2:?PHANTOM} EPOCHS=${3:?EPOCHS} OUT=${4:?OUT} IMAGES=${5:-8} FRAMES=${6:-144}
T=${THREADS:-1}
COMMON=(--data "$DATA" --split paper --model lunet --crop 128x96 --lr 1e-4 --extra-train "$PHANTOM" --seed 42
        --epochs "$EPOCHS" --threads "$T" --init engines/bundled/mn-realtime.pt --init-part refiner -q)
[ -f "$OUT/ctl/.done" ] || { mn-train "${COMMON[@]}" --augment strong --out "$OUT/ctl" && touch "$OUT/ctl/.done"; } &
[ -f "$OUT/cmp/.done" ] || { mn-train "${COMMON[@]}" --augment compress --out "$OUT/cmp" && touch "$OUT/cmp/.done"; } &
wait
for r in ctl cmp; do
  [ -f "$OUT/$r/.done" ] || { echo "the $r training did not finish" >&2; exit 1; }
  python -m train.cascade --localiser engines/bundled/mn-realtime.pt --refiner "$OUT/$r/last.pt" --out "$OUT/$r.pt" -q
done
for r in shipped ctl cmp; do
  model=$([ "$r" = shipped ] && echo mn-realtime || echo "$OUT/$r.pt")
  mn-robustness --model "$model" --data "$DATA" --split paper --threads "$T" --json "$OUT/$r-robustness.json" -q
  python -m benchmarks.compression_phases --model "$model" --data "$DATA" --split paper --threads "$T" \
    --json "$OUT/$r-phases.json" -q
  python -m benchmarks.window_bench --model "$model" --data "$DATA" --split paper --phantoms 0 --images "$IMAGES" \
    --frames "$FRAMES" --threads "$T" --modes tracked+fusion --presence on --json "$OUT/$r-window.json" -q
done
