"""``mn-presence``: does the tool say "no median nerve here" when there is none, and find it when there is?

Frames without a median nerve are made from the project's own data only (no outside images):

- ``nerve-removed``: a validation image whose nerve region (dilated by 2 % of the width) is filled
  with tissue texture from beside the nerve, with a feathered edge (:func:`train.perturb.remove_nerve`);
- ``off-nerve``: the largest part of a validation image left or right of the nerve that holds no
  nerve pixel, scaled up to the frame size (other wrist anatomy at another zoom);
- ``lifted-probe``: a probe in air: black, faint horizontal reverberation bands, noise;
- ``phantom-no-nerve``: phantom frames with the nerve painted over by the tissue around it.

and frames with one: the validation images themselves and frames of the built-in phantom.
Each frame goes through exactly what runs live: preprocess, the engine, post-processing, a fresh
:class:`~realtime.tracker.Tracker` with the presence gate (``--presence on``: size, shape, echo and
appearance), with its size, shape and echo checks only (``shape``) and without it (``off``).
A negative frame *reports a nerve* when its status is ``ok``; a positive is *found* when
``ok`` with Dice >= 0.5 against the truth (``ok`` with a lower Dice is a *wrong structure*).

Writes JSON and Markdown (``--json``, ``--md``) with, per kind and gate setting: frames,
reported (false-positive rate on negatives), found and wrong structure (positives), and the
gate's rejection reasons.

``--clips N`` also turns every validation image and every frame without a nerve into an N-frame
clip (``animate:``: glide, tilt, compression, fresh speckle each frame) and runs each through the
streaming loop as ``mn-live`` does (:class:`~realtime.pipeline.Pipeline`: tracked window, fusion,
presence gate ``on``), once per ``--confirm`` value: the share of frames that report a nerve,
per kind, where a detection in a single frame counts as much as a steady one.

Exit codes: 0 done, 2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from benchmarks.report_files import report_paths
from common.cli import HelpFormatter
from realtime.cli_common import refresh_seconds
from realtime.fusion import DEFAULT_MOTION, DEFAULT_WEIGHT, MOTIONS, fusion_weight
from train.errors import UserError, run_cli
from train.perturb import remove_nerve

log = logging.getLogger(__name__)

NEGATIVE_KINDS = ("nerve-removed", "off-nerve", "lifted-probe", "phantom-no-nerve")
POSITIVE_KINDS = ("validation", "phantom")
FOUND_DSC = 0.5


# ---------------------------------------------------------------------------------------------
# frames without a nerve, from the project's own data
# ---------------------------------------------------------------------------------------------


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def off_nerve(grey: np.ndarray, mask: np.ndarray, min_fraction: float = 0.35) -> np.ndarray | None:
    """The larger nerve-free side (left or right of the nerve) scaled to the frame, keeping the aspect."""
    xs = np.nonzero((mask > 0).any(axis=0))[0]
    if len(xs) == 0:
        return None
    h, w = grey.shape
    left, right = int(xs.min()) - 4, w - int(xs.max()) - 5
    x0, x1 = (0, left) if left >= right else (w - right, w)
    cw = x1 - x0
    if cw < min_fraction * w:
        return None
    ch = min(h, int(round(cw * h / w)))
    y0 = (h - ch) // 2
    return cv2.resize(grey[y0:y0 + ch, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)


def lifted_probe(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A probe in air: near black, a few horizontal reverberation bands fading with depth, noise."""
    h, w = shape
    y = np.arange(h, dtype=np.float32)[:, None]
    period = rng.uniform(25, 60)
    bands = np.exp(-y / rng.uniform(80, 200)) * (0.5 + 0.5 * np.cos(2 * np.pi * y / period)) ** 8
    img = 10 + 60 * bands + rng.normal(0, 4, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def phantom_frames(seed: int, count: int, every: int = 7) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``count`` phantom frames ``(grey, truth)`` of seed ``seed``, every ``every``-th frame."""
    from realtime.sources.phantom import PhantomSource

    source = PhantomSource(seed=seed)
    for i in range(count):
        yield source.render(i * every)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def build_items(data: str | None, split: str, seed: int, folds: int | None, fold: int | None,
                phantom: int, rng_seed: int = 0) -> list[dict[str, Any]]:
    """Every frame of the report: ``{"kind", "id", "image", "mask" (None for negatives), "positive"}``."""
    items: list[dict[str, Any]] = []
    rng = np.random.default_rng(rng_seed)
    if data:
        from train.data import read_image, read_mask, scan_dataset
        from train.splits import make_split

        samples = scan_dataset(data)
        if split != "none":
            patients = [s.patient for s in samples]
            kfold = split == "kfold"
            sp = make_split(split, patients, folds=folds if kfold else None, fold=fold if kfold else None, seed=seed)
            samples = [samples[i] for i in sp.indices(patients)[1]]
        for s in samples:
            grey, mask = _grey(read_image(s.image_path)), read_mask(s.mask_path)
            items.append({"kind": "validation", "id": s.stem, "image": grey, "mask": mask, "positive": True})
            removed = remove_nerve(grey, mask)
            if removed is not None:
                items.append({"kind": "nerve-removed", "id": s.stem, "image": removed, "mask": None,
                              "positive": False})
            side = off_nerve(grey, mask)
            if side is not None:
                items.append({"kind": "off-nerve", "id": s.stem, "image": side, "mask": None, "positive": False})
            items.append({"kind": "lifted-probe", "id": s.stem, "image": lifted_probe(grey.shape, rng), "mask": None,
                          "positive": False})
    for i, (grey, truth) in enumerate(phantom_frames(seed=101, count=phantom)):
        items.append({"kind": "phantom", "id": f"phantom-{i}", "image": grey, "mask": truth, "positive": True})
        removed = remove_nerve(grey, truth)
        if removed is not None:
            items.append({"kind": "phantom-no-nerve", "id": f"phantom-{i}", "image": removed, "mask": None,
                          "positive": False})
    return items


def classify(engine: Any, items: Sequence[dict[str, Any]], gates: dict[str, Any], progress: bool = True
             ) -> list[dict[str, Any]]:
    """One row per (item, gate setting): status, rejected reason, the reported nerve's area in px (``area_px``,
    None when nothing is reported), and Dice and the true area (``true_area_px``) when there is truth."""
    from tqdm import tqdm

    from realtime.postprocess import postprocess
    from realtime.tracker import Tracker
    from train.metrics import dice_hard
    from train.preprocess import preprocess_image

    rows = []
    size = engine.size
    for item in tqdm(items, desc="presence", unit="frame", disable=not progress):
        image = item["image"]
        h, w = image.shape[:2]
        prob = engine.infer(preprocess_image(image, size)[None, None])[0, 0]
        post = postprocess(prob, (w, h))
        for name, gate in gates.items():
            r = Tracker(None, 24.0, presence=gate).update(post, 0, 0.0, image=image)
            row = {"kind": item["kind"], "id": item["id"], "gate": name, "positive": item["positive"],
                   "status": r.status.value, "reported": r.measured, "rejected": r.rejected,
                   "n_detections": r.n_detections, "dsc": None,
                   "confidence": None if r.measurement is None else r.measurement.confidence,
                   "area_px": None if r.nerve_mask is None else int(np.count_nonzero(r.nerve_mask))}
            if item["mask"] is not None:
                truth = item["mask"] > 0
                pred = r.nerve_mask > 0 if r.nerve_mask is not None else np.zeros_like(truth)
                row["dsc"] = dice_hard(pred, truth)
                row["true_area_px"] = int(np.count_nonzero(truth))
            rows.append(row)
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per gate setting and kind: frames, reported / found / wrong-structure counts and rates."""
    out: dict[str, Any] = {}
    for gate in sorted({r["gate"] for r in rows}):
        per_kind: dict[str, Any] = {}
        for kind in [*POSITIVE_KINDS, *NEGATIVE_KINDS]:
            sel = [r for r in rows if r["gate"] == gate and r["kind"] == kind]
            if not sel:
                continue
            n = len(sel)
            reported = sum(r["reported"] for r in sel)
            entry: dict[str, Any] = {"frames": n, "reported": reported, "reported_rate": reported / n,
                                     "rejected_reasons": dict(Counter((r["rejected"] or "").split(" ")[0]
                                                                      for r in sel if r["rejected"]))}
            if sel[0]["positive"]:
                found = sum(1 for r in sel if r["reported"] and (r["dsc"] or 0) >= FOUND_DSC)
                entry.update(found=found, found_rate=found / n, wrong_structure=reported - found)
            per_kind[kind] = entry
        negatives = [r for r in rows if r["gate"] == gate and not r["positive"]]
        per_kind["all-negatives"] = {"frames": len(negatives), "reported": sum(r["reported"] for r in negatives),
                                     "reported_rate": (sum(r["reported"] for r in negatives) / len(negatives)
                                                       if negatives else None)}
        out[gate] = per_kind
    return out


