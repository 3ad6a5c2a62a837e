"""realtime.sinks.summary: latency statistics, the summary's arithmetic, the JSON and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from realtime.sinks.summary import (
    SummaryBuilder,
    latency_stats,
    plot_series,
    write_json,
)
from tests.realtime.sinks._helpers import record


def test_latency_stats_known_values() -> None:
    s = latency_stats(list(range(1, 101)))  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01) and s["max"] == 100
    assert s["mean"] == pytest.approx(50.5) and s["n"] == 100
    assert latency_stats([])["p50"] is None


def test_summary_counts_and_deformation(tmp_path: Path) -> None:
    b = SummaryBuilder(warmup=1)
    areas = [1000.0, 800.0, None, 1200.0]
    statuses = ["ok", "ok", "no_detection", "reacquired"]
    for i, (a, st) in enumerate(zip(areas, statuses)):
        b.add(record(i, status=st, area=a, latency=10.0 * (i + 1)))
    d = b.to_dict(model="lunet")
    assert d["frames_processed"] == 4 and d["frames_dropped"] == 2 and d["frames_seen"] == 6
    assert d["status_counts"] == {"ok": 2, "no_detection": 1, "reacquired": 1}
    assert d["csa"] == {"min": 800.0, "median": 1000.0, "max": 1200.0} and d["units"]["area"] == "px"
    assert d["deformation"]["csa_max_over_min"] == pytest.approx(1.5)
    assert d["latency_ms"]["n"] == 3 and d["latency_ms"]["max"] == 40.0  # the first frame is warm-up
    assert d["max_displacement"] == 3.0 and d["model"] == "lunet"
    write_json(tmp_path / "s.json", d)
    assert json.loads((tmp_path / "s.json").read_text())["csa"]["max"] == 1200.0
    plot_series(tmp_path / "p.png", b, title="test")
    assert cv2.imread(str(tmp_path / "p.png")) is not None
