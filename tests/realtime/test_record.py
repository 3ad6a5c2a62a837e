"""realtime.record: the typed record, its CSV columns and cells (the one place that flattens it), the stage timer."""

from __future__ import annotations


from realtime.record import (
    COLUMN_UNITS,
    CSV_COLUMNS,
    STAGE_COLUMNS,
    csv_columns,
    csv_row,
    csv_values,
    extra_columns,
    timed,
    utc_iso,
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


def test_timed_adds_up(monkeypatch) -> None:
    import realtime.record as record_mod

    ticks = iter([1_000_000, 3_500_000, 10_000_000, 10_250_000])  # perf_counter_ns at each block's start and end
    fake = type("FakeTime", (), {"perf_counter_ns": staticmethod(lambda: next(ticks))})
    monkeypatch.setattr(record_mod, "time", fake)
    t: dict[str, float] = {"infer": 7.0}
    with timed(t, "write"):
        pass
    with timed(t, "write"):
        pass
    assert t == {"infer": 7.0, "write": 2.75}  # 2.5 ms + 0.25 ms, in milliseconds; other stages untouched


def test_time_columns_wall_clock_utc_and_the_sources_own_timestamp() -> None:
    assert CSV_COLUMNS[-4:-2] == ["wall_time_utc", "source_time_s"]
    assert utc_iso(0.0) == "1970-01-01T00:00:00.000Z"
    assert utc_iso(1715000000.1234) == "2024-05-06T12:53:20.123Z" and utc_iso(None) is None
    r = record(3)
    r.t_wall, r.t_source = 1715000000.5, 12.3456789
    row = dict(zip(CSV_COLUMNS, csv_row(r, CSV_COLUMNS)))
    assert row["wall_time_utc"] == "2024-05-06T12:53:20.500Z" and row["source_time_s"] == "12.3457"
    r.t_source = None
    assert dict(zip(CSV_COLUMNS, csv_row(r, CSV_COLUMNS)))["source_time_s"] == ""


def test_window_column_says_what_placed_the_window() -> None:
    assert CSV_COLUMNS[-2] == "window"
    r = record(4)
    assert dict(zip(CSV_COLUMNS, csv_row(r, CSV_COLUMNS)))["window"] == ""  # a model without a window
    r.window = "tracked"
    assert dict(zip(CSV_COLUMNS, csv_row(r, CSV_COLUMNS)))["window"] == "tracked"


def test_fused_column_says_whether_the_mask_came_from_fused_probabilities() -> None:
    assert CSV_COLUMNS[-1] == "fused" and "--fusion" in COLUMN_UNITS["fused"]
    r = record(4)
    assert dict(zip(CSV_COLUMNS, csv_row(r, CSV_COLUMNS)))["fused"] == ""  # fusion off
    r.fused = True
    assert dict(zip(CSV_COLUMNS, csv_row(r, CSV_COLUMNS)))["fused"] == "1"
    r.fused = False
    assert dict(zip(CSV_COLUMNS, csv_row(r, CSV_COLUMNS)))["fused"] == "0"


def test_a_frames_wall_time_follows_its_capture_time(monkeypatch) -> None:
    import numpy as np

    from realtime.frame import Frame

    import realtime.frame as frame_mod

    clocks = {"time": staticmethod(lambda: 1_715_000_000.0), "monotonic": staticmethod(lambda: 500.0)}
    monkeypatch.setattr(frame_mod, "time", type("FakeTime", (), clocks))
    f = Frame(0, 498.0, 0.0, np.zeros((2, 2), np.uint8))  # captured 2 s ago on the monotonic clock
    assert f.t_wall == 1_714_999_998.0 and f.t_source is None
    assert Frame(0, 0.0, 0.0, np.zeros((2, 2), np.uint8), t_wall=5.0, t_source=7.0).t_wall == 5.0


def test_paused_columns_mark_the_first_row_after_a_pause() -> None:
    from realtime.record import COLUMN_UNITS

    at = CSV_COLUMNS.index("dropped_before")
    assert CSV_COLUMNS[at + 1:at + 3] == ["paused_before", "paused_s"]
    r = record(3)
    assert (r.paused_before, r.paused_s) == (0, 0.0)
    r.paused_before, r.paused_s = 12, 4.5
    row = dict(zip(CSV_COLUMNS, csv_row(r, CSV_COLUMNS)))
    assert (row["paused_before"], row["paused_s"], row["dropped_before"]) == ("12", "4.5", "1")
    assert "not dropped" in COLUMN_UNITS["paused_before"] and "paused" in COLUMN_UNITS["paused_s"]


# --- found by mutation testing (docs/mutation-testing.md)

def test_format_cell_numbers() -> None:
    import math

    import numpy as np

    from realtime.record import format_cell

    assert format_cell(0.0) == "0" and format_cell(-0.0) == "0"  # zero is "0", never "-0" or empty
    assert format_cell(1.0) == "1" and format_cell(-1.0) == "-1" and format_cell(2.5) == "2.5"
    assert format_cell(12.345678) == "12.3457" and format_cell(100.0) == "100" and format_cell(0.00004) == "0"
    assert format_cell(-0.00001) == "0" and format_cell(np.float32(-0.00004)) == "0"
    assert format_cell(-0.00005) == "-0.0001"
    assert format_cell(np.float32(0.25)) == "0.25" and format_cell(np.float64(1.0)) == "1"
    assert format_cell(math.nan) == "" and format_cell(math.inf) == "" and format_cell(None) == ""
    assert format_cell(True) == "1" and format_cell(np.bool_(False)) == "0"
    assert format_cell(7) == "7" and format_cell("ok") == "ok"