def format_table(summary: dict[str, Any]) -> str:
    lines = ["| gate | kind | frames | nerve reported | found (Dice >= 0.5) | wrong structure |",
             "|---|---|---|---|---|---|"]
    for gate, kinds in summary.items():
        for kind, e in kinds.items():
            rate = e.get("reported_rate")
            found = f"{e['found']} ({100 * e['found_rate']:.1f} %)" if "found" in e else ""
            lines.append(f"| {gate} | {kind} | {e['frames']} | {e['reported']}"
                         f"{'' if rate is None else f' ({100 * rate:.1f} %)'} | {found} | "
                         f"{e.get('wrong_structure', '')} |")
    return "\n".join(lines)


def clip_rows(engine: Any, items: Sequence[dict[str, Any]], frames: int, confirms: Sequence[int],
              progress: bool = True, gate: str = "on", appearance: str | None = None,
              fusion: float | None = None, presence_refresh: float | None = None,
              fusion_motion: str = DEFAULT_MOTION) -> list[dict[str, Any]]:
    """One row per (item, confirm value): the item animated into a ``frames``-frame clip through the
    streaming loop with ``confirm_frames`` = that value and the presence gate ``gate`` (``appearance``:
    its appearance model, None for the model's own; ``fusion``: ``--fusion``'s weight, None for mn-live's
    default; ``presence_refresh``: ``--presence-refresh`` seconds, None for off; ``fusion_motion``:
    ``--fusion-motion``); frames reported (and, with truth,
    found), which (``reported_frames``: a character a frame, ``1``
    reported), and every frame's ``presence_score`` (the gate's appearance score of the selected region, measured
    or not; None where no appearance check ran)."""
    import tempfile

    from tqdm import tqdm

    from benchmarks.clips import stream_clip
    from train.metrics import dice_hard

    weight = DEFAULT_WEIGHT if fusion is None else fusion
    weight = None if weight >= 1.0 else weight  # 1: every frame on its own
    rows = []
    with tempfile.TemporaryDirectory(prefix="mn-presence-") as tmp:
        jobs = []
        for n, item in enumerate(items):
            path = Path(tmp) / "clips" / f"{n:04d}.png"  # no Masks/ beside it: the clip has no truth...
            path.parent.mkdir(exist_ok=True)
            cv2.imwrite(str(path), item["image"])
            spec = f"animate:{path}"
            if item["mask"] is not None:  # ...unless it has one
                mask_path = Path(tmp) / "masks" / f"{n:04d}.png"
                mask_path.parent.mkdir(exist_ok=True)
                cv2.imwrite(str(mask_path), (item["mask"] > 0).astype(np.uint8) * 255)
                spec += f":{mask_path}"
            jobs += [(item, spec, c) for c in confirms]
        for item, spec, confirm in tqdm(jobs, desc="clips", unit="clip", disable=not progress):
            per_frame: list[tuple[bool, bool]] = []
            scores: list[float | None] = []

            def collect(r: Any) -> None:
                found = False
                if r.measured and r.truth is not None and r.mask is not None:
                    found = dice_hard(r.mask > 0, r.truth > 0) >= FOUND_DSC
                per_frame.append((bool(r.measured), found))
                score = r.tracked.presence_score
                scores.append(None if score is None else round(float(score), 4))

            stream_clip(engine, spec, frames, collect, window="tracked", fusion=weight, presence=gate,
                        confirm_frames=confirm, name=f"{item['kind']} {item['id']}", appearance=appearance,
                        presence_refresh=presence_refresh, fusion_motion=fusion_motion)
            rows.append({"kind": item["kind"], "id": item["id"], "confirm": confirm, "positive": item["positive"],
                         "frames": len(per_frame), "reported": sum(m for m, _ in per_frame),
                         "found": sum(f for _, f in per_frame) if item["positive"] else None,
                         "reported_runs": _runs([m for m, _ in per_frame]),
                         "reported_frames": "".join("1" if m else "0" for m, _ in per_frame),
                         "presence_scores": scores})
    return rows


