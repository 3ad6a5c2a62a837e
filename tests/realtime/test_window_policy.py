"""The tracked window's state machine (realtime.window_policy) on scripted tracking results, and the
pipeline using it: which frames get a tracked window, how often the localiser takes over again,
and that frame-by-frame hinting is what reaches the engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from realtime.window_policy import WINDOW_MODES, WindowPolicy, make_window_policy
from train.errors import UserError


@dataclass
class M:  # the fields of a Measurement the policy reads
    centroid_x_px: float | None
    centroid_y_px: float | None
    confidence: float | None


@dataclass
class T:  # the fields of a TrackedMeasurement the policy reads
    measured: bool
    measurement: M | None


def ok(x: float = 100.0, y: float = 50.0, conf: float = 0.95) -> T:
    return T(True, M(x, y, conf))


MISS = T(False, None)
NATIVE, NET = (400, 300), (200, 150)


def sources(policy: WindowPolicy, results: list[T]) -> str:
    """Feed ``results`` frame by frame: 'T' where the policy hints (and the frame is then tracked), 'L' else."""
    out = []
    for r in results:
        centre = policy.next_centre(NATIVE, NET)
        source = "tracked" if centre is not None else "localiser"
        out.append(source[0].upper())
        policy.observe(r, source)
    return "".join(out)


def test_tracking_starts_after_min_ok_frames_and_relocalises_periodically() -> None:
    policy = WindowPolicy(relocalise_every=4, min_ok=2)
    assert sources(policy, [ok()] * 14) == "LL" + "TTTTL" + "TTTTL" + "TT"
    assert policy.counts == {"tracked": 10, "localiser": 4}
    assert policy.describe()["windows"] == {"tracked": 10, "localiser": 4}


def test_a_miss_or_low_confidence_hands_the_window_back_to_the_localiser() -> None:
    policy = WindowPolicy(relocalise_every=100, min_ok=2, min_confidence=0.8)
    assert sources(policy, [ok(), ok(), ok(), MISS, ok(), ok(), ok(conf=0.5), ok(), ok()]) == "LLTTLLTLT"


def test_the_centre_maps_native_pixel_centres_onto_the_network_input() -> None:
    policy = WindowPolicy(min_ok=1)
    policy.observe(ok(x=199.5, y=149.5), "localiser")  # the middle of a 400x300 frame
    assert policy.next_centre(NATIVE, NET) == pytest.approx((99.5, 74.5))
    policy.observe(ok(x=0.0, y=0.0), "tracked")
    assert policy.next_centre(NATIVE, NET) == pytest.approx((-0.25, -0.25))


def test_modes_and_bad_settings() -> None:
    assert WINDOW_MODES == ("tracked", "localiser")
    assert isinstance(make_window_policy("tracked"), WindowPolicy) and make_window_policy("localiser") is None
    with pytest.raises(UserError, match=r"^--window must be one of tracked, localiser, got 'both'$"):
        make_window_policy("both")
    for bad in ({"relocalise_every": 0}, {"min_ok": 0}):
        with pytest.raises(UserError, match=r"^the window policy needs relocalise_every >= 1 and min_ok >= 1$"):
            WindowPolicy(**bad)
    for bad_conf in (-0.01, 1.01, 2.0):
        with pytest.raises(UserError, match=r"^the window policy's min_confidence must be in \[0, 1\], got "):
            WindowPolicy(min_confidence=bad_conf)
    # the boundaries are settings a user may choose
    for good in ({"relocalise_every": 1}, {"min_ok": 1}, {"min_confidence": 0.0}, {"min_confidence": 1.0}):
        WindowPolicy(**good)


def test_describe_lists_the_settings_and_the_counts() -> None:
    policy = WindowPolicy(relocalise_every=5, min_ok=3, min_confidence=0.7)
    sources(policy, [ok()] * 4)
    assert policy.describe() == {"mode": "tracked", "relocalise_every": 5, "min_ok": 3, "min_confidence": 0.7,
                                 "windows": {"tracked": 1, "localiser": 3}}


def test_a_confidence_at_the_threshold_is_confident_enough() -> None:
    policy = WindowPolicy(relocalise_every=100, min_ok=1, min_confidence=0.8)
    assert sources(policy, [ok(conf=0.8), ok(conf=0.8), ok(conf=0.79), ok()]) == "LTTL"


def test_relocalise_every_1_alternates_localiser_and_tracked_windows() -> None:
    policy = WindowPolicy(relocalise_every=1, min_ok=1)
    assert sources(policy, [ok()] * 5) == "LTLTL"


def test_an_unmeasured_frame_with_a_centroid_still_hands_the_window_back() -> None:
    """A frame the tracker did not count as measured (e.g. rejected by the presence gate) keeps its measurement
    for the CSV, but its centroid must not steer the next window."""
    policy = WindowPolicy(relocalise_every=100, min_ok=1)
    rejected = T(False, M(150.0, 80.0, 0.99))
    assert sources(policy, [ok(), ok(), rejected, ok(), ok()]) == "LTTLT"


class HintedEngine:
    """A stand-in cascade: the probability is a disc at the hinted centre, or at a fixed 'localiser' place."""

    window_hints = True
    input_shape = (-1, 1, NET[1], NET[0])
    size = NET

    def __init__(self) -> None:
        self.calls: list[list] = []

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.infer_hinted(x, [None] * len(x))[0]

    def infer_hinted(self, x: np.ndarray, centres: list) -> tuple[np.ndarray, list]:
        import cv2

        self.calls.append(list(centres))
        out = np.zeros((len(x), 1, NET[1], NET[0]), np.float32)
        for i, c in enumerate(centres):
            cx, cy = (60, 40) if c is None else (int(round(c[0])), int(round(c[1])))
            cv2.circle(out[i, 0], (cx, cy), 12, 0.95, -1)
        return out, ["localiser" if c is None else "tracked" for c in centres]

    def describe(self) -> dict:
        return {"name": "stub"}


def test_pipeline_hints_frame_by_frame_and_records_the_source() -> None:
    from realtime.frame import Frame
    from realtime.pipeline import Pipeline, PipelineConfig
    from realtime.sinks.base import Callback
    from realtime.tracker import Tracker

    frames = [Frame(index=i, pts=i / 24, image=np.full((NATIVE[1], NATIVE[0]), 90, np.uint8), t_capture=0.0)
              for i in range(8)]
    engine, records = HintedEngine(), []
    pipe = Pipeline(engine, Tracker(None, 24.0), [Callback(records.append)],
                    PipelineConfig(batch=4, window=WindowPolicy(relocalise_every=3)))
    result = pipe.run(iter(frames))
    assert [len(c) for c in engine.calls] == [1] * 8  # frame by frame, although batch=4
    assert [r.window for r in records] == ["localiser", "localiser", "tracked", "tracked", "tracked", "localiser",
                                           "tracked", "tracked"]
    # the tracked window sits on the last centroid (the disc at 60,40 in network pixels stays put)
    hinted = [c[0] for c in engine.calls if c[0] is not None]
    assert all(abs(x - 60) < 1 and abs(y - 40) < 1 for x, y in hinted)
    assert result.exit_code == 0 and pipe.config.window.counts == {"tracked": 5, "localiser": 3}
