"""realtime.sinks.window: the window opens at the frame's size and keeps it, closing it is a quit (also
while paused), every key works in every state with a banner and a log line, and pauses, baselines and
snapshots become the run's events. Driven through a stand-in for OpenCV's HighGUI
(:class:`tests.realtime.sinks._helpers.FakeGUI`, the same calls as ``cv2``); the tests marked "the real
HighGUI" drive OpenCV's own window, and mn-live's, on a virtual X display (Xvfb, xdotool)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.sinks.base import RunControl, RunInfo
from realtime.sinks.overlay import OverlayRenderer
from realtime.sinks.window import LiveWindow, WindowSink
from realtime.tracker import Baseline
from tests.realtime.sinks._helpers import FakeGUI, record


class FakeTracker:
    calibration = None

    def __init__(self) -> None:
        self.baselines = 0

    def set_baseline_now(self) -> None:
        self.baselines += 1


def _frame(i: int):  # type: ignore[no-untyped-def]
    r = record(i)
    r.image = np.full((468, 606), 70, np.uint8)
    r.mask, r.contours = None, ()
    return r


def _sink(gui: FakeGUI, tmp_path: Path, size: tuple[int, int] | None = None, clock=None):  # type: ignore[no-untyped-def]
    control = RunControl(FakeTracker())
    window = LiveWindow("mn-live test", snapshot_dir=tmp_path, size=size, gui=gui)
    sink = WindowSink(window, OverlayRenderer(), **({"clock": clock} if clock else {}))
    sink.open(RunInfo(source=None, engine=None, tracker=control.tracker, control=control, fps=24.0,
                      calibrated=False))
    return sink, control


def test_opens_at_the_frames_size_once_and_shows_the_overlay(tmp_path: Path) -> None:
    gui = FakeGUI()
    sink, control = _sink(gui, tmp_path)
    first = _frame(0)
    sink.write(first)
    assert gui.shown[0] is sink.renderer.draw(first)  # drawn once, shared with any other output
    sink.write(_frame(1))
    assert gui.resized == [(606, 468)]  # sized once, to the frame: never back to the backend's default
    assert first.timings_ms["render"] >= 0 and first.timings_ms["write"] >= 0 and not control.stopping
    sink.close()
    assert gui.windows["mn-live test"] is False and control.poll is None


def test_window_size_flag_wins(tmp_path: Path) -> None:
    gui = FakeGUI()
    sink, _ = _sink(gui, tmp_path, size=(1212, 936))
    sink.write(_frame(0))
    assert gui.resized == [(1212, 936)]


@pytest.mark.parametrize("qt", [False, True])
def test_closing_the_window_is_a_quit_and_it_does_not_come_back(tmp_path: Path, qt: bool) -> None:
    gui = FakeGUI([None, "close"], qt=qt)
    sink, control = _sink(gui, tmp_path)
    sink.write(_frame(0))
    assert not control.stopping
    sink.write(_frame(1))  # closed by the window manager during this frame's waitKey
    assert control.stopping and control.reason == "window closed"
    shown = len(gui.shown)
    sink.write(_frame(2))  # a frame still in flight: not shown in a new window
    assert len(gui.shown) == shown and gui.reopened == 0


def test_q_quits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink, control = _sink(FakeGUI(["quit"]), tmp_path)
    with caplog.at_level(logging.INFO, logger="realtime.sinks.window"):
        sink.write(_frame(5))
    assert control.stopping and control.reason == "quit from the window"
    assert "q pressed at frame 5" in caplog.text


def test_every_key_works_while_paused_then_closing_ends_the_run(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Space at frame 7; while paused: s (a snapshot of the paused frame), b (a new baseline), then the
    window closed: the hold ends, the run stops, and the events say what happened at which frame."""
    gui = FakeGUI(["pause", None, "snapshot", None, "baseline", None, "close"])
    sink, control = _sink(gui, tmp_path)
    paused = _frame(7)
    with caplog.at_level(logging.INFO):
        sink.write(paused)
        assert control.paused and not control.stopping
        control.hold()  # what the loop does between frames: the window's poll, until closed
    assert control.stopping and control.reason == "window closed" and not control.paused
    assert control.tracker.baselines == 1
    overlay = sink.renderer.draw(paused)
    snap = cv2.imread(str(tmp_path / "snapshot-0000.png"))
    assert snap is not None and (snap == overlay).all()  # the overlay as drawn, without the banners
    assert any((img != overlay).any() and img.shape == overlay.shape for img in gui.shown[1:])  # PAUSED banner
    kinds = [(e["event"], e["frame"]) for e in control.events]
    assert kinds == [("pause", 7), ("snapshot", 7), ("baseline_requested", 7)]
    assert control.events[1]["file"] == str(tmp_path / "snapshot-0000.png")
    assert control.events[0]["ended_run"] is True and control.events[0]["duration_s"] >= 0
    for line in ("paused at frame 7", "snapshot of frame 7 saved", "b pressed at frame 7", "window was closed"):
        assert line in caplog.text, line


