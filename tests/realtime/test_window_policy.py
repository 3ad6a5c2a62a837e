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


def sources(policy: WindowPolicy, results: list[T], agree: bool = True) -> str:
    """Feed ``results`` frame by frame: 'T' where the policy hints (and the frame is then tracked), 'C' where it
    hints and asks for a check (the localiser then agrees, or not with ``agree=False``: 'L'), 'L' else."""
    out = []
    for r in results:
        centre, verify = policy.next_window(NATIVE, NET)
        assert centre is not None or not verify  # nothing to verify without a hint
        source = "localiser" if centre is None else "tracked" if not verify else "confirmed" if agree else "localiser"
        out.append(source[0].upper())
        policy.observe(r, source)
    return "".join(out)


def test_tracking_starts_after_min_ok_frames_and_relocalises_periodically() -> None:
    policy = WindowPolicy(relocalise_every=4, min_ok=2)
    assert sources(policy, [ok()] * 14) == "LL" + "TTTTC" + "TTTTC" + "TT"
    assert policy.counts == {"tracked": 10, "confirmed": 2, "localiser": 2}
    assert policy.describe()["windows"] == {"tracked": 10, "confirmed": 2, "localiser": 2}


def test_a_check_the_localiser_disagrees_with_also_restarts_the_count() -> None:
    policy = WindowPolicy(relocalise_every=4, min_ok=2)
    assert sources(policy, [ok()] * 14, agree=False) == "LL" + "TTTTL" + "TTTTL" + "TT"
    assert policy.counts == {"tracked": 10, "confirmed": 0, "localiser": 4}


def test_without_verify_the_localiser_places_the_periodic_window_outright() -> None:
    policy = WindowPolicy(relocalise_every=4, min_ok=2, verify=False)
    for _ in range(2):
        policy.observe(ok(), "localiser")
    for _ in range(4):
        assert policy.next_window(NATIVE, NET)[1] is False
        policy.observe(ok(), "tracked")
    assert policy.next_window(NATIVE, NET) == (None, False)


def test_no_check_is_asked_for_while_tracking_is_not_confident() -> None:
    policy = WindowPolicy(relocalise_every=1, min_ok=2, min_confidence=0.8)
    policy.observe(ok(), "localiser")
    assert policy.next_window(NATIVE, NET) == (None, False)  # one measured frame of the two needed
    policy.observe(ok(conf=0.5), "localiser")
    assert policy.next_window(NATIVE, NET) == (None, False)  # two, but the last one unsure


def test_a_miss_or_low_confidence_hands_the_window_back_to_the_localiser() -> None:
    policy = WindowPolicy(relocalise_every=100, min_ok=2, min_confidence=0.8)
    assert sources(policy, [ok(), ok(), ok(), MISS, ok(), ok(), ok(conf=0.5), ok(), ok()]) == "LLTTLLTLT"


def test_the_centre_maps_native_pixel_centres_onto_the_network_input() -> None:
    policy = WindowPolicy(min_ok=1)
    policy.observe(ok(x=199.5, y=149.5), "localiser")  # the middle of a 400x300 frame
    centre, verify = policy.next_window(NATIVE, NET)
    assert centre == pytest.approx((99.5, 74.5)) and verify is False
    policy.observe(ok(x=0.0, y=0.0), "tracked")
    assert policy.next_window(NATIVE, NET)[0] == pytest.approx((-0.25, -0.25))


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
                                 "verify": True, "windows": {"tracked": 1, "confirmed": 0, "localiser": 3}}


def test_a_confidence_at_the_threshold_is_confident_enough() -> None:
    policy = WindowPolicy(relocalise_every=100, min_ok=1, min_confidence=0.8)
    assert sources(policy, [ok(conf=0.8), ok(conf=0.8), ok(conf=0.79), ok()]) == "LTTL"


def test_relocalise_every_1_alternates_localiser_and_tracked_windows() -> None:
    policy = WindowPolicy(relocalise_every=1, min_ok=1)
    assert sources(policy, [ok()] * 5) == "LTCTC"
    policy = WindowPolicy(relocalise_every=1, min_ok=1, verify=False)
    assert sources(policy, [ok()] * 5) == "LTLTL"


def test_an_unmeasured_frame_with_a_centroid_still_hands_the_window_back() -> None:
    """A frame the tracker did not count as measured (e.g. rejected by the presence gate) keeps its measurement
    for the CSV, but its centroid must not steer the next window."""
    policy = WindowPolicy(relocalise_every=100, min_ok=1)
    rejected = T(False, M(150.0, 80.0, 0.99))
    assert sources(policy, [ok(), ok(), rejected, ok(), ok()]) == "LTTLT"


