"""The animated still: known truth under rigid motion and compression, determinism, formats, the
dataset-layout mask lookup, and one real frame (skipped without the dataset)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.sources import open_source
from realtime.sources.animate import COMPRESSION_PERIOD_S, MIN_VERTICAL_SCALE, AnimateSource, find_mask
from tests.conftest import make_dataset
from train.errors import UserError

PEAK = int(COMPRESSION_PERIOD_S / 2 * 24)


def moments(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Area, centroid, and the ratio of the spreads along y and x (second moments)."""
    m = cv2.moments((mask > 0).astype(np.uint8), binaryImage=True)
    return m["m00"], m["m10"] / m["m00"], m["m01"] / m["m00"], math.sqrt(m["mu02"] / m["mu20"])


@pytest.fixture
def still(tmp_path: Path) -> Path:
    """A synthetic annotated frame in the dataset layout: <root>/Images/Pz001-001.png, <root>/Masks/..."""
    root = make_dataset(tmp_path / "data", n_patients=1, per_patient=1, size=(200, 150), seed=3)
    return root / "Images" / "Pz001-001.png"


def test_finds_mask_in_dataset_layout(still: Path) -> None:
    assert find_mask(still) == still.parent.parent / "Masks" / "Pz001-001.png"
    with open_source(f"animate:{still}", realtime=False, frames=3) as src:
        frames = list(src)
    assert all(f.truth is not None and f.truth.shape == f.image.shape[:2] for f in frames)
    assert src.describe()["has_truth"] and src.describe()["kind"] == "animate"


def test_explicit_mask_and_no_mask(tmp_path: Path, still: Path) -> None:
    mask = still.parent.parent / "Masks" / still.name
    with open_source(f"animate:{still}:{mask}", realtime=False, frames=2) as src:
        assert next(iter(src)).truth is not None
    lone = tmp_path / "lone.png"
    cv2.imwrite(str(lone), cv2.imread(str(still)))
    with open_source(f"animate:{lone}", realtime=False, frames=2) as src:
        assert all(f.truth is None for f in src)
    with pytest.raises(UserError, match="missing.png does not exist"):
        open_source(f"animate:{still}:{tmp_path / 'missing.png'}", realtime=False)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((10, 10), np.uint8))
    with pytest.raises(UserError, match="must match"):
        open_source(f"animate:{still}:{small}", realtime=False)
    with pytest.raises(UserError, match="does not exist"):
        open_source(f"animate:{tmp_path / 'nope.png'}", realtime=False)


def test_the_glide_can_be_wider_or_none(still: Path) -> None:
    base, wide, still_probe = AnimateSource(still, seed=3), AnimateSource(still, seed=3, glide_scale=3.0), \
        AnimateSource(still, seed=3, glide_scale=0.0)
    for i in (5, 40, 100):
        b, w, z = base.truth_params(i), wide.truth_params(i), still_probe.truth_params(i)
        assert (w.tx, w.ty) == pytest.approx((3 * b.tx, 3 * b.ty)) and (z.tx, z.ty) == (0.0, 0.0)
        assert w.angle == b.angle and w.sy == b.sy  # tilt and compression unchanged
    assert open_source(f"animate:{still}", realtime=False, frames=4, glide_scale=2.0).describe()["glide_scale"] == 2.0
    with pytest.raises(UserError, match="glide scale"):
        AnimateSource(still, glide_scale=-1.0)


def test_deterministic_per_seed(still: Path) -> None:
    a = AnimateSource(still, seed=1)
    b = AnimateSource(still, seed=1)
    c = AnimateSource(still, seed=2)
    for i in (0, 5, 40):
        ia, ta = a.render(i)
        ib, tb = b.render(i)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ta, tb)
    assert not np.array_equal(a.render(5)[0], c.render(5)[0])
    assert not np.array_equal(a.render(0)[0], a.render(1)[0])  # fresh noise every frame


@pytest.mark.parametrize("index", [0, 13, PEAK, 100])
def test_truth_follows_the_transform(still: Path, index: int) -> None:
    src = AnimateSource(still, seed=0)
    area0, cx0, cy0, _ = moments(src.mask)
    p = src.truth_params(index)
    _, truth = src.render(index)
    area, cx, cy, _ = moments(truth)
    assert area == pytest.approx(area0 * p.area_factor, rel=0.04)
    # the mask centroid moves with the transform (compression and rotation are about it)
    ex, ey = p.matrix @ np.array([cx0, cy0, 1.0])
    assert (cx, cy) == pytest.approx((ex, ey), abs=0.7)
    assert (ex, ey) == pytest.approx((cx0 + p.tx, cy0 + p.ty), abs=1e-6)
    assert abs(p.tx) <= 6 and abs(p.ty) <= 4 and abs(p.angle) <= 4  # a few px, a few degrees


