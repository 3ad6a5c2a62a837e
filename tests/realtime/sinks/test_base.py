"""realtime.sinks.base: what the window's keys and the signal handlers do to a run (RunControl)."""

from __future__ import annotations

from realtime.sinks.base import Callback, RunControl
from tests.realtime.sinks._helpers import record


class FakeTracker:
    def __init__(self) -> None:
        self.baselines = 0

    def set_baseline_now(self) -> None:
        self.baselines += 1


def test_keys_stop_rebaseline_and_pause() -> None:
    tracker = FakeTracker()
    control = RunControl(tracker)
    control.key("baseline", lambda: None)
    assert tracker.baselines == 1 and not control.stopping
    keys = iter([None, None, "pause"])  # paused until space again
    control.key("pause", lambda: next(keys))
    assert not control.stopping and next(keys, "drained") == "drained"
    control.key("pause", iter([None, "quit"]).__next__)  # quit while paused
    assert control.stopping and control.reason == "quit from the window"
    control.key(None, lambda: None)


def test_stop_reason_and_callback() -> None:
    control = RunControl()
    control.stop("stopped by SIGTERM")
    assert control.stopping and control.reason == "stopped by SIGTERM"
    seen = []
    Callback(seen.append).write(r := record(7))
    assert seen == [r]