class HintedEngine:
    """A stand-in cascade: the probability is a disc at the hinted centre, or at the 'localiser' place
    ((60, 40), from call ``moves_at`` on (90, 40): a disc that does not touch the first, within the tracker's gate);
    a verified hint is kept when the two
    discs overlap (as the cascade checks, :func:`engines.cascade.outlines_agree`)."""

    window_hints = True
    input_shape = (-1, 1, NET[1], NET[0])
    size = NET

    def __init__(self, moves_at: int | None = None) -> None:
        self.calls: list[list] = []
        self.verified: list[list] = []
        self.moves_at = moves_at

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.infer_hinted(x, [None] * len(x))[0]

    @staticmethod
    def disc(centre: tuple[float, float]) -> np.ndarray:
        import cv2

        out = np.zeros((NET[1], NET[0]), np.float32)
        cv2.circle(out, (int(round(centre[0])), int(round(centre[1]))), 12, 0.95, -1)
        return out

    def infer_hinted(self, x: np.ndarray, centres: list, verify: list | None = None) -> tuple[np.ndarray, list]:
        from engines.cascade import outlines_agree

        verify = verify or [False] * len(x)
        self.calls.append(list(centres))
        self.verified.append(list(verify))
        moved = self.moves_at is not None and len(self.calls) > self.moves_at
        own = self.disc((90, 40) if moved else (60, 40))
        out, sources = np.zeros((len(x), 1, NET[1], NET[0]), np.float32), []
        for i, (c, v) in enumerate(zip(centres, verify)):
            hinted = None if c is None else self.disc(c)
            if hinted is None or (v and not outlines_agree(hinted, own)):
                out[i, 0], source = own, "localiser"
            else:
                out[i, 0], source = hinted, "confirmed" if v else "tracked"
            sources.append(source)
        return out, sources

    def describe(self) -> dict:
        return {"name": "stub"}


def run_pipeline(engine: HintedEngine, frames: int = 8) -> tuple[list, object, object]:
    from realtime.frame import Frame
    from realtime.pipeline import Pipeline, PipelineConfig
    from realtime.sinks.base import Callback
    from realtime.tracker import Tracker

    stream = [Frame(index=i, pts=i / 24, image=np.full((NATIVE[1], NATIVE[0]), 90, np.uint8), t_capture=0.0)
              for i in range(frames)]
    records: list = []
    pipe = Pipeline(engine, Tracker(None, 24.0), [Callback(records.append)],
                    PipelineConfig(batch=4, window=WindowPolicy(relocalise_every=3)))
    return records, pipe, pipe.run(iter(stream))


def test_pipeline_hints_frame_by_frame_and_records_the_source() -> None:
    engine = HintedEngine()
    records, pipe, result = run_pipeline(engine)
    assert [len(c) for c in engine.calls] == [1] * 8  # frame by frame, although batch=4
    assert [r.window for r in records] == ["localiser", "localiser", "tracked", "tracked", "tracked", "confirmed",
                                           "tracked", "tracked"]
    assert [v[0] for v in engine.verified] == [False] * 5 + [True] + [False] * 2  # the 3rd hint after the localiser
    # the tracked window sits on the last centroid (the disc at 60,40 in network pixels stays put)
    hinted = [c[0] for c in engine.calls if c[0] is not None]
    assert all(abs(x - 60) < 1 and abs(y - 40) < 1 for x, y in hinted)
    assert result.exit_code == 0 and pipe.config.window.counts == {"tracked": 5, "confirmed": 1, "localiser": 2}


def test_pipeline_follows_the_localiser_when_the_check_disagrees() -> None:
    engine = HintedEngine(moves_at=4)  # from the 5th frame on the localiser finds the nerve elsewhere
    records, pipe, result = run_pipeline(engine)
    assert [r.window for r in records] == ["localiser", "localiser", "tracked", "tracked", "tracked", "localiser",
                                           "tracked", "tracked"]
    # until the check the track stays where it was; after it, the window follows the localiser's nerve
    hinted = [c[0] for c in engine.calls]
    assert all(abs(x - 60) < 1 and abs(y - 40) < 1 for x, y in hinted[2:6])
    assert all(abs(x - 90) < 1 and abs(y - 40) < 1 for x, y in hinted[6:])
    assert result.exit_code == 0 and pipe.config.window.counts == {"tracked": 5, "confirmed": 0, "localiser": 3}
