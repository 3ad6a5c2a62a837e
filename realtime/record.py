"""``FrameRecord``: everything known about one processed frame. Sinks only read it.

The per-frame CSV is a contract other tools read; its columns are :data:`CSV_COLUMNS`, in this
order, followed by the per-stage timings :data:`STAGE_COLUMNS` (milliseconds). Empty cells mean
"not available": mm columns without calibration, measurements on frames with no detection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CSV_COLUMNS = [
    "frame", "t_s", "status", "area_px", "area_mm2", "perimeter_px", "perimeter_mm", "flattening_ratio",
    "circularity", "centroid_x_px", "centroid_y_px", "centroid_x_mm", "centroid_y_mm", "n_components",
    "confidence", "csa_change_pct", "displacement_mm", "latency_ms", "dropped_before",
]

#: Pipeline stages timed per frame (perf_counter_ns), in the order a frame meets them.
STAGES = ["capture_wait", "preprocess", "infer", "postprocess", "track", "render", "write"]
STAGE_COLUMNS = [f"{s}_ms" for s in STAGES]

#: What each column means and its unit (written as comments at the top of the CSV).
COLUMN_UNITS = {
    "frame": "source frame index (0-based; gaps are frames the live policy dropped)",
    "t_s": "stream time of the frame, s",
    "status": "ok | no_detection | lost | reacquired",
    "area_px": "nerve cross-sectional area, pixels at native resolution",
    "area_mm2": "cross-sectional area, mm^2 (empty when uncalibrated)",
    "perimeter_px": "outer contour length, px", "perimeter_mm": "outer contour length, mm",
    "flattening_ratio": "major / minor axis of the equivalent ellipse (second moments)",
    "circularity": "4*pi*area/perimeter^2 (1 for a disc)",
    "centroid_x_px": "px from the left edge of the (cropped) image", "centroid_y_px": "px from the top",
    "centroid_x_mm": "mm", "centroid_y_mm": "mm",
    "n_components": "regions counted as the nerve (2 for a bifid nerve)",
    "confidence": "mean network probability inside the nerve mask",
    "csa_change_pct": "change of area from the baseline, %",
    "displacement_mm": "centroid distance from the baseline centroid, mm (px when uncalibrated: "
                       "see displacement_px)",
    "latency_ms": "capture to measurement, ms",
    "dropped_before": "frames dropped by the live policy just before this one",
}


@dataclass
class FrameRecord:
    """One processed frame: its measurements (``values``: CSV column -> value), timings, and the
    images the renderers need (``image``: native frame, ``mask``: nerve mask at native size)."""

    frame: int
    t_s: float
    status: str
    values: dict[str, Any]
    latency_ms: float = math.nan
    dropped_before: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    truth: np.ndarray | None = field(default=None, repr=False)

    def row(self, extra_columns: list[str] | None = None) -> dict[str, Any]:
        """The CSV row: contract columns, stage timings, then any ``extra_columns`` from ``values``."""
        base = {"frame": self.frame, "t_s": self.t_s, "status": self.status, "latency_ms": self.latency_ms,
                "dropped_before": self.dropped_before}
        row = {c: base[c] if c in base else self.values.get(c) for c in CSV_COLUMNS}
        row.update({f"{s}_ms": self.timings_ms.get(s) for s in STAGES})
        for c in extra_columns or []:
            row[c] = self.values.get(c)
        return row


def format_cell(value: Any) -> str:
    """CSV cell text: empty for None/NaN, 4 significant decimals for floats."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return ""
        return f"{float(value):.4f}".rstrip("0").rstrip(".") if float(value) != 0 else "0"
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    return str(value)
