"""realtime.sources.common: the shared ROI / format / size guard and the thread hand-off buffers."""

from __future__ import annotations

import threading
import time

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


# --- found by mutation testing (docs/mutation-testing.md)

import logging
from collections.abc import Iterator
from typing import Any

from realtime.frame import Frame
from realtime.sources.common import (
    AUTO_ROI,
    FrameGuard,
    GeneratedSource,
    Prefetcher,
    Source,
    SourceLost,
    SourceOptions,
    image_size,
    join_thread,
    normalise_image,
    parse_roi,
    register_source,
    source_class,
)


def test_parse_roi_forms_and_bounds() -> None:
    assert parse_roi(None) is None
    assert parse_roi(" Auto ") == AUTO_ROI == "auto"
    assert parse_roi(" 1, 2 3 ,4 ") == (1, 2, 3, 4)
    assert parse_roi([0, 0, 1, 1]) == (0, 0, 1, 1) and type(parse_roi([0, 0, 1, 1])) is tuple
    assert parse_roi(("5", 6, 7.0, 8)) == (5, 6, 7, 8)
    with pytest.raises(RoiError,
                       match=r"ROI '1,2,3' is not of the form x,y,w,h \(pixels, e.g. 40,30,520,400\) or auto"):
        parse_roi("1,2,3")
    with pytest.raises(RoiError, match=r"ROI must be four integers \(x, y, w, h\), got \['a', 1, 2, 3\]"):
        parse_roi(["a", 1, 2, 3])
    with pytest.raises(RoiError, match=r"ROI must be four integers \(x, y, w, h\), got 7"):
        parse_roi(7)  # type: ignore[arg-type]
    with pytest.raises(RoiError, match=r"four integers \(x, y, w, h\), got \[1, 2, 3\]"):
        parse_roi([1, 2, 3])
    for bad in ("-1,0,1,1", "0,-1,1,1", "0,0,0,1", "0,0,1,0"):
        with pytest.raises(RoiError, match=r"x and y must be >= 0, w and h > 0"):
            parse_roi(bad)
    with pytest.raises(RoiError, match=r"ROI x=-1, y=2, w=3, h=4: "):
        parse_roi([-1, 2, 3, 4])


def test_normalise_image_and_image_size() -> None:
    grey = np.zeros((3, 5), np.uint8)
    assert normalise_image(grey) is grey and image_size(grey) == (5, 3)
    bgr = np.zeros((3, 5, 3), np.uint8)
    assert normalise_image(bgr) is bgr
    one = np.arange(15, dtype=np.uint8).reshape(3, 5, 1)
    np.testing.assert_array_equal(normalise_image(one), one[:, :, 0])
    assert normalise_image(one).shape == (3, 5)
    for bad, shape in ((np.zeros(5), r"\(5,\)"), (np.zeros((2, 2, 2, 2)), r"\(2, 2, 2, 2\)"),
                       (np.zeros((0, 4)), r"\(0, 4\)"), ([[1, 2]], "None")):
        with pytest.raises(SourceError,
                           match=rf"the source delivered something that is not an image \(shape {shape}\)"):
            normalise_image(bad)  # type: ignore[arg-type]


def test_frame_guard_roi_fits_exactly_and_names_what_does_not() -> None:
    FrameGuard((4, 2, 60, 46), "s").check_roi((64, 48))  # x+w == width and y+h == height: fits
    FrameGuard(None, "s").check_roi((1, 1))
    with pytest.raises(RoiError, match=r"^ROI x=4, y=2, w=61, h=6 does not fit the 64x48 \(width x height\) frames "
                                       r"of cam: it needs x\+w <= 64 and y\+h <= 48 \(it has x\+w = 65, y\+h = 8\)$"):
        FrameGuard((4, 2, 61, 6), "cam").check_roi((64, 48))
    with pytest.raises(RoiError, match=r"y\+h = 49"):
        FrameGuard((0, 2, 10, 47), "cam").check_roi((64, 48))


