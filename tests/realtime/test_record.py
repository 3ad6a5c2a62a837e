"""realtime.record: the typed record, its CSV columns and cells (the one place that flattens it), the stage timer."""

from __future__ import annotations

import time

from realtime.record import (
    CSV_COLUMNS,
    STAGE_COLUMNS,
    csv_columns,
    csv_row,
    csv_values,
    extra_columns,
    timed,
)
from realtime.tracker import Tracker
from tests.realtime.sinks._helpers import record


def test_columns_contract_stages_then_the_trackers_other_fields() -> None:
    tracker = Tracker(None, fps=24.0, smoothing="ema")
    extra = extra_columns(tracker.columns())
    assert not set(extra) & set(CSV_COLUMNS) and "frame_index" not in extra
    assert extra[:2] == ["n_detections", "frames_since_seen"] and "area_px_smooth" in extra
    assert csv_columns(extra) == CSV_COLUMNS + STAGE_COLUMNS + extra


def test_values_and_cells_from_the_typed_record() -> None:
    r = record(5, latency=12.5)
    values = csv_values(r)
    assert (values["frame"], values["status"], values["area_px"], values["latency_ms"]) == (5, "ok", 1000.0, 12.5)
    assert values["infer_ms"] == 10.0 and values["render_ms"] is None
    row = csv_row(r, csv_columns(["bbox_w"]))
    assert row[:4] == ["5", "0.2083", "ok", "1000"] and row[-1] == "21"
    assert r.area == 1000.0 and not r.calibrated and r.status == "ok" and r.measured
    r.release()
    assert r.image is None and r.mask is None


def test_timed_adds_up() -> None:
    t: dict[str, float] = {}
    with timed(t, "write"):
        time.sleep(0.002)
    with timed(t, "write"):
        pass
    assert 1.5 <= t["write"] < 100
