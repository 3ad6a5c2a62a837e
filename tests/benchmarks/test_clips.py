"""benchmarks.clips.stream_clip: the live loop's set-up, its options reaching the pipeline, failures named."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.clips import stream_clip
from common.errors import UserError
from engines.base import Engine, EngineInfo


class DarkNerve(Engine):
    """Nerve probability 0.9 where the preprocessed frame is much darker than its mean (a drawn dark nerve)."""

    def __init__(self, size: tuple[int, int] = (160, 120)) -> None:
        super().__init__(EngineInfo(name="dark", backend="fake", precision="fp32", device="cpu",
                                    input_shape=(1, 1, size[1], size[0])))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return (batch < -1.2).astype(np.float32) * 0.9


def still(tmp_path: Path) -> str:
    """An annotated still with one dark ellipse, as an ``animate:IMAGE:MASK`` spec."""
    rng = np.random.default_rng(0)
    grey = np.clip(rng.normal(150, 10, (240, 320)), 0, 255).astype(np.uint8)
    mask = np.zeros((240, 320), np.uint8)
    cv2.ellipse(mask, (160, 120), (30, 12), 0, 0, 360, 255, -1)
    grey[mask > 0] = 70  # hypoechoic, as a nerve is (not anechoic: the presence gate rejects that)
    cv2.imwrite(str(tmp_path / "img.png"), grey)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    return f"animate:{tmp_path / 'img.png'}:{tmp_path / 'mask.png'}"


class Seen:
    """What the callback sees of each record (its pixels are released once every sink has it)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, bool, bool, bool]] = []
        self.rejected: list[str | None] = []

    def __call__(self, r) -> None:  # type: ignore[no-untyped-def]
        self.rows.append((r.frame, r.truth is not None, bool(r.measured), bool(r.fused)))
        self.rejected.append(r.tracked.to_row().get("rejected"))


def test_every_frame_reaches_the_callback_with_truth_and_the_chosen_confirmation(tmp_path: Path) -> None:
    spec = still(tmp_path)
    seen = Seen()
    stream_clip(DarkNerve(), spec, 6, seen, fusion=0.5, presence="shape", confirm_frames=1)
    assert [f for f, _, _, _ in seen.rows] == list(range(6))
    assert all(t and m for _, t, m, _ in seen.rows)
    assert [fused for *_, fused in seen.rows] == [False] + [True] * 5  # fused from the second measured frame on
    confirmed = Seen()
    stream_clip(DarkNerve(), spec, 6, confirmed, presence="shape", confirm_frames=3)
    assert [m for _, _, m, _ in confirmed.rows] == [False, False, True, True, True, True]
    assert not any(fused for *_, fused in confirmed.rows)  # no fusion asked for: no fused frame
    # the default gate also asks the outline to look like a median nerve: a dark blob without a bright rim does not
    gated = Seen()
    stream_clip(DarkNerve(), spec, 3, gated)
    assert not any(m for _, _, m, _ in gated.rows) and all("appearance" in (why or "") for why in gated.rejected)


def test_the_presence_refresh_reaches_the_tracker_in_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import realtime.tracker

    made: list = []

    class Spy(realtime.tracker.Tracker):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(realtime.tracker, "Tracker", Spy)
    spec = still(tmp_path)
    stream_clip(DarkNerve(), spec, 2, lambda r: None, presence="shape", presence_refresh=0.5, fps=24.0)
    stream_clip(DarkNerve(), spec, 2, lambda r: None, presence="shape")
    assert [t.refresh_frames for t in made] == [12, None]


def test_a_failed_clip_is_a_user_error_with_its_name(tmp_path: Path) -> None:
    class Broken(DarkNerve):
        def _infer(self, batch: np.ndarray) -> np.ndarray:
            raise RuntimeError("the engine broke")

    with pytest.raises(UserError, match=r"^clip 7: the clip failed \(.*the engine broke"):
        stream_clip(Broken(), still(tmp_path), 3, lambda r: None, name="clip 7")


def test_ctrl_c_during_a_clip_stops_the_benchmark_instead_of_scoring_a_clip_cut_short(tmp_path: Path) -> None:
    """The pipeline ends a run cleanly on Ctrl-C (exit 0 for mn-live); a benchmark of many clips must stop."""
    class CtrlC(DarkNerve):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def _infer(self, batch: np.ndarray) -> np.ndarray:
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return super()._infer(batch)

    seen = Seen()
    with pytest.raises(KeyboardInterrupt):
        stream_clip(CtrlC(), still(tmp_path), 6, seen, presence="shape", confirm_frames=1)
    assert [f for f, *_ in seen.rows] == [0, 1]  # the frames before it, then no more