def test_frame_guard_keeps_an_untouched_frame_and_crops_the_truth() -> None:
    img = np.zeros((48, 64), np.uint8)
    frame = Frame(0, 0.0, 0.0, img, 0, None)
    assert FrameGuard(None, "s")(frame) is frame
    truth = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    guard = FrameGuard((4, 2, 10, 6), "s")
    out = guard(Frame(0, 0.0, 0.0, img, 3, truth))
    np.testing.assert_array_equal(out.truth, truth[2:8, 4:14])
    assert out.image.shape == (6, 10) and out.image.flags.c_contiguous and out.truth.flags.c_contiguous
    assert out.dropped_before == 3 and guard.native_size == (64, 48)
    squeezed = FrameGuard(None, "s")(Frame(0, 0.0, 0.0, img[:, :, None], 0, None))
    assert squeezed.image.shape == (48, 64)


def test_frame_size_change_message_names_the_source() -> None:
    guard = FrameGuard(None, "cam")
    guard(Frame(0, 0.0, 0.0, np.zeros((48, 64), np.uint8)))
    with pytest.raises(SourceError, match=r"^cam: the frame size changed from 64x48 to 80x60 at frame 7; a stream must "
                                          r"keep one size \(restart with the new size, or split the recording\)$"):
        guard(Frame(7, 0.0, 0.0, np.zeros((60, 80), np.uint8)))


def test_register_source_and_source_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "SOURCE_KINDS", {})

    class A(ListSource):
        pass

    class B(ListSource):
        pass

    assert register_source("zz")(A) is A and A.kind == "zz" and common.SOURCE_KINDS == {"zz": A}
    assert register_source("zz")(A) is A  # the same class again: fine
    with pytest.raises(ValueError, match=r"^source kind 'zz' is already registered by A$"):
        register_source("zz")(B)
    register_source("aa")(B)
    assert source_class("zz") is A
    with pytest.raises(KeyError, match=r"unknown source kind 'nope'; valid kinds: aa, zz"):
        source_class("nope")


def test_closable_queue_fifo_close_without_drain_and_size_check() -> None:
    with pytest.raises(ValueError, match="^maxsize must be >= 1$"):
        ClosableQueue(0)
    q: ClosableQueue[int] = ClosableQueue(1)
    assert q.maxsize == 1 and q.put(1)
    assert q.get() == 1 and q.put(2)
    q.close()
    assert q.put(3) is False
    assert q.get() == 2 and q.get() is None  # what was queued is still delivered
    q = ClosableQueue()
    assert q.maxsize == 8 and all(q.put(i) for i in range(8))
    assert [q.get() for _ in range(8)] == list(range(8))


def test_latest_slot_timeout_and_closed() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.get(timeout=0.01) is None and slot.closed is False
    slot.put(0)
    assert slot.get(timeout=0.01) == (0, 0)
    slot.put(None)  # type: ignore[arg-type]  # an item that is None is still an item
    assert slot.get(timeout=0.01) == (None, 0)
    slot.close()
    assert slot.closed and slot.get() is None


def test_prefetcher_delivers_everything_and_closes() -> None:
    p = Prefetcher(range(20), maxsize=2)
    assert p._thread.name == "prefetch" and p._thread.daemon is True  # never keeps the process alive
    assert Prefetcher(range(0))._queue.maxsize == 8
    assert list(p) == list(range(20))
    p.close()
    assert not p._thread.is_alive()
    endless = Prefetcher(iter(int, 1))  # never ends by itself
    assert next(iter(endless)) == 0
    endless.close()  # the producer blocked on the full queue is woken and ends
    assert not endless._thread.is_alive()
    assert list(endless) == []  # what was queued is discarded: the consumer is gone


