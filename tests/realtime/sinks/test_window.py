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
            # hold the pause long enough for the 24 fps source to go on (a fast machine did the keys above
            # in 64 ms, before the next frame was due, and the resumed row had no skipped frame to show)
            time.sleep(0.5)
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
    assert float(resumed["paused_s"]) >= 0.5 and int(resumed["paused_before"]) == first["frames_skipped"] > 0
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


# the window as HighGUI is asked for it: flags, wait times, titles ---------------------------------------------------
def test_the_window_is_resizable_keeps_its_aspect_and_has_no_toolbar(tmp_path: Path) -> None:
    gui = FakeGUI()
    LiveWindow("mn-live test", snapshot_dir=tmp_path, gui=gui)
    flags = gui.flags["mn-live test"]
    assert flags == cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL == 16  # OpenCV's values
    assert not flags & cv2.WINDOW_AUTOSIZE  # resizable (AUTOSIZE: fixed to the picture)
    assert not flags & cv2.WINDOW_FREERATIO  # the aspect ratio kept
    assert flags & cv2.WINDOW_GUI_NORMAL  # Qt's toolbar and status bar left out (GUI_EXPANDED is 0)

    class PlainGUI:  # a HighGUI without the Qt-only flags: a plain resizable window, not an AUTOSIZE (1) one
        WINDOW_NORMAL = 0

        def namedWindow(self, title: str, flags: int) -> None:  # noqa: N802
            self.flags = flags

    plain = PlainGUI()
    LiveWindow("t", gui=plain)
    assert plain.flags == cv2.WINDOW_NORMAL == 0


def test_frames_wait_1_ms_for_keys_paused_50_ms_and_close_lets_the_gui_take_the_window_down(tmp_path: Path) -> None:
    gui = FakeGUI([None, "pause", None, None, "pause"])
    sink, control = _sink(gui, tmp_path)
    sink.write(_frame(0))
    sink.write(_frame(1))  # space: paused after this frame
    control.hold()  # the paused frame kept up, the keys read every 50 ms, until space again
    sink.write(_frame(2))
    sink.close()
    assert gui.waits == [1, 1, 50, 50, 50, 1, 1]  # as short as possible while running: the source sets the pace
    assert gui.calls[-2:] == ["destroyWindow", "waitKey"]
    assert gui.titles == {"mn-live test"}  # every call about the one window


def test_paused_before_any_frame_the_keys_are_read_every_50_ms(tmp_path: Path) -> None:
    gui = FakeGUI([None, "quit"])
    sink, control = _sink(gui, tmp_path)
    control.request_pause(None, None)
    control.hold()  # nothing shown yet: the keys only
    assert gui.waits == [50, 50] and gui.shown == [] and control.stopping


def test_a_window_used_directly_waits_1_ms_and_reads_keys_with_modifier_bits(tmp_path: Path) -> None:
    numlock = 0x100000  # GTK reports the modifiers (NumLock on) above the key's own byte
    gui = FakeGUI([None, numlock | ord("q"), numlock | ord("s"), -1])
    window = LiveWindow("w", snapshot_dir=tmp_path, gui=gui)
    frame = np.zeros((30, 40, 3), np.uint8)
    assert window.show(frame) is None
    assert window.show(frame) == "quit" and window.poll() == "snapshot" and window.poll() is None
    assert gui.waits == [1, 1, 1, 1]


