"""int8 against fp32 on the CPU: ``Engine.infer`` time of each network and accuracy through ``mn-eval``.

For a model (default the bundled ``mn-realtime``): per network (a cascade's localiser and refiner, else the
network itself) the median ``Engine.infer`` time of ``--calls`` calls after ``--warmup`` untimed ones, for onnxruntime
fp32 (static batch 1, as ``mn-live`` loads it), fp32 with a dynamic batch and int8 (the bundled int8 files, dynamic
batch; or ``--calibrate DIR``), on real preprocessed frames (a cascade's refiner on the windows its localiser places).
The variants are timed in turns, ``--calls`` / 10 rounds of 10 calls each, so a load that comes and goes on a
shared machine falls on all of them alike; the load average before and after is recorded. Then ``mn-eval --model
MODEL --precision P`` (the live engine, :mod:`engines.evaluate_cli`) for fp32 and int8 by both protocols on the
chosen split, and the per-image mask Dice of int8 against fp32 there.

Example (this machine's numbers: ``benchmarks/results/int8-vm-2026-12-01.json``)::

    python -m benchmarks.int8_bench --model mn-realtime --data ../shared/data/median-nerve --split paper \\
        --threads 2 --json benchmarks/results/int8-vm-2026-12-01.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.cli import add_logging_args, setup_logging
from common.errors import run_cli

log = logging.getLogger(__name__)

PROG = "python -m benchmarks.int8_bench"
PRECISIONS = ("fp32", "int8")
ROUND = 10
"""Calls per variant per round."""


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _networks(engine: Any, frames: np.ndarray) -> dict[str, tuple[Any, np.ndarray]]:
    """``{name: (engine, one input)}``: a cascade's two parts with a frame and the window its localiser places."""
    from engines.cascade import CascadeEngine

    if isinstance(engine, CascadeEngine):
        parts = engine.infer_parts(frames[:1])
        (x0, y0), (cw, ch) = parts["boxes"][0], engine.crop
        window = np.ascontiguousarray(frames[:1, :, y0:y0 + ch, x0:x0 + cw])
        return {"localiser": (engine.localiser, frames[:1]), "refiner": (engine.refiner, window),
                "cascade": (engine, frames[:1])}
    return {"model": (engine, frames[:1])}