def test_pacer_on_the_fake_clock(clock: FakeClock) -> None:
    stop = FakeStop(clock)
    pacer = Pacer(stop)
    assert pacer.start(50.0) == 50.0 and pacer.t0 == 50.0 and pacer.elapsed() == 50.0
    pacer = Pacer(stop)
    assert pacer.elapsed() == 0.0 and pacer.t0 == 100.0  # started on first use
    clock.now = 101.0
    assert pacer.wait_until(0.5) is True and stop.waits == []  # already due: no wait
    assert pacer.wait_until(1.5) is True and stop.waits == [0.5] and clock.now == 101.5
    assert pacer.wait_until(1.5) is True and stop.waits == [0.5]  # due exactly now: no wait
    stop.stopped = True
    assert pacer.wait_until(0.5) is False and pacer.wait_until(2.0) is False
    clock.now = 200.0
    late = Pacer(FakeStop(clock))
    assert late.wait_until(0.25) is True and late.t0 == 200.0 and clock.now == 200.25


def test_retry_until_waits_the_interval_but_never_past_the_deadline(clock: FakeClock) -> None:
    stop = FakeStop(clock)
    assert retry_until(lambda: None, stop, within_s=1.0, interval_s=0.375) == (None, 4, 1.0)
    assert stop.waits == [0.375, 0.375, 0.25]
    stop.waits.clear()
    answers = iter([None, None, 0])  # 0 is an answer (not None)
    assert retry_until(lambda: next(answers), stop, within_s=5.0, interval_s=0.25) == (0, 3, 0.5)
    assert stop.waits == [0.25, 0.25]


def test_join_thread_logs_a_thread_that_does_not_stop(caplog: pytest.LogCaptureFixture) -> None:
    join_thread(None, 1.0, "nothing")
    join_thread(threading.current_thread(), 1.0, "me")  # never joins itself (that would raise)
    release = threading.Event()
    stuck = threading.Thread(target=release.wait, daemon=True)
    stuck.start()
    with caplog.at_level(logging.WARNING, logger="realtime.sources.common"):
        join_thread(stuck, 0.01, "the grabber")
    assert [r.getMessage() for r in caplog.records] == [
        "the grabber did not stop within 0.0 s (it is a daemon thread and will not keep the process alive)"]
    release.set()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="realtime.sources.common"):
        join_thread(stuck, 5.0, "the grabber")
    assert caplog.records == [] and not stuck.is_alive()


class OptionSource(ListSource):
    """A list source with full options (frames limit, ROI) and a release counter."""

    def __init__(self, images: list[np.ndarray], dropped: int = 0, **options: Any) -> None:
        Source.__init__(self, "list:x", SourceOptions(**options))
        self.images, self.dropped, self.released = images, dropped, 0

    def _frames(self) -> Iterator[Frame]:
        for i, img in enumerate(self.images):
            yield Frame(i, 0.0, i / 24, img, self.dropped, None)

    def _release(self) -> None:
        self.released += 1


def test_source_frames_limit_counters_and_describe() -> None:
    imgs = [np.zeros((12, 16), np.uint8)] * 5
    src = OptionSource(imgs, dropped=2, frames=3, fps=12.5, roi=(1, 2, 8, 4), realtime=True)
    assert src.name == "list:x" and src.spec == "list:x" and src.fps == 12.5 and src.realtime is True
    assert repr(src) == "<OptionSource 'list:x' fps=12.5 size=None>"
    assert src.describe()["size"] is None and src.describe()["native_size"] is None
    assert len(list(src)) == 3
    assert (src.frames_delivered, src.frames_dropped) == (3, 6)
    assert src.describe() == {"kind": "?", "spec": "list:x", "name": "list:x", "fps": 12.5, "size": [8, 4],
                              "native_size": [16, 12], "roi": [1, 2, 8, 4], "realtime": True,
                              "frames_delivered": 3, "frames_dropped": 6, "failed": False, "error": None}
    assert repr(src) == "<OptionSource 'list:x' fps=12.5 size=(8, 4)>"
    assert src.redetect_roi() is False  # not --roi auto
    assert src.describe()["fps"] is not None and OptionSource(imgs).describe()["fps"] is None
    with src:
        assert not src.closed
    assert src.closed and src.released == 1
    src.close()
    assert src.released == 1  # released once
    assert list(OptionSource(imgs, frames=0)) == [] and len(list(OptionSource(imgs, frames=1))) == 1
    assert len(list(OptionSource(imgs))) == 5


