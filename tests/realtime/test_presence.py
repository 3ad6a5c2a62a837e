"""The presence gate: drawn shapes with known area, flattening and circularity are accepted or
rejected for the documented reason, and the tracker turns a rejection into no measurement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realtime.calibration import Calibration
from realtime.morphometry import measure_mask
from realtime.postprocess import postprocess
from realtime.presence import PresenceGate, make_presence_gate
from realtime.tracker import TrackStatus, Tracker
from train.errors import UserError

W, H = 400, 300  # frame area 120,000 px: 0.2 % = 240 px, 6.5 % = 7,800 px


def ellipse(a: int, b: int, prob: float = 0.9, size: tuple[int, int] = (W, H)) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), np.float32)
    cv2.ellipse(mask, (size[0] // 2, size[1] // 2), (a, b), 0, 0, 360, prob, -1)
    return mask


def check(mask: np.ndarray, gate: PresenceGate = PresenceGate(), cal: Calibration | None = None,
          prob: np.ndarray | None = None) -> str | None:
    m = measure_mask((mask > 0.5).astype(np.uint8), cal, prob if prob is not None else mask)
    return gate.check(m, (mask.shape[1], mask.shape[0]), cal)


def test_a_typical_nerve_passes() -> None:
    # 1 % of the frame, flattening 3, confidence 0.9: the dataset's median nerve
    assert check(ellipse(60, 20)) is None


@pytest.mark.parametrize("a,b,reason", [
    (6, 6, "area"),          # 113 px = 0.09 % of the frame
    (80, 60, "area"),        # 15,000 px = 12.6 %
    (120, 8, "flattening"),  # FR 15
])
def test_implausible_shapes_are_rejected_with_the_reason(a: int, b: int, reason: str) -> None:
    assert check(ellipse(a, b)).startswith(reason)


def test_irregular_shape_fails_circularity() -> None:
    mask = np.zeros((H, W), np.float32)
    for k in range(6):  # a comb: large perimeter for its area
        mask[100:200, 100 + 20 * k:104 + 20 * k] = 0.9
    mask[196:200, 100:204] = 0.9
    assert check(mask).startswith("circularity")


def test_low_confidence_is_rejected() -> None:
    assert check(ellipse(60, 20, prob=0.45), prob=ellipse(60, 20, prob=0.45)) is not None
    gate = PresenceGate(min_confidence=0.3)
    m = measure_mask((ellipse(60, 20) > 0.5).astype(np.uint8), None, ellipse(60, 20, prob=0.4))
    assert gate.check(m, (W, H)) is None
    m = measure_mask((ellipse(60, 20) > 0.5).astype(np.uint8), None, ellipse(60, 20, prob=0.2))
    assert gate.check(m, (W, H)).startswith("confidence")


def test_calibrated_bounds_in_mm2() -> None:
    area_px = int((ellipse(60, 20) > 0.5).sum())  # about 3,800 px
    assert 3700 < area_px < 3900
    assert check(ellipse(60, 20), cal=Calibration(0.1, 0.1)) is None  # ~38 mm2 <= 40
    assert check(ellipse(60, 20), cal=Calibration(0.2, 0.2)) == f"area {area_px * 0.04:.1f} mm2 > 40 mm2"
    assert check(ellipse(60, 20), cal=Calibration(0.02, 0.02)) == f"area {area_px * 0.0004:.1f} mm2 < 2 mm2"


def test_bounds_relative_to_the_frame_hold_at_any_capture_size() -> None:
    small = ellipse(30, 10, size=(W // 2, H // 2))
    assert check(small) is None  # the same nerve captured at half the size


def test_gate_settings_are_validated() -> None:
    with pytest.raises(UserError):
        PresenceGate(min_area_frac=0.1, max_area_frac=0.05)
    with pytest.raises(UserError):
        PresenceGate(max_flattening=-1)
    assert make_presence_gate("off") is None
    assert make_presence_gate("on", 0.7).min_confidence == 0.7
    with pytest.raises(UserError):
        make_presence_gate("maybe")
    assert PresenceGate().describe()["max_area_frac"] == 0.065


def test_tracker_rejection_is_a_miss_with_the_reason_in_the_row() -> None:
    tracker = Tracker(None, 10.0, presence=PresenceGate(), lost_after_frames=1)
    nerve, speck = (postprocess(ellipse(60, 20), (W, H), min_area_px=20),
                    postprocess(ellipse(6, 6), (W, H), min_area_px=20))
    r = [tracker.update(p, i, i / 10) for i, p in enumerate([nerve, speck, speck, speck, nerve])]
    assert [x.status for x in r] == [TrackStatus.OK, TrackStatus.NO_DETECTION, TrackStatus.LOST, TrackStatus.LOST,
                                     TrackStatus.REACQUIRED]
    assert r[1].measurement is None and r[1].nerve_mask is None and r[1].rejected.startswith("area")
    assert r[1].n_detections == 1
    row = r[1].to_row()
    assert row["rejected"].startswith("area") and row["area_px"] is None
    assert list(row) == tracker.columns() and tracker.columns()[-1] == "rejected"
    assert r[0].to_row()["rejected"] is None
    assert tracker.describe()["presence_gate"]["min_area_frac"] == 0.002


def test_no_gate_measures_everything_and_has_no_column() -> None:
    tracker = Tracker(None, 10.0)
    r = tracker.update(postprocess(ellipse(6, 6), (W, H), min_area_px=20), 0, 0.0)
    assert r.status is TrackStatus.OK and "rejected" not in r.to_row() and "rejected" not in tracker.columns()
