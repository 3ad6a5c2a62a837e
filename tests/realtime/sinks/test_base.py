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