def test_space_resumes_and_banners_say_what_happened(tmp_path: Path) -> None:
    now = [100.0]
    gui = FakeGUI(["pause", None, "pause"])
    sink, control = _sink(gui, tmp_path, clock=lambda: now[0])
    sink.write(_frame(3))
    assert sink.current_banners() == ["PAUSED: space resumes, q quits"]
    control.hold()
    assert not control.paused and not control.stopping and control.events[0]["duration_s"] == round(control.paused_s, 3)
    assert sink.current_banners() == ["resumed"]
    now[0] += 3.0  # banners are short
    assert sink.current_banners() == []


def test_baseline_banner_until_it_is_set_then_its_value(tmp_path: Path) -> None:
    sink, control = _sink(FakeGUI([None, "baseline", None]), tmp_path)
    sink.write(_frame(0))
    sink.write(_frame(1))  # b
    assert "collecting a new baseline..." in sink.current_banners()
    r = _frame(2)
    r.tracked.baseline = Baseline(area_px=1234.0, area_mm2=None, centroid_x_px=0.0, centroid_y_px=0.0,
                                  centroid_x_mm=None, centroid_y_mm=None, n_frames=24, first_frame=2, last_frame=25,
                                  source="set at frame 1")
    sink.write(r)
    banners = sink.current_banners()
    assert "collecting a new baseline..." not in banners and "baseline set: 1234 px (frames 2-25)" in banners


def test_a_snapshot_that_cannot_be_written_does_not_stop_the_run(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    gui = FakeGUI(["snapshot"])
    control = RunControl()
    sink = WindowSink(LiveWindow("t", snapshot_dir=blocked, gui=gui), OverlayRenderer())
    sink.open(RunInfo(source=None, engine=None, tracker=None, control=control, fps=24.0, calibrated=False))
    sink.write(_frame(0))
    assert not control.stopping and control.events == []
    assert "snapshot NOT saved (see the log)" in sink.current_banners()


def test_snapshots_do_not_replace_earlier_files(tmp_path: Path) -> None:
    (tmp_path / "snapshot-0000.png").write_bytes(b"an earlier run's")
    sink, control = _sink(FakeGUI(["snapshot"]), tmp_path)
    sink.write(_frame(0))
    assert (tmp_path / "snapshot-0000.png").read_bytes() == b"an earlier run's"
    assert control.events[0]["file"] == str(tmp_path / "snapshot-0001.png")


# ---------------------------------------------------------------------------------------------- the real HighGUI
def test_mn_live_window_under_xvfb(tmp_path: Path, cache: str) -> None:
    """mn-live on the phantom in a real HighGUI window on a virtual display, as a person uses it: the window
    is the frame's size and shows the panel pixel for pixel (a screenshot against the snapshot PNG); space
    pauses (no rows while paused), s saves a snapshot and b asks for a baseline while paused, space resumes,
    space pauses again, and the window manager's close ends the run with exit 0 and every file finalised
    (CSV rows = summary frames = video frames), the events in summary.json."""
    import json
    import os
    import subprocess
    import sys
    import time

    from realtime.sinks.csv_sink import read_csv
    from tests.realtime._helpers import decoded_frames
    from tests.realtime.sinks import _x11

    why = _x11.missing()
    if why:
        pytest.skip(f"no real HighGUI test: {why}")
    import contextlib

    repo = Path(__file__).resolve().parents[3]
    out = tmp_path / "live"
    log_path = tmp_path / "stderr.txt"
    stack = contextlib.ExitStack()
    display = stack.enter_context(_x11.xvfb())
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(repo),
           "MN_SEG_CACHE": cache}
    env.pop("WAYLAND_DISPLAY", None)
    with open(log_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "realtime.live_cli", "--source", "synthetic:3", "--out",
                                 str(out), "--model", "lunet", "--size", "64x48", "--presence", "off",
                                 "--depth-mm", "46.8"], cwd=repo, env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    try:
        window = _x11.find_window(display, "mn-live synthetic:3", proc=proc, log_path=log_path)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        stack.close()
        raise
    with stack:
        try:
            def wait_for(what, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
                deadline = time.monotonic() + timeout_s
                while not what():
                    assert proc.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.1)

            def logged(text: str) -> bool:
                return text in log_path.read_text()

            csv_path = out / "measurements.csv"
            wait_for(lambda: csv_path.exists() and len(read_csv(csv_path)) >= 5, 120.0)
            assert _x11.geometry(display, window) == (606, 468)  # the frame's size, not HighGUI's 400x300
            _x11.key(display, window, "space")
            wait_for(lambda: logged("paused at frame"))
            rows = len(read_csv(csv_path))
            _x11.key(display, window, "s")
            wait_for(lambda: (out / "snapshot-0000.png").exists() and logged("snapshot of frame"))
            snapshot = cv2.imread(str(out / "snapshot-0000.png"))
            wait_for(lambda: (_x11.screenshot(display, window)[:90, :280] == snapshot[:90, :280]).all(), 10.0)
            shot = _x11.screenshot(display, window)
            assert shot.shape == snapshot.shape == (468, 606, 3)
            panel = np.s_[:90, :280]  # the text panel, shown pixel for pixel at the frame's size
            assert (shot[panel] == snapshot[panel]).all() and (shot[panel] > 200).any(axis=2).sum() > 300
            assert (shot != snapshot).any()  # the PAUSED banner, in the window only
            _x11.key(display, window, "b")
            wait_for(lambda: logged("b pressed at frame"))
            assert len(read_csv(csv_path)) == rows  # paused: no frame processed
            _x11.key(display, window, "space")
            wait_for(lambda: len(read_csv(csv_path)) > rows + 2)
            _x11.key(display, window, "space")
            wait_for(lambda: log_path.read_text().count("paused at frame") == 2)
            _x11.wm_close(display, window)
            stdout, _ = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    stderr = log_path.read_text()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "the window was closed" in stderr and "ended: window closed" in stdout
    assert "frames skipped" in stdout  # the terminal report says the run was paused
    rows = read_csv(out / "measurements.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_because"] == "window closed" and summary["exit_code"] == 0
    assert len(rows) == summary["frames_processed"] == decoded_frames(out / "overlay.mp4")
    kinds = [e["event"] for e in summary["events"] if e["event"] != "baseline_set"]
    assert kinds == ["pause", "snapshot", "baseline_requested", "pause"]
    first, snap, asked, last = (e for e in summary["events"] if e["event"] != "baseline_set")
    assert snap["frame"] == asked["frame"] == first["frame"] and snap["file"] == str(out / "snapshot-0000.png")
    assert first["resumed_frame"] > first["frame"] and last.get("ended_run") is True
    resumed = next(r for r in rows if int(r["frame"]) == first["resumed_frame"])
    assert float(resumed["paused_s"]) > 0 and int(resumed["paused_before"]) == first["frames_skipped"] > 0
    assert summary["frames_paused"] == first["frames_skipped"]  # the second pause ended the run: no frame after it
    assert summary["paused_s"] >= first["duration_s"] > 0