def test_compression_squeezes_vertically(still: Path) -> None:
    src = AnimateSource(still, seed=0)
    p = src.truth_params(PEAK)
    assert p.sy == pytest.approx(MIN_VERTICAL_SCALE) and p.sx > 1.0
    assert 0.85 <= p.area_factor <= 0.95
    r0 = moments(src.render(0)[1])[3]
    r1 = moments(src.render(PEAK)[1])[3]
    assert r1 / r0 == pytest.approx(MIN_VERTICAL_SCALE / p.sx, rel=0.08)


def test_the_compression_period_can_be_shorter(still: Path) -> None:
    fast = open_source(f"animate:{still}", realtime=False, frames=4, compression_period_s=2.0)
    fps = fast.fps
    assert fast.compression(round(fps)) == pytest.approx(1.0)  # fully compressed after 1 s of a 2 s cycle
    assert fast.describe()["compression_period_s"] == 2.0
    assert AnimateSource(still).compression(round(fps * COMPRESSION_PERIOD_S / 2)) == pytest.approx(1.0)
    with pytest.raises(UserError, match="compression period"):
        AnimateSource(still, compression_period_s=0.0)


def test_a_border_crop_cuts_the_same_frame_narrower(still: Path) -> None:
    """``border_crop``: every frame and its truth are the uncropped ones with that many pixels cut from each edge."""
    full = AnimateSource(still, seed=3)
    cropped = open_source(f"animate:{still}", realtime=False, frames=4, seed=3, border_crop=12)
    for i in (0, 5):
        image, truth = full.render(i)
        small, small_truth = cropped.render(i)
        h, w = image.shape[:2]
        assert small.shape[:2] == (h - 24, w - 24)
        np.testing.assert_array_equal(small, image[12:h - 12, 12:w - 12])
        np.testing.assert_array_equal(small_truth, truth[12:h - 12, 12:w - 12])
        assert small.flags.c_contiguous
    assert cropped.describe()["border_crop_px"] == 12 and full.describe()["border_crop_px"] == 0
    h, w = full.still.shape[:2]
    AnimateSource(still, border_crop=(min(h, w) - 1) // 4)  # leaves more than half of the shorter side
    with pytest.raises(UserError, match="half or less"):
        AnimateSource(still, border_crop=(min(h, w) + 3) // 4)
    with pytest.raises(UserError, match="whole number"):
        AnimateSource(still, border_crop=-1)


def test_image_and_mask_move_together(still: Path) -> None:
    """The dark nerve of the image stays under the warped mask."""
    src = AnimateSource(still, seed=0)
    for i in (0, PEAK):
        image, truth = src.render(i)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        inside = cv2.erode(truth, np.ones((3, 3), np.uint8), iterations=2) > 0
        assert grey[inside].mean() < grey[truth == 0].mean() - 30


@pytest.mark.parametrize("kind", ["grey8", "bgr8", "grey16"])
def test_formats_pass_through(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (90, 121)).astype(np.uint8)
    image = {"grey8": base, "bgr8": cv2.merge([base, base, base]), "grey16": base.astype(np.uint16) * 257}[kind]
    mask = np.zeros((90, 121), np.uint8)
    cv2.ellipse(mask, (60, 45), (20, 10), 0, 0, 360, 255, -1)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    cv2.imwrite(str(tmp_path / "msk.png"), mask)
    with open_source(f"animate:{tmp_path / 'img.png'}:{tmp_path / 'msk.png'}", realtime=False, frames=2) as src:
        frame = next(iter(src))
    assert frame.image.dtype == image.dtype and frame.image.shape == image.shape
    assert frame.truth.shape == (90, 121) and set(np.unique(frame.truth)) == {0, 255}
    if kind == "grey16":
        assert frame.image.max() > 255


def test_live_and_default_length(still: Path) -> None:
    assert AnimateSource(still).length == 144
    assert AnimateSource(still, live=True).length is None
    with open_source(f"animate:{still}", realtime=True, fps=60, frames=6) as src:
        frames = list(src)
    assert len(frames) + src.frames_dropped >= 6 and frames[-1].index == 5


@pytest.mark.data
def test_real_frame(real_data: Path) -> None:
    image = sorted((real_data / "Images").glob("*.png"))[0]
    src = AnimateSource(image, seed=0)  # the mask is found in ../Masks
    assert src.mask is not None
    area0 = int((src.mask > 0).sum())
    _, truth = src.render(PEAK)
    assert (truth > 0).sum() == pytest.approx(area0 * src.truth_params(PEAK).area_factor, rel=0.06)
