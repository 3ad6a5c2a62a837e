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


def _run_info():
    from realtime.sinks.base import RunControl, RunInfo

    return RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=24.0, calibrated=False,
                   metadata={"model": "m"})


def test_partial_summary_while_running_then_the_final_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import realtime.sinks.summary as summary_mod

    clock = {"t": 100.0}
    monkeypatch.setattr(summary_mod.time, "monotonic", lambda: clock["t"])
    path = tmp_path / "s.json"
    sink, run = summary_mod.SummarySink(path, partial_every_s=10.0), _run_info()
    sink.open(run)
    first = json.loads(path.read_text())
    assert first["partial"] is True and first["frames_processed"] == 0 and first["exit_code"] is None
    for i in range(3):
        sink.write(record(i))
    assert json.loads(path.read_text())["frames_processed"] == 0  # not 10 s yet
    clock["t"] += 10.0
    sink.write(record(3))
    partial = json.loads(path.read_text())
    assert partial["frames_processed"] == 4 and "still running after 10 s" in partial["ended_because"]
    run.exit_code, run.reason, run.wall_s = 3, "source failed: cable", 12.0
    sink.close()
    final = json.loads(path.read_text())
    assert final["partial"] is False and final["exit_code"] == 3 and final["ended_because"] == "source failed: cable"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_write_json_is_atomic_and_leaves_no_tmp_when_the_disk_is_full(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    import realtime.sinks.summary as summary_mod

    path = tmp_path / "s.json"
    write_json(path, {"run": 1})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(summary_mod.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_json(path, {"run": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"run": 1}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_plot_without_a_tmp_left_behind_even_when_saving_fails(tmp_path: Path) -> None:
    b = SummaryBuilder()
    for i in range(5):
        b.add(record(i))
    with pytest.raises(Exception):
        plot_series(tmp_path / "p.notaformat", b)
    assert list(tmp_path.iterdir()) == []
    plot_series(tmp_path / "p.png", b)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_memory_stays_flat_over_a_long_run() -> None:
    """An hour at 24 fps is 86,400 frames: past the exact part, adding frames allocates nothing that
    stays (it grew by ~600 bytes a frame when every frame's numbers were kept)."""
    import tracemalloc

    b = SummaryBuilder(warmup=5, exact=1000, plot_points=1000)
    recs = [record(i, area=1000.0 + i % 50, latency=10.0 + i % 7) for i in range(20)]
    for i in range(3000):
        b.add(recs[i % 20])
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(6000):
        b.add(recs[i % 20])
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 20_000, f"{grown} bytes for 6000 frames"
    d = b.to_dict()
    assert d["frames_processed"] == 9000 and d["latency_ms"]["n"] == 8995 and d["latency_ms"]["max"] == 16.0
    assert d["latency_ms"]["p50"] == pytest.approx(13.0, rel=0.005) and d["csa"]["min"] == 1000.0
    assert len(b.series) <= 1000 and "histogram" in d["percentiles"]


def test_events_baselines_and_pauses_in_the_summary(tmp_path: Path) -> None:
    """Baselines set at frames 2 and 7 (b pressed at 5), a 2 s pause before frame 5 that skipped 3 frames:
    the events in frame order, the baseline in effect at the end, the paused frames and seconds apart, and
    the fps over the 8 s that were not paused."""
    from realtime.sinks.base import RunControl, RunInfo
    from realtime.sinks.summary import SummarySink
    from realtime.tracker import Baseline

    class Tracker:
        def describe(self) -> dict:
            return {"baseline": "auto: first 1 s (24 frames)"}

    def baseline(first: int, area: float) -> Baseline:
        return Baseline(area_px=area, area_mm2=None, centroid_x_px=0.0, centroid_y_px=0.0, centroid_x_mm=None,
                        centroid_y_mm=None, n_frames=2, first_frame=first, last_frame=first + 1,
                        source="auto: first 1 s" if first == 0 else "set at frame 5")

    control = RunControl()
    run = RunInfo(source=None, engine=None, tracker=Tracker(), control=control, fps=24.0, calibrated=False)
    sink = SummarySink(tmp_path / "s.json", plot=tmp_path / "p.png")
    sink.open(run)
    first, second = baseline(0, 1000.0), baseline(5, 1100.0)
    pause = control.note("pause", frame=4, t_s=4 / 24, duration_s=2.0)
    for i in range(10):
        r = record(i)
        r.dropped_before = 0
        r.tracked.baseline = None if i < 2 else first if i < 5 else None if i < 7 else second
        if i == 5:
            r.paused_s, r.paused_before = 2.0, 3
            control.note("baseline_requested", frame=5, t_s=5 / 24)
            pause.update(resumed_frame=5, resumed_t_s=5 / 24, frames_skipped=3)
        sink.write(r)
    control.paused_s = 2.0
    run.wall_s = 10.0
    sink.close()
    s = json.loads((tmp_path / "s.json").read_text())
    assert [(e["event"], e["frame"]) for e in s["events"]] == [
        ("baseline_set", 2), ("pause", 4), ("baseline_requested", 5), ("baseline_set", 7)]
    assert s["events"][0]["area_px"] == 1000.0 and s["events"][3]["how"] == "set at frame 5"
    assert s["baseline"] == {"frame": 7, "t_s": 7 / 24, "how": "set at frame 5", "frames": [5, 6], "n_frames": 2,
                             "area_px": 1100.0, "area_mm2": None}
    assert "then set again with the b key" in s["tracker"]["baseline"]
    assert (s["frames_processed"], s["frames_dropped"], s["frames_paused"], s["frames_seen"]) == (10, 0, 3, 13)
    assert s["paused_s"] == 2.0 and s["processing_fps"] == pytest.approx(10 / 8)
    assert sink.builder.gaps == [(4 / 24, 5 / 24)]
    assert cv2.imread(str(tmp_path / "p.png")) is not None


def test_the_plot_breaks_its_lines_across_a_pause() -> None:
    import numpy as np

    from realtime.sinks.summary import _with_gaps

    t = np.array([0.0, 1.0, 2.0, 5.0, 6.0])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    t2, [(y2, label)] = _with_gaps(t, [(y, "CSA")], [(2.0, 5.0)])
    assert t2.tolist() == [0.0, 1.0, 2.0, 3.5, 5.0, 6.0] and label == "CSA"
    assert np.isnan(y2[3]) and y2[[0, 1, 2, 4, 5]].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert _with_gaps(t, [(y, "CSA")], [])[0] is t
