"""Device check for a lent NVIDIA GPU: torch fp32 / fp16 / fp16 + CUDA graph latency and fp16 parity.

    python -m benchmarks.device_check --out DIR [--data DIR] [--models unet lunet dbunet dlunet]
        [--repeats 50] [--warmup 10] [--batches 1 8] [--size 384x288] [--path both] [--tensorrt]
    python -m benchmarks.device_check --out DIR --device cpu --quick     # a few seconds, for the tests

For every network (random weights, saved as throw-away checkpoints) and batch it times

- ``engine``: the product's path, ``engines.load_engine(ckpt, backend="torch", precision=...,
  device=..., cuda_graph=...)`` and ``Engine.infer`` on a float32 numpy batch: host->device copy,
  forward, sigmoid, device->host copy;
- ``direct``: the network alone on device-resident tensors (``model.half()``, channels_last,
  ``torch.cuda.CUDAGraph`` replay for the graph mode): what the GPU itself costs.

Timed regions are bracketed by ``torch.cuda.synchronize()`` and measured with
``time.perf_counter_ns``; each result has the median, p95, min and max over ``--repeats`` runs
after ``--warmup`` untimed ones. fp16 parity against fp32 (mask Dice at 0.5 and the largest
probability difference) is measured on real frames from ``--data`` (``train.preprocess.
preprocess_image``) or on random frames without one. With ``--tensorrt`` and TensorRT present,
L-UNet (``--tensorrt-models``) also runs as a TensorRT fp16 plan (built into a cache under
``--out``). The JSON records the GPU, driver, CUDA, cuDNN and torch versions and the command;
one measurement that fails is recorded with its error and the check goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from benchmarks.system import system_info
from train.cli_util import add_logging_args, add_size_arg, resolve_device, setup_logging
from train.errors import UserError, run_cli
from train.models import build_model, check_input_size, list_models

log = logging.getLogger(__name__)

MODES: dict[str, tuple[str, bool]] = {"fp32": ("fp32", False), "fp16": ("fp16", False), "fp16-graph": ("fp16", True)}
"""Mode name -> (precision, CUDA graph)."""
DEFAULT_MODELS = ("unet", "lunet", "dbunet", "dlunet")
QUICK = {"size": (32, 32), "repeats": 2, "warmup": 1, "batches": [1, 2], "frames": 2}
PATHS = ("engine", "direct")


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, synchronised on CUDA."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter_ns()
        fn()
        _sync(device)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def summarise(times_ms: Sequence[float]) -> dict[str, float | int]:
    """Median, p95, min, max (ms) and count of a list of times."""
    a = np.asarray(times_ms, dtype=np.float64)
    return {"median_ms": round(float(np.median(a)), 4), "p95_ms": round(float(np.percentile(a, 95)), 4),
            "min_ms": round(float(a.min()), 4), "max_ms": round(float(a.max()), 4), "n": int(a.size)}


# ---------------------------------------------------------------------------------------------
# the two timing paths
# ---------------------------------------------------------------------------------------------


class DirectRunner:
    """The network on device tensors: fp32 or ``model.half()``, channels_last, optional CUDA graph."""

    def __init__(self, net: torch.nn.Module, device: torch.device, precision: str, cuda_graph: bool,
                 shape: tuple[int, int, int, int]) -> None:
        if cuda_graph and device.type != "cuda":
            raise UserError("CUDA graphs need a CUDA device")
        self.device = device
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = net.to(device=device, dtype=self.dtype, memory_format=torch.channels_last).eval()
        self.x = torch.randn(shape, device=device).to(dtype=self.dtype, memory_format=torch.channels_last)
        self.graph: Any = None
        if cuda_graph:
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.no_grad(), torch.cuda.stream(side):
                for _ in range(3):  # warm-up on a side stream before capture (PyTorch CUDA graphs docs)
                    self._forward(self.x)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(self.graph):
                self.y = self._forward(self.x)
            _sync(device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x).float())

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            with torch.no_grad():
                self.y = self._forward(self.x)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Float32 probabilities of a float32 ``[N,1,H,W]`` batch (no graph)."""
        x = torch.from_numpy(frames).to(self.device).to(dtype=self.dtype, memory_format=torch.channels_last)
        with torch.no_grad():
            return self._forward(x).cpu().numpy()


