"""A small typed FrameRecord for the sink tests."""

from __future__ import annotations

import cv2
import numpy as np

from realtime.morphometry import Measurement
from realtime.record import FrameRecord
from realtime.tracker import TrackedMeasurement, TrackStatus


def record(i: int, status: str = "ok", area: float | None = 1000.0, latency: float = 20.0) -> FrameRecord:
    img = np.full((48, 64), 80, np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    cv2.circle(mask, (32, 24), 10, 1, -1)
    measurement = None if area is None else Measurement(
        area_px=area, area_mm2=None, perimeter_px=60.0, perimeter_mm=None, flattening_ratio=1.5, circularity=0.9,
        centroid_x_px=32.0, centroid_y_px=24.0, centroid_x_mm=None, centroid_y_mm=None, bbox=(22, 14, 21, 21),
        n_components=1, confidence=0.9)
    tracked = TrackedMeasurement(frame_index=i, t_s=i / 24, status=TrackStatus(status), measurement=measurement,
                                 n_detections=int(area is not None), nerve_labels=(1,) if area else (),
                                 frames_since_seen=0, displacement_px=float(i), csa_change_pct=0.0)
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0] if area else ()
    return FrameRecord(frame=i, t_s=i / 24, tracked=tracked, latency_ms=latency, dropped_before=i % 2,
                       timings_ms={"infer": 10.0, "preprocess": 1.0}, contours=tuple(contours), image=img,
                       mask=mask if area else None)
