"""Appearance features and the echo ratio of drawn regions with known answers, the logistic score, its file, which
model a run reads (--appearance, the model's sidecar, the default's), and the presence gate's echo and appearance
checks (including the shipped model on drawn nerves and non-nerves, and on a drawn vessel end to end)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines import registry
from engines.cache import file_sha256
from realtime.appearance import (FEATURES, AppearanceModel, appearance_for, appearance_features, default_model_file,
                                 echo_ratio, load_appearance_model, sidecar)
from realtime.morphometry import measure_mask
from realtime.postprocess import postprocess
from realtime.presence import PresenceGate, make_presence_gate
from realtime.tracker import TrackStatus, Tracker
from train.errors import UserError

W, H = 400, 300


def scene(rim: int, rng_seed: int = 0, a: int = 40, b: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey tissue (texture) with an ellipse of mid grey, ringed by a band of brightness ``rim`` (0: none)."""
    rng = np.random.default_rng(rng_seed)
    img = np.clip(rng.normal(90, 25, (H, W)), 0, 255).astype(np.float32)
    centre = (W // 2, H // 2)
    if rim:
        cv2.ellipse(img, centre, (a + 6, b + 6), 0, 0, 360, float(rim), -1)
    cv2.ellipse(img, centre, (a, b), 0, 0, 360, 70.0, -1)
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, centre, (a, b), 0, 0, 360, 1, -1)
    return np.clip(img, 0, 255).astype(np.uint8), mask, mask.astype(np.float32)


def test_a_bright_rim_and_a_sharp_outline_raise_ring_and_edge() -> None:
    plain, mask, prob = scene(rim=0)
    rimmed, _, _ = scene(rim=200)
    f_plain, f_rim = appearance_features(plain, mask, prob), appearance_features(rimmed, mask, prob)
    assert f_plain.shape == (len(FEATURES),)
    assert f_rim[0] > f_plain[0] + 1.0 and f_rim[1] > f_plain[1]
    # a hard 0/1 probability has no unsure pixel; log area is exact
    assert f_plain[2] == 0.0
    assert f_plain[3] == pytest.approx(math.log(mask.sum() / (W * H)))


def test_features_do_not_change_with_gain_and_offset_or_colour() -> None:
    img, mask, prob = scene(rim=160)
    base = appearance_features(img, mask, prob)
    brighter = np.clip(img.astype(np.float32) * 1.25 + 10, 0, 255).astype(np.uint8)
    assert np.allclose(appearance_features(brighter, mask, prob)[:2], base[:2], rtol=0.06)
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    assert np.allclose(appearance_features(bgr, mask, prob), base)


