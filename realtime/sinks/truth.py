"""Agreement with a known truth, frame by frame (the phantom, an animated still, ``mn-segment --truth``):
Dice of the nerve mask, and the errors of CSA, flattening ratio and centroid against the truth mask
measured by the same morphometry; and how steady the raw values are from frame to frame next to the
truth's own changes (``jitter`` / ``truth_jitter``, :mod:`realtime.temporal`). Its result is the run
summary's ``truth`` section."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from realtime.morphometry import Measurement, measure_mask
from realtime.record import FrameRecord
from realtime.sinks.base import RunInfo, Sink
from realtime.temporal import jitter
from train.metrics import dice_hard


class TruthScore:
    """Per-frame agreement with a known truth."""

    def __init__(self) -> None:
        self.dice: list[float] = []
        self.csa_rel: list[float] = []
        self.fr_abs: list[float] = []
        self.centroid_px: list[float] = []
        # per frame, for the frame-to-frame jitter (None where not measured)
        self.series: dict[str, list] = {k: [] for k in ("area", "fr", "centroid", "true_area", "true_fr",
                                                          "true_centroid")}

    def add(self, pred_mask: np.ndarray | None, truth: np.ndarray, pred: Measurement | None) -> None:
        truth_b = truth > 0
        pred_b = pred_mask > 0 if pred_mask is not None else np.zeros_like(truth_b)
        self.dice.append(dice_hard(pred_b, truth_b))
        t = measure_mask(truth_b.astype(np.uint8))
        measured = pred is not None and pred.area_px > 0
        self.series["area"].append(float(pred.area_px) if measured else None)
        self.series["fr"].append(pred.flattening_ratio if measured else None)
        self.series["centroid"].append((pred.centroid_x_px, pred.centroid_y_px) if measured else None)
        self.series["true_area"].append(float(t.area_px) if t.area_px > 0 else None)
        self.series["true_fr"].append(t.flattening_ratio if t.area_px > 0 else None)
        self.series["true_centroid"].append((t.centroid_x_px, t.centroid_y_px) if t.area_px > 0 else None)
        if t.area_px > 0:
            area = (pred.area_px if pred is not None else 0) or 0.0
            self.csa_rel.append(abs(area - t.area_px) / t.area_px)
            if pred is not None and pred.flattening_ratio is not None and t.flattening_ratio is not None:
                self.fr_abs.append(abs(pred.flattening_ratio - t.flattening_ratio))
            if pred is not None and pred.centroid_x_px is not None:
                self.centroid_px.append(math.hypot(pred.centroid_x_px - t.centroid_x_px,
                                                   pred.centroid_y_px - t.centroid_y_px))

    def to_dict(self) -> dict[str, Any]:
        med = lambda v: float(np.median(v)) if v else None  # noqa: E731
        return {
            "frames": len(self.dice),
            "dice_mean": float(np.mean(self.dice)) if self.dice else None,
            "dice_min": float(np.min(self.dice)) if self.dice else None,
            "csa_rel_error_median": med(self.csa_rel),
            "csa_rel_error_p95": float(np.percentile(self.csa_rel, 95)) if self.csa_rel else None,
            "fr_abs_error_median": med(self.fr_abs),
            "centroid_error_px_median": med(self.centroid_px),
            "jitter": jitter(self.series["area"], self.series["fr"], self.series["centroid"]),
            "truth_jitter": jitter(self.series["true_area"], self.series["true_fr"], self.series["true_centroid"]),
        }


class TruthSink(Sink):
    """Scores every record that carries a truth mask; on close, leaves ``truth`` for the run summary
    (nothing when no frame had a truth). List it before the summary sink."""

    name = "truth score"

    def __init__(self) -> None:
        self.score: TruthScore | None = None
        self._run: RunInfo | None = None

    def open(self, run: RunInfo) -> None:
        self._run = run

    def write(self, record: FrameRecord) -> None:
        if record.truth is None:
            return
        if self.score is None:
            self.score = TruthScore()
        self.score.add(record.mask, record.truth, record.measurement)

    def close(self) -> None:
        if self.score is not None and self._run is not None:
            self._run.extras["truth"] = self.score.to_dict()