def test_an_unreachable_display_is_no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """DISPLAY names an X server that is not there: headless (Qt's HighGUI would abort the process)."""
    import ctypes.util

    from realtime.sinks import window as window_mod

    if ctypes.util.find_library("X11") is None:
        pytest.skip("libX11 is not installed: the display cannot be asked")
    monkeypatch.setattr(window_mod.sys, "platform", "linux")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":8931")  # no X server there
    assert not window_mod.display_available()
    monkeypatch.delenv("DISPLAY")
    assert not window_mod.display_available()



def test_a_reachable_display_stays_connected_so_xvfb_cannot_reset_under_qt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Xvfb (without ``-noreset``) resets when its last client leaves and refuses connections meanwhile
    (about 1 in 10 connections right after a client left, here). The probe retries through such a
    reset, then keeps its connection, so Qt's connection right after it cannot meet one: Qt aborted
    mn-live with "could not connect to display" when it did."""
    from realtime.sinks import window as window_mod
    from tests.realtime.sinks import _x11

    why = _x11.missing()
    if why:
        pytest.skip(f"no X server to ask: {why}")
    import ctypes.util
    import functools

    # find_library runs ldconfig (tens of ms, time enough for a reset to end): asked once, the probe is as
    # quick as the next client can be
    monkeypatch.setattr(ctypes.util, "find_library", functools.lru_cache(maxsize=None)(ctypes.util.find_library))
    with _x11.xvfb() as display:
        try:
            after_a_client_left = []
            for _ in range(60):
                _x11.connects(display)  # a client comes and goes: the server resets
                after_a_client_left.append(window_mod.x_display_reachable(display))
                window_mod.release_x_connections()
            assert all(after_a_client_left)
            assert window_mod.x_display_reachable(display)
            refused = sum(not _x11.connects(display) for _ in range(300))  # Qt's, and xdotool's
        finally:
            window_mod.release_x_connections()
    assert refused == 0

# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "The live window")
# ---------------------------------------------------------------------------------------------


def _baseline(area_px: float, area_mm2: float | None = None) -> Baseline:
    return Baseline(area_px=area_px, area_mm2=area_mm2, centroid_x_px=0.0, centroid_y_px=0.0, centroid_x_mm=None,
                    centroid_y_mm=None, n_frames=24, first_frame=2, last_frame=25, source="auto")


def test_each_key_is_an_event_at_the_frame_and_time_shown_with_its_log_line(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    class Source:
        redetected = 0

        def redetect_roi(self) -> None:
            self.redetected += 1

    gui = FakeGUI(["roi", "baseline", "snapshot", "pause"])
    sink, control = _sink(gui, tmp_path)
    control.source = Source()
    with caplog.at_level(logging.INFO, logger="realtime.sinks.window"):
        for i in range(4):
            sink.write(_frame(10 + i))
    assert control.source.redetected == 1 and control.tracker.baselines == 1
    assert [(e["event"], e["frame"], e["t_s"]) for e in control.events] == [
        ("roi_requested", 10, 10 / 24), ("baseline_requested", 11, 11 / 24), ("snapshot", 12, 12 / 24),
        ("pause", 13, 13 / 24)]
    assert [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.window"] == [
        "window 'mn-live test' opened at 606x468", "r pressed at frame 10: finding the image area again",
        "b pressed at frame 11: a new baseline from the next frames",
        f"snapshot of frame 12 saved: {tmp_path / 'snapshot-0000.png'}"]
    assert "finding the image area again" in sink.current_banners()


def test_quit_and_close_log_their_frame_and_keys_before_open_do_nothing(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    unopened = WindowSink(LiveWindow("t", snapshot_dir=tmp_path, gui=FakeGUI()), OverlayRenderer())
    unopened.act("quit")  # no run yet: nothing to stop, no error
    with caplog.at_level(logging.INFO, logger="realtime.sinks.window"):
        sink, control = _sink(FakeGUI(["quit"]), tmp_path)
        sink.write(_frame(5))
        closed, control2 = _sink(FakeGUI(["close"]), tmp_path)
        closed.write(_frame(6))
    messages = [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.window"]
    assert "q pressed at frame 5: finishing the run" in messages
    assert "the window was closed at frame 6: finishing the run" in messages
    assert control2.reason == "window closed"


def test_a_failed_snapshot_logs_its_frame_and_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    control = RunControl()
    sink = WindowSink(LiveWindow("t", snapshot_dir=blocked, gui=FakeGUI(["snapshot"])), OverlayRenderer())
    sink.open(RunInfo(source=None, engine=None, tracker=None, control=control, fps=24.0, calibrated=False))
    with caplog.at_level(logging.ERROR, logger="realtime.sinks.window"):
        sink.write(_frame(4))
    (message,) = [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.window"]
    assert message.startswith("snapshot at frame 4 not saved: ") and str(blocked) in message


def test_banners_once_each_until_they_expire(tmp_path: Path) -> None:
    now = [100.0]
    sink, _ = _sink(FakeGUI(), tmp_path, clock=lambda: now[0])
    sink.banner("a")
    sink.banner("b")
    now[0] = 101.0
    sink.banner("a")  # again: once, moved last, shown 2.5 s from now
    assert sink.current_banners() == ["b", "a"]
    now[0] = 102.5  # b's time is up exactly now
    assert sink.current_banners() == ["a"]
    now[0] = 103.5
    assert sink.current_banners() == []


def test_a_baseline_banner_in_the_runs_unit_once_per_baseline(tmp_path: Path) -> None:
    now = [100.0]
    control = RunControl(FakeTracker())
    sink = WindowSink(LiveWindow("t", snapshot_dir=tmp_path, gui=FakeGUI()), OverlayRenderer(), clock=lambda: now[0])
    sink.open(RunInfo(source=None, engine=None, tracker=control.tracker, control=control, fps=24.0, calibrated=True))
    b = _baseline(1234.0, 12.345)
    for i in range(2):  # the same baseline on two frames: one banner, not renewed
        r = _frame(i)
        r.tracked.baseline = b
        sink.write(r)
        now[0] += 2.0
    assert sink.current_banners() == []  # shown from 100 to 102.5 only
    r = _frame(2)
    r.tracked.baseline = None  # no baseline on a frame after one: nothing to show, nothing breaks
    sink.write(r)
    r = _frame(3)
    r.tracked.baseline = _baseline(1234.0, 12.345)
    sink.write(r)
    assert sink.current_banners() == ["baseline set: 12.35 mm\u00b2 (frames 2-25)"]
    sink2, _ = _sink(FakeGUI(), tmp_path)  # uncalibrated: px, no decimals, whatever mm² the baseline has
    r = _frame(0)
    r.tracked.baseline = _baseline(1234.4, 12.345)
    sink2.write(r)
    assert sink2.current_banners() == ["baseline set: 1234 px (frames 2-25)"]