def test_source_failure_and_closed_iteration() -> None:
    src = OptionSource([np.zeros((4, 4), np.uint8)])
    src.raise_if_failed()  # not failed: nothing
    src.fail("the cable came out", log_level=logging.DEBUG)
    assert src.failed and src.error == "the cable came out" and src.describe()["failed"] is True
    list(src)
    with pytest.raises(SourceLost, match=r"^list:x: the cable came out \(1 frames delivered\)$") as info:
        src.raise_if_failed()
    assert info.value.exit_code == 3
    closed = OptionSource([])
    closed.close()
    with pytest.raises(SourceError, match="^list:x is closed$"):
        iter(closed)
    with pytest.raises(SourceError,
                       match=r"^list:x was already iterated; a source is a one-pass stream \(open it again\)$"):
        iter(src)


def test_a_source_error_keeps_the_first_failure(caplog: pytest.LogCaptureFixture) -> None:
    imgs = [np.zeros((4, 4), np.uint8), np.zeros((5, 5), np.uint8)]
    src = OptionSource(imgs)
    src.fail("first")
    with pytest.raises(SourceError):
        list(src)
    assert src.error == "first"
    caplog.clear()
    fresh = OptionSource(imgs)
    with caplog.at_level(logging.DEBUG, logger="realtime.sources.common"), pytest.raises(SourceError):
        list(fresh)
    assert fresh.failed and fresh.error.startswith("list:x: the frame size changed")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]  # raised to the caller, who reports it


class Counting(GeneratedSource):
    length = 3

    @classmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kw: Any) -> Counting:
        raise NotImplementedError

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        return np.full((4, 6), index, np.uint8), np.full((4, 6), 255, np.uint8)


@pytest.mark.parametrize("realtime", [False, True])
def test_generated_source_frames(realtime: bool) -> None:
    with Counting("c", SourceOptions(realtime=realtime, fps=1000.0)) as src:
        got = list(src)
    assert [(f.index, f.pts, f.dropped_before, int(f.image[0, 0])) for f in got] == [
        (0, 0.0, 0, 0), (1, 0.001, 0, 1), (2, 0.002, 0, 2)]
    assert all(f.truth is not None and f.truth.shape == (4, 6) for f in got)
    src = Counting("c", SourceOptions(fps=10.0))
    src.length = None
    it = iter(src)
    assert [next(it).index for _ in range(5)] == [0, 1, 2, 3, 4]  # endless
    src.close()
    assert list(it) == []  # a closed generated source ends


def test_live_indices_from_a_start_index(clock: FakeClock) -> None:
    stop = FakeStop(clock)
    got = [(i, d, due) for i, d, due in live_indices(4.0, stop, Pacer(stop), start=5, end=8)]
    assert got == [(5, 0, 0.0), (6, 0, 0.25), (7, 0, 0.5)]
    clock.now += 10.0  # far behind: straight to the last frame
    stop2 = FakeStop(clock)
    pacer = Pacer(stop2)
    it = live_indices(4.0, stop2, pacer, start=2, end=6)
    assert next(it) == (2, 0, 0.0)
    clock.now += 0.5  # frames 3 and 4 due: 4 taken, 3 dropped
    assert next(it) == (4, 1, 0.5)
    assert list(it) == [(5, 0, 0.75)]


def test_redetect_roi_only_with_auto(caplog: pytest.LogCaptureFixture) -> None:
    src = OptionSource([np.zeros((4, 4), np.uint8)], roi=AUTO_ROI)
    with caplog.at_level(logging.INFO, logger="realtime.sources.common"):
        assert src.redetect_roi() is False  # not iterated yet: no guard
    assert [r.getMessage() for r in caplog.records] == ["list:x: the image area is found again only with --roi auto"]
    src._guard = FrameGuard(AUTO_ROI, "list:x")
    assert src.redetect_roi() is True and src._guard.redetect is True
    fixed = OptionSource([np.zeros((4, 4), np.uint8)])
    list(fixed)
    assert fixed.redetect_roi() is False and fixed._guard.redetect is False


