"""The synthetic phantom: determinism, truth that matches the script, the scripted motion
(compression flattens, gliding moves), real-data-like size and depth, a B-mode-like picture,
and frames played live delivered or counted as dropped."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from realtime.sources import open_source
from realtime.sources.phantom import COMPRESSION_PERIOD_S, GLIDE_PERIOD_S, HEIGHT, WIDTH, PhantomSource

FPS = 24
PEAK = int(COMPRESSION_PERIOD_S / 2 * FPS)  # frame of full compression


def moments(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Area, centroid and major/minor axis ratio from the second moments of a 0/255 mask."""
    m = cv2.moments((mask > 0).astype(np.uint8), binaryImage=True)
    mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
    common = math.sqrt(((mu20 - mu02) / 2) ** 2 + mu11 ** 2)
    l1, l2 = (mu20 + mu02) / 2 + common, (mu20 + mu02) / 2 - common
    return m["m00"], m["m10"] / m["m00"], m["m01"] / m["m00"], math.sqrt(l1 / l2)


@pytest.fixture(scope="module")
def phantom() -> PhantomSource:
    return PhantomSource(seed=0)


def test_deterministic_per_seed() -> None:
    a = [f for f in open_source("synthetic:3", realtime=False, frames=4)]
    b = [f for f in open_source("synthetic", realtime=False, frames=4, seed=3)]
    c = [f for f in open_source("synthetic:4", realtime=False, frames=4)]
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.truth, fb.truth)
    assert not np.array_equal(a[0].image, c[0].image)
    assert not np.array_equal(a[0].truth, c[0].truth)  # another anatomy, not only other speckle
    # random access: frame i does not depend on what was rendered before
    p = PhantomSource(seed=3)
    np.testing.assert_array_equal(p.render(3)[0], a[3].image)


def test_frames_as_a_source() -> None:
    with open_source("synthetic:1", realtime=False, frames=24) as src:
        frames = list(src)
        assert src.fps == FPS
    assert len(frames) == 24 and [f.index for f in frames] == list(range(24))
    np.testing.assert_allclose([f.pts for f in frames], np.arange(24) / FPS)
    f = frames[0]
    assert f.image.shape == (HEIGHT, WIDTH) and f.image.dtype == np.uint8
    assert f.truth.shape == (HEIGHT, WIDTH) and f.truth.dtype == np.uint8
    assert set(np.unique(f.truth)) == {0, 255}
    d = src.describe()
    assert d["kind"] == "synthetic" and d["seed"] == 1 and d["size"] == [WIDTH, HEIGHT]


def test_default_length() -> None:
    assert PhantomSource(seed=0).length == 576  # one script period when not live
    assert PhantomSource(seed=0, live=True).length is None  # endless live


@pytest.mark.parametrize("index", [0, 17, PEAK, 130])
def test_truth_matches_script(phantom: PhantomSource, index: int) -> None:
    p = phantom.truth_params(index)
    _, truth = phantom.render(index)
    area, cx, cy, ratio = moments(truth)
    assert area == pytest.approx(math.pi * p.a * p.b, rel=0.03)
    assert (cx, cy) == pytest.approx((p.cx, p.cy), abs=0.7)
    assert ratio == pytest.approx(p.a / p.b, rel=0.05)
    # the same ellipse drawn by OpenCV from the parameters (angle convention included)
    ref = np.zeros_like(truth)
    cv2.ellipse(ref, (round(p.cx * 16), round(p.cy * 16)), (round(p.a * 16), round(p.b * 16)), p.angle, 0, 360,
                255, -1, cv2.LINE_8, 4)
    inter = np.logical_and(ref > 0, truth > 0).sum()
    assert 2 * inter / ((ref > 0).sum() + (truth > 0).sum()) > 0.97


def test_compression_flattens_the_nerve(phantom: PhantomSource) -> None:
    ratios, areas = [], []
    for i in range(0, PEAK + 1, 12):
        area, _, _, ratio = moments(phantom.render(i)[1])
        ratios.append(ratio)
        areas.append(area)
    assert 1.4 <= ratios[0] <= 2.1
    assert 3.0 <= ratios[-1] <= 4.0
    assert all(b > a - 0.02 for a, b in zip(ratios, ratios[1:]))  # rising while it is pressed
    assert -0.20 <= areas[-1] / areas[0] - 1 <= -0.10  # the area changes only a little
    released = moments(phantom.render(2 * PEAK)[1])[3]
    assert released == pytest.approx(ratios[0], abs=0.15)  # and back


def test_morphometry_agrees_if_present(phantom: PhantomSource) -> None:
    morph = pytest.importorskip("realtime.morphometry")
    m0 = morph.measure_mask(phantom.render(0)[1])
    m1 = morph.measure_mask(phantom.render(PEAK)[1])
    assert m1.flattening_ratio > m0.flattening_ratio + 1.0
    assert m0.n_components == 1


