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


# --- found by mutation testing (docs/mutation-testing.md)

import logging
import os
import stat

import pytest

from realtime.sinks.base import RunControl, RunInfo
from realtime.sinks.csv_sink import FORMAT_LINE


class ColumnsTracker:
    calibration = None

    def columns(self) -> list[str]:
        return ["frame", "n_detections", "displacement_px"]  # "frame" is a contract column: not repeated


def test_header_comments_and_columns_in_order(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "m.csv"  # folders created
    sink = CsvSink(path, metadata={"model": "lunet", "backend": "fake"})
    assert sink.name == f"CSV {path}" and sink.paths == {"csv": path} and sink.rows == 0 and sink.columns == []
    sink.write(record(0))
    sink.close()
    lines = path.read_text().splitlines()
    assert lines[0] == FORMAT_LINE == "# mn-seg per-frame measurements, format 1"
    assert lines[1:3] == ["# model: lunet", "# backend: fake"]
    assert "# infer_ms: ms, time spent in this stage" in lines
    assert "# frame: source frame index (0-based; gaps are frames the live policy dropped)" in lines
    header = next(line for line in lines if not line.startswith("#"))
    assert header == ",".join(CSV_COLUMNS + STAGE_COLUMNS) and len(lines) == 3 + len(sink.columns) + 2
    assert sink.rows == 1


def test_open_takes_the_trackers_other_columns(tmp_path: Path) -> None:
    run = RunInfo(source=None, engine=None, tracker=ColumnsTracker(), control=RunControl(), fps=24.0,
                  calibrated=False)
    sink = CsvSink(tmp_path / "m.csv")
    sink.open(run)
    sink.write(record(3))
    sink.close()
    assert sink.extra_columns == ["n_detections", "displacement_px"]
    assert sink.columns == CSV_COLUMNS + STAGE_COLUMNS + ["n_detections", "displacement_px"]
    text = (tmp_path / "m.csv").read_text()
    assert "# n_detections: \n" in text  # a column without a documented unit: an empty unit
    (row,) = read_csv(tmp_path / "m.csv")
    assert row["n_detections"] == "1" and row["displacement_px"] == "3"
    given = CsvSink(tmp_path / "g.csv", extra_columns=[])
    given.open(run)  # columns given: the tracker's are not added
    given.close()
    assert given.columns == CSV_COLUMNS + STAGE_COLUMNS


def test_an_existing_file_is_replaced_not_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("old\n" * 10000)
    sink = CsvSink(path)
    sink.write(record(0))
    sink.close()
    assert path.read_text().startswith(FORMAT_LINE) and "old" not in path.read_text()
    os.remove(path)
    umask = os.umask(0)
    os.umask(umask)
    CsvSink(path).close()
    CsvSink(path).write(record(0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask  # rw-r--r--, less what the umask takes


def test_a_second_failure_after_a_partial_write_cuts_back_to_the_last_whole_row(tmp_path: Path, monkeypatch) -> None:
    """Two rows then a failing one, then a whole row again: the file holds exactly the whole rows
    (the size of whole rows is kept across writes)."""
    import errno

    import realtime.sinks.csv_sink as csv_sink

    path = tmp_path / "m.csv"
    sink = CsvSink(path)
    sink.write(record(0))
    sink.write(record(1))
    real_write = os.write
    calls = []

    def flaky(fd: int, data: bytes) -> int:
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, data[:5])
        raise OSError(errno.EIO, os.strerror(errno.EIO), "given.csv")

    monkeypatch.setattr(csv_sink.os, "write", flaky)
    with pytest.raises(OSError) as info:
        sink.write(record(2))
    assert info.value.filename == "given.csv"  # a file name the error already has is kept
    monkeypatch.undo()
    assert sink.rows == 2
    sink.write(record(3))
    sink.close()
    assert [r["frame"] for r in read_csv(path)] == ["0", "1", "3"] and sink.rows == 3


def test_a_failing_truncate_still_raises_the_write_error(tmp_path: Path, monkeypatch) -> None:
    import errno

    import realtime.sinks.csv_sink as csv_sink

    sink = CsvSink(tmp_path / "m.csv")
    sink.write(record(0))

    def broken(*a) -> None:
        raise OSError(errno.EIO, "truncate failed")

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(csv_sink.os, "write", full)
    monkeypatch.setattr(csv_sink.os, "ftruncate", broken)
    with pytest.raises(OSError, match="No space left on device"):
        sink.write(record(1))
    monkeypatch.undo()
    sink.close()


def test_close_fsyncs_closes_once_and_logs(tmp_path: Path, monkeypatch, caplog) -> None:
    import realtime.sinks.csv_sink as csv_sink

    synced, closed = [], []
    real_close = os.close
    monkeypatch.setattr(csv_sink.os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr(csv_sink.os, "close", lambda fd: (closed.append(fd), real_close(fd)))
    sink = CsvSink(tmp_path / "m.csv")
    sink.close()  # never opened: nothing to do
    assert synced == closed == []
    sink.write(record(0))
    fd = sink._fd
    with caplog.at_level(logging.INFO, logger="realtime.sinks.csv_sink"):
        sink.close()
        sink.close()
    assert synced == closed == [fd] and sink._fd is None
    assert [r.getMessage() for r in caplog.records] == [f"wrote 1 rows to {tmp_path / 'm.csv'}"]


def test_a_failing_fsync_still_closes(tmp_path: Path, monkeypatch) -> None:
    import errno

    import realtime.sinks.csv_sink as csv_sink

    def no_sync(fd: int) -> None:
        raise OSError(errno.EINVAL, "fsync not supported")

    sink = CsvSink(tmp_path / "m.csv")
    sink.write(record(0))
    fd = sink._fd
    monkeypatch.setattr(csv_sink.os, "fsync", no_sync)
    sink.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    assert len(read_csv(tmp_path / "m.csv")) == 1


def test_read_csv_skips_comments_only(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'# a comment\r\na,b\r\n"1,5",#2\r\n# another\r\n"x\r\ny",4\r\n')
    assert read_csv(path) == [{"a": "1,5", "b": "#2"}, {"a": "x\r\ny", "b": "4"}]  # a quoted cell kept as it is


def test_short_writes_are_completed_without_repeating_bytes(tmp_path: Path, monkeypatch) -> None:
    """The OS may take part of a buffer per call (a pipe, a nearly full disk): the rest is written after it."""
    import realtime.sinks.csv_sink as csv_sink

    real_write = os.write
    monkeypatch.setattr(csv_sink.os, "write", lambda fd, data: real_write(fd, data[:7]))
    sink = CsvSink(tmp_path / "m.csv", metadata={"model": "lunet"})
    sink.write(record(0))
    sink.write(record(1))
    sink.close()
    monkeypatch.undo()
    reference = CsvSink(tmp_path / "r.csv", metadata={"model": "lunet"})
    reference.write(record(0))
    reference.write(record(1))
    reference.close()
    assert (tmp_path / "m.csv").read_bytes() == (tmp_path / "r.csv").read_bytes()
