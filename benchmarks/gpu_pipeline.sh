#!/usr/bin/env bash
# Issue 11 item 5 on a lent GPU (PyTorch with CUDA and ONNX Runtime, no TensorRT), in one call: the
# whole pipeline (decode/render, preprocess, infer, postprocess, track, render) of both bundled models
# on CUDA, fp16 with CUDA graphs and without, realtime (24 fps, newest frame) and offline, with
# per-stage times; one results file per configuration plus the device check.
#
#   benchmarks/gpu_pipeline.sh OUT
#
# OUT: folder for what comes back (bench-*.json/.png/.csv, device-check.json, log.txt).
# Environment: MODELS ("mn-realtime mn-dlunet"), FRAMES (1000), QUICK=1 (a CPU rehearsal: torch
#   fp32 on the CPU, no CUDA graph, 30 frames), PY (python3).
# Targets (issue 11): e2e p99 <= 5 ms for mn-realtime and <= 10 ms for mn-dlunet, pre- and
#   post-processing inside the budget.
set -u
OUT=${1:?OUT folder}; PY=${PY:-python3}; QUICK=${QUICK:-0}
MODELS=${MODELS:-"mn-realtime mn-dlunet"}; FRAMES=${FRAMES:-1000}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/log.txt"; }

PRECISION=fp16; GRAPH_VARIANTS=("--cuda-graph" ""); WARMUP=50
if [ "$QUICK" = 1 ]; then PRECISION=fp32; GRAPH_VARIANTS=(""); FRAMES=30; WARMUP=5; fi
if [ "$QUICK" != 1 ]; then
  stamp "device check"
  $PY -m benchmarks.device_check --models lunet dlunet --batches 1 --repeats 30 --warmup 5 \
    --json "$OUT/device-check.json" >>"$OUT/log.txt" 2>&1 || stamp "device check failed (see log.txt)"
fi
for model in $MODELS; do
  for graph in "${GRAPH_VARIANTS[@]}"; do
    tag="$model-torch-$PRECISION${graph:+-graph}"
    stamp "mn-bench $tag"
    # shellcheck disable=SC2086  # $graph is one flag or nothing
    $PY -m benchmarks.bench_cli --models "$model" --backends torch --precisions "$PRECISION" $graph \
      --mode both --frames "$FRAMES" --warmup "$WARMUP" --no-baseline \
      --json "$OUT/bench-$tag.json" --csv "$OUT/bench-$tag.csv" -q >>"$OUT/log.txt" 2>&1 \
      || stamp "$tag failed (see log.txt)"
  done
done
$PY - "$OUT" <<'PYEOF' | tee -a "$OUT/log.txt"
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("bench-*.json")):
    data = json.loads(f.read_text())
    for run in data["runs"]:
        lat = run.get("latency_ms") or {}
        stages = {k: (v or {}).get("p50") for k, v in lat.items() if k != "e2e"}
        e2e = lat.get("e2e") or {}
        print(f"{f.stem} {run['mode']}: {run['status']} fps {run.get('fps')} e2e p50 {e2e.get('p50')} "
              f"p99 {e2e.get('p99')} dropped {run.get('dropped')} stage p50 {stages} {run.get('reason') or ''}")
PYEOF
stamp "done"
