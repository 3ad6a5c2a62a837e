"""The per-frame CSV: a contract other tools read; flushed at least once a second."""

from __future__ import annotations

import csv
import logging
import os
import time
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
    :func:`realtime.record.extra_columns`). Rows are flushed to the OS at least every ``flush_s``
    seconds and on :meth:`close`, so a crash loses at most that much; ``close`` also fsyncs.
    """

    name = "CSV"

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
                 extra_columns: Sequence[str] | None = None, flush_s: float = 1.0) -> None:
        self.path = Path(path)
        self.paths = {"csv": self.path}
        self.name = f"CSV {self.path}"
        self.metadata = dict(metadata or {})
        self.extra_columns = list(extra_columns) if extra_columns is not None else None
        self.flush_s = flush_s
        self.rows = 0
        self.columns: list[str] = []
        self._fh = None

    def open(self, run: RunInfo) -> None:
        if self.extra_columns is None:
            self.extra_columns = tracker_columns_beyond_contract(run.tracker.columns())
        self._start()

    def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = csv_columns(self.extra_columns or [])
        self._fh = open(self.path, "w", newline="")
        self._fh.write(FORMAT_LINE + "\n")
        for key, value in self.metadata.items():
            self._fh.write(f"# {key}: {value}\n")
        for col in self.columns:
            unit = COLUMN_UNITS.get(col, "ms, time spent in this stage" if col in STAGE_COLUMNS else "")
            self._fh.write(f"# {col}: {unit}\n")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(self.columns)
        self._fh.flush()
        self._last_flush = time.monotonic()

    def write(self, record: FrameRecord) -> None:
        if self._fh is None:  # used without a run (tests, other tools): the contract columns only
            self._start()
        self._writer.writerow(csv_row(record, self.columns))
        self.rows += 1
        now = time.monotonic()
        if now - self._last_flush >= self.flush_s:
            self._fh.flush()
            self._last_flush = now

    def close(self) -> None:
        if self._fh is None or self._fh.closed:
            return
        self._fh.flush()
        try:
            os.fsync(self._fh.fileno())
        except OSError:
            pass
        self._fh.close()
        log.info("wrote %d rows to %s", self.rows, self.path)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of an mn-seg CSV (comment lines skipped), as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))