def test_gliding_and_jitter(phantom: PhantomSource) -> None:
    xs = [phantom.truth_params(i).cx for i in range(0, int(GLIDE_PERIOD_S * FPS), 6)]
    assert max(xs) - min(xs) >= 40  # tens of px sideways
    assert xs[0] == pytest.approx(xs[-1], abs=12)  # and back
    jit = [phantom.jitter(i) for i in range(0, 240, 3)]
    assert max(abs(d) for dx, dy in jit for d in (dx, dy)) <= 4
    assert len(set(jit)) > 3  # it does move
    # the jitter moves the whole picture: measure the shift between frames by phase correlation
    # (high-passed, so that the probe-attached depth attenuation does not pull it towards zero)
    def high_pass(img: np.ndarray) -> np.ndarray:
        f = img[150:406, 150:470].astype(np.float32)
        return f - cv2.GaussianBlur(f, (0, 0), 6)

    window = cv2.createHanningWindow((320, 256), cv2.CV_32F)
    ref = high_pass(phantom.render(0)[0])
    for j in range(1, 9):  # within one speckle cross-fade, so the speckle correlates
        (sx, sy), _ = cv2.phaseCorrelate(ref, high_pass(phantom.render(j)[0]), window)
        ex, ey = np.subtract(phantom.jitter(j), phantom.jitter(0))
        assert (sx, sy) == pytest.approx((ex, ey), abs=0.3)


@pytest.mark.parametrize("seed", range(5))
def test_nerve_size_and_depth_like_real_data(seed: int) -> None:
    p = PhantomSource(seed=seed)
    for i in range(0, 576, 24):
        truth = p.render(i)[1]
        area = int((truth > 0).sum())
        assert 1400 <= area <= 8500, (seed, i, area)
        rows = np.nonzero(truth.any(axis=1))[0]
        assert rows.min() >= 27 - 5 and rows.max() <= 139 + 5, (seed, i, rows.min(), rows.max())


def test_looks_like_b_mode(phantom: PhantomSource) -> None:
    img, truth = phantom.render(0)
    img = img.astype(np.float32)
    mask = truth > 0
    k = np.ones((3, 3), np.uint8)
    interior = cv2.erode(truth, k, iterations=4) > 0
    rim = (cv2.dilate(truth, k, iterations=2) > 0) & ~(cv2.erode(truth, k, iterations=1) > 0)
    around = (cv2.dilate(truth, k, iterations=14) > 0) & ~(cv2.dilate(truth, k, iterations=6) > 0)
    assert img[interior].mean() < img[rim].mean() - 25  # hypoechoic nerve, bright epineurium
    assert img[interior].mean() < img[around].mean()  # darker than the tissue around it
    assert img[mask].std() > 10  # fascicles and speckle, not a flat blob
    assert img[:4].mean() > 200  # probe surface / skin line
    # depth attenuation and shadows: the deep field is dark
    assert img[400:].mean() < 0.4 * img[20:200].mean()
    # speckle: a textured, not flat, soft-tissue region; grains elongated laterally
    patch = img[20:60, 20:200]
    assert patch.std() > 12
    d = patch - patch.mean()
    corr_x = (d[:, 1:] * d[:, :-1]).mean() / d.var()
    corr_y = (d[1:] * d[:-1]).mean() / d.var()
    assert corr_x > corr_y > 0.2
    # the speckle changes over time (decorrelates) but the anatomy stays
    img2 = phantom.render(24)[0].astype(np.float32)
    assert np.abs(img2[200:260, 100:500] - img[200:260, 100:500]).mean() > 5


def test_live_frames_are_delivered_or_counted_as_dropped() -> None:
    """Played live, every frame index is either delivered, in order, or counted as dropped, however slow
    this machine is (the pacing itself is checked on a fake clock in test_common's live_indices tests)."""
    fps = 50.0
    with open_source("synthetic", realtime=True, fps=fps, frames=10) as src:
        frames = list(src)
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx)) and idx[-1] == 9  # the last frame is always delivered
    assert len(frames) + src.frames_dropped == 10 and sum(f.dropped_before for f in frames) == src.frames_dropped
    assert [f.t_capture for f in frames] == sorted(f.t_capture for f in frames)
    with open_source("synthetic", realtime=True, fps=fps) as src:  # endless; a slow consumer
        frames = []
        for f in src:
            frames.append(f)
            time.sleep(0.06)  # 3 frame periods at least: frames become due meanwhile, whatever the load
            if len(frames) == 6:
                break
    for a, b in zip(frames, frames[1:]):
        assert b.index == a.index + b.dropped_before + 1 and b.dropped_before >= 1
    assert src.frames_dropped >= 5
    np.testing.assert_allclose([f.pts for f in frames], [f.index / fps for f in frames])