def test_defaults_titled_mn_seg_snapshots_in_the_working_folder(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    gui = FakeGUI()
    window = LiveWindow(gui=gui)
    frame = np.full((30, 40, 3), 9, np.uint8)
    window.show(frame)
    assert gui.titles == {"mn-seg"} and gui.resized == [(40, 30)]
    assert window.save(frame) == Path("snapshot-0000.png") and (tmp_path / "snapshot-0000.png").exists()


def test_the_window_closed_before_close_is_no_error(tmp_path: Path) -> None:
    class QtGUI(FakeGUI):
        def destroyWindow(self, title: str) -> None:  # noqa: N802
            raise cv2.error("NULL guiReceiver (please create a window)")  # Qt, the window already gone

    gui = QtGUI(["close"], qt=True)
    sink, control = _sink(gui, tmp_path)
    sink.write(_frame(0))
    sink.close()
    assert control.stopping and control.reason == "window closed"


def test_a_window_closed_between_frames_ends_the_run_and_is_not_opened_again(tmp_path: Path) -> None:
    gui = FakeGUI()
    sink, control = _sink(gui, tmp_path)
    sink.write(_frame(0))
    gui.windows["mn-live test"] = False  # the window manager closes it while the loop measures the next frame
    sink.write(_frame(1))
    assert control.stopping and control.reason == "window closed"
    assert gui.reopened == 0 and len(gui.shown) == 1 and sink.name == "window mn-live test"


def test_a_window_closed_while_paused_before_any_frame_is_not_opened_by_a_frame_in_flight(tmp_path: Path) -> None:
    gui = FakeGUI(["close"])
    sink, control = _sink(gui, tmp_path)
    control.request_pause(None, None)
    control.hold()  # nothing shown yet; the window manager closes the (empty) window
    assert control.stopping and control.reason == "window closed"
    sink.write(_frame(0))  # the frame the loop had in flight
    assert gui.shown == [] and gui.reopened == 0


def test_closing_leaves_another_poll_in_place(tmp_path: Path) -> None:
    sink, control = _sink(FakeGUI(), tmp_path)
    sink.write(_frame(0))

    def other() -> None:
        pass

    control.poll = other
    sink.close()
    assert control.poll is other


# snapshots ---------------------------------------------------------------------------------------------------------
def test_snapshots_are_numbered_in_a_folder_made_for_them(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    window = LiveWindow("t", snapshot_dir=folder, gui=FakeGUI())
    frame = np.full((30, 40, 3), 9, np.uint8)
    assert [window.save(frame).name for _ in range(3)] == ["snapshot-0000.png", "snapshot-0001.png",
                                                           "snapshot-0002.png"]
    assert (cv2.imread(str(folder / "snapshot-0002.png")) == frame).all()
    again = LiveWindow("t", snapshot_dir=folder, gui=FakeGUI())  # the folder there already: the next free number
    assert again.save(frame).name == "snapshot-0003.png"


def test_a_snapshot_the_gui_cannot_write_is_an_oserror_and_keeps_its_number(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    class FullDisk(FakeGUI):
        fail = True

        def imwrite(self, path: str, img: np.ndarray) -> bool:
            return False if self.fail else super().imwrite(path, img)

    gui = FullDisk()
    window = LiveWindow("t", snapshot_dir=tmp_path, gui=gui)
    frame = np.full((30, 40, 3), 9, np.uint8)
    with pytest.raises(OSError) as err:
        window.save(frame)
    assert str(err.value) == f"cannot write {tmp_path / 'snapshot-0000.png'}"
    gui.fail = False
    assert window.save(frame).name == "snapshot-0000.png"  # the number of the snapshot not written is free

    gui = FullDisk(["snapshot"])
    control = RunControl()
    sink = WindowSink(LiveWindow("t", snapshot_dir=tmp_path / "s", gui=gui), OverlayRenderer())
    sink.open(RunInfo(source=None, engine=None, tracker=None, control=control, fps=24.0, calibrated=False))
    with caplog.at_level(logging.ERROR, logger="realtime.sinks.window"):
        sink.write(_frame(4))
    assert [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.window"] == [
        f"snapshot at frame 4 not saved: cannot write {tmp_path / 's' / 'snapshot-0000.png'}"]
    assert control.events == [] and not control.stopping


# the banners' box: where a person sees it --------------------------------------------------------------------------
AMBER = (0, 235, 255)  # BGR


def _by_hand(bgr: np.ndarray, lines: list[str], box: tuple[int, int, int, int], k: int = 1) -> np.ndarray:
    """The banner as specified: the box darkened to a quarter, each line in amber at 0.55 x k, 8 k px from
    the box's left, the first baseline 18 k px below its top, lines 22 k px apart."""
    x0, y0, bw, bh = box
    out = bgr.copy()
    out[y0:y0 + bh, x0:x0 + bw] = (out[y0:y0 + bh, x0:x0 + bw] * 0.25).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(out, text, (x0 + 8 * k, y0 + 18 * k + i * 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.55 * k, AMBER, 1,
                    cv2.LINE_AA)
    return out


def _width(text: str, k: int = 1) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.55 * k, 1)[0][0]


def test_a_banner_is_a_dark_box_centred_above_the_bottom_third_in_amber(tmp_path: Path) -> None:
    now = [100.0]
    sink, _ = _sink(FakeGUI(), tmp_path, clock=lambda: now[0])
    frame = np.full((468, 606, 3), 70, np.uint8)
    assert sink.with_banners(frame) is frame  # nothing to say: the picture as it is
    sink.banner("resumed")
    shown = sink.with_banners(frame)
    assert (frame == 70).all()  # drawn on a copy
    bw = _width("resumed") + 16
    box = ((606 - bw) // 2, 290 - 30, bw, 30)  # its bottom at 62 % of the height (290), one line: 22 + 8 px
    assert (shown == _by_hand(frame, ["resumed"], box)).all()
    changed = np.argwhere((shown != 70).any(axis=2))
    assert changed.min(axis=0).tolist() == [260, box[0]] and changed.max(axis=0).tolist() == [289, box[0] + bw - 1]
    inside = shown[260:290, box[0]:box[0] + bw].reshape(-1, 3)
    assert (inside == 17).all(axis=1).sum() > 0.8 * len(inside)  # a quarter of 70, under the text
    assert (inside == AMBER).all(axis=1).sum() > 10  # the text's full strokes in amber


def test_two_banners_22_px_apart_and_twice_as_large_on_a_1600_px_frame(tmp_path: Path) -> None:
    now = [100.0]
    sink, control = _sink(FakeGUI(), tmp_path, clock=lambda: now[0])
    frame = np.full((468, 606, 3), 70, np.uint8)
    sink.banner("resumed")
    sink.banner("snapshot saved: snapshot-0000.png")
    lines = ["resumed", "snapshot saved: snapshot-0000.png"]
    bw = _width(lines[1]) + 16
    assert (sink.with_banners(frame) == _by_hand(frame, lines, ((606 - bw) // 2, 290 - 52, bw, 52))).all()
    control.request_pause(3, 0.1)  # PAUSED first
    lines = ["PAUSED: space resumes, q quits"] + lines
    big = np.full((1000, 1600, 3), 70, np.uint8)  # k = 2: text and box twice as large
    bw = _width(lines[2], 2) + 32
    assert (sink.with_banners(big) == _by_hand(big, lines, ((1600 - bw) // 2, 620 - 148, bw, 148), 2)).all()


def test_a_banner_wider_or_taller_than_the_picture_stays_inside_it(tmp_path: Path) -> None:
    now = [100.0]
    sink, _ = _sink(FakeGUI(), tmp_path, clock=lambda: now[0])
    sink.banner("snapshot NOT saved (see the log)")
    narrow = np.full((468, 120, 3), 70, np.uint8)  # the text is wider than the picture: the box is the width
    by_hand = _by_hand(narrow, ["snapshot NOT saved (see the log)"], (0, 260, 120, 30))
    assert (sink.with_banners(narrow) == by_hand).all()
    short = np.full((40, 606, 3), 70, np.uint8)  # 62 % of 40 px is above the box's height: the box at the top
    bw = _width("snapshot NOT saved (see the log)") + 16
    assert (sink.with_banners(short) == _by_hand(short, ["snapshot NOT saved (see the log)"],
                                                 ((606 - bw) // 2, 0, bw, 30))).all()


# is there a display? (the environment, and libX11 asked through a stand-in) -----------------------------------------
def test_a_display_on_linux_is_wayland_or_a_reachable_x_server(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from realtime.sinks import window as window_mod

    asked: list[str] = []

    def reachable(display: str) -> bool:
        asked.append(display)
        return display == ":1"

    monkeypatch.setattr(window_mod, "x_display_reachable", reachable)
    monkeypatch.setattr(window_mod, "highgui_opens", lambda: None)  # a window opens wherever a display answers
    monkeypatch.setattr(window_mod.sys, "platform", "win32")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert window_mod.display_available()  # not Linux: assumed
    monkeypatch.setattr(window_mod.sys, "platform", "linux")
    assert not window_mod.display_available()  # neither variable
    monkeypatch.setenv("DISPLAY", "")
    assert not window_mod.display_available() and asked == []
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert window_mod.display_available() and asked == []  # Wayland: no X server to ask
    monkeypatch.delenv("WAYLAND_DISPLAY")
    monkeypatch.setenv("DISPLAY", ":1")
    assert window_mod.display_available() and asked == [":1"]
    monkeypatch.setenv("DISPLAY", ":7")
    with caplog.at_level(logging.WARNING, logger="realtime.sinks.window"):
        assert not window_mod.display_available()
    assert [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.window"] == [
        "the display :7 cannot be opened (DISPLAY is set, but no X server answers there)"]


class _FakeX11:
    """libX11 as the probe uses it: XOpenDisplay refuses ``refusals`` times, then returns a connection."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.opened: list[bytes] = []
        self.closed: list[int] = []

        def open_display(name: bytes) -> int:
            self.opened.append(name)
            return 0 if len(self.opened) <= self.refusals else 0x7F0000001234  # a 64-bit pointer

        def close_display(d: int) -> None:
            self.closed.append(d)

        self.XOpenDisplay, self.XCloseDisplay = open_display, close_display


def _fake_libx11(monkeypatch: pytest.MonkeyPatch, refusals: int) -> tuple[_FakeX11, list[float]]:
    import ctypes
    import ctypes.util

    from realtime.sinks import window as window_mod

    lib = _FakeX11(refusals)
    sleeps: list[float] = []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libX11.so.6" if name == "X11" else None)
    monkeypatch.setattr(ctypes.cdll, "LoadLibrary", lambda name: lib if name == "libX11.so.6" else None)
    monkeypatch.setattr(window_mod.time, "sleep", sleeps.append)
    return lib, sleeps


def test_the_x_probe_tries_5_times_100_ms_apart_and_keeps_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    from realtime.sinks import window as window_mod

    lib, sleeps = _fake_libx11(monkeypatch, refusals=4)  # a server in a reset: refuses, then answers
    try:
        assert window_mod.x_display_reachable(":5")
        assert lib.opened == [b":5"] * 5 and sleeps == [0.1] * 4  # no wait before the first try
        # a 64-bit pointer back (not a C int), the display's name as a C string
        assert lib.XOpenDisplay.restype is ctypes.c_void_p and lib.XOpenDisplay.argtypes == [ctypes.c_char_p]
        assert lib.XCloseDisplay.argtypes == [ctypes.c_void_p]
        assert lib.closed == []  # kept open: the server cannot reset as Qt connects
        window_mod.release_x_connections()
        assert lib.closed == [0x7F0000001234]
        window_mod.release_x_connections()  # once only
        assert lib.closed == [0x7F0000001234]
    finally:
        window_mod.release_x_connections()


def test_the_x_probe_gives_up_after_its_attempts_and_holds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from realtime.sinks import window as window_mod

    lib, sleeps = _fake_libx11(monkeypatch, refusals=5)
    assert not window_mod.x_display_reachable(":5")
    assert lib.opened == [b":5"] * 5 and sleeps == [0.1] * 4
    lib, sleeps = _fake_libx11(monkeypatch, refusals=2)
    assert not window_mod.x_display_reachable(":6", attempts=2, wait_s=0.5)
    assert lib.opened == [b":6"] * 2 and sleeps == [0.5]
    window_mod.release_x_connections()
    assert lib.closed == []


def test_without_libx11_the_display_is_assumed_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes.util

    from realtime.sinks import window as window_mod

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert window_mod.x_display_reachable(":5")


def test_the_window_check_tells_the_last_of_several_lines_and_the_python_it_could_not_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a line about a plugin, the child's last line (of three, not the second) is the reason; a Python
    that cannot be started is named as it was given, not as the running one."""
    import sys

    from realtime.sinks import window as window_mod

    monkeypatch.setattr(window_mod, "HIGHGUI_CHECK",
                        "import sys; print('one\\ntwo\\nthree', file=sys.stderr); sys.exit(1)")
    assert window_mod.highgui_opens() == "three (exit code 1)"
    missing = str(Path(sys.executable).with_name("no-such-python"))
    why = window_mod.highgui_opens(python=missing)
    assert why is not None and why.startswith(f"could not start {missing} to try opening a window: ")


# ---------------------------------------------------------------------------------------------- the window check
def test_a_window_that_cannot_open_in_a_child_is_no_display_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Qt aborts the process when it cannot start: the child's failure, not mn-live's, says there is no display."""
    from realtime.sinks import window as window_mod

    reasons = iter([None, 'qt.qpa.plugin: Could not load the Qt platform plugin "xcb" (killed by signal 6)'])
    asked: list[str] = []

    def opens() -> str | None:
        asked.append("opens")
        return next(reasons)

    monkeypatch.setattr(window_mod, "highgui_opens", opens)
    monkeypatch.setattr(window_mod, "x_display_reachable", lambda display: True)
    monkeypatch.setattr(window_mod.sys, "platform", "linux")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":3")
    assert window_mod.display_available() and asked == ["opens"]
    with caplog.at_level(logging.WARNING, logger="realtime.sinks.window"):
        assert not window_mod.display_available()
    assert [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.window"] == [
        'a window cannot be opened on the display :3: qt.qpa.plugin: Could not load the Qt platform plugin "xcb" '
        "(killed by signal 6) (QT_DEBUG_PLUGINS=1 shows what Qt misses; --headless skips the window and this check)"]
    monkeypatch.setattr(window_mod, "highgui_opens", lambda: "no")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")  # Wayland is checked the same way
    assert not window_mod.display_available()
    monkeypatch.setattr(window_mod.sys, "platform", "darwin")
    assert window_mod.display_available()  # elsewhere no check: HighGUI there does not abort the process


def test_the_window_check_reports_a_child_that_fails_hangs_or_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from realtime.sinks import window as window_mod

    monkeypatch.setattr(window_mod, "HIGHGUI_CHECK", "import sys; sys.exit(0)")
    assert window_mod.highgui_opens() is None
    monkeypatch.setattr(window_mod, "HIGHGUI_CHECK",
                        "import sys; print('first', file=sys.stderr); print('  last line  ', file=sys.stderr); "
                        "sys.exit(3)")
    assert window_mod.highgui_opens() == "last line (exit code 3)"
    monkeypatch.setattr(window_mod, "HIGHGUI_CHECK",
                        "import os, sys; "
                        "print('qt.qpa.plugin: Could not find the Qt platform plugin', file=sys.stderr); "
                        "print('Available platform plugins are: xcb.', file=sys.stderr); sys.stderr.flush(); "
                        "os.abort()")
    assert window_mod.highgui_opens() == "qt.qpa.plugin: Could not find the Qt platform plugin (killed by signal 6)"
    monkeypatch.setattr(window_mod, "HIGHGUI_CHECK", "import os; os._exit(4)")
    assert window_mod.highgui_opens() == "exit code 4"
    monkeypatch.setattr(window_mod, "HIGHGUI_CHECK", "import time; time.sleep(30)")
    assert window_mod.highgui_opens(timeout_s=0.5) == "opening a window did not finish within 0.5 s"
    why = window_mod.highgui_opens(python=str(Path(sys.executable).with_name("no-such-python")))
    assert why is not None and why.startswith("could not start ") and "no-such-python" in why


def test_mn_live_without_a_usable_qt_runs_headless_instead_of_aborting(tmp_path: Path, cache: str) -> None:
    """A display that answers but a Qt that cannot start on it (here: a platform plugin that does not exist; in
    practice a library the xcb plugin needs is missing): Qt would abort mn-live at the window; the check finds
    it first, so the run goes on without a window, exit 0, every file written."""
    import os
    import subprocess
    import sys

    from realtime.sinks import window as window_mod
    from realtime.sinks.csv_sink import read_csv
    from tests.realtime.sinks import _x11

    why = _x11.missing()
    if why:
        pytest.skip(f"no real HighGUI test: {why}")
    repo = Path(__file__).resolve().parents[3]
    out = tmp_path / "live"
    with _x11.xvfb() as display:
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "no-such-platform", "PYTHONPATH": str(repo),
               "MN_SEG_CACHE": cache}
        env.pop("WAYLAND_DISPLAY", None)
        probe = subprocess.run([sys.executable, "-c", window_mod.HIGHGUI_CHECK], env=env, capture_output=True,
                               timeout=60)
        assert probe.returncode != 0  # what mn-live would have died of
        done = subprocess.run([sys.executable, "-m", "realtime.live_cli", "--source", "synthetic:3", "--frames", "4",
                               "--out", str(out), "--model", "lunet", "--size", "64x48", "--presence", "off"],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'a window cannot be opened on the display' in done.stderr
    assert 'Qt platform plugin "no-such-platform"' in done.stderr and "Traceback" not in done.stderr
    assert len(read_csv(out / "measurements.csv")) == 4 and (out / "summary.json").is_file()
