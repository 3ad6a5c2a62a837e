"""``python -m benchmarks.window_bench``: what the last frames know, used or not: the tracked window and fusion.

Runs clips with known truth through exactly what runs live (:class:`realtime.pipeline.Pipeline`,
batch 1, presence gate on, new tracks confirmed as ``--confirm`` says (default mn-live's), no pacing so no
frame is dropped and every setting sees the same frames)
three times: ``--window localiser --fusion 1`` (each frame on its own), ``--window tracked --fusion 1``
(the tracked window, :mod:`realtime.window_policy`) and ``--window tracked --fusion W`` (and temporal
fusion, :mod:`realtime.fusion`), and reports per clip and pooled:

- **jitter**: median and p95 of the raw area's frame-to-frame relative change, next to the truth's
  (the issue's target: median <= 1.5x the truth's, p95 <= 5 %);
- **CSA error**: median |area - true area| / true area over measured frames; **CSA bias** the mean of
  (area - true area) / true area over them (negative: areas too small);
- **FR error**: median |FR - true FR| / true FR over measured frames (the flattening ratio, the shape a
  compression changes most);
- **lag**: the delay, in frames (0 to ``MAX_LAG``), at which the measured area follows the true area
  best (the highest correlation of ``area[t + k]`` with ``true_area[t]``): what a temporal filter costs a
  change of shape;
- **frames ok**: share of frames measured (``ok`` / ``reacquired``);
- **jumps**: frames where the measured centroid moved more than ``JUMP_PX`` while the true centroid
  moved less than 10 px (the nerve jumping to another structure); **jumps away** (``jumps_away``, in
  brackets): those that ended further from the true centroid than they started (the others moved the
  outline back towards the nerve);
- **time**: median inference time a frame (localiser skipped on tracked frames).

Clips: the built-in phantom (seeds 1-3 by default) and, with ``--data``, the paper validation
images animated into 24 fps clips (``animate:``: glide, tilt, compression, fresh speckle; images
the shipped model was not trained on). Writes ``--json`` and ``--md`` (default under
benchmarks/results/). Exit codes: 0, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
from datetime import date
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.report_files import report_header, report_paths, write_report
from common.cli import add_logging_args, setup_logging
from common.errors import UserError, run_cli
from common.tta import TTA_MODES
from realtime.cli_common import AREA_STEP_DEFAULT as DEFAULT_AREA_STEP
from realtime.cli_common import CONFIRM_DEFAULT, PRESENCE_CHOICES, confirm_frames, refresh_seconds
from realtime.cli_common import area_step as area_step_arg
from realtime.fusion import DEFAULT_MOTION, DEFAULT_WEIGHT, MOTIONS, fusion_weight

log = logging.getLogger("benchmarks.window_bench")

PROG = "python -m benchmarks.window_bench"
JUMP_PX = 20.0
TRUE_STILL_PX = 10.0
MAX_LAG = 6
"""The longest delay (frames) the lag measure considers."""
_MIN_LAG_PAIRS = 24  # fewer measured frames than this give no lag
MODES = ("localiser", "tracked", "tracked+fusion")
"""The settings compared: the window's placement, then fusion (off in the first two)."""


