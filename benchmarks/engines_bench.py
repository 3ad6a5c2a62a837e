"""``Engine.infer`` alone, per model x backend x precision x batch: the backend comparison.

    python -m benchmarks.engines_bench [--models lunet unet dlunet dbunet] [--backends torch onnxruntime]
        [--precisions fp32 fp16] [--batches 1 8] [--size 384x288] [--repeats 10] [--out FILE.json]

Random weights (speed does not depend on them) from ``engines.random_model``; random z-scored
input. Each combination: warm-up calls, then ``--repeats`` timed calls (``perf_counter_ns``;
engines return host arrays, so GPU work is complete when ``infer`` returns). Reports median and
p95 ms per call and per image, and, per model and batch, the speed-up of every row over torch
eager fp32 measured in the same run: both over the project's torch backend (channels_last) and over
the naive call a researcher would write (``torch-naive``: fp32, default contiguous layout). \
A combination that cannot run (fp16 torch on a CPU, no
TensorRT) keeps its row with the reason. Results go to
``benchmarks/results/engines-HOST-DATE.json`` with the machine, library versions and threads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from engines.registry import list_backends
from train.cli_util import add_logging_args, add_size_arg, setup_logging
from train.errors import UserError, run_cli

if TYPE_CHECKING:  # numpy, torch and the engines are imported by the functions that run: --help needs none of them
    import numpy as np

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE = ("torch", "fp32")
NAIVE = ("torch-naive", "fp32")
DEFAULTS = {"models": ["lunet", "unet", "dlunet", "dbunet"], "backends": ["torch", "onnxruntime"],
            "precisions": ["fp32", "fp16"], "batches": [1, 8], "repeats": 10, "warmup": 2}
"""The flags' defaults (``mn-bench --engines-only`` takes them too)."""


def time_engine(engine, batch: int, repeats: int, warmup: int, rng: np.random.Generator) -> list[float]:
    """Milliseconds of ``repeats`` timed ``infer`` calls after ``warmup`` untimed ones."""
    import numpy as np

    n, c, h, w = engine.input_shape
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    for _ in range(warmup):
        engine.infer(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        engine.infer(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def run(models: Sequence[str], backends: Sequence[str], precisions: Sequence[str], batches: Sequence[int],
        size: tuple[int, int], repeats: int, warmup: int, threads: int | None, cache_dir: str | None,
        naive: bool = True, calibrate: str | None = None) -> list[dict]:
    import numpy as np
    from tqdm import tqdm

    from engines import load_engine
    from engines.random_model import random_checkpoint
    from train.models import list_models

    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise UserError(f"unknown model {unknown[0]!r}: the engines benchmark times architectures with random "
                        f"weights, one of {', '.join(list_models())}")
    rng = np.random.default_rng(0)
    combos = [(m, b, p, n) for m in models for b in backends for p in precisions for n in batches]
    if naive:
        combos = [(m, *NAIVE, n) for m in models for n in batches] + combos
    combos.sort(key=lambda c: (models.index(c[0]), c[3]))
    rows = []
    for model, backend, precision, batch in tqdm(combos, desc="engines", unit="combo"):
        row = {"model": model, "backend": backend, "precision": precision, "batch": batch,
               "size": list(size), "status": "ok"}
        try:
            ckpt = random_checkpoint(model, size, cache_dir=cache_dir)
            is_naive = backend == NAIVE[0]
            with load_engine(ckpt, backend="torch" if is_naive else backend, precision=precision,
                             device="cpu" if backend != "tensorrt" else None, threads=threads, batch=batch,
                             cache_dir=cache_dir, channels_last=not is_naive,
                             calibrate=calibrate if precision == "int8" else None) as engine:
                row["device"] = engine.device
                times = time_engine(engine, batch, repeats, warmup, rng)
            row.update(median_ms=float(np.median(times)), p95_ms=float(np.percentile(times, 95)),
                       per_image_median_ms=float(np.median(times)) / batch, times_ms=times)
            log.info("%s %s %s b%d: median %.1f ms", model, backend, precision, batch, row["median_ms"])
        except (UserError, KeyError) as exc:
            row.update(status="skipped", reason=str(exc).strip("'\""))
            log.info("%s %s %s b%d: skipped (%s)", model, backend, precision, batch, row["reason"])
        rows.append(row)
    for key, ref_combo in (("speedup_vs_torch_fp32", BASELINE), ("speedup_vs_naive", NAIVE)):
        ref = {(r["model"], r["batch"]): r["median_ms"] for r in rows
               if (r["backend"], r["precision"]) == ref_combo and r["status"] == "ok"}
        for r in rows:
            base = ref.get((r["model"], r["batch"]))
            r[key] = base / r["median_ms"] if base and r["status"] == "ok" else None
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<12} {'backend':<12} {'prec':<5} {'batch':>5} {'median ms':>10} {'p95 ms':>9} "
             f"{'ms/image':>9} {'vs torch fp32':>13} {'vs naive':>9}"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['model']:<12} {r['backend']:<12} {r['precision']:<5} {r['batch']:>5}  "
                         f"skipped: {r['reason'][:70]}")
            continue
        sp = f"{r['speedup_vs_torch_fp32']:.2f}x" if r["speedup_vs_torch_fp32"] else "-"
        sn = f"{r['speedup_vs_naive']:.2f}x" if r["speedup_vs_naive"] else "-"
        lines.append(f"{r['model']:<12} {r['backend']:<12} {r['precision']:<5} {r['batch']:>5} "
                     f"{r['median_ms']:>10.1f} {r['p95_ms']:>9.1f} {r['per_image_median_ms']:>9.1f} {sp:>13} {sn:>9}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engines_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULTS["models"], metavar="MODEL",
                   help="architecture names (random weights; mn-train --list-models lists them)")
    p.add_argument("--backends", nargs="+", default=DEFAULTS["backends"], choices=list_backends())
    p.add_argument("--precisions", nargs="+", default=DEFAULTS["precisions"], choices=["fp32", "fp16", "int8"],
                   help="int8 (onnxruntime only) needs --calibrate; other backends skip it with the reason")
    p.add_argument("--calibrate", default=None, metavar="DIR",
                   help="int8: frames to calibrate the quantisation on (a dataset folder's Images/ or images)")
    p.add_argument("--batches", nargs="+", type=int, default=DEFAULTS["batches"])
    add_size_arg(p)
    p.add_argument("--repeats", type=int, default=DEFAULTS["repeats"], help="timed calls per combination")
    p.add_argument("--warmup", type=int, default=DEFAULTS["warmup"], help="untimed calls first")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--cache-dir", default=None, help="engine cache")
    p.add_argument("--no-naive", dest="naive", action="store_false",
                   help="leave out the naive torch row (fp32, contiguous layout)")
    p.add_argument("--out", default=None, help="JSON (default benchmarks/results/engines-HOST-DATE.json)")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from benchmarks.system import system_info

    system = system_info()
    rows = run(args.models, args.backends, args.precisions, args.batches, tuple(args.size), args.repeats,
               args.warmup, args.threads, args.cache_dir, naive=args.naive, calibrate=args.calibrate)
    result = {
        "benchmark": "engines",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.engines_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "what": "Engine.infer alone (preprocessed float32 batch in, probabilities out), random weights",
        "threads": args.threads or system["cores"],
        "system": system,
        "runs": rows,
    }
    out = Path(args.out) if args.out else RESULTS / f"engines-{system['host']}-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"wrote {out}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("engines_bench", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
