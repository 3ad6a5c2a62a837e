"""realtime.sources.common: the shared ROI / format / size guard and the thread hand-off buffers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from realtime.sources import (
    RoiError,
    SourceError,
    open_source,
)
import realtime.sources.common as common
from realtime.sources.common import ClosableQueue, LatestSlot, Pacer, live_indices, retry_until
from tests.realtime.sources._helpers import ListSource


def test_roi_crop_and_bad_roi() -> None:
    img = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64)
    with ListSource([img, img], roi="4,2,10,6") as src:
        frames = list(src)
    assert frames[0].image.shape == (6, 10)
    np.testing.assert_array_equal(frames[0].image, img[2:8, 4:14])
    assert src.frame_size == (10, 6) and src.native_size == (64, 48)
    assert src.describe()["roi"] == [4, 2, 10, 6]
    with ListSource([img], roi=(60, 0, 10, 10)) as src, pytest.raises(RoiError, match="64x48"):
        list(src)


def test_roi_applies_to_truth_too() -> None:
    with open_source("synthetic:1", realtime=False, frames=2, roi=(100, 20, 400, 200)) as src:
        frames = list(src)
    assert frames[0].image.shape == (200, 400) and frames[0].truth.shape == (200, 400)
    with open_source("synthetic", realtime=False, frames=1, roi=(500, 0, 200, 100)) as src:
        with pytest.raises(RoiError, match="606x468"):
            next(iter(src))


@pytest.mark.parametrize("image", [
    np.zeros((12, 16, 3), np.uint8),
    np.zeros((12, 16), np.uint8),
    np.full((12, 16), 40000, np.uint16),
    np.zeros((12, 16, 1), np.uint8),
])
def test_formats_pass_through(image: np.ndarray) -> None:
    with ListSource([image]) as src:
        (frame,) = list(src)
    assert frame.image.dtype == image.dtype
    assert frame.image.shape[:2] == (12, 16)
    assert frame.image.ndim == (3 if image.ndim == 3 and image.shape[2] == 3 else 2)
    assert frame.image.max() == image.max()


def test_frame_size_change_is_an_error() -> None:
    imgs = [np.zeros((48, 64), np.uint8)] * 3 + [np.zeros((60, 80), np.uint8)]
    src = ListSource(imgs)
    got = []
    with pytest.raises(SourceError, match=r"from 64x48 to 80x60 at frame 3"):
        for f in src:
            got.append(f)
    assert len(got) == 3 and src.failed
    src.close()


def test_one_pass_only() -> None:
    src = ListSource([np.zeros((4, 4), np.uint8)])
    list(src)
    with pytest.raises(SourceError, match="already iterated"):
        iter(src)


def test_latest_slot_keeps_newest_and_counts() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get() == (4, 4)
    slot.put(5)
    slot.close()
    assert slot.get() == (5, 0)
    assert slot.get() is None


def test_closable_queue_backpressure_and_close() -> None:
    q: ClosableQueue[int] = ClosableQueue(2)
    assert q.put(1) and q.put(2)
    blocked = threading.Event()
    returned: list[bool] = []  # what the producer's put returned, asserted here: pytest only warns about a
    # failed assertion inside a thread

    def producer() -> None:
        blocked.set()
        returned.append(q.put(3))

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    assert blocked.wait(30)
    q.close(drain=True)
    t.join(30)  # a guard against a hang, not a timing requirement
    assert not t.is_alive(), "put() on a full queue was not woken by close()"
    assert returned == [False]  # woken by close, not by space: the item was not queued
    assert q.get() is None


def test_retry_until_returns_the_first_success_or_gives_up() -> None:
    import threading

    stop = threading.Event()
    answers = iter([None, None, "link"])
    assert retry_until(lambda: next(answers), stop, within_s=5.0, interval_s=0.001)[:2] == ("link", 3)
    result, attempts, _ = retry_until(lambda: None, stop, within_s=0.0, interval_s=0.001)
    assert (result, attempts) == (None, 1)  # no time left: one try, no wait
    stop.set()
    assert retry_until(lambda: "never asked", stop, within_s=5.0, interval_s=0.001)[:2] == (None, 0)


class FakeClock:
    """A monotonic clock that moves only when told: pacing checked by arithmetic, not by the machine's speed."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class FakeStop:
    """A stop event whose ``wait`` advances the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.waits, self.stopped = clock, [], False

    def is_set(self) -> bool:
        return self.stopped

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        self.clock.now += timeout
        return self.stopped


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(common, "time", type("FakeTime", (), {"monotonic": staticmethod(fake.monotonic)}))
    return fake


def test_live_indices_pace_a_fast_consumer_at_the_frame_rate(clock: FakeClock) -> None:
    stop = FakeStop(clock)
    got = [(index, dropped, due, clock.now - 100.0) for index, dropped, due in live_indices(4.0, stop, Pacer(stop),
                                                                                           end=6)]
    # every frame, none dropped, each handed over exactly when it is due (period 0.25 s), never before
    assert got == [(i, 0, i * 0.25, i * 0.25) for i in range(6)]
    assert stop.waits == [0.25] * 5


def test_live_indices_skip_to_the_newest_due_frame_for_a_slow_consumer(clock: FakeClock) -> None:
    stop = FakeStop(clock)
    got = []
    for index, dropped, _ in live_indices(4.0, stop, Pacer(stop), end=12):
        got.append((index, dropped, clock.now - 100.0))
        clock.now += 0.625  # the consumer takes 2.5 frame periods
    # at 0.625 s frames 1 and 2 are due: 2 is taken and 1 counted; at 1.25 s frame 5 is due (3, 4 dropped); ...
    # the last frame (end - 1) is always delivered
    assert got == [(0, 0, 0.0), (2, 1, 0.625), (5, 2, 1.25), (7, 1, 1.875), (10, 2, 2.5), (11, 0, 3.125)]
    assert stop.waits == []  # always behind: never waits


def test_live_indices_stop_when_asked(clock: FakeClock) -> None:
    stop = FakeStop(clock)
    it = live_indices(4.0, stop, Pacer(stop))
    assert next(it)[0] == 0 and next(it)[0] == 1
    stop.stopped = True
    assert list(it) == []