def _runs(flags: Sequence[bool]) -> list[int]:
    """Lengths of the runs of consecutive ``True``."""
    runs, n = [], 0
    for f in [*flags, False]:
        if f:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def summarise_clips(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per confirm value and kind: clips, frames, frames reporting a nerve (and found, for positives),
    and how many of the reported frames came in runs of one frame."""
    out: dict[str, Any] = {}
    for confirm in sorted({r["confirm"] for r in rows}):
        per_kind: dict[str, Any] = {}
        for kind in [*POSITIVE_KINDS, *NEGATIVE_KINDS, "all-negatives"]:
            sel = [r for r in rows if r["confirm"] == confirm
                   and (r["kind"] == kind or (kind == "all-negatives" and not r["positive"]))]
            if not sel:
                continue
            n, reported = sum(r["frames"] for r in sel), sum(r["reported"] for r in sel)
            entry: dict[str, Any] = {"clips": len(sel), "frames": n, "reported": reported,
                                     "reported_rate": reported / n,
                                     "single_frame_runs": sum(1 for r in sel for x in r["reported_runs"] if x == 1)}
            if sel[0]["positive"]:
                found = sum(r["found"] for r in sel)
                entry.update(found=found, found_rate=found / n)
            per_kind[kind] = entry
        out[str(confirm)] = per_kind
    return out


def format_clip_table(summary: dict[str, Any], frames: int, fusion: float | None = None,
                      fusion_motion: str = DEFAULT_MOTION) -> str:
    weight = DEFAULT_WEIGHT if fusion is None else fusion
    motion = f" moved by the {fusion_motion} motion" if fusion_motion != DEFAULT_MOTION else ""
    lines = [f"Clips of {frames} frames through the streaming loop (tracked window, fusion {weight:g}{motion}, "
             "presence gate on):",
             "", "| --confirm | kind | clips | frames | nerve reported | found (Dice >= 0.5) | one-frame runs |",
             "|---|---|---|---|---|---|---|"]
    for confirm, kinds in summary.items():
        for kind, e in kinds.items():
            found = f"{e['found']} ({100 * e['found_rate']:.1f} %)" if "found" in e else ""
            lines.append(f"| {confirm} | {kind} | {e['clips']} | {e['frames']} | {e['reported']} "
                         f"({100 * e['reported_rate']:.1f} %) | {found} | {e['single_frame_runs']} |")
    return "\n".join(lines)


def _confirm_values(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"needs whole numbers >= 1, comma-separated (e.g. 1,2), got {text!r}")
    return values


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    from train.cli_util import add_logging_args

    p = argparse.ArgumentParser(prog="mn-presence", description=__doc__.split("\n")[0],
                                epilog=__doc__.rsplit("\n\n", 1)[1].strip(),
                                formatter_class=HelpFormatter)
    p.add_argument("--model", default=None, help="bundled name, checkpoint or .onnx (default: the bundled default)")
    p.add_argument("--backend", default="auto", help="engine backend")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the engine")
    p.add_argument("--data", default=None, help="annotated dataset folder (Images/, Masks/); without it, phantom only")
    p.add_argument("--split", choices=["paper", "kfold", "none"], default="paper",
                   help="use the validation side of this patient split (images the model was not trained on)")
    p.add_argument("--folds", type=int, default=None, help="with --split kfold")
    p.add_argument("--fold", type=int, default=None, help="with --split kfold")
    p.add_argument("--seed", type=int, default=42, help="split seed")
    p.add_argument("--phantom", type=int, default=24, help="phantom frames (with and without the nerve)")
    p.add_argument("--min-confidence", type=float, default=None, help="presence gate confidence bound")
    p.add_argument("--appearance", default=None, metavar="FILE",
                   help="the gate's appearance model, as mn-live's --appearance (default: the model's own)")
    p.add_argument("--clips", type=int, default=0, metavar="N",
                   help="also run every validation image and nerve-free frame as an N-frame clip through the "
                        "streaming loop (0: stills only)")
    p.add_argument("--confirm", type=_confirm_values, default=[1, 2], metavar="LIST",
                   help="with --clips: the tracker's confirm_frames values to compare (mn-live's --confirm)")
    p.add_argument("--fusion", type=fusion_weight, default=DEFAULT_WEIGHT, metavar="W",
                   help="with --clips: temporal fusion as mn-live's --fusion (default %(default)s; 1 turns it off)")
    p.add_argument("--fusion-motion", choices=MOTIONS, default=DEFAULT_MOTION,
                   help="with --clips: how fusion moves the previous map, as mn-live's --fusion-motion (default "
                        "%(default)s)")
    p.add_argument("--presence-refresh", type=refresh_seconds, default=None, metavar="S",
                   help="with --clips: the tracker's presence refresh, as mn-live's --presence-refresh (0: off)")
    p.add_argument("--json", default=None,
                   help="results JSON (default benchmarks/results/presence-MODEL-HOST-DATE.json)")
    p.add_argument("--md", default=None, help="Markdown table (default: the JSON's path with .md)")
    p.add_argument("--per-frame", default=None, metavar="JSON", help="every frame's row")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from engines.registry import bundled_default, load_engine
    from realtime.presence import gated_model_file, make_presence_gate
    from train.cli_util import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.data and not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} is not a folder; give the dataset folder holding Images/ and Masks/")
    if args.clips < 0 or 0 < args.clips < 3:
        raise UserError(f"--clips {args.clips}: give 0 (stills only) or at least 3 frames a clip")
    if args.split == "kfold" and args.fold is None:
        raise UserError("--split kfold needs --fold K")
    model = args.model or bundled_default()
    if not model:
        raise UserError("no bundled default model in this installation; give --model NAME|CHECKPOINT")
    stem = Path(str(model)).stem
    out, md = report_paths(args.json, args.md, "presence", stem)
    engine = load_engine(model, backend=args.backend, threads=args.threads)
    try:
        gates = {"on": make_presence_gate("on", args.min_confidence, args.appearance, gated_model_file(engine)),
                 "shape": make_presence_gate("shape", args.min_confidence), "off": None}
        items = build_items(args.data, args.split, args.seed, args.folds, args.fold, args.phantom)
        rows = classify(engine, items, gates, progress=log.isEnabledFor(logging.INFO))
        clips = (clip_rows(engine, items, args.clips, args.confirm, progress=log.isEnabledFor(logging.INFO),
                           appearance=args.appearance, fusion=args.fusion, presence_refresh=args.presence_refresh,
                           fusion_motion=args.fusion_motion)
                 if args.clips else [])
    finally:
        engine.close()
    summary = summarise(rows)
    result = {"model": str(model), "engine": engine.describe(), "data": args.data, "split": args.split,
              "gate": gates["on"].describe(), "summary": summary,
              "command": " ".join(["mn-presence", *(argv if argv is not None else sys.argv[1:])])}
    table = format_table(summary)
    if clips:
        result["clips"] = {"frames": args.clips, "fusion": args.fusion, "fusion_motion": args.fusion_motion,
                           "presence_refresh_s": args.presence_refresh,
                           "summary": summarise_clips(clips),
                           "per_clip": clips}
        table += "\n\n" + format_clip_table(result["clips"]["summary"], args.clips, args.fusion,
                                             args.fusion_motion)
    _atomic_write(out, json.dumps(result, indent=2, default=str) + "\n")
    _atomic_write(md, f"# Presence: {model}\n\n{table}\n")
    if args.per_frame:
        _atomic_write(Path(args.per_frame), json.dumps(rows, indent=1, default=str) + "\n")
    print(table)
    log.info("wrote %s and %s", out, md)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("mn-presence", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
