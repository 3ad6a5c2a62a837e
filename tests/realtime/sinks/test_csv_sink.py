"""realtime.sinks.csv_sink and the CSV cells of realtime.record: the contract, units, flushing."""

from __future__ import annotations

from pathlib import Path

from realtime.record import CSV_COLUMNS, STAGE_COLUMNS, format_cell
from realtime.sinks.csv_sink import CsvSink, read_csv
from tests.realtime.sinks._helpers import record


def test_csv_contract_units_and_flush(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    sink = CsvSink(path, metadata={"calibration": "uncalibrated", "model": "lunet"}, flush_s=0.0)
    sink.write(record(0))
    # flushed as it goes: readable before close
    rows = read_csv(path)
    assert len(rows) == 1 and list(rows[0].keys()) == CSV_COLUMNS + STAGE_COLUMNS
    sink.write(record(1, status="no_detection", area=None))
    sink.close()
    text = path.read_text()
    assert "# calibration: uncalibrated" in text and "# area_mm2:" in text
    assert "# wall_time_utc: wall-clock time" in text and "# source_time_s: the source's own timestamp" in text
    rows = read_csv(path)
    assert rows[0]["area_px"] == "1000" and rows[0]["area_mm2"] == "" and rows[0]["infer_ms"] == "10"
    assert rows[1]["status"] == "no_detection" and rows[1]["area_px"] == ""
    assert rows[1]["dropped_before"] == "1"


def test_format_cell() -> None:
    assert format_cell(None) == "" and format_cell(float("nan")) == ""
    assert format_cell(0.0416666) == "0.0417" and format_cell(3) == "3" and format_cell(2.5) == "2.5"
