"""mn-presence: nerve-free frames made from annotated images hold no nerve, the counts are exact for
an oracle engine, and the command writes its files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.presence import (
    build_items,
    classify,
    clip_rows,
    format_clip_table,
    format_table,
    lifted_probe,
    main,
    off_nerve,
    remove_nerve,
    summarise,
    summarise_clips,
)
from engines.base import Engine, EngineInfo
from realtime.presence import PresenceGate
from tests.conftest import make_dataset


def _pair(w: int = 300, h: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    grey = np.clip(rng.normal(120, 25, (h, w)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (90, 100), (30, 12), 0, 0, 360, 255, -1)
    grey[mask > 0] = 30  # a dark nerve
    return grey, mask


def test_remove_nerve_replaces_the_nerve_with_tissue() -> None:
    grey, mask = _pair()
    out = remove_nerve(grey, mask)
    assert out is not None and out.shape == grey.shape and out.dtype == np.uint8
    inside = mask > 0
    assert float(grey[inside].mean()) == 30.0 and float(out[inside].mean()) > 100  # the dark nerve is gone
    far = np.zeros_like(inside)
    far[:, 200:] = True
    np.testing.assert_array_equal(out[far], grey[far])  # the rest is untouched
    assert remove_nerve(grey, np.zeros_like(mask)) is None
    wide = np.zeros_like(mask)
    wide[90:110, 10:290] = 255  # no room on either side
    assert remove_nerve(grey, wide) is None


def test_off_nerve_takes_the_larger_nerve_free_side() -> None:
    grey, mask = _pair()
    out = off_nerve(grey, mask)
    assert out is not None and out.shape == grey.shape
    assert float(out.min()) > 30  # no dark nerve pixel inside (the right side, x >= 125)
    centred = np.zeros_like(mask)
    cv2.circle(centred, (150, 100), 60, 255, -1)
    assert off_nerve(grey, centred) is None  # too little room left or right


def test_lifted_probe_is_dark() -> None:
    img = lifted_probe((200, 300), np.random.default_rng(0))
    assert img.shape == (200, 300) and img.dtype == np.uint8 and float(img.mean()) < 40


class _Oracle(Engine):
    """Nerve probability 0.9 where the preprocessed frame is much darker than its mean (the drawn
    nerve of the synthetic images), else 0: finds real nerves, and dark regions that remain."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(EngineInfo(name="oracle", backend="fake", precision="fp32", device="cpu",
                                    input_shape=(1, 1, size[1], size[0])))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return (batch < -1.2).astype(np.float32) * 0.9