def _save_random_checkpoint(name: str, net: torch.nn.Module, size: tuple[int, int], folder: Path) -> Path:
    from train.checkpoint import save_checkpoint
    from train.preprocess import preprocessing_config

    path = folder / f"{name}-random.pt"
    save_checkpoint(path, net, {"model": {"name": name, "kwargs": {}}, "preprocessing": preprocessing_config(size),
                                "note": "random weights, written by benchmarks.device_check"})
    return path


@contextlib.contextmanager
def _engine(ckpt: Path, backend: str, precision: str, device: torch.device, graph: bool, size: tuple[int, int],
            batch: int, cache_dir: Path | None = None) -> Iterator[Any]:
    from engines import load_engine  # the other backends' entry point

    kwargs: dict[str, Any] = {"precision": precision, "size": size, "batch": batch, "cuda_graph": graph}
    if backend == "torch":
        kwargs["device"] = str(device)
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    engine = load_engine(ckpt, backend=backend, **kwargs)
    try:
        yield engine
    finally:
        engine.close()


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def measure_model(name: str, *, device: torch.device, size: tuple[int, int], batches: Sequence[int],
                  modes: Sequence[str], paths: Sequence[str], repeats: int, warmup: int, frames: np.ndarray,
                  workdir: Path) -> list[dict]:
    """Rows of ``{model, path, mode, batch, median_ms, ...}`` (or ``error`` / ``skipped``) for one network."""
    w, h = size
    check_input_size(name, size)
    torch.manual_seed(0)
    net = build_model(name).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    ckpt = _save_random_checkpoint(name, net, size, workdir) if "engine" in paths else None
    rows = []
    for path in paths:
        for batch in batches:
            shape = (batch, 1, h, w)
            x_np = np.ascontiguousarray(np.resize(frames, shape).astype(np.float32))
            for mode in modes:
                precision, graph = MODES[mode]
                row: dict[str, Any] = {"model": name, "path": path, "mode": mode, "batch": batch}
                if graph and device.type != "cuda":
                    rows.append({**row, "skipped": "CUDA graphs need a CUDA device"})
                    continue
                t0 = time.perf_counter()
                try:
                    if path == "direct":
                        fresh = build_model(name)
                        fresh.load_state_dict(state)
                        runner = DirectRunner(fresh, device, precision, graph, shape)
                        times = time_calls(runner.step, device, repeats, warmup)
                        del runner
                    else:
                        assert ckpt is not None
                        with _engine(ckpt, "torch", precision, device, graph, size, batch) as engine:
                            times = time_calls(lambda: engine.infer(x_np), device, repeats, warmup)
                            row["notes"] = list(engine.info.notes)
                except Exception as exc:  # one failure must not end a check that runs once on a lent GPU
                    key = "skipped" if (precision == "fp16" and device.type != "cuda") else "error"
                    log.warning("%s %s %s batch %d: %s", name, path, mode, batch, _error(exc))
                    rows.append({**row, key: _error(exc)})
                    continue
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                row.update(summarise(times))
                row["wall_s"] = round(time.perf_counter() - t0, 2)  # build/load + warm-up + timed runs
                log.info("%-7s %-6s %-10s batch %d: median %.3f ms, p95 %.3f ms", name, path, mode, batch,
                         row["median_ms"], row["p95_ms"])
                rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------------------------


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from train.metrics import dice_hard

    return dice_hard(a, b)