def clip_specs(data: str | None, phantoms: int, images: int, split: str = "paper", folds: int = 5,
               fold: int | None = None, seed: int = 42) -> list[tuple[str, str]]:
    """``(name, source spec)`` of every clip: phantom seeds, then every ``len/images``-th validation image of
    ``split`` (``paper``: the paper split's, which chose the shipped models; ``kfold``: fold ``fold`` of the
    patient ``folds``-fold split with ``seed``, as ``mn-cv`` deals it)."""
    specs = [(f"phantom-{s}", "synthetic") for s in range(1, phantoms + 1)]
    if data:
        from train.data import scan_dataset
        from train.splits import make_split

        samples = scan_dataset(data)
        patients = [s.patient for s in samples]
        if split == "kfold":
            val = make_split("kfold", patients, folds=folds, fold=fold, seed=seed).indices(patients)[1]
        else:
            val = make_split("paper", patients).indices(patients)[1]
        step = max(1, len(val) // max(images, 1))
        specs += [(samples[i].stem, f"animate:{samples[i].image_path}") for i in val[::step][:images]]
    return specs


def run_clip(engine: Any, spec: str, seed: int, frames: int, mode: str, fusion: float = 1.0,
             confirm: int | None = None, presence: str = "on", appearance: str | None = None,
             compression_period_s: float | None = None, area_step: float | None = DEFAULT_AREA_STEP,
             glide_scale: float | None = None, border_crop: int = 0,
             per_frame: str | Path | None = None, presence_refresh: float | None = None,
             fusion_motion: str = DEFAULT_MOTION) -> dict[str, Any]:
    """One clip through the pipeline with ``mode`` (one of :data:`MODES`; ``fusion`` is the weight of
    ``tracked+fusion``; ``confirm``: ``--confirm``, None for its default; ``presence``: ``--presence``;
    ``appearance``: ``--appearance``; ``compression_period_s``: an animated image's compression cycle,
    None for the source's 6 s; ``area_step``: ``--area-step``, None for off; ``glide_scale``: an animated
    image's glide amplitude times this, None for the source's; ``border_crop``: pixels cut from every edge of
    an animated image's frames, a narrower field of view); ``per_frame``: a CSV file for the clip's frames
    (:func:`write_frames`); ``presence_refresh``: ``--presence-refresh`` seconds, None for off; ``fusion_motion``:
    ``--fusion-motion`` of ``tracked+fusion``. Returns the clip's
    numbers (:func:`score`)."""
    from benchmarks.clips import stream_clip
    from realtime.morphometry import measure_mask

    if mode not in MODES:
        raise UserError(f"unknown setting {mode!r}: one of {', '.join(MODES)}")
    rows: list[dict[str, Any]] = []

    def collect(r: Any) -> None:
        m = r.measurement
        t = measure_mask((r.truth > 0).astype(np.uint8)) if r.truth is not None else None
        rows.append({"measured": r.measured, "status": str(r.tracked.status), "rejected": r.tracked.rejected,
                     "presence_score": r.tracked.presence_score, "window": r.window, "fused": bool(r.fused),
                     "infer_ms": r.timings_ms.get("infer"), "post_ms": r.timings_ms.get("postprocess"),
                     "area": None if m is None else float(m.area_px),
                     "fr": None if m is None else m.flattening_ratio,
                     "true_fr": None if t is None or t.empty else t.flattening_ratio,
                     "centroid": None if m is None else (m.centroid_x_px, m.centroid_y_px),
                     "true_area": None if t is None or t.empty else float(t.area_px),
                     "true_centroid": None if t is None or t.empty else (t.centroid_x_px, t.centroid_y_px)})

    source_options: dict[str, float] = {}
    if spec.startswith("animate:"):
        if compression_period_s is not None:
            source_options["compression_period_s"] = compression_period_s
        if glide_scale is not None:
            source_options["glide_scale"] = glide_scale
        if border_crop:
            source_options["border_crop"] = border_crop
    stream_clip(engine, spec, frames, collect, seed=seed, window=mode.split("+")[0],
                fusion=fusion if mode.endswith("+fusion") else None, confirm_frames=confirm, presence=presence,
                appearance=appearance, area_step=area_step, presence_refresh=presence_refresh,
                fusion_motion=fusion_motion, **source_options)
    if per_frame is not None:
        write_frames(per_frame, rows)
    return score(rows)


FRAME_COLUMNS = ("frame", "status", "rejected", "presence_score", "window", "fused", "area_px", "true_area_px",
                 "area_rel_error", "fr", "true_fr", "centroid_x", "centroid_y", "true_centroid_x", "true_centroid_y",
                 "infer_ms")
"""``--per-frame``'s columns: the tracker's status and, where a detection was not measured, why (``rejected``:
the presence gate, an area step, an unconfirmed new track) and the presence gate's appearance score of the
selected region (``presence_score``, measured or not), then what was measured beside the truth."""


def write_frames(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """One clip's frames as CSV (:data:`FRAME_COLUMNS`; empty cells where nothing was measured)."""
    import csv

    def cell(x: Any) -> Any:
        return "" if x is None else (f"{x:.6g}" if isinstance(x, float) else x)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(FRAME_COLUMNS)
        for i, r in enumerate(rows):
            c, t = r["centroid"] or (None, None), r["true_centroid"] or (None, None)
            err = ((r["area"] - r["true_area"]) / r["true_area"]
                   if r["area"] is not None and r["true_area"] else None)
            out.writerow([cell(v) for v in (i, r.get("status"), r.get("rejected"), r.get("presence_score"),
                                            r["window"], int(r["fused"]),
                                            r["area"], r["true_area"], err, r["fr"], r["true_fr"], c[0], c[1],
                                            t[0], t[1], r["infer_ms"])])


def _step(a: tuple | None, b: tuple | None) -> float | None:
    return None if a is None or b is None else float(np.hypot(a[0] - b[0], a[1] - b[1]))


def lag_frames(area: Sequence[float | None], true_area: Sequence[float | None],
               max_lag: int = MAX_LAG) -> int | None:
    """The delay ``k`` (0..``max_lag`` frames) at which ``area[t + k]`` correlates best with
    ``true_area[t]``; None when fewer than 24 frames pair up at every delay or the truth does not change."""
    best, best_r = None, -math.inf
    for k in range(max_lag + 1):
        pairs = [(a, t) for a, t in zip(area[k:], true_area[:len(true_area) - k]) if a is not None and t]
        if len(pairs) < _MIN_LAG_PAIRS:
            return None
        x, y = np.array(pairs, dtype=np.float64).T
        if x.std() == 0 or y.std() == 0:
            return None
        r = float(np.corrcoef(x, y)[0, 1])
        if r > best_r + 1e-12:
            best, best_r = k, r
    return best


def score(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A clip's numbers from its per-frame rows (see the module docstring)."""
    from realtime.temporal import jitter

    signed = [(r["area"] - r["true_area"]) / r["true_area"] for r in rows if r["area"] is not None and r["true_area"]]
    errors = [abs(e) for e in signed]
    fr_errors = [abs(r["fr"] - r["true_fr"]) / r["true_fr"] for r in rows
                 if r.get("fr") is not None and r.get("true_fr")]
    jumps = away = 0
    for prev, cur in zip(rows, rows[1:]):
        moved, true_moved = _step(prev["centroid"], cur["centroid"]), _step(prev["true_centroid"], cur["true_centroid"])
        if moved is not None and true_moved is not None and moved > JUMP_PX and true_moved < TRUE_STILL_PX:
            jumps += 1
            away += _step(cur["centroid"], cur["true_centroid"]) > _step(prev["centroid"], prev["true_centroid"])
    infer = [r["infer_ms"] for r in rows if r["infer_ms"] is not None]
    post = [r["post_ms"] for r in rows if r.get("post_ms") is not None]
    return {
        "frames": len(rows),
        "ok": sum(r["measured"] for r in rows),
        "ok_rate": sum(r["measured"] for r in rows) / len(rows) if rows else None,
        "tracked_windows": sum(r["window"] == "tracked" for r in rows),
        "confirmed_windows": sum(r["window"] == "confirmed" for r in rows),
        "fused": sum(bool(r.get("fused")) for r in rows),
        "csa_abs_rel_median": statistics.median(errors) if errors else None,
        "csa_bias": statistics.fmean(signed) if signed else None,
        "fr_abs_rel_median": statistics.median(fr_errors) if fr_errors else None,
        "lag_frames": lag_frames([r["area"] for r in rows], [r["true_area"] for r in rows]),
        "jitter": jitter([r["area"] for r in rows])["area_rel"],
        "truth_jitter": jitter([r["true_area"] for r in rows])["area_rel"],
        "jumps": jumps,
        "jumps_away": away,
        "infer_ms_median": statistics.median(infer) if infer else None,
        "postprocess_ms_median": statistics.median(post) if post else None,
    }


def pooled(clips: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Medians over clips of each number, totals of frames, ok frames and jumps."""
    def med(key: str, sub: str | None = None) -> float | None:
        values = [(c[key][sub] if sub else c[key]) for c in clips.values()]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    ratios = [c["jitter"]["median"] / c["truth_jitter"]["median"] for c in clips.values()  # each clip's own
              if c["jitter"].get("median") is not None and c["truth_jitter"].get("median")]

    return {"clips": len(clips), "frames": sum(c["frames"] for c in clips.values()),
            "ok_rate": sum(c["ok"] for c in clips.values()) / max(1, sum(c["frames"] for c in clips.values())),
            "csa_abs_rel_median": med("csa_abs_rel_median"), "csa_bias": med("csa_bias"),
            "fr_abs_rel_median": med("fr_abs_rel_median"), "lag_frames": med("lag_frames"),
            "jitter_median": med("jitter", "median"),
            "jitter_p95": med("jitter", "p95"), "truth_jitter_median": med("truth_jitter", "median"),
            "jitter_ratio": statistics.median(ratios) if ratios else None,
            "jumps": sum(c["jumps"] for c in clips.values()),
            "jumps_away": sum(c.get("jumps_away", 0) for c in clips.values()),
            "infer_ms_median": med("infer_ms_median"), "postprocess_ms_median": med("postprocess_ms_median")}


POOL_SETTINGS = ("frames_per_clip", "fusion", "fusion_motion", "confirm", "presence", "compression_period_s",
                 "glide_scale", "crop_border_px", "area_step", "presence_refresh_s", "precision", "tta")
"""What reports pooled by ``--pool`` must share (one setting measured on several folds' clips)."""


def pool_reports(paths: Sequence[str | Path]) -> dict[str, Any]:
    """One report of every clip of several reports (e.g. one a fold, each fold's model on its own patients):
    their clips side by side and pooled as one run's (:func:`pooled`). The reports must share
    :data:`POOL_SETTINGS`; a clip name met twice is suffixed with its report's file name.

    Raises:
        UserError: fewer than two reports, a file that is not a window report, or reports measured differently.
    """
    if len(paths) < 2:
        raise UserError(f"--pool takes two or more window reports (JSON), got {len(paths)}")
    reports = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"--pool: cannot read {path} ({exc}); give the JSON files benchmarks.window_bench "
                            "wrote") from None
        if not isinstance(report, dict) or report.get("benchmark") != "window" or "clips" not in report:
            raise UserError(f"--pool: {path} is not a benchmarks.window_bench report")
        report.setdefault("fusion_motion", DEFAULT_MOTION)  # reports before --fusion-motion moved by the shift
        reports.append(report)
    first = reports[0]
    for path, report in zip(paths[1:], reports[1:]):
        differ = [k for k in POOL_SETTINGS if report.get(k) != first.get(k)]
        if differ:
            raise UserError(f"--pool: {path} was measured with other settings than {paths[0]} "
                            f"({', '.join(f'{k} {report.get(k)!r} vs {first.get(k)!r}' for k in differ)}); "
                            "pool reports of one setting")
    modes = [m for m in MODES if all(m in r.get("pooled", {}) for r in reports)]
    if not modes:
        raise UserError("--pool: the reports have no setting in common")
    clips: dict[str, dict[str, Any]] = {}
    for path, report in zip(paths, reports):
        for name, clip in report["clips"].items():
            clips[name if name not in clips else f"{name} ({Path(path).name})"] = {m: clip[m] for m in modes}
    splits = [r.get("split") or {} for r in reports]
    folds = sorted(s["fold"] for s in splits if s.get("name") == "kfold")
    return {**{k: first.get(k) for k in ("benchmark", "backend", *POOL_SETTINGS)},
            "machine": first.get("machine") or {}, "date": date.today().isoformat(),
            "model": f"{len(reports)} reports pooled ({', '.join(sorted({str(r.get('model')) for r in reports}))})",
            "command": " ".join([PROG, "--pool", *map(str, paths)]),
            "pooled_from": [{"file": str(p), "model": r.get("model"), "split": r.get("split"),
                             "command": r.get("command")} for p, r in zip(paths, reports)],
            "split": ({"name": "kfold-pooled", "folds": splits[0].get("folds"), "fold": folds,
                       "seed": splits[0].get("seed")} if folds else splits[0]),
            "appearance": "each report's own", "clips": clips,
            "pooled": {mode: pooled({n: c[mode] for n, c in clips.items()}) for mode in modes}}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _pct2(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _frames(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _split_text(split: dict[str, Any] | None) -> str:
    if split and split.get("name") == "kfold-pooled":
        return (f"folds {', '.join(map(str, split['fold']))} of the patient {split['folds']}-fold split (seed "
                f"{split['seed']}, as mn-cv), each fold's own patients")
    if split and split.get("name") == "kfold":
        return f"fold {split['fold']} of the patient {split['folds']}-fold split (seed {split['seed']}, as mn-cv)"
    return "the paper split's (they chose the shipped models)"


def _motion_text(report: dict[str, Any]) -> str:
    """`` --fusion-motion M`` where a report says one other than the shift (older reports say none)."""
    motion = report.get("fusion_motion")
    return f" --fusion-motion {motion}" if motion and motion != DEFAULT_MOTION else ""


def format_md(report: dict[str, Any]) -> str:
    modes = [m for m in MODES if m in report["pooled"]]
    lines = [f"# What the last frames know: {report['model']}", "", f"Command: `{report['command']}`", "",
             f"Settings: `localiser` (every window from the localiser, no fusion), `tracked` (--window tracked, "
             f"no fusion), `tracked+fusion` (--window tracked --fusion {report.get('fusion', '-')}"
             f"{_motion_text(report)}); every setting "
             f"with --confirm {report.get('confirm', 1)}, --area-step {report.get('area_step') or 0:g} and "
             f"--presence {report.get('presence', 'on')}"
             + (f" (appearance model: {report['appearance']})" if report.get("appearance") else "")
             + (f"; animated images compressed in {report['compression_period_s']:g} s cycles"
                if report.get("compression_period_s") else "")
             + (f"; their glide {report['glide_scale']:g} times the default"
                if report.get("glide_scale") is not None else "")
             + (f"; {report['crop_border_px']} px cut from every edge of their frames"
                if report.get("crop_border_px") else "") + ". Jitter: the "
             "raw area's frame-to-frame relative change; the truth's beside it."
             + (" Animated validation images: " + _split_text(report.get("split")) + "."
                if any(not name.startswith("phantom-") for name in report["clips"]) or not report["clips"] else ""),
             "",
             *([f"Engine: {report.get('backend', 'onnxruntime')} {report['precision']}"
                + (f", refiner test-time augmentation {report['tta']}" if report.get("tta", "none") != "none" else "")
                + (f"; CPU {report['machine'].get('cpu')} ({', '.join(report['machine']['cpu_features'])})"
                   if report.get("machine", {}).get("cpu_features") else "") + ".", ""]
               if report.get("precision") else []),
             "FR error: the flattening ratio's. Lag: the delay (frames) at which the area follows the truth's best.",
             "",
             "| clip | setting | frames | ok | fused | CSA error median | CSA bias | FR error | lag | "
             "area jitter median / p95 | truth's | jumps (away) | infer ms | post ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in report["clips"]:
        for mode in modes:
            c = report["clips"][name][mode]
            lines.append(f"| {name} | {mode} | {c['frames']} | {_pct(c['ok_rate'])} | {c.get('fused', 0)} | "
                         f"{_pct(c['csa_abs_rel_median'])} | {_pct(c.get('csa_bias'))} | "
                         f"{_pct(c.get('fr_abs_rel_median'))} | {_frames(c.get('lag_frames'))} | "
                         f"{_pct(c['jitter']['median'])} / {_pct(c['jitter']['p95'])} | "
                         f"{_pct(c['truth_jitter']['median'])} / {_pct(c['truth_jitter']['p95'])} | "
                         f"{c['jumps']} ({c.get('jumps_away', '-')}) | "
                         f"{_ms(c['infer_ms_median'])} | {_ms(c.get('postprocess_ms_median'))} |")
    lines += ["", "Pooled (medians over clips; frames, ok and jumps summed):", "",
              "| setting | clips | frames | ok | CSA error | CSA bias | FR error | lag | jitter median / p95 | "
              "truth's median | jitter / truth's (clips' median) | jumps (away) | infer ms | post ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        p = report["pooled"][mode]
        ratio = "-" if p.get("jitter_ratio") is None else f"{p['jitter_ratio']:.2f}x"
        lines.append(f"| {mode} | {p['clips']} | {p['frames']} | {_pct(p['ok_rate'])} | "
                     f"{_pct(p['csa_abs_rel_median'])} | {_pct(p.get('csa_bias'))} | "
                     f"{_pct(p.get('fr_abs_rel_median'))} | {_frames(p.get('lag_frames'))} | "
                     f"{_pct2(p['jitter_median'])} / {_pct(p['jitter_p95'])} | {_pct2(p['truth_jitter_median'])} | "
                     f"{ratio} | {p['jumps']} ({p.get('jumps_away', '-')}) | {_ms(p['infer_ms_median'])} | "
                     f"{_ms(p.get('postprocess_ms_median'))} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mn-realtime", help="a cascade (bundled name or checkpoint)")
    p.add_argument("--data", default=None, metavar="DIR", help="the dataset, for animated validation images")
    p.add_argument("--phantoms", type=int, default=3, help="phantom clips (seeds 1..N)")
    p.add_argument("--images", type=int, default=8, help="animated validation images")
    p.add_argument("--split", choices=["paper", "kfold"], default="paper",
                   help="whose validation images are animated: the paper split's (the shipped models were chosen on "
                        "them) or, with --fold, those of a fold of mn-cv's patient split (that fold's models)")
    p.add_argument("--folds", type=int, default=5, help="folds of --split kfold (mn-cv's default 5)")
    p.add_argument("--fold", type=int, default=None, help="the fold of --split kfold")
    p.add_argument("--seed", type=int, default=42, help="seed of --split kfold (mn-cv's default 42)")
    p.add_argument("--frames", type=int, default=96, help="frames per clip")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the engine")
    p.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto",
                   help="the engine's precision (default auto, mn-live's: int8 on a CPU with VNNI where the model "
                        "has int8 files, else fp32)")
    p.add_argument("--tta", choices=TTA_MODES, default=None,
                   help="the cascade refiner's test-time augmentation, as mn-live's --tta (default: the model's own)")
    p.add_argument("--fusion", type=fusion_weight, default=DEFAULT_WEIGHT, metavar="W",
                   help="the current frame's weight in the tracked+fusion setting (default %(default)s)")
    p.add_argument("--fusion-motion", choices=MOTIONS, default=DEFAULT_MOTION,
                   help="how tracked+fusion moves the previous map, as mn-live's --fusion-motion (default "
                        "%(default)s)")
    p.add_argument("--confirm", type=confirm_frames, default=CONFIRM_DEFAULT, metavar="N",
                   help="frames a new track must be seen in before it is measured, as mn-live's --confirm "
                        "(default %(default)s, mn-live's)")
    p.add_argument("--presence", choices=list(PRESENCE_CHOICES), default="on",
                   help="the presence gate, as mn-live's --presence (default on, mn-live's)")
    p.add_argument("--area-step", type=area_step_arg, default=DEFAULT_AREA_STEP, metavar="FRAC",
                   help=f"the tracker's area step, as mn-live's --area-step (default {DEFAULT_AREA_STEP}; 0: off)")
    p.add_argument("--presence-refresh", type=refresh_seconds, default=None, metavar="S",
                   help="the tracker's presence refresh, as mn-live's --presence-refresh (default 0: off)")
    p.add_argument("--compression-period", type=float, default=None, metavar="S",
                   help="the animated images' compression cycle in seconds (default the animate source's 6 s; "
                        "shorter: the nerve changes shape faster, what a temporal filter lags behind)")
    p.add_argument("--glide-scale", type=float, default=None, metavar="S",
                   help="the animated images' glide amplitude times S (default the animate source's 3-6 px across, "
                        "2-4 px in depth; larger: more motion between frames, what fusion must follow)")
    p.add_argument("--crop-border", type=int, default=0, metavar="PX",
                   help="cut PX pixels from every edge of the animated images' frames (a narrower field of view "
                        "than the training images', as another scanner or depth shows; default 0)")
    p.add_argument("--appearance", default=None, metavar="FILE",
                   help="the presence gate's appearance model, as mn-live's --appearance (default: the model's own)")
    p.add_argument("--modes", default=",".join(MODES), metavar="LIST",
                   help=f"the settings to run, comma-separated (default {','.join(MODES)})")
    p.add_argument("--pool", nargs="+", default=None, metavar="REPORT",
                   help="run nothing: pool the clips of these reports (JSON, e.g. one a fold, each fold's model on its "
                        "own patients) into one report, as if one run had made them all (same settings needed)")
    p.add_argument("--per-frame", default=None, metavar="DIR",
                   help="also write each clip's frames, one CSV a clip and setting (DIR/CLIP.SETTING.csv): status, why "
                        "a detection was not measured, area and flattening beside the truth")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--md", default=None, metavar="FILE")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    from engines import load_engine

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.pool is not None:
        report = pool_reports(args.pool)
        out, md = report_paths(args.json, args.md, "window", "pooled")
        write_report(out, report, format_md(report), md)
        return 0
    if args.data and not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} is not a folder")
    if args.frames < 3:
        raise UserError("--frames must be at least 3")
    if args.compression_period is not None and not args.compression_period > 0:
        raise UserError(f"--compression-period is a positive number of seconds, got {args.compression_period}")
    if args.glide_scale is not None and not (math.isfinite(args.glide_scale) and args.glide_scale >= 0):
        raise UserError(f"--glide-scale is a number >= 0 (1: the default glide), got {args.glide_scale}")
    if args.crop_border < 0:
        raise UserError(f"--crop-border is a number of pixels >= 0, got {args.crop_border}")
    if (args.split == "kfold") != (args.fold is not None):
        raise UserError("--fold K goes with --split kfold (and --split kfold needs --fold K)")
    stem = Path(str(args.model)).stem
    out, md = report_paths(args.json, args.md, "window", stem)
    # auto: the engine mn-live would run (backend and precision both chosen: int8 on a VNNI CPU where the model
    # ships int8 files); fp32 / int8: onnxruntime at that precision
    auto = args.precision == "auto"
    engine = load_engine(args.model, backend="auto" if auto else "onnxruntime",
                         precision=None if auto else args.precision, threads=args.threads, dynamic_batch=True,
                         tta=args.tta)
    precision, backend = engine.info.precision, engine.info.backend
    tta = getattr(engine, "tta", "none")
    if not getattr(engine, "window_hints", False):
        raise UserError(f"{args.model} has no window to place (not a cascade): nothing to compare")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise UserError(f"--modes takes settings among {', '.join(MODES)}, got {args.modes!r}")
    specs = clip_specs(args.data, args.phantoms, args.images, args.split, args.folds, args.fold, args.seed)
    appearance_file = None  # the file the gate reads: given, the model's sidecar, or the default model's
    if args.presence == "on":
        from realtime.appearance import appearance_for
        from realtime.presence import gated_model_file

        appearance_file = appearance_for(gated_model_file(engine), args.appearance).file
    clips: dict[str, dict[str, Any]] = {}
    try:
        for i, (name, spec) in enumerate(tqdm(specs, desc="clips", unit="clip",
                                               disable=not log.isEnabledFor(logging.INFO))):
            seed = int(name.rsplit("-", 1)[1]) if name.startswith("phantom-") else 0
            clips[name] = {mode: run_clip(engine, spec, seed, args.frames, mode, args.fusion, args.confirm,
                                          args.presence, args.appearance, args.compression_period,
                                          args.area_step, args.glide_scale, args.crop_border,
                                          per_frame=(None if args.per_frame is None else
                                                     Path(args.per_frame) / f"{name}.{mode}.csv"),
                                          presence_refresh=args.presence_refresh,
                                          fusion_motion=args.fusion_motion)
                          for mode in modes}
    finally:
        engine.close()
    from benchmarks.system import cpu_features, cpu_model

    report = report_header("window", PROG, argv)
    report["machine"].update(cores=os.cpu_count(), cpu=cpu_model(), cpu_features=cpu_features())
    report |= {"model": str(args.model), "backend": backend, "precision": precision, "tta": tta,
             "split": ({"name": "kfold", "folds": args.folds, "fold": args.fold, "seed": args.seed}
                       if args.split == "kfold" else {"name": "paper"}),
             "frames_per_clip": args.frames, "fusion": args.fusion, "fusion_motion": args.fusion_motion,
             "confirm": args.confirm,
             "presence": args.presence, "appearance": args.appearance or "the model's own",
             "appearance_file": appearance_file,
             "compression_period_s": args.compression_period, "glide_scale": args.glide_scale,
             "crop_border_px": args.crop_border,
             "area_step": args.area_step, "presence_refresh_s": args.presence_refresh, "clips": clips,
             "pooled": {mode: pooled({n: c[mode] for n, c in clips.items()}) for mode in modes}}
    write_report(out, report, format_md(report), md)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(cli())