def _dark_nerve_dataset(root: Path, n: int = 8, size: tuple[int, int] = (320, 240)) -> Path:
    """Even grey tissue (150 +- 10) with one dark nerve ellipse (70) per image, left or right."""
    rng = np.random.default_rng(0)
    w, h = size
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir(parents=True)
    for i in range(n):
        grey = np.clip(rng.normal(150, 10, (h, w)), 0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        cx = int(w * (0.25 if i % 2 else 0.75))
        cv2.ellipse(mask, (cx, h // 2), (30, 12), 0, 0, 360, 255, -1)
        grey[mask > 0] = 70  # hypoechoic, as a nerve is (not anechoic: the presence gate rejects that)
        cv2.imwrite(str(root / "Images" / f"Pz{i:03d}-001.png"), grey)
        cv2.imwrite(str(root / "Masks" / f"Pz{i:03d}-001.png"), mask)
    return root


def test_oracle_counts(tmp_path: Path) -> None:
    data = _dark_nerve_dataset(tmp_path / "d")
    items = build_items(str(data), "none", 42, None, None, phantom=0)
    kinds = {k: sum(1 for i in items if i["kind"] == k) for k in ("validation", "nerve-removed", "lifted-probe")}
    assert kinds == {"validation": 8, "nerve-removed": 8, "lifted-probe": 8}
    rows = classify(_Oracle((160, 120)), items, {"on": PresenceGate(min_area_frac=0.001), "off": None}, progress=False)
    summary = summarise(rows)
    for gate in ("on", "off"):
        assert summary[gate]["validation"]["found"] == 8  # the oracle finds every drawn nerve
        assert summary[gate]["nerve-removed"]["reported"] == 0  # and nothing once it is removed
        assert summary[gate]["off-nerve"]["reported"] == 0
        assert summary[gate]["lifted-probe"]["reported"] == 0
    assert summary["off"]["all-negatives"]["frames"] == len(items) - 8
    assert "| on | validation | 8 | 8 (100.0 %) | 8 (100.0 %) | 0 |" in format_table(summary)


class _Flicker(Engine):
    """A nerve-like blob in the middle of every other frame it sees (0.9), nothing in between: what
    other anatomy does now and then with no nerve in view."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(EngineInfo(name="flicker", backend="fake", precision="fp32", device="cpu",
                                    input_shape=(1, 1, size[1], size[0])))
        self.calls = 0

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros(batch.shape, np.float32)
        for i in range(batch.shape[0]):
            if self.calls % 2 == 0:
                h, w = batch.shape[-2:]
                cv2.ellipse(out[i, 0], (w // 2, h // 2), (w // 10, h // 16), 0, 0, 360, 0.9, -1)
            self.calls += 1
        return out


def test_clips_count_frames_through_the_loop_with_and_without_confirmation(tmp_path: Path) -> None:
    """Known answers on 6-frame clips: the oracle finds every animated nerve in every frame (confirm 1)
    and from the second frame on (confirm 2), and nothing where the nerve was removed; a detection
    every other frame is reported 3 times in runs of one frame with confirm 1, never with confirm 2."""
    data = _dark_nerve_dataset(tmp_path / "d", n=2)
    items = [i for i in build_items(str(data), "none", 42, None, None, phantom=0)
             if i["kind"] in ("validation", "nerve-removed")]
    rows = clip_rows(_Oracle((160, 120)), items, 6, [1, 2], progress=False, gate="off")
    s = summarise_clips(rows)
    assert s["1"]["validation"] == {"clips": 2, "frames": 12, "reported": 12, "reported_rate": 1.0,
                                    "single_frame_runs": 0, "found": 12, "found_rate": 1.0}
    assert (s["2"]["validation"]["reported"], s["2"]["validation"]["found"]) == (10, 10)
    assert s["1"]["nerve-removed"]["reported"] == s["2"]["nerve-removed"]["reported"] == 0
    assert s["2"]["all-negatives"]["frames"] == 12
    assert [r["reported_runs"] for r in rows if r["kind"] == "validation"] == [[6], [5], [6], [5]]
    assert [r["reported_frames"] for r in rows if r["kind"] == "validation"] == ["111111", "011111"] * 2
    assert all(r["presence_scores"] == [None] * 6 for r in rows)  # no gate: nothing scored

    # the gate on, with an appearance model that scores the region's size alone (every nerve passes): each
    # frame where the oracle outlined the nerve has the score of its area, a nerve-free frame none
    from realtime.appearance import FEATURES, AppearanceModel

    weights = tuple(1.0 if f == "log_area" else 0.0 for f in FEATURES)
    model = AppearanceModel(features=FEATURES, mean=(0.0,) * len(FEATURES), scale=(1.0,) * len(FEATURES),
                            weights=weights, bias=8.0, threshold=0.5).save(tmp_path / "size.appearance.json")
    scored = clip_rows(_Oracle((160, 120)), items, 6, [1], progress=False, gate="on", appearance=str(model),
                       presence_refresh=0.25)  # a one-threshold model: nothing to refresh, every frame kept
    for r in scored:
        if r["kind"] == "validation":
            assert r["reported"] == 6 and all(0.5 < x < 1.0 for x in r["presence_scores"])
        else:
            assert r["presence_scores"] == [None] * 6

    negatives = [i for i in items if i["kind"] == "nerve-removed"][:1]
    flicker = summarise_clips(clip_rows(_Flicker((160, 120)), negatives, 6, [1], progress=False, gate="off"))
    assert (flicker["1"]["nerve-removed"]["reported"], flicker["1"]["nerve-removed"]["single_frame_runs"]) == (3, 3)
    flicker = summarise_clips(clip_rows(_Flicker((160, 120)), negatives, 6, [2], progress=False, gate="off"))
    assert flicker["2"]["all-negatives"]["reported"] == 0
    table = format_clip_table(s, 6)
    assert "| 2 | validation | 2 | 12 | 10 (83.3 %) | 10 (83.3 %) | 0 |" in table
    assert "| 1 | nerve-removed | 2 | 12 | 0 (0.0 %) |  | 0 |" in table


@pytest.mark.parametrize("fusion, expected", [(None, "default"), (0.25, 0.25), (1.0, None)])
def test_the_fusion_weight_reaches_the_clips_and_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           fusion, expected) -> None:
    import benchmarks.clips
    from realtime.fusion import DEFAULT_WEIGHT

    seen = []
    monkeypatch.setattr(benchmarks.clips, "stream_clip", lambda *a, **k: seen.append(k["fusion"]))
    data = _dark_nerve_dataset(tmp_path / "d", n=1)
    items = [i for i in build_items(str(data), "none", 42, None, None, phantom=0) if i["kind"] == "validation"]
    clip_rows(_Oracle((160, 120)), items, 6, [1], progress=False, gate="off", fusion=fusion)
    assert seen == [DEFAULT_WEIGHT if expected == "default" else expected]
    s = {"1": {"validation": {"clips": 1, "frames": 6, "reported": 6, "reported_rate": 1.0, "single_frame_runs": 0}}}
    weight = DEFAULT_WEIGHT if fusion is None else fusion
    assert f"(tracked window, fusion {weight:g}, presence gate on)" in format_clip_table(s, 6, fusion)


@pytest.mark.slow
def test_command_writes_json_and_markdown(tmp_path: Path) -> None:
    from engines.random_model import random_checkpoint

    data = make_dataset(tmp_path / "d", n_patients=3, per_patient=1, size=(128, 96))
    ckpt = random_checkpoint("lunet", (64, 64), cache_dir=tmp_path / "cache")
    out = tmp_path / "p.json"
    code = main(["--model", str(ckpt), "--backend", "torch", "--data", str(data), "--split", "none",
                 "--phantom", "2", "--json", str(out), "-q"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["summary"]["on"]["validation"]["frames"] == 3
    assert result["summary"]["on"]["phantom"]["frames"] == 2
    assert out.with_suffix(".md").read_text().startswith("# Presence")
    assert not list(tmp_path.glob("*.tmp"))
    # the checkpoint's own appearance model when it has one; --appearance FILE over it
    from realtime.appearance import FEATURES, AppearanceModel, sidecar

    def fit(threshold: float, path: Path) -> Path:
        return AppearanceModel(features=FEATURES[:4], mean=(0.0,) * 4, scale=(1.0,) * 4, weights=(0.0,) * 4, bias=0.0,
                               threshold=threshold).save(path)

    fit(0.25, sidecar(ckpt))
    assert main(["--model", str(ckpt), "--backend", "torch", "--data", str(data), "--split", "none",
                 "--phantom", "1", "--json", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["gate"]["appearance"]["file"] == str(sidecar(ckpt))
    given = fit(0.75, tmp_path / "given.json")
    assert main(["--model", str(ckpt), "--backend", "torch", "--data", str(data), "--split", "none",
                 "--phantom", "1", "--appearance", str(given), "--json", str(out), "-q"]) == 0
    gate = json.loads(out.read_text())["gate"]["appearance"]
    assert (gate["file"], gate["threshold"]) == (str(given), 0.75)


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks.presence import cli

    assert cli(["--data", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert cli(["--json", str(tmp_path / "no" / "dir" / "x.json"), "--phantom", "1"]) == 2
    assert cli(["--clips", "2", "--phantom", "1"]) == 2
    assert "--clips 2: give 0 (stills only) or at least 3 frames a clip" in capsys.readouterr().err
