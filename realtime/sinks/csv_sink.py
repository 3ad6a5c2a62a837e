"""The per-frame CSV: a contract other tools read; every row reaches the file whole as it is written."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from realtime.record import COLUMN_UNITS, STAGE_COLUMNS, FrameRecord, csv_columns, csv_row
from realtime.record import extra_columns as tracker_columns_beyond_contract
from realtime.sinks.base import RunInfo, Sink

log = logging.getLogger(__name__)

FORMAT_LINE = "# mn-seg per-frame measurements, format 1"


class CsvSink(Sink):
    """Writes one row per processed frame.

    The file starts with ``#`` comment lines (format, run metadata such as model, backend and
    calibration, then each column's meaning and unit), then the header row. The columns are the
    contract's, the stage timings, then ``extra_columns`` (default: the run's tracker's other fields,
    :func:`realtime.record.extra_columns`).

    Crash-safe: each row is formatted whole and handed to the OS in one ``write`` (no Python buffer),
    so a crash or SIGKILL leaves every row written so far and never half a row. When a write fails
    (disk full, the folder gone), the part of the row that did reach the file is cut off again
    (``ftruncate`` to the last whole row, and the write position with it, so a later row follows the last
    whole one with no gap) before the error is raised; :meth:`close` fsyncs.
    """

    name = "CSV"

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
                 extra_columns: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.paths = {"csv": self.path}
        self.name = f"CSV {self.path}"
        self.metadata = dict(metadata or {})
        self.extra_columns = list(extra_columns) if extra_columns is not None else None
        self.rows = 0
        self.columns: list[str] = []
        self._fd: int | None = None
        self._size = 0  # bytes of whole rows in the file
        self._line = io.StringIO()
        self._writer = csv.writer(self._line)

    def open(self, run: RunInfo) -> None:
        if self.extra_columns is None:
            self.extra_columns = tracker_columns_beyond_contract(run.tracker.columns())
        self._start()

    def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = csv_columns(self.extra_columns or [])
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._size = 0
        head = [FORMAT_LINE + "\n"] + [f"# {key}: {value}\n" for key, value in self.metadata.items()]
        for col in self.columns:
            unit = COLUMN_UNITS.get(col, "ms, time spent in this stage" if col in STAGE_COLUMNS else "")
            head.append(f"# {col}: {unit}\n")
        self._append("".join(head) + self._format(self.columns))

    def _format(self, values: Sequence[Any]) -> str:
        self._line.seek(0)
        self._line.truncate()
        self._writer.writerow(values)
        return self._line.getvalue()

    def _append(self, text: str) -> None:
        """Write ``text`` whole, or cut the file back to its last whole row and raise."""
        data = text.encode("utf-8")
        done = 0  # os.write may write part (the disk filling up) and fail on the next call
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)  # the next row goes right after the last whole one
            except OSError:
                pass
            if exc.filename is None:
                exc.filename = str(self.path)
            raise
        self._size += len(data)

    def write(self, record: FrameRecord) -> None:
        if self._fd is None:  # used without a run (tests, other tools): the contract columns only
            self._start()
        self._append(self._format(csv_row(record, self.columns)))
        self.rows += 1

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
        log.info("wrote %d rows to %s", self.rows, self.path)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of an mn-seg CSV (comment lines skipped), as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))