def compare(reference: np.ndarray, other: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Mask Dice (per frame, at ``threshold``) and probability differences of two ``[N,1,H,W]`` maps."""
    dices = [_dice(r[0] > threshold, o[0] > threshold) for r, o in zip(reference, other)]
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    return {"dice_min": round(float(min(dices)), 6), "dice_mean": round(float(np.mean(dices)), 6),
            "max_abs_prob_diff": float(diff.max()), "mean_abs_prob_diff": float(diff.mean()),
            "mask_pixels_ref": int((reference > threshold).sum()), "frames": int(len(dices))}


def parity(name: str, device: torch.device, frames: np.ndarray) -> dict[str, Any]:
    """fp16 against fp32 for network ``name`` (same random weights) on ``frames``."""
    torch.manual_seed(0)
    net = build_model(name).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    shape = tuple(frames.shape)
    p32 = DirectRunner(net, device, "fp32", False, shape).probabilities(frames)  # type: ignore[arg-type]
    half = build_model(name)
    half.load_state_dict(state)
    p16 = DirectRunner(half, device, "fp16", False, shape).probabilities(frames)  # type: ignore[arg-type]
    return {"model": name, "reference": "torch fp32", "compared": "torch fp16", **compare(p32, p16)}


def load_frames(data: str | None, size: tuple[int, int], count: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` preprocessed frames ``[N,1,H,W]`` spread over the dataset at ``data``, or random ones."""
    from train.preprocess import preprocess_image

    if data:
        from train.data import read_image, scan_dataset

        try:
            samples = scan_dataset(data)
            picks = np.linspace(0, len(samples) - 1, num=min(count, len(samples))).round().astype(int)
            planes = [preprocess_image(read_image(samples[i].image_path), size) for i in picks]
            return np.stack(planes)[:, None].astype(np.float32), f"{len(planes)} frames of {data}"
        except UserError as exc:
            log.warning("cannot use --data %s (%s); using random frames", data, exc)
    rng = np.random.default_rng(seed)
    w, h = size
    frames = np.stack([preprocess_image((rng.rayleigh(60.0, (h, w)).clip(0, 255)).astype(np.uint8), size)
                       for _ in range(count)])[:, None]
    return frames.astype(np.float32), f"{count} random speckle frames (no --data)"


# ---------------------------------------------------------------------------------------------
# TensorRT (optional)
# ---------------------------------------------------------------------------------------------


def tensorrt_section(models: Sequence[str], *, device: torch.device, size: tuple[int, int], batches: Sequence[int],
                     repeats: int, warmup: int, frames: np.ndarray, workdir: Path) -> dict[str, Any]:
    """TensorRT fp16 plans (static batch, with and without CUDA graph) and their parity with torch fp32."""
    from engines.backends.tensorrt_backend import tensorrt_available

    ok, reason = tensorrt_available()
    section: dict[str, Any] = {"available": ok, "reason": reason, "results": [], "parity": []}
    if not ok or device.type != "cuda":
        return section
    cache = workdir / "engine-cache"
    w, h = size
    for name in models:
        torch.manual_seed(0)
        net = build_model(name).eval()
        ckpt = _save_random_checkpoint(name, net, size, workdir)
        for batch in batches:
            x_np = np.ascontiguousarray(np.resize(frames, (batch, 1, h, w)).astype(np.float32))
            for graph in (False, True):
                row: dict[str, Any] = {"model": name, "path": "tensorrt", "mode": "fp16-graph" if graph else "fp16",
                                       "batch": batch}
                try:
                    t0 = time.perf_counter()
                    with _engine(ckpt, "tensorrt", "fp16", device, graph, size, batch, cache) as engine:
                        row["load_s"] = round(time.perf_counter() - t0, 1)
                        row.update(summarise(time_calls(lambda: engine.infer(x_np), device, repeats, warmup)))
                        row["notes"] = list(engine.info.notes)
                        if batch == batches[0] and not graph:  # parity on the frames, batch by batch
                            count = max(batch, len(frames) - len(frames) % batch)
                            chunk = np.ascontiguousarray(np.resize(frames, (count, 1, h, w)).astype(np.float32))
                            p_trt = np.concatenate([engine.infer(chunk[i:i + batch]) for i in range(0, count, batch)])
                            ref = DirectRunner(copy.deepcopy(net), device, "fp32", False, tuple(chunk.shape))
                            section["parity"].append({"model": name, "reference": "torch fp32",
                                                      "compared": "tensorrt fp16",
                                                      **compare(ref.probabilities(chunk), p_trt)})
                except Exception as exc:
                    log.warning("tensorrt %s batch %d: %s", name, batch, _error(exc))
                    row["error"] = _error(exc)
                section["results"].append(row)
    return section


# ---------------------------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------------------------


def gpu_info(device: torch.device) -> dict[str, Any]:
    """GPU name, compute capability, memory, driver (nvidia-smi), CUDA and cuDNN versions."""
    info: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count})
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=15, check=False)
            info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
            info["driver"] = out.stdout.split(",")[1].strip() if out.stdout.count(",") >= 1 else None
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"failed: {exc}"
    else:
        info["nvidia_smi"] = None
    return info


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the JSON results (created)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="dataset folder with Images/ for the parity frames (default: random speckle frames)")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list_models(), help="networks to time")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per measurement")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs before each measurement")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes")
    add_size_arg(p)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="precision / CUDA graph modes")
    p.add_argument("--path", choices=("both", *PATHS), default="both",
                   help="engine: through engines.load_engine (numpy in/out); direct: the network on device tensors")
    p.add_argument("--frames", type=int, default=8, help="frames for the fp16 parity check")
    p.add_argument("--device", default="cuda", help="cuda (the point of this check) or cpu (for tests)")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny run: size {QUICK['size'][0]}x{QUICK['size'][1]}, {QUICK['repeats']} repeats, "
                        f"batches {QUICK['batches']}")
    p.add_argument("--tensorrt", action="store_true", help="also time TensorRT fp16 plans (when TensorRT is installed)")
    p.add_argument("--tensorrt-models", nargs="+", default=["lunet"], choices=list_models(),
                   help="networks for --tensorrt (each plan build takes minutes)")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    device = resolve_device(args.device)
    if args.quick:
        args.size, args.repeats, args.warmup = QUICK["size"], QUICK["repeats"], QUICK["warmup"]
        args.batches, args.frames = QUICK["batches"], QUICK["frames"]
    size = tuple(args.size)
    for name in args.models:
        check_input_size(name, size)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    paths = list(PATHS) if args.path == "both" else [args.path]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, frames_source = load_frames(args.data, size, args.frames)
    started = time.perf_counter()

    rows: list[dict] = []
    parities: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        workdir = Path(tmp)
        for name in args.models:
            rows += measure_model(name, device=device, size=size, batches=args.batches, modes=args.modes, paths=paths,
                                  repeats=args.repeats, warmup=args.warmup, frames=frames, workdir=workdir)
            try:
                parities.append(parity(name, device, frames))
            except Exception as exc:
                log.warning("parity %s: %s", name, _error(exc))
                parities.append({"model": name, "error": _error(exc)})
        trt = tensorrt_section(args.tensorrt_models, device=device, size=size, batches=args.batches,
                               repeats=args.repeats, warmup=args.warmup, frames=frames,
                               workdir=workdir) if args.tensorrt else None

    system = system_info()
    result = {
        "benchmark": "device-check",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.device_check " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": str(device),
        "size": list(size),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "weights": "random (torch.manual_seed(0)); parity bounds numeric error, not segmentation quality",
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "timers": {"engine": "Engine.infer: host->device copy, forward, sigmoid, device->host copy",
                   "direct": "forward + sigmoid on device-resident input (graph modes: CUDAGraph.replay)",
                   "sync": "torch.cuda.synchronize() before and after each timed call; time.perf_counter_ns"},
        "frames": frames_source,
        "gpu": gpu_info(device),
        "system": system,
        "results": rows,
        "parity": parities,
        "tensorrt": trt,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = out_dir / f"device-check-{system['host']}-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"device check on {result['gpu'].get('name') or device}, {size[0]}x{size[1]}, median / p95 ms:")
    print(f"{'model':<8} {'path':<7} {'mode':<11} {'batch':>5} {'median':>9} {'p95':>9}")
    for r in rows + (trt["results"] if trt else []):
        if "median_ms" in r:
            print(f"{r['model']:<8} {r['path']:<7} {r['mode']:<11} {r['batch']:>5} {r['median_ms']:>9.3f} "
                  f"{r['p95_ms']:>9.3f}")
        else:
            print(f"{r['model']:<8} {r['path']:<7} {r['mode']:<11} {r['batch']:>5}  "
                  f"{'skipped' if 'skipped' in r else 'ERROR'}: {r.get('skipped') or r.get('error')}")
    for p in parities + (trt["parity"] if trt else []):
        if "error" in p:
            print(f"parity {p['model']}: ERROR {p['error']}")
        else:
            print(f"parity {p['model']} {p['compared']} vs {p['reference']}: Dice min {p['dice_min']:.4f}, "
                  f"max |dp| {p['max_abs_prob_diff']:.2e}")
    print(f"wrote {out}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("device_check", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
