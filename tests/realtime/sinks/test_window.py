"""realtime.sinks.window: the window sink shows the shared overlay and hands its keys to the run's control
(a stand-in window: no display needed)."""

from __future__ import annotations

import numpy as np

from realtime.sinks.base import RunControl, RunInfo
from realtime.sinks.overlay import OverlayRenderer
from realtime.sinks.window import WindowSink
from tests.realtime.sinks._helpers import record


class FakeWindow:
    title = "test"

    def __init__(self, keys: list[str | None]) -> None:
        self.keys = list(keys)
        self.shown: list[np.ndarray] = []
        self.closed = False

    def show(self, bgr: np.ndarray) -> str | None:
        self.shown.append(bgr)
        return self.keys.pop(0) if self.keys else None

    def wait_key(self, wait_ms: int = 50) -> str | None:
        return self.keys.pop(0) if self.keys else "pause"

    def close(self) -> None:
        self.closed = True


def test_window_shows_the_overlay_and_quits_on_q() -> None:
    control = RunControl()
    window = FakeWindow([None, "quit"])
    renderer = OverlayRenderer()
    sink = WindowSink(window, renderer)  # type: ignore[arg-type]
    sink.open(RunInfo(source=None, engine=None, tracker=None, control=control, fps=24.0, calibrated=False))
    first = record(0)
    sink.write(first)
    assert window.shown[0] is renderer.draw(first)  # drawn once, shared with any other output
    assert not control.stopping and first.timings_ms["render"] >= 0 and first.timings_ms["write"] >= 0
    sink.write(record(1))
    assert control.stopping and control.reason == "quit from the window"
    sink.close()
    assert window.closed
