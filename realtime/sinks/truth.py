"""Agreement with a known truth, frame by frame (the phantom, an animated still, ``mn-segment --truth``):
Dice of the nerve mask, and the errors of CSA, flattening ratio and centroid against the truth mask
measured by the same morphometry; and how steady the raw values are from frame to frame next to the
truth's own changes (``jitter`` / ``truth_jitter``, :mod:`realtime.temporal`). Its result is the run
summary's ``truth`` section."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from realtime.distribution import Distribution
from realtime.morphometry import Measurement, measure_mask
from realtime.record import FrameRecord
from realtime.sinks.base import RunInfo, Sink
from realtime.temporal import RunningJitter
from train.metrics import dice_hard


class TruthScore:
    """Per-frame agreement with a known truth, accumulated in bounded memory (running statistics and
    :class:`~realtime.temporal.RunningJitter`, not every frame's numbers)."""

    def __init__(self) -> None:
        self.dice = Distribution()
        self.csa_rel = Distribution()
        self.fr_abs = Distribution()
        self.centroid_px = Distribution()
        self.jitter = RunningJitter()
        self.truth_jitter = RunningJitter()

    def add(self, pred_mask: np.ndarray | None, truth: np.ndarray, pred: Measurement | None) -> None:
        truth_b = truth > 0
        pred_b = pred_mask > 0 if pred_mask is not None else np.zeros_like(truth_b)
        self.dice.add(dice_hard(pred_b, truth_b))
        t = measure_mask(truth_b.astype(np.uint8))
        measured = pred is not None and pred.area_px > 0
        self.jitter.add(float(pred.area_px) if measured else None, pred.flattening_ratio if measured else None,
                        (pred.centroid_x_px, pred.centroid_y_px) if measured else None)
        true = t.area_px > 0
        self.truth_jitter.add(float(t.area_px) if true else None, t.flattening_ratio if true else None,
                              (t.centroid_x_px, t.centroid_y_px) if true else None)
        if true:
            area = (pred.area_px if pred is not None else 0) or 0.0
            self.csa_rel.add(abs(area - t.area_px) / t.area_px)
            if pred is not None and pred.flattening_ratio is not None and t.flattening_ratio is not None:
                self.fr_abs.add(abs(pred.flattening_ratio - t.flattening_ratio))
            if pred is not None and pred.centroid_x_px is not None:
                self.centroid_px.add(math.hypot(pred.centroid_x_px - t.centroid_x_px,
                                                pred.centroid_y_px - t.centroid_y_px))

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.dice.n,
            "dice_mean": self.dice.mean,
            "dice_min": self.dice.min if self.dice.n else None,
            "csa_rel_error_median": self.csa_rel.percentile(50),
            "csa_rel_error_p95": self.csa_rel.percentile(95),
            "fr_abs_error_median": self.fr_abs.percentile(50),
            "centroid_error_px_median": self.centroid_px.percentile(50),
            "jitter": self.jitter.to_dict(),
            "truth_jitter": self.truth_jitter.to_dict(),
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
