#!/usr/bin/env bash
# Issue 6 on a lent GPU, in one call: train the paper's four networks at 384x288 with the paper's
# recipe (and DL-UNet with the strong augmentation too), the cascade's localisers and refiners
# (with and without phantom frames), all at once on one GPU; evaluate each on the paper's
# validation patients (mn-eval paper + native protocols); join and evaluate the cascades; time
# the networks on the GPU (benchmarks.device_check); pack results and the weights worth keeping.
#
#   benchmarks/gpu_train.sh DATA PHANTOM OUT
#
# DATA: the median-nerve folder; PHANTOM: phantom frames written by
#   mn-synth --phantom --dataset PHANTOM --frames 40 --every 12 (3 seeds: see the README);
# OUT: folder for what comes back: results.tar.gz (configs, histories, curves, evaluations,
#   logs), weights.tar.part-* (fp16 checkpoints of the runs worth keeping, split in 15 MB parts:
#   cat weights.tar.part-* | tar x) and the device check JSON.
# Environment: DEVICE (cuda), TRAIN_S (seconds every training job may run before SIGTERM makes
#   it save and stop; its best.pt stays; 390), QUICK=1 (a tiny CPU rehearsal: 12 images, 2
#   epochs, small frames), PY (python3), RUNS (work folder, /tmp/gpu-runs).
set -u
DATA=${1:?DATA folder}; PHANTOM=${2:?PHANTOM folder}; OUT=${3:?OUT folder}
DEVICE=${DEVICE:-cuda}; TRAIN_S=${TRAIN_S:-390}; QUICK=${QUICK:-0}; PY=${PY:-python3}
RUNS=${RUNS:-/tmp/gpu-runs}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1
mkdir -p "$RUNS" "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

SIZE=384x288; CROP=128x96; WORKERS=3; EP_PAPER=100; EP_SMALL=150; EXTRA=()
if [ "$QUICK" = 1 ]; then
  SIZE=96x64; CROP=32x32; WORKERS=1; EP_PAPER=2; EP_SMALL=3; EXTRA=(--max-images 12)
fi
COMMON=(--data "$DATA" --size "$SIZE" --device "$DEVICE" --threads 1 --batch-size 8 --save-every-min 2 "${EXTRA[@]}")
PH=(--extra-train "$PHANTOM")

# name | mn-train arguments (each run: RUNS/name)
JOBS=(
  "unet-paper|--model unet --augment paper --epochs $EP_PAPER --workers 1"
  "lunet-paper|--model lunet --augment paper --epochs $EP_PAPER --workers 1"
  "dbunet-paper|--model dbunet --augment paper --epochs $EP_PAPER --workers 1"
  "dlunet-paper|--model dlunet --augment paper --epochs $EP_PAPER --workers 1"
  "dlunet-strong|--model dlunet --augment strong --epochs $EP_PAPER --workers $WORKERS"
  "loc-strong-ph|--model lunet-coarse --lr 1e-2 --augment strong ${PH[*]} --epochs $EP_SMALL --workers $WORKERS"
  "loc-strong|--model lunet-coarse --lr 1e-2 --augment strong --epochs $EP_SMALL --workers $WORKERS"
  "ref-strong-ph|--model lunet --crop $CROP --augment strong ${PH[*]} --epochs $EP_SMALL --workers $WORKERS"
  "ref-strong|--model lunet --crop $CROP --augment strong --epochs $EP_SMALL --workers $WORKERS"
  "ref-strong-ph-lr3|--model lunet --crop $CROP --lr 1e-3 --augment strong ${PH[*]} --epochs $EP_SMALL --workers $WORKERS"
)

if [ -n "${ONLY:-}" ]; then  # a subset of the runs, e.g. ONLY="dlunet-paper dbunet-paper"
  kept=(); for job in "${JOBS[@]}"; do [[ " $ONLY " == *" ${job%%|*} "* ]] && kept+=("$job"); done; JOBS=("${kept[@]}")
