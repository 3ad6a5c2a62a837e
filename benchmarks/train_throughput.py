"""Training throughput: images per second of forward + backward + optimiser step, per network.

    python -m benchmarks.train_throughput [--models unet lunet dbunet dlunet] [--size 384x288]
        [--batch 4] [--steps 3] [--out benchmarks/results/train-throughput-HOST-DATE.json]

Random weights and random inputs (speed does not depend on either), the paper's loss and
optimiser, float32 on the CPU (or --device cuda with mixed precision). The median step time over
``--steps`` timed steps after one warm-up step; the JSON records the machine and the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.system import system_info
from train.cli_util import add_logging_args, add_size_arg, resolve_device, set_threads, setup_logging
from train.errors import run_cli
from train.losses import bce_dice_loss
from train.models import build_model, check_input_size, list_models

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"


def measure(name: str, size: tuple[int, int], batch: int, steps: int, device: torch.device) -> dict:
    """Median seconds per training step of ``name`` and the images/s it implies."""
    check_input_size(name, size)
    torch.manual_seed(0)
    model = build_model(name).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    w, h = size
    x = torch.randn(batch, 1, h, w, device=device)
    y = (torch.rand(batch, 1, h, w, device=device) > 0.9).float()
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
        loss = bce_dice_loss(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # step 0 is warm-up
            times.append(time.perf_counter() - t0)
        log.info("%s step %d/%d: %.2f s", name, i, steps, time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {"model": name, "batch": batch, "steps": steps, "step_s_median": step_s,
            "step_s_all": times, "images_per_s": batch / step_s}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["unet", "lunet", "dbunet", "dlunet"], choices=list_models())
    add_size_arg(p)
    p.add_argument("--batch", type=int, default=4, help="images per step")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--out", default=None,
                   help="JSON file (default: benchmarks/results/train-throughput-HOST-DATE.json)")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    set_threads(args.threads)
    device = resolve_device(args.device)
    system = system_info()
    rows = [measure(m, tuple(args.size), args.batch, args.steps, device) for m in args.models]
    result = {
        "benchmark": "train-throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.train_throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": list(args.size),
        "device": str(device),
        "precision": "fp16-amp" if device.type == "cuda" else "fp32",
        "system": system,
        "results": rows,
    }
    out = Path(args.out) if args.out else RESULTS / (
        f"train-throughput-{system['host']}-{dt.date.today().isoformat()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'model':<10} {'images/s':>9} {'s/step':>8}  (batch {args.batch}, {args.size[0]}x{args.size[1]}, {device})")
    for r in rows:
        print(f"{r['model']:<10} {r['images_per_s']:>9.2f} {r['step_s_median']:>8.2f}")
    print(f"wrote {out}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("train_throughput", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
