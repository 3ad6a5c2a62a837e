"""realtime.sinks.csv_sink and the CSV cells of realtime.record: the contract, units, flushing."""

from __future__ import annotations

from pathlib import Path

from realtime.record import CSV_COLUMNS, STAGE_COLUMNS, format_cell
from realtime.sinks.csv_sink import CsvSink, read_csv
from tests.realtime.sinks._helpers import record


def test_csv_contract_units_and_flush(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    sink = CsvSink(path, metadata={"calibration": "uncalibrated", "model": "lunet"})
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


def test_disk_full_mid_row_leaves_only_whole_rows_and_names_the_file(tmp_path: Path, monkeypatch) -> None:
    """The disk fills up in the middle of a row (part of it written, then ENOSPC): the part is cut off
    again, so the file holds the header and whole rows only; the error names the file."""
    import errno
    import os

    import pytest

    import realtime.sinks.csv_sink as csv_sink

    path = tmp_path / "m.csv"
    sink = CsvSink(path)
    for i in range(3):
        sink.write(record(i))
    real_write = os.write

    calls = []

    def full(fd: int, data: bytes) -> int:  # what the OS does when the disk fills: a short write, then ENOSPC
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(csv_sink.os, "write", full)
    with pytest.raises(OSError, match="No space left on device") as info:
        sink.write(record(3))
    monkeypatch.undo()
    assert len(calls) == 2 and str(path) in str(info.value)
    sink.close()
    text = path.read_text()
    assert text.endswith("\n")
    rows = read_csv(path)
    assert [r["frame"] for r in rows] == ["0", "1", "2"]
    assert all(None not in r.values() and len(r) == len(CSV_COLUMNS + STAGE_COLUMNS) for r in rows)


def test_every_row_is_in_the_file_as_soon_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    sink = CsvSink(path)
    for i in range(5):
        sink.write(record(i))
        assert len(read_csv(path)) == i + 1  # nothing held back in a buffer: a SIGKILL here keeps the row
    sink.close()