fi
stamp "training ${#JOBS[@]} runs at once on $DEVICE for at most $TRAIN_S s each"
for job in "${JOBS[@]}"; do
  name=${job%%|*}; args=${job#*|}
  # shellcheck disable=SC2086  # args is a word list on purpose
  timeout -s TERM -k 60 "$TRAIN_S" $PY -m train.train_cli "${COMMON[@]}" $args --out "$RUNS/$name" \
    >"$RUNS/$name.log" 2>&1 &
done
wait
stamp "training done"
for job in "${JOBS[@]}"; do
  name=${job%%|*}
  echo "$name: $(grep -c 'INFO .*epoch [0-9]' "$RUNS/$name.log" 2>/dev/null) epochs logged; $(tail -n 1 "$RUNS/$name.log")"
done

evaluate() {  # name checkpoint: both protocols, in the background
  for protocol in paper native; do
    $PY -m train.evaluate --checkpoint "$2" --data "$DATA" --split paper --protocol "$protocol" --device "$DEVICE" \
      -q --json "$RUNS/$1/eval-$protocol.json" >"$RUNS/$1/eval-$protocol.txt" 2>&1 &
  done
}
stamp "evaluating"
for job in "${JOBS[@]}"; do
  name=${job%%|*}
  [ -f "$RUNS/$name/best.pt" ] || { echo "$name: no best.pt"; continue; }
  case $name in ref-*) ;; *) evaluate "$name" "$RUNS/$name/best.pt" ;; esac
done
for pair in "cascade-ph:loc-strong-ph:ref-strong-ph" "cascade-noph:loc-strong:ref-strong" \
            "cascade-ph-lr3:loc-strong-ph:ref-strong-ph-lr3"; do
  IFS=: read -r name loc ref <<<"$pair"
  [ -f "$RUNS/$loc/best.pt" ] && [ -f "$RUNS/$ref/best.pt" ] || continue
  mkdir -p "$RUNS/$name"
  (if $PY -m train.cascade --localiser "$RUNS/$loc/best.pt" --refiner "$RUNS/$ref/best.pt" \
        --out "$RUNS/$name/best.pt" -q >"$RUNS/$name/build.txt" 2>&1; then
     evaluate "$name" "$RUNS/$name/best.pt"; wait
   else
     echo "$name: build failed: $(tail -n 2 "$RUNS/$name/build.txt")"
   fi) &
done
wait
for f in "$RUNS"/*/eval-paper.txt; do
  echo "$(basename "$(dirname "$f")"): $(grep -v WARNING "$f" | head -n 3 | tr '\n' ' ')"
done

stamp "packing"
# fp16 copies of the checkpoints worth keeping (the better DL-UNet, L-UNet, the cascade parts)
$PY - "$RUNS" <<'EOF'
import json, sys
from pathlib import Path
import torch
from tools.bundle import half_state_dict
runs = Path(sys.argv[1])
def dsc(name):
    try:
        return json.loads((runs / name / "eval-paper.json").read_text())["dsc"]["mean"]
    except (OSError, KeyError, ValueError):
        return -1.0
keep = ["lunet-paper", "loc-strong-ph", "loc-strong", "ref-strong-ph", "ref-strong", "ref-strong-ph-lr3"]
keep.append(max(["dlunet-paper", "dlunet-strong"], key=dsc))
out = runs / "fp16"
out.mkdir(exist_ok=True)
for name in keep:
    src = runs / name / "best.pt"
    if not src.is_file():
        continue
    payload = torch.load(src, map_location="cpu", weights_only=True)
    payload.pop("train_state", None)
    payload["state_dict"] = half_state_dict(payload["state_dict"])
    torch.save(payload, out / f"{name}.pt")
    print(f"kept {name} (val DSC {dsc(name):.4f})")
EOF
(cd "$RUNS" && tar czf "$OUT/results.tar.gz" --exclude='*.pt' --exclude=fp16 --exclude='*.tmp' .)
(cd "$RUNS/fp16" && ls ./*.pt >/dev/null 2>&1 && tar cf - ./*.pt | split -b 15000000 - "$OUT/weights.tar.part-")
ls -l "$OUT"

left=$(( 520 - ($(date +%s) - T0) ))
if [ "$QUICK" != 1 ] && [ "${DEVICE_CHECK:-1}" = 1 ] && [ "$left" -gt 40 ]; then
  stamp "device check ($left s left)"
  timeout -s TERM "$(( left - 10 ))" $PY -m benchmarks.device_check --out "$OUT" --data "$DATA" \
    --models lunet dlunet --batches 1 8 --repeats 30 --warmup 5 -q || echo "device check stopped or failed"
fi
stamp "done"