def test_fail_logs_the_source_and_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    src = OptionSource([])
    with caplog.at_level(logging.DEBUG, logger="realtime.sources.common"):
        src.fail("the cable came out")
        src.fail("quietly", log_level=logging.DEBUG)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "list:x: the cable came out"), (logging.DEBUG, "list:x: quietly")]


def test_a_size_change_is_an_error_even_when_the_area_is_to_be_found_again() -> None:
    guard = FrameGuard(None, "cam")
    guard(Frame(0, 0.0, 0.0, np.zeros((48, 64), np.uint8)))
    guard.redetect = True
    with pytest.raises(SourceError, match="the frame size changed from 64x48 to 80x60 at frame 1"):
        guard(Frame(1, 0.0, 0.0, np.zeros((60, 80), np.uint8)))


def test_frame_guard_settings() -> None:
    auto = FrameGuard(AUTO_ROI, "s")
    assert auto.auto is True and auto.roi is None and auto.detections == [] and auto.redetect is False
    fixed = FrameGuard((1, 2, 3, 4), "s")
    assert fixed.auto is False and fixed.roi == (1, 2, 3, 4) and fixed.native_size is None


def test_auto_roi_found_again_same_size_only() -> None:
    """The image area of a scanner screen found in the first frame, again (moved) when asked, and not
    used when it has another size; every detection kept; the truth cropped with the image."""
    from realtime.sources.phantom import PhantomSource
    from tests.realtime.sources._screens import scanner_screen

    image = PhantomSource(seed=1).render(0)[0]
    first, roi = scanner_screen(image, "grey-1280x720")
    moved = np.roll(first, (3, -5), axis=(0, 1))
    other, _ = scanner_screen(image[:400], "grey-1280x720")
    src = OptionSource([first, moved, other, moved], roi=AUTO_ROI)
    seen = []
    for frame in src:
        seen.append((src.roi, frame.image.shape))
        assert src.redetect_roi() is True
    x, y, w, h = roi
    assert seen[0] == (roi, (h, w, 3)) and seen[1][0] == (x - 5, y + 3, w, h)
    assert seen[2] == ((x - 5, y + 3, w, h), (h, w, 3)) and seen[3][0] == (x - 5, y + 3, w, h)
    info = src.describe()
    assert [(d["frame"], d["used"]) for d in info["roi_auto"]] == [(0, True), (1, True), (2, False), (3, True)]
    assert info["roi_auto"][0]["roi"] == list(roi) and info["roi"] == [x - 5, y + 3, w, h]
    assert info["native_size"] == [1280, 720] and info["size"] == [w, h]
    assert "roi_auto" not in OptionSource([first]).describe()


def test_auto_roi_detections_are_logged_and_found_once_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    from realtime.sources.phantom import PhantomSource
    from realtime.sources.screen_roi import find_image_area
    from tests.realtime.sources._screens import scanner_screen

    image = PhantomSource(seed=1).render(0)[0]
    first, roi = scanner_screen(image, "grey-1280x720")
    moved = np.roll(first, (3, -5), axis=(0, 1))
    other, _ = scanner_screen(image[:400], "grey-1280x720")
    a, b, c = find_image_area(first), find_image_area(moved), find_image_area(other)
    guard = FrameGuard(AUTO_ROI, "cam")
    with caplog.at_level(logging.INFO, logger="realtime.sources.common"):
        guard(Frame(0, 0.0, 0.0, first))
        guard(Frame(1, 0.0, 0.0, moved))  # not asked: not found again
        assert guard.roi == roi and len(guard.detections) == 1 and guard.redetect is False
        guard.redetect = True
        guard(Frame(2, 0.0, 0.0, moved))
        assert guard.redetect is False and guard.roi == b.roi
        guard.redetect = True
        guard(Frame(3, 0.0, 0.0, other))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, (f"cam: --roi auto: the image area is {a.text()}; check it once (summary.json "
                        f"source_info.roi_auto), or give it with --roi {','.join(str(v) for v in a.roi)}")),
        (logging.INFO, f"cam: image area found again at frame 2: {b.text()}"),
        (logging.WARNING, (f"cam: image area found again at frame 3: {c.text()}, of another size than the "
                           f"{roi[2]}x{roi[3]} in use; a run keeps one frame size, so it is not used: restart with "
                           f"--roi auto (or --roi {','.join(str(v) for v in c.roi)})"))]
    assert [d["frame"] for d in guard.detections] == [0, 2, 3]