def clean_scene(rim_rows: slice | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No speckle: background 90, an ellipse of 70, a 6 px band of 200 about it in the rows ``rim_rows`` only."""
    img = np.full((H, W), 90, np.uint8)
    centre, axes = (W // 2, H // 2), (40, 20)
    if rim_rows is not None:
        band = np.zeros((H, W), np.uint8)
        cv2.ellipse(band, centre, (axes[0] + 6, axes[1] + 6), 0, 0, 360, 1, -1)
        keep = np.zeros((H, W), bool)
        keep[rim_rows] = True
        img[(band > 0) & keep] = 200
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    img[mask > 0] = 70
    return img, mask, mask.astype(np.float32)


def test_inside_is_the_core_against_the_band_around_it_and_ring_closed_the_sectors_with_a_rim() -> None:
    inside, closed = FEATURES.index("inside"), FEATURES.index("ring_closed")
    full = appearance_features(*clean_scene(slice(None)))
    half = appearance_features(*clean_scene(slice(0, H // 2)))  # the rim above the centre only: 4 of 8 sectors
    none = appearance_features(*clean_scene(None))
    assert full[closed] == 1.0 and half[closed] == 0.5 and none[closed] == 0.0
    # no rim: core 70 against a band of 90 (the frame's quartile range is 0, so the unit is 1 grey level)
    assert none[inside] == pytest.approx(70 - 90)
    assert full[inside] < half[inside] < none[inside] < 0  # the brighter the band, the darker the core beside it
    assert appearance_features(*scene(rim=0))[closed] == pytest.approx(0.5, abs=0.5)  # a valid share on speckle


def test_unsure_counts_the_hesitant_part_of_the_box() -> None:
    img, mask, _ = scene(rim=0)
    prob = np.zeros((H, W), np.float32)
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    prob[box] = 0.5
    prob[ys.min():ys.min() + (ys.max() - ys.min() + 1) // 2, xs.min():xs.max() + 1] = 0.95
    half = (ys.max() - ys.min() + 1 - (ys.max() - ys.min() + 1) // 2) / (ys.max() - ys.min() + 1)
    assert appearance_features(img, mask, prob)[2] == pytest.approx(half)
    assert appearance_features(img, np.zeros_like(mask), prob) is None


def model(threshold: float = 0.5, weights: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)) -> AppearanceModel:
    """A model of the first four features (as fit before ``inside`` and ``ring_closed``)."""
    return AppearanceModel(features=FEATURES[:4], mean=(0.0,) * 4, scale=(1.0,) * 4, weights=weights, bias=0.0,
                           threshold=threshold, provenance={"what": "test"})


def flat_scene(core: float, around: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Flat tissue of grey ``around`` with an ellipse of grey ``core``: the echo ratio is core / around exactly."""
    img = np.full((H, W), around, np.uint8)
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(img, (W // 2, H // 2), (40, 20), 0, 0, 360, core, -1)
    cv2.ellipse(mask, (W // 2, H // 2), (40, 20), 0, 0, 360, 1, -1)
    return img, mask


def test_echo_ratio_is_the_core_against_the_tissue_around_it() -> None:
    img, mask = flat_scene(20.0)
    assert echo_ratio(img, mask) == pytest.approx(0.2)
    assert echo_ratio(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), mask) == pytest.approx(0.2)
    assert echo_ratio(np.clip(img * 1.5, 0, 255).astype(np.uint8), mask) == pytest.approx(0.2)  # gain: the same
    assert echo_ratio(*flat_scene(0.0, around=0.0)) == 0.0 and echo_ratio(*flat_scene(50.0, around=0.0)) == math.inf
    assert echo_ratio(img, np.zeros_like(mask)) is None
    whole = np.ones_like(mask)  # no tissue around it inside the frame
    assert echo_ratio(img, whole) is None
    textured, tmask, _ = scene(rim=200)  # a hypoechoic nerve: 70 in tissue of mean 90
    assert echo_ratio(textured, tmask) == pytest.approx(70 / 90, abs=0.05)


def test_the_gate_rejects_an_anechoic_region_when_it_sees_the_image() -> None:
    vessel, mask = flat_scene(8.0)  # a lumen: near black in tissue of 100
    m = measure_mask(mask, None, mask.astype(np.float32) * 0.9)
    for gate in (make_presence_gate("shape"), PresenceGate(appearance=model(threshold=0.0))):
        assert gate.check(m, (W, H)) is None  # no image: size and shape only
        assert gate.check(m, (W, H), image=vessel, mask=mask) == "anechoic: echo 0.08 of the tissue around < 0.2"
        assert gate.assess(m, (W, H), image=vessel, mask=mask, prob=mask.astype(np.float32))[1] is None
    nerve, _ = flat_scene(40.0)  # hypoechoic: 0.4
    assert PresenceGate().check(m, (W, H), image=nerve, mask=mask) is None
    assert PresenceGate(min_echo_ratio=None).check(m, (W, H), image=vessel, mask=mask) is None
    assert PresenceGate().describe()["min_echo_ratio"] == 0.2
    with pytest.raises(UserError, match="min_echo_ratio"):
        PresenceGate(min_echo_ratio=-0.1)


def vessel_frame(seed: int = 0) -> np.ndarray:
    """A drawn neck-like frame with no nerve: speckled soft tissue under a skin line, a bright-walled anechoic
    oval (a vein, 102x48 px) and a larger round artery, darker with depth."""
    rng = np.random.default_rng(seed)
    h, w = 468, 606
    base = np.full((h, w), 70, np.float32)
    base[:18] = 160
    cv2.circle(base, (330, 250), 62, 165, 6)
    cv2.circle(base, (330, 250), 58, 6, -1)
    cv2.ellipse(base, (170, 205), (55, 28), 0, 0, 360, 150, 5)
    cv2.ellipse(base, (170, 205), (51, 24), 0, 0, 360, 10, -1)
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, base.shape).astype(np.float32), (0, 0), 1.2)
    img = base * speckle / speckle.mean() * np.linspace(1.0, 0.35, h)[:, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def test_the_shipped_model_outlines_a_drawn_vein_and_the_gate_says_anechoic(tmp_path: Path) -> None:
    """End to end through the bundled default: the network outlines the drawn vein (measured with the gate off),
    its appearance alone would pass it, and the echo check turns every frame away."""
    from realtime.live_cli import main as live_main

    cv2.imwrite(str(tmp_path / "neck.png"), vessel_frame())
    rows = {}
    for presence in ("off", "on"):
        out = tmp_path / presence
        assert live_main(["--source", f"animate:{tmp_path / 'neck.png'}", "--frames", "12", "--no-drop",
                          "--headless", "--no-video", "--out", str(out), "--presence", presence, "-q"]) == 0
        lines = [ln for ln in (out / "measurements.csv").read_text().splitlines() if not ln.startswith("#")]
        header = lines[0].split(",")
        rows[presence] = [dict(zip(header, ln.split(","))) for ln in lines[1:]]
    off = [r for r in rows["off"] if r["status"] == "ok"]
    assert len(off) >= 10  # the network takes the vein for a nerve...
    assert all(abs(float(r["centroid_x_px"]) - 170) < 15 and abs(float(r["centroid_y_px"]) - 205) < 15 for r in off)
    on = rows["on"]
    assert not any(r["status"] == "ok" for r in on)  # ...the gate does not
    assert sum(r["rejected"].startswith("anechoic") for r in on) >= 10
    # the appearance check alone would pass it: the shipped gate without its echo bound, on one frame
    from dataclasses import replace

    from engines import load_engine
    from train.preprocess import preprocess_image

    frame = vessel_frame()
    engine = load_engine("mn-realtime")
    try:
        post = postprocess(engine.infer(preprocess_image(frame, engine.size)[None, None])[0, 0], (606, 468))
    finally:
        engine.close()
    no_echo = replace(make_presence_gate("on", model_file=str(registry.BUNDLED_MODELS["mn-realtime"])),
                      min_echo_ratio=None)
    r = Tracker(None, 24.0, presence=no_echo, confirm_frames=1).update(post, 0, 0.0, image=frame)
    assert r.status is TrackStatus.OK and r.presence_score > no_echo.appearance.threshold


def test_score_is_the_logistic_of_the_standardised_features() -> None:
    m = AppearanceModel(features=FEATURES, mean=(1.0, 0, 0, 0, 0, 0), scale=(2.0, 1, 1, 1, 1, 1),
                        weights=(3.0, 0, 0, -1.0, 0, 2.0), bias=0.5, threshold=0.5)
    # z = (5 - 1) / 2 = 2 -> logit 3 * 2 + (-1) * 1 + 2 * 0.25 + 0.5 = 6
    assert m.score([5.0, 9.0, 9.0, 1.0, 7.0, 0.25]) == pytest.approx(1 / (1 + math.exp(-6.0)))
    assert m.score([-1e9, 0, 0, 0, 0, 0]) == pytest.approx(0.0, abs=1e-20)
    # a model fit on the first four features scores those of a six-feature vector, ignoring the rest
    four = AppearanceModel(features=FEATURES[:4], mean=(1.0, 0, 0, 0), scale=(2.0, 1, 1, 1),
                           weights=(3.0, 0, 0, -1.0), bias=0.5, threshold=0.5)
    assert four.score([5.0, 9.0, 9.0, 1.0, 7.0, 0.25]) == pytest.approx(1 / (1 + math.exp(-5.5)))


def test_model_file_round_trip_and_bad_models(tmp_path: Path) -> None:
    m = model(0.3)
    assert load_appearance_model(m.save(tmp_path / "m.json")) == m
    assert json.loads((tmp_path / "m.json").read_text())["hold_threshold"] is None  # one threshold
    held = AppearanceModel(**{**m.__dict__, "hold_threshold": 0.1, "file": None})
    assert load_appearance_model(held.save(tmp_path / "h.json")).hold_threshold == 0.1
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(UserError, match="does not exist"):
        load_appearance_model(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"features": ["ring"]}')
    with pytest.raises(UserError, match="missing or malformed"):
        load_appearance_model(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not this mn-seg's"):
        AppearanceModel(features=("other",), mean=(0.0,), scale=(1.0,), weights=(1.0,), bias=0.0, threshold=0.5)
    with pytest.raises(UserError, match="threshold"):
        model(threshold=1.5)


def test_gate_rejects_by_appearance_only_when_it_sees_the_image() -> None:
    img, mask, prob = scene(rim=0)
    m = measure_mask(mask, None, prob)
    strict = PresenceGate(appearance=model(threshold=0.999, weights=(1.0, 0, 0, 0)))
    assert strict.check(m, (W, H)) is None  # no image: size and shape only
    reason = strict.check(m, (W, H), image=img, mask=mask, prob=prob)
    assert reason is not None and reason.startswith("appearance ") and reason.endswith("< 1.00")
    rimmed, _, _ = scene(rim=220)
    lenient = PresenceGate(appearance=model(threshold=0.5, weights=(1.0, 0, 0, 0)))
    assert lenient.check(m, (W, H), image=rimmed, mask=mask, prob=prob) is None
    assert lenient.describe()["appearance"]["threshold"] == 0.5


def test_tracker_hands_the_frame_to_the_gate() -> None:
    img, mask, prob = scene(rim=0)
    gate = PresenceGate(appearance=model(threshold=0.999))
    post = postprocess(prob, (W, H))
    r = Tracker(None, 10.0, presence=gate).update(post, 0, 0.0, image=img)
    assert r.status is TrackStatus.NO_DETECTION and r.rejected.startswith("appearance")
    assert Tracker(None, 10.0, presence=gate).update(post, 0, 0.0).status is TrackStatus.OK


def test_a_tracked_nerve_is_judged_by_the_hold_threshold() -> None:
    """Hysteresis: a nerve scoring between the hold and the entry threshold is not taken up, but a track that found
    it beyond doubt keeps it (status ok) until it scores below the hold threshold too."""
    dim, mask, prob = scene(rim=0)
    m = measure_mask(mask, None, prob)
    rimmed, _, _ = scene(rim=220)
    base = model(threshold=0.5, weights=(1.0, 0, 0, 0))
    f_dim, f_rim = appearance_features(dim, mask, prob), appearance_features(rimmed, mask, prob)
    s_dim, s_rim = base.score(f_dim), base.score(f_rim)
    assert s_dim < s_rim
    entry, hold = (s_dim + s_rim) / 2, s_dim / 2  # the dim nerve: below entry, above hold
    two = AppearanceModel(features=FEATURES[:4], mean=(0.0,) * 4, scale=(1.0,) * 4, weights=(1.0, 0, 0, 0), bias=0.0,
                          threshold=entry, hold_threshold=hold)
    assert two.threshold_for(False) == entry and two.threshold_for(True) == hold and base.threshold_for(True) == 0.5
    gate = PresenceGate(appearance=two)
    assert gate.check(m, (W, H), image=dim, mask=mask, prob=prob) == f"appearance {s_dim:.2f} < {entry:.2f}"
    assert gate.check(m, (W, H), image=dim, mask=mask, prob=prob, tracking=True) is None
    post = postprocess(prob, (W, H))
    tracker = Tracker(None, 10.0, presence=gate)
    assert tracker.update(post, 0, 0.0, image=dim).status is TrackStatus.NO_DETECTION  # not taken up
    assert tracker.update(post, 1, 0.1, image=rimmed).status is TrackStatus.OK  # a nerve beyond doubt
    assert tracker.update(post, 2, 0.2, image=dim).status is TrackStatus.OK  # followed while less typical
    low = PresenceGate(appearance=AppearanceModel(features=FEATURES[:4], mean=(0.0,) * 4, scale=(1.0,) * 4,
                                                  weights=(1.0, 0, 0, 0), bias=0.0, threshold=0.999,
                                                  hold_threshold=entry))
    assert low.check(m, (W, H), image=dim, mask=mask, prob=prob, tracking=True).endswith("(tracked)")
    with pytest.raises(UserError, match="hold_threshold must be in"):
        AppearanceModel(features=FEATURES[:4], mean=(0.0,) * 4, scale=(1.0,) * 4, weights=(1.0, 0, 0, 0), bias=0.0,
                        threshold=0.3, hold_threshold=0.4)


def test_presence_modes(tmp_path: Path) -> None:
    on, shape = make_presence_gate("on"), make_presence_gate("shape")
    assert on.appearance == load_appearance_model(default_model_file()) and shape.appearance is None
    assert make_presence_gate("on", 0.7).min_confidence == 0.7
    assert make_presence_gate("off") is None
    given = model(0.3).save(tmp_path / "given.json")
    gate = make_presence_gate("on", appearance_model=str(given), model_file=str(registry.BUNDLED_MODELS["mn-realtime"]))
    assert gate.appearance == model(0.3) and gate.describe()["appearance"]["file"] == str(given)


def test_sidecar_sits_beside_the_model_file() -> None:
    assert sidecar("runs/x/best.pt") == Path("runs/x/best.appearance.json")
    assert sidecar(Path("/m/net.v2.onnx")) == Path("/m/net.v2.appearance.json")


def _fit_on(path: Path, threshold: float, sha: str | None) -> Path:
    m = AppearanceModel(features=FEATURES[:4], mean=(0.0,) * 4, scale=(1.0,) * 4, weights=(1.0, 0, 0, 0), bias=0.0,
                        threshold=threshold, provenance={"model_sha256": sha})
    return m.save(sidecar(path))


def test_a_run_reads_the_given_model_then_the_model_own_then_the_default(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    net = tmp_path / "net.pt"
    net.write_bytes(b"weights")
    default = load_appearance_model(default_model_file())
    # no sidecar: the default bundled model's, with a warning that names the fit command
    with caplog.at_level(logging.WARNING, logger="realtime.appearance"):
        assert appearance_for(net) == default
    assert "no appearance model of its own" in caplog.text and f"--model {net}" in caplog.text
    # its own sidecar, fit on this very file: no warning
    _fit_on(net, 0.25, file_sha256(net))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="realtime.appearance"):
        own = appearance_for(net)
    assert own.threshold == 0.25 and own.file == str(sidecar(net)) and caplog.text == ""
    # the file changed since the fit: still its own, with a warning to refit
    net.write_bytes(b"retrained weights")
    with caplog.at_level(logging.WARNING, logger="realtime.appearance"):
        assert appearance_for(net).threshold == 0.25
    assert "fit on another version" in caplog.text
    # --appearance wins over both; a caller that does not know the model gets the default, silently
    assert appearance_for(net, _fit_on(tmp_path / "other.pt", 0.75, None)).threshold == 0.75
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="realtime.appearance"):
        assert appearance_for(None) == default
    assert caplog.text == ""
    with pytest.raises(UserError, match="does not exist"):
        appearance_for(net, tmp_path / "missing.json")


def test_no_appearance_model_to_fall_back_on_says_how_to_make_one(tmp_path: Path) -> None:
    folder = tmp_path / "bundled"
    folder.mkdir()
    (folder / registry.MANIFEST_NAME).write_text(json.dumps({"format": 1, "models": []}))
    registry.load_bundled(folder)
    try:
        with pytest.raises(UserError, match="python -m tools.presence_fit --model .*net.pt.*--presence shape"):
            make_presence_gate("on", model_file=str(tmp_path / "net.pt"))
        assert make_presence_gate("shape", model_file=str(tmp_path / "net.pt")).appearance is None
    finally:
        registry.load_bundled()


def test_the_shipped_model_keeps_a_rimmed_nerve_and_drops_a_blurred_blob() -> None:
    shipped = load_appearance_model(sidecar(registry.BUNDLED_MODELS["mn-realtime"]))
    assert shipped.features == FEATURES and 0.0 < shipped.threshold < 1.0
    assert shipped.provenance["segmentation_model"] == "mn-realtime"
    assert shipped.provenance["model_sha256"] == file_sha256(registry.BUNDLED_MODELS["mn-realtime"])
    nerve, mask, prob = scene(rim=200)
    assert shipped.score(appearance_features(nerve, mask, prob)) >= shipped.threshold
    blob, _, _ = scene(rim=0)
    soft = cv2.GaussianBlur(prob, (0, 0), 8)
    soft_mask = (soft >= 0.5).astype(np.uint8)
    assert shipped.score(appearance_features(blob, soft_mask, soft)) < shipped.threshold


def test_the_gated_model_file_is_the_engine_source_unless_its_weights_are_random() -> None:
    from types import SimpleNamespace

    from engines.base import RANDOM_WEIGHTS_NOTE
    from realtime.presence import gated_model_file

    assert gated_model_file(SimpleNamespace(info=SimpleNamespace(source="/m/net.pt", notes=[]))) == "/m/net.pt"
    assert gated_model_file(SimpleNamespace(info=SimpleNamespace(source="/c/lunet.pt", notes=[RANDOM_WEIGHTS_NOTE]))) \
        is None
    assert gated_model_file(None) is None and gated_model_file(SimpleNamespace(info=SimpleNamespace(source=""))) is None