def time_variants(variants: dict[str, Any], frames: np.ndarray, calls: int, warmup: int) -> dict[str, Any]:
    """Median / p95 ms of ``Engine.infer`` per network and variant, timed in interleaved rounds."""
    nets = {label: _networks(engine, frames) for label, engine in variants.items()}
    times: dict[tuple[str, str], list[float]] = {}
    for label, per in nets.items():
        for name, (engine, x) in per.items():
            for _ in range(warmup):
                engine.infer(x)
            times[(name, label)] = []
    rounds = max(1, calls // ROUND)
    for _ in range(rounds):
        for label, per in nets.items():
            for name, (engine, x) in per.items():
                for _ in range(ROUND):
                    t0 = time.perf_counter_ns()
                    engine.infer(x)
                    times[(name, label)].append((time.perf_counter_ns() - t0) / 1e6)
    out: dict[str, Any] = {}
    for (name, label), values in times.items():
        out.setdefault(name, {})[label] = {"median_ms": float(np.median(values)),
                                           "p95_ms": float(np.percentile(values, 95)), "calls": len(values)}
    for name, per in out.items():
        if "fp32" in per and "int8" in per:
            per["speedup_int8_vs_fp32"] = per["fp32"]["median_ms"] / per["int8"]["median_ms"]
    return out


def _frames(data: str, split: str, count: int | None = None) -> list[np.ndarray]:
    """The first ``count`` (default all) images of the split's validation side (or of every image), as read."""
    from train.data import read_image, scan_dataset
    from train.splits import make_split

    samples = scan_dataset(data)
    if split != "none":
        patients = [s.patient for s in samples]
        _, val_idx = make_split(split, patients).indices(patients)
        samples = [samples[i] for i in val_idx]
    return [read_image(s.image_path) for s in samples[:count]]


def mask_agreement(a: Any, b: Any, images: list[np.ndarray]) -> dict[str, Any]:
    """Per-frame Dice of engine ``b``'s mask (prob >= 0.5) against engine ``a``'s on ``images``."""
    from engines.verify import MASK_THRESHOLD, run_engine
    from train.metrics import dice_hard
    from train.preprocess import preprocess_image

    x = np.stack([preprocess_image(img, a.size) for img in images])[:, None]
    pa, pb = run_engine(a, x)[:, 0], run_engine(b, x)[:, 0]
    dice = [dice_hard(q >= MASK_THRESHOLD, p >= MASK_THRESHOLD) for p, q in zip(pa, pb)]
    return {"frames": len(dice), "min": float(min(dice)), "mean": float(np.mean(dice)),
            "max_abs_prob_diff": float(np.abs(pa - pb).max())}


def ablation(model: str, data: str, threads: int | None, count: int) -> list[dict[str, Any]]:
    """Every calibration method x float-node choice of :mod:`engines.quantize` for a cascade, calibrated as the
    bundled int8 files are (the paper split's training images, ``count`` spread evenly) and scored on its validation
    images: val DSC and CSA error (paper protocol), the per-frame Dice of the int8 cascade's mask against the fp32
    cascade's, and of each int8 part against its fp32 self on the same input (the refiner on the fp32 windows)."""
    from engines import registry
    from engines.cascade import CascadeEngine, cascade_geometry, part_checkpoints, quantize_parts
    from engines.model_source import LoadOptions, ModelSource
    from engines.quantize import CALIBRATION_METHODS, FLOAT_NODE_CHOICES, calibration_from_files
    from engines.verify import MASK_THRESHOLD, run_engine
    from train.data import load_samples, scan_dataset
    from train.evaluate import score
    from train.metrics import dice_hard
    from train.splits import make_split
    from train.window import window_boxes

    def dice(a: np.ndarray, b: np.ndarray) -> list[float]:
        return [dice_hard(p >= MASK_THRESHOLD, q >= MASK_THRESHOLD) for p, q in zip(a, b)]

    source = registry.resolve_model(model)
    if source.architecture != "cascade":
        raise SystemExit(f"--ablation is for a cascade; {model} is a {source.architecture}")
    samples = scan_dataset(data)
    patients = [s.patient for s in samples]
    train_idx, val_idx = make_split("paper", patients).indices(patients)
    calibration = calibration_from_files([samples[i].image_path for i in train_idx], count=count,
                                         source="the paper split's training images")
    paths, config = part_checkpoints(source.path)
    geometry = cascade_geometry(config, source.path)
    backend = registry.get_backend("onnxruntime")
    fp32 = registry.load_engine(source.path, "onnxruntime", "fp32", threads=threads)
    val = load_samples([samples[i] for i in val_idx], fp32.size, progress=False)
    p32, loc32 = run_engine(fp32, val.images)[:, 0], run_engine(fp32.localiser, val.images)
    (cw, ch) = fp32.crop
    windows = np.stack([val.images[i, :, y:y + ch, x:x + cw]
                        for i, (x, y) in enumerate(window_boxes(loc32, fp32.crop))])
    ref32 = run_engine(fp32.refiner, windows)
    base = score(p32, val, "paper")
    rows: list[dict[str, Any]] = [{"variant": "fp32", "dsc": base["dsc"]["mean"],
                                   "csa_rel_error_median": base["csa_rel_error"]["median"]}]
    for method in CALIBRATION_METHODS[::-1]:
        for float_nodes in FLOAT_NODE_CHOICES:
            files = quantize_parts(source, paths, geometry, backend, LoadOptions(precision="int8", threads=threads),
                                   calibration, method=method, float_nodes=float_nodes)
            parts = {part: backend.load(ModelSource("onnx", "onnx", files[part], part),
                                        LoadOptions(precision="int8", threads=threads)) for part in files}
            with CascadeEngine(parts["localiser"], parts["refiner"]) as engine:
                p8 = run_engine(engine, val.images)[:, 0]
                frame, loc = dice(p8, p32), dice(run_engine(engine.localiser, val.images)[:, 0], loc32[:, 0])
                ref = dice(run_engine(engine.refiner, windows)[:, 0], ref32[:, 0])
            result = score(p8, val, "paper")
            rows.append({"variant": f"{method}, float: {float_nodes}", "method": method, "float_nodes": float_nodes,
                         "dsc": result["dsc"]["mean"], "csa_rel_error_median": result["csa_rel_error"]["median"],
                         "frame_dice_vs_fp32": {"min": min(frame), "mean": float(np.mean(frame))},
                         "localiser_dice_vs_fp32_min": min(loc), "refiner_dice_vs_fp32_min": min(ref),
                         "bytes": {part: files[part].stat().st_size for part in files}})
            log.info("%s", rows[-1])
    fp32.close()
    return rows


def evaluate(model: str, data: str, split: str, precision: str, protocol: str, threads: int | None,
             calibrate: str | None, folder: Path) -> dict:
    """``mn-eval --model MODEL --precision P --protocol PROTOCOL --backend onnxruntime`` and its JSON."""
    from engines.evaluate_cli import main as mn_eval

    out = folder / f"{precision}-{protocol}.json"
    argv = ["--model", model, "--data", data, "--backend", "onnxruntime", "--precision", precision,
            "--protocol", protocol]
    if split != "none":
        argv += ["--split", split]
    if threads:
        argv += ["--threads", str(threads)]
    if calibrate and precision == "int8":
        argv += ["--calibrate", calibrate]
    mn_eval([*argv, "--json", str(out), "-q"])
    return {"command": "mn-eval " + " ".join([*argv, "--json", "FILE"]), **json.loads(out.read_text())}


def _summary(result: dict) -> dict:
    agr = result.get("csa_agreement") or {}
    return {"dsc": result["dsc"]["mean"], "dsc_std": result["dsc"]["std"], "iou": result["iou"]["mean"],
            "precision": result["precision"]["mean"], "recall": result["recall"]["mean"],
            "csa_rel_error_median": result["csa_rel_error"]["median"],
            "csa_rel_error_mean": result["csa_rel_error"]["mean"],
            "csa_bias_rel": agr.get("bias_rel"), "csa_loa_rel": agr.get("loa_rel"), "csa_mae_px": agr.get("mae_px"),
            "missed": agr.get("missed"), "n": result["n"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mn-realtime", help="bundled name, checkpoint or cascade (default mn-realtime)")
    p.add_argument("--data", required=True, help="dataset folder with Images/ and Masks/")
    p.add_argument("--split", choices=["paper", "none"], default="paper",
                   help="evaluate the validation side of the paper split (default) or every image")
    p.add_argument("--calibrate", default=None, metavar="DIR",
                   help="int8 from this calibration folder instead of the bundled int8 files")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--calls", type=int, default=200, help="timed Engine.infer calls per network and variant")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    p.add_argument("--frames", type=int, default=8, help="frames of the split the timing cycles through (first used)")
    p.add_argument("--no-eval", dest="eval", action="store_false", help="timing only")
    p.add_argument("--ablation", action="store_true",
                   help="a cascade: also every calibration method x float-node choice (engines.quantize's table)")
    p.add_argument("--calibration-images", type=int, default=64,
                   help="--ablation: calibration images of the paper split's training side")
    p.add_argument("--json", required=True, metavar="FILE", help="results file")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from benchmarks.system import system_info
    from engines import load_engine
    from engines.quantize import cpu_vnni
    from train.preprocess import preprocess_image

    load_before = _load()
    common = {"backend": "onnxruntime", "threads": args.threads}
    variants = {
        "fp32": load_engine(args.model, precision="fp32", **common),
        "fp32_dynamic_batch": load_engine(args.model, precision="fp32", dynamic_batch=True, **common),
        "int8": load_engine(args.model, precision="int8", calibrate=args.calibrate, **common),
    }
    images = _frames(args.data, args.split, args.frames)
    frames = np.stack([preprocess_image(img, variants["fp32"].size) for img in images])[:, None]
    timing = time_variants(variants, frames, args.calls, args.warmup)
    load_after = _load()
    agreement = mask_agreement(variants["fp32"], variants["int8"], _frames(args.data, args.split))
    engines = {label: engine.describe() for label, engine in variants.items()}
    for engine in variants.values():
        engine.close()
    result: dict[str, Any] = {
        "benchmark": "int8",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": f"{PROG} {' '.join(argv)}",
        "what": ("Engine.infer median/p95 ms per network (batch 1, one preprocessed validation frame; a cascade's "
                 "refiner on the window its localiser places), onnxruntime, variants timed in interleaved rounds of "
                 f"{ROUND} calls after {args.warmup} warm-up calls; then mn-eval through the live engine"),
        "system": system_info(),
        "vnni": list(cpu_vnni()),
        "threads": args.threads,
        "load_average_before_after": [load_before, load_after],
        "timing": timing,
        "int8_vs_fp32_mask_dice": agreement,
        "engines": engines,
    }
    if args.eval:
        with tempfile.TemporaryDirectory() as tmp:
            evals = {(p, proto): evaluate(args.model, args.data, args.split, p, proto, args.threads, args.calibrate,
                                          Path(tmp)) for p in PRECISIONS for proto in ("paper", "native")}
        accuracy: dict[str, Any] = {}
        for proto in ("paper", "native"):
            fp32, int8 = evals[("fp32", proto)], evals[("int8", proto)]
            s32, s8 = _summary(fp32), _summary(int8)
            diffs = [b["dsc"] - a["dsc"] for a, b in zip(fp32["per_image"], int8["per_image"])]
            accuracy[proto] = {"fp32": s32, "int8": s8, "dsc_change": s8["dsc"] - s32["dsc"],
                               "csa_rel_error_median_change": s8["csa_rel_error_median"] - s32["csa_rel_error_median"],
                               "per_image_dsc_change": {"min": float(min(diffs)), "max": float(max(diffs)),
                                                        "mean_abs": float(np.mean(np.abs(diffs)))},
                               "commands": [fp32["command"], int8["command"]], "split": fp32["split"]}
        result["accuracy"] = accuracy
        result["per_image"] = {f"{p}-{proto}": [{k: r[k] for k in ("stem", "dsc", "area_true_px", "area_pred_px")}
                                                for r in e["per_image"]] for (p, proto), e in evals.items()}
    if args.ablation:
        result["ablation"] = {"what": ablation.__doc__.split("\n\n")[0].replace("\n    ", " "),
                              "rows": ablation(args.model, args.data, args.threads, args.calibration_images)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, per in timing.items():
        line = "  ".join(f"{label} {v['median_ms']:.2f} ms" for label, v in per.items() if isinstance(v, dict))
        print(f"{name:<10} {line}" + (f"  (int8 {per['speedup_int8_vs_fp32']:.2f}x)" if "speedup_int8_vs_fp32" in per
                                      else ""))
    for proto, acc in result.get("accuracy", {}).items():
        print(f"{proto:<7} DSC fp32 {acc['fp32']['dsc']:.4f} int8 {acc['int8']['dsc']:.4f} ({acc['dsc_change']:+.4f}); "
              f"CSA error median fp32 {100 * acc['fp32']['csa_rel_error_median']:.2f} % int8 "
              f"{100 * acc['int8']['csa_rel_error_median']:.2f} %")
    print(f"int8 vs fp32 masks on {agreement['frames']} frames: Dice min {agreement['min']:.4f} mean "
          f"{agreement['mean']:.4f}")
    print(f"wrote {args.json}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