class _Pipe:
    """A fake connection: hands out the items it was given, then reports the connection lost."""

    def __init__(self, items: list[int]) -> None:
        self.items, self.closed = list(items), False


class _PipeSource(common.ReceivingSource[_Pipe]):
    """A ReceivingSource over :class:`_Pipe` handles: each open gives the next of ``pipes`` (None: fails)."""

    kind = "pipe"

    @classmethod
    def from_spec(cls, arg, *, spec, options, **kind_options):  # pragma: no cover - not registered
        raise NotImplementedError

    def __init__(self, pipes: list[_Pipe | None], reconnect_s: float = 0.2, stall_timeout_s: float | None = None,
                 hang: bool = False) -> None:
        super().__init__("pipe", common.SourceOptions(True, reconnect_s=reconnect_s), name="test pipe")
        self._init_receiving(self.options, 0.01, stall_timeout_s)
        self.pipes, self.opened, self.hang = list(pipes), [], hang
        self._handle = self._open_handle(first=True)

    def _open_handle(self, first: bool) -> _Pipe | None:
        pipe = self.pipes.pop(0) if self.pipes else None
        if pipe is None and first:
            raise SourceError("the pipe does not open")
        if pipe is not None:
            self.opened.append(pipe)
        return pipe

    def _close_handle(self, handle: _Pipe) -> None:
        handle.closed = True

    def _lost_text(self, attempts: int) -> str:
        return f"lost after {attempts} attempts"

    def _stall_text(self) -> str:
        return "nothing arrives"

    def _receive(self) -> None:
        pipe = self._handle
        try:
            while pipe is not None and not self._stop.is_set():
                if pipe.items:
                    self._slot.put(pipe.items.pop(0))
                    deadline = time.monotonic() + 5.0
                    while self._slot._has and time.monotonic() < deadline:  # taken before the next: none dropped
                        time.sleep(0.001)
                elif self.hang:
                    self._stop.wait(5.0)
                else:
                    pipe = self._reconnect(pipe)
        finally:
            self._slot.close()

    def _frames(self):
        for item, dropped in self._received():
            yield Frame(item, time.monotonic(), item / 24, np.full((4, 4), item, np.uint8), dropped)


def test_receiving_source_reconnects_then_ends_with_the_lost_reason() -> None:
    first, second = _Pipe([0, 1]), _Pipe([2])
    with _PipeSource([first, second]) as src:
        got = [f.index for f in src]
        assert got == [0, 1, 2] and src.reconnects == 1
        assert first.closed and second.closed  # each one lost was closed before the next open
        assert src.failed and src.error.startswith("lost after") and src._handle is None
        with pytest.raises(common.SourceLost, match="3 frames delivered"):
            src.raise_if_failed()


def test_receiving_source_stall_fails_and_close_releases_the_handle() -> None:
    pipe = _Pipe([7])
    src = _PipeSource([pipe], stall_timeout_s=0.3, hang=True)
    assert src.stall_timeout_s == 0.3 and _PipeSource([_Pipe([])]).stall_timeout_s == 10.2  # reconnect_s + 10
    assert [f.index for f in src] == [7]
    assert src.failed and src.error == "nothing arrives"
    src.close()
    assert pipe.closed and not src._thread.is_alive()
    with pytest.raises(SourceError, match="does not open"):
        _PipeSource([None])


def test_receiving_source_a_handle_that_fails_to_close_does_not_mask_anything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = _PipeSource([_Pipe([1])])

    def broken(handle: _Pipe) -> None:
        raise OSError("already gone")

    monkeypatch.setattr(src, "_close_handle", broken)
    assert [f.index for f in src] == [1] and src.error.startswith("lost after")  # the reconnect's close raised
    src.close()
