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


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md)
# ---------------------------------------------------------------------------------------------


def test_the_partial_summary_s_time_fps_and_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The partial summary a killed run leaves: its wall time (ms precision), the fps over the time not paused,
    the output files in the summary's order; written without fsync (every 10 s), the final one with it."""
    import os

    import realtime.sinks.summary as summary_mod

    clock, synced = {"t": 100.0}, []
    monkeypatch.setattr(summary_mod.time, "monotonic", lambda: clock["t"])
    real_fsync = os.fsync
    monkeypatch.setattr(summary_mod.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "s.json"
    sink, run = summary_mod.SummarySink(path, partial_every_s=10.0), _run_info()
    run.outputs.update(zeta=tmp_path / "z.bin", masks=tmp_path / "m", plot=tmp_path / "p.png", summary=path,
                       video=tmp_path / "o.mp4", csv=tmp_path / "m.csv")
    sink.open(run)
    opened = json.loads(path.read_text())
    assert opened["wall_time_s"] == 0.0 and opened["processing_fps"] is None  # no time yet: no fps
    assert list(opened["outputs"]) == ["csv", "video", "summary", "plot", "masks", "zeta"]
    assert opened["outputs"]["csv"] == str(tmp_path / "m.csv")
    for i in range(4):
        sink.write(record(i))
    run.control.paused_s = 2.0
    clock["t"] += 12.34567
    sink.write(record(4))
    partial = json.loads(path.read_text())
    assert partial["wall_time_s"] == 12.346 and partial["paused_s"] == 2.0
    assert partial["processing_fps"] == pytest.approx(5 / 10.34567)
    assert synced == []  # partial summaries: no fsync
    clock["t"] += 10.0
    run.control.paused_s = clock["t"] - 100.0  # paused for all of its time so far: no time to divide by
    sink.write(record(5))
    assert json.loads(path.read_text())["processing_fps"] is None
    run.wall_s = 30.0
    sink.close()
    final = json.loads(path.read_text())
    assert len(synced) == 1 and list(final["outputs"]) == ["csv", "video", "summary", "plot", "masks", "zeta"]


def test_write_json_makes_folders_keeps_numpy_values_and_its_layout(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "a" / "b" / "s.json"
    data = {"n": np.int64(3), "x": np.float32(0.5), "v": np.arange(3, dtype=np.uint8), "p": tmp_path / "q"}
    write_json(path, data)
    assert path.read_text() == json.dumps({"n": 3, "x": 0.5, "v": [0, 1, 2], "p": str(tmp_path / "q")},
                                          indent=2) + "\n"
    with pytest.raises(TypeError, match="not JSON-able: set"):
        write_json(path, {"s": {1, 2}})
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.json"]  # the old file, no tmp


def test_write_json_reports_the_real_error_when_its_temporary_file_cannot_be_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    import realtime.sinks.summary as summary_mod

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(summary_mod, "open", full, raising=False)
    with pytest.raises(OSError) as caught:
        write_json(tmp_path / "s.json", {"run": 1})
    assert caught.value.errno == errno.ENOSPC  # not the FileNotFoundError of removing a tmp never made
    assert list(tmp_path.iterdir()) == []


def test_reserve_space_holds_exactly_its_bytes_on_the_folder_s_disk_in_a_hidden_unlinked_file(tmp_path: Path) -> None:
    import os

    from realtime.sinks.summary import reserve_space

    fd = reserve_space(tmp_path, 64 * 1024)
    try:
        held = os.fstat(fd)
        assert held.st_size == 64 * 1024 and held.st_blocks * 512 >= 64 * 1024 and held.st_nlink == 0
        assert held.st_dev == os.stat(tmp_path).st_dev  # the folder's disk, not /tmp's
        name = os.readlink(f"/proc/self/fd/{fd}")
        assert name.startswith(str(tmp_path / ".mn-seg-reserve-")) and name.endswith(" (deleted)")
        assert list(tmp_path.iterdir()) == []
    finally:
        os.close(fd)
    assert reserve_space(tmp_path / "missing", 1024) is None


def _plotted(calibrated: bool, title: str = "a run", events: list | None = None):  # type: ignore[no-untyped-def]
    """A summary of 8 frames (ok ok no_detection no_detection lost reacquired ok ok; areas 1000 + 10 i px,
    i / 100 mm²) and its figure."""
    import dataclasses

    from realtime.sinks.summary import plot_figure

    b = SummaryBuilder(calibrated=calibrated)
    statuses = ["ok", "ok", "no_detection", "no_detection", "lost", "reacquired", "ok", "ok"]
    for i, status in enumerate(statuses):
        measured = status in ("ok", "reacquired")
        r = record(i, status=status, area=1000.0 + 10 * i if measured else None)
        if measured:
            r.tracked.measurement = dataclasses.replace(r.tracked.measurement, area_mm2=i / 100,
                                                        flattening_ratio=1.0 + i / 10, circularity=0.5 + i / 100)
        b.add(r)
    return b, plot_figure(b, title=title, events=events)


def _r(x):  # type: ignore[no-untyped-def]
    """``x`` with every float rounded to 9 decimals (lists and tuples as lists), to compare drawn coordinates."""
    if isinstance(x, (list, tuple)):
        return [_r(v) for v in x]
    return round(float(x), 9) if isinstance(x, float) else x


def _spans(ax) -> list:  # type: ignore[no-untyped-def]
    """[x0, x1, face RGB, hatch] of the vertical spans drawn on ``ax``."""
    return _r([(p.get_x(), p.get_x() + p.get_width(), tuple(float(c) for c in p.get_facecolor()[:3]), p.get_hatch())
               for p in ax.patches])


@pytest.mark.parametrize("calibrated", [True, False], ids=["calibrated", "uncalibrated"])
def test_the_plot_s_panels_series_labels_and_status_bands(calibrated: bool) -> None:
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_rgb

    from realtime.sinks.summary import STATUS_BANDS

    b, fig = _plotted(calibrated)
    try:
        axes = fig.axes
        assert [ax.get_ylabel() for ax in axes] == ["CSA (mm²)" if calibrated else "CSA (px, uncalibrated)",
                                                   "flattening ratio", "circularity"]
        assert [ax.get_xlabel() for ax in axes] == ["", "", "time (s)"] and axes[0].get_title() == "a run"
        assert axes[0].get_shared_x_axes().joined(axes[0], axes[2])
        t = np.arange(8) / 24
        measured = np.array([1, 1, 0, 0, 0, 1, 1, 1], bool)
        expected = [np.where(measured, np.arange(8) / 100 if calibrated else 1000.0 + 10 * np.arange(8), np.nan),
                    np.where(measured, 1.0 + np.arange(8) / 10, np.nan),
                    np.where(measured, 0.5 + np.arange(8) / 100, np.nan)]
        for ax, y in zip(axes, expected):
            (line,) = ax.lines
            np.testing.assert_allclose(line.get_xdata(), t)
            np.testing.assert_allclose(line.get_ydata(), y)
            assert _spans(ax) == _r([(2 / 24, 4 / 24, to_rgb(STATUS_BANDS["no_detection"]), None),
                                     (4 / 24, 5 / 24, to_rgb(STATUS_BANDS["lost"]), None),
                                     (5 / 24, 6 / 24, to_rgb(STATUS_BANDS["reacquired"]), None)])
        legend = axes[0].get_legend()
        assert [x.get_text() for x in legend.get_texts()] == ["no_detection", "lost", "reacquired"]
        assert _r([tuple(float(c) for c in h.get_facecolor()[:3]) for h in legend.legend_handles]) == _r([
            to_rgb(STATUS_BANDS[k]) for k in ("no_detection", "lost", "reacquired")])
        assert len({to_rgb(c) for c in STATUS_BANDS.values()}) == 3  # three bands told apart
        assert all(ax.get_legend() is None for ax in axes[1:])
    finally:
        plt.close(fig)
    _, untitled = _plotted(calibrated, title="")
    assert untitled.axes[0].get_title() == ""
    plt.close(untitled)


def test_the_plot_marks_baselines_requests_snapshots_and_pauses() -> None:
    """Each event a vertical line (or, for a pause, a hatched span) on every panel at its time, one legend entry
    per kind in the order they first happened; each baseline's value a dotted line on the CSA panel from when it
    was set until the next one (the last until the end); events without a time are not drawn."""
    import matplotlib.pyplot as plt

    events = [{"event": "baseline_set", "t_s": 1 / 24, "area_px": 1005.0, "area_mm2": 0.05},
              {"event": "pause", "t_s": 2 / 24, "resumed_t_s": 3 / 24},
              {"event": "snapshot", "t_s": 3 / 24},
              {"event": "roi_requested", "t_s": None},
              {"event": "baseline_requested", "t_s": 5 / 24},
              {"event": "baseline_set", "t_s": 6 / 24, "area_px": 1060.0, "area_mm2": 0.06},
              {"event": "baseline_set", "t_s": None, "area_px": 1.0, "area_mm2": 1.0},
              {"event": "pause", "t_s": 6.5 / 24}]  # a pause that ended the run: hatched to the end
    for calibrated in (False, True):
        _, fig = _plotted(calibrated, events=events)
        try:
            for ax in fig.axes:
                vlines = [(float(line.get_xdata()[0]), line.get_linestyle()) for line in ax.lines[1:]]
                assert _r(vlines) == _r([(1 / 24, "--"), (3 / 24, "-."), (5 / 24, ":"), (6 / 24, "--")])
                assert [[x0, x1, hatch] for x0, x1, _, hatch in _spans(ax) if hatch] == _r(
                    [(2 / 24, 3 / 24, "//"), (6.5 / 24, 7 / 24, "//")])
            lines = [seg.tolist() for c in fig.axes[0].collections for seg in c.get_segments()]
            value = 0.05 if calibrated else 1005.0
            later = 0.06 if calibrated else 1060.0
            assert _r(lines) == _r([[[1 / 24, value], [6 / 24, value]], [[6 / 24, later], [7 / 24, later]]])
            assert not fig.axes[1].collections and not fig.axes[2].collections
            assert [x.get_text() for x in fig.axes[0].get_legend().get_texts()][3:] == [
                "baseline set (its value: dotted)", "paused", "snapshot (s)", "baseline asked for (b)"]
        finally:
            plt.close(fig)


def _reserves() -> list[str]:
    """The folders of this process's space reservations (reserve_space's unlinked files) that are open."""
    import os

    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "/.mn-seg-reserve-" in name:
            names.append(name.rsplit("/.mn-seg-reserve-", 1)[0])
    return names


def test_the_sink_reserves_space_beside_its_files_until_it_closes(tmp_path: Path) -> None:
    from realtime.sinks.summary import SummarySink

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for sink, folder in ((SummarySink(a / "s.json", plot=b / "p.png"), a), (SummarySink(plot=b / "p.png"), b),
                         (SummarySink(), None)):
        run = _run_info()
        sink.open(run)
        assert _reserves() == ([str(folder)] if folder else [])
        run.wall_s = 1.0
        sink.close()
        assert _reserves() == []


def test_the_final_summary_s_fields_from_the_run(tmp_path: Path) -> None:
    """What the final summary takes from the run: its unit (the run's calibration, not the records'), wall time
    (ms precision) and fps (none for a run that had no time), the source's description and error, the output files,
    and the tracker's baseline noted as set again only when the b key asked for one."""
    from realtime.sinks.summary import SummarySink

    class Source:
        error = "cable unplugged"

        def describe(self) -> dict:
            return {"kind": "device", "path": "/dev/video0"}

    class Tracker:
        def describe(self) -> dict:
            return {"baseline": "auto: first 1 s"}

    for calibrated, wall_s, asked in ((True, 2.34567, True), (False, 0.0, False)):
        path = tmp_path / f"{calibrated}.json"
        run = _run_info()
        run.source, run.tracker, run.calibrated, run.wall_s = Source(), Tracker(), calibrated, wall_s
        run.outputs.update(plot=tmp_path / "p.png", csv=tmp_path / "m.csv")
        sink = SummarySink(path)
        sink.open(run)
        for i in range(3):
            sink.write(record(i))  # records that do not say they are calibrated
        if asked:
            run.control.note("baseline_requested", frame=1, t_s=1 / 24)
        sink.close()
        s = json.loads(path.read_text())
        assert s["units"]["area"] == ("mm2" if calibrated else "px")
        assert s["wall_time_s"] == (2.346 if wall_s else 0.0)
        assert s["processing_fps"] == (pytest.approx(3 / 2.34567) if wall_s else None)
        assert s["source_info"] == {"kind": "device", "path": "/dev/video0"} and s["source_error"] == "cable unplugged"
        assert s["outputs"] == {"csv": str(tmp_path / "m.csv"), "plot": str(tmp_path / "p.png")}
        assert s["tracker"]["baseline"] == ("auto: first 1 s; then set again with the b key (see baseline and events)"
                                            if asked else "auto: first 1 s")


def test_the_plot_s_title_size_and_closed_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot is titled with the run's source, with a warning when the model has random weights; it is 1000 x 700
    pixels with the run's events on it, and its figure is closed once saved (a long session would leak them)."""
    import matplotlib.pyplot as plt

    import realtime.sinks.summary as summary_mod

    figures = []
    real = summary_mod.plot_figure
    monkeypatch.setattr(summary_mod, "plot_figure", lambda *a, **k: figures.append(real(*a, **k)) or figures[-1])
    for notes, title in ((None, "clip.mp4"), ("random weights (no checkpoint)",
                                              "clip.mp4  (RANDOM WEIGHTS: speed only, the masks are meaningless)")):
        run = _run_info()
        run.metadata.update(source="clip.mp4", engine_notes=notes)
        sink = summary_mod.SummarySink(tmp_path / "s.json", plot=tmp_path / "p.png")
        sink.open(run)
        for i in range(3):
            sink.write(record(i))
        run.control.note("snapshot", frame=1, t_s=1 / 24)
        run.wall_s = 1.0
        sink.close()
        fig = figures[-1]
        assert fig.axes[0].get_title() == title
        assert "snapshot (s)" in [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
        assert cv2.imread(str(tmp_path / "p.png")).shape == (700, 1000, 3)
        assert plt.get_fignums() == []
    summary_mod.plot_series(tmp_path / "q.png", SummaryBuilder(), title="kept")  # an empty run: still a figure
    assert figures[-1].axes[0].get_title() == "kept" and plt.get_fignums() == []


def test_reserve_space_says_why_it_could_not(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from realtime.sinks.summary import reserve_space

    with caplog.at_level(logging.DEBUG, logger="realtime.sinks.summary"):
        assert reserve_space(tmp_path / "missing", 1024) is None
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"no space reserved in {tmp_path / 'missing'}: [Errno 2] No such file or directory")


def test_status_spans_last_until_the_next_point() -> None:
    """Runs of equal statuses as (status, start, end): each lasts until the next run's first point, the last one a
    median frame step past its last point (0.04 s for a single point); unknown statuses (NaN) are left out."""
    import numpy as np

    from realtime.sinks.summary import _status_spans

    ok, nd, lost = 0.0, 1.0, 2.0
    t = np.array([0.0, 0.5, 1.0, 2.0, 2.5, 3.0])
    assert _status_spans(t, np.array([nd, ok, ok, lost, lost, nd])) == [
        ("no_detection", 0.0, 0.5), ("ok", 0.5, 2.0), ("lost", 2.0, 3.0), ("no_detection", 3.0, 3.5)]
    assert _status_spans(t, np.array([nd, nd, np.nan, np.nan, ok, ok])) == [
        ("no_detection", 0.0, 1.0), ("ok", 2.5, 3.5)]
    assert _status_spans(np.array([7.0]), np.array([lost])) == [("lost", 7.0, 7.04)]
    assert _status_spans(np.array([0.0, 0.5]), np.array([ok, lost])) == [("ok", 0.0, 0.5), ("lost", 0.5, 1.0)]
    uneven = np.array([0.0, 1.0, 1.5, 4.0])  # the next run's first point ends a run, not a step
    assert _status_spans(uneven, np.array([ok, ok, nd, lost])) == [("ok", 0.0, 1.5), ("no_detection", 1.5, 4.0),
                                                                   ("lost", 4.0, 5.0)]
    assert _status_spans(np.array([]), np.array([])) == []


def test_the_plot_breaks_at_a_pause_and_marks_three_baselines_each_until_the_next() -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from realtime.sinks.summary import plot_figure

    b = SummaryBuilder()
    for i in range(6):
        r = record(i, area=1000.0 + i)
        if i == 3:
            r.paused_s, r.paused_before = 5.0, 2  # a pause between frames 2 and 3
        b.add(r)
    sets = [{"event": "baseline_set", "t_s": k / 24, "area_px": 900.0 + k, "area_mm2": None} for k in (0, 2, 4)]
    fig = plot_figure(b, events=sets)
    try:
        line = fig.axes[0].lines[0]
        assert np.isnan(line.get_ydata()[3]) and line.get_xdata()[3] == pytest.approx(2.5 / 24)
        segments = [seg.tolist() for c in fig.axes[0].collections for seg in c.get_segments()]
        assert _r(segments) == _r([[[0.0, 900.0], [2 / 24, 900.0]], [[2 / 24, 902.0], [4 / 24, 902.0]],
                                   [[4 / 24, 904.0], [5 / 24, 904.0]]])
    finally:
        plt.close(fig)
    empty = plot_figure(SummaryBuilder(), events=[{"event": "pause", "t_s": 0.0}])  # nothing measured: ends at 0
    try:
        assert [[x0, x1] for x0, x1, _, hatch in _spans(empty.axes[0]) if hatch] == [[0.0, 0.0]]
    finally:
        plt.close(empty)


def test_the_summary_sink_s_defaults_name_and_event_order(tmp_path: Path) -> None:
    """A partial summary every 10 s and no warm-up by default; named by its file in error messages; events in frame
    order, a baseline set after what else happened at its frame, events without a frame last."""
    from realtime.sinks.summary import SummarySink

    sink = SummarySink(tmp_path / "s.json")
    assert sink.partial_every_s == 10.0 and sink.builder.warmup == 0
    assert sink.name == f"summary {tmp_path / 's.json'}" and SummarySink().name == "summary"
    from realtime.tracker import Baseline

    run = _run_info()
    sink.open(run)
    run.control.note("roi_requested", frame=None, t_s=None)
    baseline = Baseline(area_px=1000.0, area_mm2=None, centroid_x_px=0.0, centroid_y_px=0.0, centroid_x_mm=None,
                        centroid_y_mm=None, n_frames=1, first_frame=2, last_frame=2, source="set at frame 2")
    for i in range(4):
        r = record(i)
        r.tracked.baseline = baseline if i >= 2 else None
        if i == 2:
            run.control.note("snapshot", frame=2, t_s=2 / 24, file="s.png")
        sink.write(r)
    run.control.note("baseline_requested", frame=1, t_s=1 / 24)
    run.wall_s = 1.0
    sink.close()
    s = json.loads((tmp_path / "s.json").read_text())
    assert [(e["event"], e["frame"]) for e in s["events"]] == [
        ("baseline_requested", 1), ("snapshot", 2), ("baseline_set", 2), ("roi_requested", None)]
    assert s["baseline"]["how"] == "set at frame 2"


def test_short_runs_keep_their_warm_up_in_the_latency() -> None:
    """The warm-up frames are left out of the latency only from twice as many frames on."""
    for frames, n in ((3, 3), (4, 2), (5, 3)):
        b = SummaryBuilder(warmup=2)
        for i in range(frames):
            b.add(record(i, latency=10.0 * (i + 1)))
        d = b.to_dict()
        assert d["latency_ms"]["n"] == n and d["latency_warmup_frames_excluded"] == frames - n
        assert d["latency_ms"]["max"] == 10.0 * frames and d["stage_ms"]["infer"]["n"] == n


def test_a_plot_that_fails_fails_the_run_after_the_summary_is_written(tmp_path: Path) -> None:
    from common.errors import EXIT_OUTPUT_FAILED
    from realtime.sinks.summary import SummarySink

    run = _run_info()
    sink = SummarySink(tmp_path / "s.json", plot=tmp_path / "p.notaformat")
    sink.open(run)
    sink.write(record(0))
    run.wall_s = 1.0
    with pytest.raises(ValueError, match="notaformat"):
        sink.close()
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["exit_code"] == EXIT_OUTPUT_FAILED == run.exit_code
    assert s["ended_because"].startswith(f"output failed: plot {tmp_path / 'p.notaformat'}: ")
    assert s["baseline"] is None  # no baseline was set


def test_the_plot_is_untitled_without_a_source_and_its_legend_matches_what_is_drawn(tmp_path: Path,
                                                                                     monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    import realtime.sinks.summary as summary_mod

    figures = []
    real = summary_mod.plot_figure
    monkeypatch.setattr(summary_mod, "plot_figure", lambda *a, **k: figures.append(real(*a, **k)) or figures[-1])
    run = _run_info()  # metadata without a source
    sink = summary_mod.SummarySink(plot=tmp_path / "p.png")
    sink.open(run)
    sink.write(record(0))
    run.wall_s = 1.0
    sink.close()
    assert figures[-1].axes[0].get_title() == ""

    events = [{"event": "baseline_set", "t_s": 1 / 24, "area_px": 1005.0},
              {"event": "pause", "t_s": 2 / 24, "resumed_t_s": 3 / 24},
              {"event": "snapshot", "t_s": 3 / 24}, {"event": "baseline_requested", "t_s": 5 / 24}]
    _, fig = _plotted(False, events=events)
    try:
        ax = fig.axes[0]
        handles = dict(zip([x.get_text() for x in ax.get_legend().get_texts()], ax.get_legend().legend_handles))
        drawn = ax.lines[1:]
        for line, label in zip(drawn, ["baseline set (its value: dotted)", "snapshot (s)", "baseline asked for (b)"]):
            assert to_rgba(handles[label].get_color()) == to_rgba(line.get_color())
            assert handles[label].get_linestyle() == line.get_linestyle()
        assert len({to_rgba(line.get_color()) for line in drawn}) == 3  # told apart from each other...
        assert to_rgba(drawn[0].get_color()) != to_rgba(ax.lines[0].get_color())  # ... and from the series
        (value,) = ax.collections  # the baseline's value: dotted, in the baseline's colour
        assert to_rgba(value.get_colors()[0]) == to_rgba(drawn[0].get_color()) and value.get_linestyle()[0][1]
        (pause,) = [p for p in ax.patches if p.get_hatch()]
        key = handles["paused"]
        assert key.get_hatch() == pause.get_hatch() == "//"
        assert tuple(key.get_facecolor()) == tuple(pause.get_facecolor()) and pause.get_facecolor()[3] == 0
        assert tuple(key.get_edgecolor()) == tuple(pause.get_edgecolor())
    finally:
        plt.close(fig)


def test_the_builder_s_whole_dict_calibrated() -> None:
    """Every number of a calibrated summary from known frames: areas in mm² (and px apart), FR and circularity
    from measured frames only, the largest finite displacement in mm, deformation, pauses, the warm-up left out."""
    import dataclasses
    import math

    b = SummaryBuilder(warmup=1, calibrated=True, exact=2)
    rows = [("ok", 2.0, 1.2, 0.8, 0.5), ("ok", 4.0, 1.5, 0.9, math.inf), ("no_detection", None, None, None, None),
            ("reacquired", 3.0, 1.3, 0.85, 1.5), ("lost", None, None, None, None)]
    for i, (status, mm2, fr, circ, disp_mm) in enumerate(rows):
        r = record(i, status=status, area=100.0 * (i + 1) if mm2 else None, latency=float(i + 1))
        if mm2:
            r.tracked.measurement = dataclasses.replace(r.tracked.measurement, area_mm2=mm2, flattening_ratio=fr,
                                                        circularity=circ)
        r.tracked.displacement_mm = disp_mm
        r.tracked.displacement_px = 99.0  # px is not the unit of a calibrated run
        if i == 2:
            r.paused_s, r.paused_before = 1.23456, 2
        b.add(r)
    d = b.to_dict()
    assert d["units"] == {"area": "mm2", "displacement": "mm"}
    near = lambda lo, mid, hi: {"min": lo, "median": pytest.approx(mid, rel=0.005), "max": hi}  # noqa: E731
    assert d["csa"] == near(2.0, 3.0, 4.0)  # past exact=2 values: the median from the histogram
    assert d["csa_px"] == near(100.0, 200.0, 400.0)
    assert d["flattening_ratio"] == near(1.2, 1.3, 1.5)
    assert d["circularity"] == near(0.8, 0.85, 0.9)
    assert d["max_displacement"] == 1.5 and d["deformation"] == {"csa_max_over_min": 2.0,
                                                                  "fr_range": pytest.approx(0.3)}
    assert d["paused_s"] == 1.235 and d["frames_paused"] == 2 and b.gaps == [(1 / 24, 2 / 24)]
    assert d["latency_warmup_frames_excluded"] == 1 and d["latency_ms"]["n"] == 4
    assert "percentiles" in d and d["percentiles"].endswith(f"within {100 * b.latency.relative_accuracy:g} %")
    empty = SummaryBuilder(calibrated=False).to_dict()
    assert empty["units"] == {"area": "px", "displacement": "px"} and empty["max_displacement"] is None
    assert empty["deformation"] == {"csa_max_over_min": None, "fr_range": None} and "percentiles" not in empty
    assert empty["paused_s"] == 0.0


# ---------------------------------------------------------------------------------------------
# found by mutation testing, second run (docs/mutation-testing.md, "The summary sink")
# ---------------------------------------------------------------------------------------------


def test_pauses_add_up_and_each_leaves_a_gap_even_without_skipped_frames() -> None:
    """A pause where the source produced nothing (a file waits) still counts and leaves a gap; two pauses
    add up; a pause before the very first frame starts its gap at that frame."""
    b = SummaryBuilder()
    first = record(0)
    first.paused_s = 0.25  # paused before the first frame (nothing before it)
    b.add(first)
    b.add(record(1))
    second = record(2)
    second.paused_s, second.paused_before = 1.5, 0
    b.add(second)
    third = record(3)
    third.paused_s, third.paused_before = 0.0, 4  # frames skipped, no time measured
    b.add(third)
    assert b.paused_s == pytest.approx(1.75) and b.to_dict()["paused_s"] == 1.75
    assert b.gaps == [(0.0, 0.0), (1 / 24, 2 / 24), (2 / 24, 3 / 24)]
    assert b.to_dict()["frames_paused"] == 4


def test_the_builder_takes_its_unit_from_the_first_record_and_leaves_no_warm_up_by_default() -> None:
    import dataclasses

    b = SummaryBuilder()  # calibrated=None: the first record says
    for i, (mm2, latency) in enumerate(((0.8, 5.0), (1.6, 7.0), (1.2, 9.0))):
        r = record(i, latency=latency)
        r.calibrated = True
        r.tracked.measurement = dataclasses.replace(r.tracked.measurement, area_mm2=mm2)
        b.add(r)
    d = b.to_dict()
    assert d["units"] == {"area": "mm2", "displacement": "mm"} and d["csa"]["min"] == 0.8
    assert d["deformation"]["csa_max_over_min"] == pytest.approx(2.0)  # areas under 1 mm² still divide
    assert d["latency_ms"]["n"] == 3 and d["latency_warmup_frames_excluded"] == 0
    assert SummaryBuilder().warmup == 0


@pytest.mark.parametrize("title_kw", [{}, {"title": ""}])
def test_a_plot_without_a_title_has_none(tmp_path: Path, title_kw: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    import realtime.sinks.summary as summary_mod

    b = SummaryBuilder()
    for i in range(3):
        b.add(record(i))
    fig = summary_mod.plot_figure(b, **title_kw)
    assert fig.axes[0].get_title() == ""
    plt.close(fig)
    drawn = []
    real = summary_mod.plot_figure
    monkeypatch.setattr(summary_mod, "plot_figure", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    plot_series(tmp_path / "p.png", b, **title_kw)  # the saved figure is the untitled one
    assert [f.axes[0].get_title() for f in drawn] == [""] and (tmp_path / "p.png").stat().st_size > 0
