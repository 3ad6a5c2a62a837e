"""realtime.sinks.base: what the window's keys and the signal handlers do to a run (RunControl): stop,
baseline now, pause and hold, and the run's events."""

from __future__ import annotations

from realtime.sinks.base import Callback, RunControl
from tests.realtime.sinks._helpers import record


class FakeTracker:
    def __init__(self) -> None:
        self.baselines = 0

    def set_baseline_now(self) -> None:
        self.baselines += 1


def test_baseline_now_asks_the_tracker_and_notes_the_event() -> None:
    tracker = FakeTracker()
    control = RunControl(tracker)
    control.baseline_now(frame=12, t_s=0.5)
    assert tracker.baselines == 1 and not control.stopping
    assert control.events == [{"event": "baseline_requested", "frame": 12, "t_s": 0.5}]


def test_pause_holds_until_resumed_polling_the_window() -> None:
    control = RunControl()
    polls = []

    def poll() -> None:  # the window: space pressed on the third poll
        polls.append(control.paused)
        if len(polls) == 3:
            control.resume()

    control.poll = poll
    event = control.request_pause(frame=40, t_s=1.6)
    assert control.paused and event == {"event": "pause", "frame": 40, "t_s": 1.6}
    assert control.request_pause(frame=41) is None  # already paused: one pause, one event
    held = control.hold()
    assert polls == [True, True, True] and not control.paused and not control.stopping
    assert control.paused_s == held and event["duration_s"] == round(held, 3) and "ended_run" not in event
    assert control.last_pause is event and control.events == [event]


def test_quit_while_paused_ends_the_hold_and_the_run() -> None:
    control = RunControl()
    control.poll = lambda: control.stop("window closed")
    control.request_pause(frame=3)
    control.hold()
    assert control.stopping and control.reason == "window closed" and not control.paused
    assert control.last_pause["ended_run"] is True
    assert control.request_pause(frame=4) is None  # no pause once stopping


def test_stop_reason_and_callback() -> None:
    control = RunControl()
    control.stop("stopped by SIGTERM")
    assert control.stopping and control.reason == "stopped by SIGTERM"
    assert control.hold() >= 0 and control.paused_s >= 0  # nothing to hold
    seen = []
    Callback(seen.append).write(r := record(7))
    assert seen == [r]


# --- found by mutation testing (docs/mutation-testing.md)

import logging
import re
import threading
import time

import pytest

from realtime.sinks.base import RunInfo, Sink


def test_stop_default_reason_and_baseline_without_a_tracker() -> None:
    control = RunControl()
    assert control.reason == "" and control.events == [] and control.paused_s == 0.0 and control.poll is None
    assert control.last_pause is None and not control.paused
    control.baseline_now()  # no tracker: only noted
    assert control.events == [{"event": "baseline_requested", "frame": None, "t_s": None}]
    entry = control.note("snapshot", frame=2)
    assert entry is control.events[-1] and entry == {"event": "snapshot", "frame": 2}
    control.stop()
    assert control.reason == "stopped by the user" and control.stopping


def test_find_roi_again_asks_the_source_when_it_can() -> None:
    asked = []

    class Src:
        def redetect_roi(self) -> None:
            asked.append(True)

    RunControl(source=Src()).find_roi_again()
    RunControl(source=object()).find_roi_again()  # a source without it: nothing
    RunControl().find_roi_again()
    assert asked == [True]


def test_pause_and_resume_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    control = RunControl()
    control.resume()  # not paused: nothing to end
    assert not control.paused
    with caplog.at_level(logging.INFO, logger="realtime.sinks.base"):
        control.request_pause(frame=40)
        control.poll = control.resume
        control.hold()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "paused at frame 40: press space to resume, q to quit (s snapshot, b baseline still work)"
    assert re.fullmatch(r"resumed after \d+\.\d s paused", messages[1]) and len(messages) == 2


def test_hold_without_a_window_waits_for_resume_from_another_thread() -> None:
    control = RunControl()
    control.request_pause(frame=1)
    timer = threading.Timer(0.1, control.resume)
    timer.start()
    t0 = time.monotonic()
    held = control.hold()
    assert 0.09 <= held <= time.monotonic() - t0  # the time held, measured from the start of the hold
    timer.join()
    assert not control.paused and control.paused_s == held
    assert control.last_pause["duration_s"] == round(held, 3)
    control.request_pause(frame=2)  # paused again after a resume: a second event
    assert len(control.events) == 2 and control.paused
    control.poll = control.resume
    again = control.hold()
    assert control.paused_s == held + again  # pauses add up


def test_a_plain_sink_and_run_info_defaults() -> None:
    sink = Sink()
    assert sink.name == "sink" and sink.paths == {}
    sink.open(None)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        sink.write(record(0))
    closed = []

    class Closing(Sink):
        def close(self) -> None:
            closed.append(True)

    with Closing() as s:
        assert isinstance(s, Closing)
    assert closed == [True]
    run = RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=24.0, calibrated=False)
    assert (run.metadata, run.outputs, run.exit_code, run.reason, run.wall_s, run.extras, run.summary) == (
        {}, {}, 0, "", 0.0, {}, {})
    assert Callback(print).name == "callback"
