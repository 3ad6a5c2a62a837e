"""realtime.sources.screen_roi and --roi auto: the B-mode image area found in synthetic scanner screens
made from phantom frames (UI drawn around them at several layouts); measurements inside it match a
run with the true ROI; the window's r finds it again."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.pipeline import Pipeline
from realtime.sinks.base import Callback, RunControl
from realtime.sinks.summary import SummarySink
from realtime.sinks.window import KEY_ACTIONS
from realtime.sources import parse_roi
from realtime.sources.phantom import PhantomSource
from realtime.sources.screen_roi import CONTENT_DIFF, EDGE_FILL, ImageAreaError, find_image_area
from realtime.tracker import Tracker
from tests.realtime._helpers import TruthEngine
from tests.realtime.sources._helpers import ListSource
from tests.realtime.sources._screens import LAYOUTS, scanner_screen


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("seed", [0, 3])
def test_finds_the_image_area_of_scanner_screens(layout: str, seed: int) -> None:
    image = PhantomSource(seed=seed).render(5)[0]
    shot, (x, y, w, h) = scanner_screen(image, layout)
    area = find_image_area(shot)
    fx, fy, fw, fh = area.roi
    assert (fx, fy, fw) == (x, y, w) and area.frame_size == (shot.shape[1], shot.shape[0])
    assert fy + fh <= y + h
    # what is left out at the bottom looks like the screen's background (deep black shadow): its first row
    # has at most EDGE_FILL content, all of it less than 1 %
    content = np.abs(image[fh:].astype(float) - np.median(shot[:2, :, 1])) > CONTENT_DIFF
    assert content.size == 0 or (content[0].mean() <= EDGE_FILL and content.mean() < 0.01)
    if LAYOUTS[layout][1] != (0, 0, 0):
        assert area.roi == (x, y, w, h)  # on a grey screen even the black bottom is seen


def test_a_frame_without_an_image_says_how_to_fix_it() -> None:
    blank = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(ImageAreaError, match="--roi x,y,w,h"):
        find_image_area(blank)
    text_only, _ = scanner_screen(np.zeros((300, 400), np.uint8), "black-1024x768")
    with pytest.raises(ImageAreaError, match="--roi x,y,w,h"):
        find_image_area(text_only)
    assert parse_roi("auto") == "auto" and parse_roi(" AUTO ") == "auto"


def highlighted(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A phantom frame whose nerve is the brightest thing (tissue 0-120, nerve 255), so that the
    perfect stand-in network (it thresholds each input at its midpoint) outlines the nerve: and
    outlines the UI too if the crop lets any in."""
    image, truth = PhantomSource(seed=seed).render(index)
    out = (image.astype(np.float32) * (120 / 255)).astype(np.uint8)
    out[truth > 0] = 255
    return out, truth


def run(shots: list[np.ndarray], roi) -> tuple[list, dict]:  # type: ignore[no-untyped-def]
    records: list = []
    summary = SummarySink(None)
    result = Pipeline(TruthEngine(), Tracker(None, 24.0), [Callback(records.append), summary]).run(
        ListSource(shots, roi=roi))
    return records, result.summary


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_measurements_with_roi_auto_match_the_true_roi(layout: str) -> None:
    frames = [highlighted(2, i) for i in (0, 40, 80)]
    shots, true_roi = zip(*(scanner_screen(f[0], layout) for f in frames))
    auto, summary = run(list(shots), "auto")
    true, _ = run(list(shots), true_roi[0])
    detections = summary["source_info"]["roi_auto"]
    assert len(detections) == 1 and detections[0]["used"] and detections[0]["frame"] == 0
    ax, ay = detections[0]["roi"][:2]
    tx, ty = true_roi[0][:2]
    assert summary["source_info"]["roi"] == detections[0]["roi"]
    for a, t, (_, truth) in zip(auto, true, frames):
        ma, mt = a.measurement, t.measurement
        assert a.status == t.status == "ok" and ma.n_components == mt.n_components == 1
        assert abs(ma.area_px - mt.area_px) / mt.area_px < 0.015
        assert abs(ma.area_px - np.count_nonzero(truth)) / np.count_nonzero(truth) < 0.03  # the nerve itself
        assert abs(ma.centroid_x_px + ax - (mt.centroid_x_px + tx)) < 1.0
        assert abs(ma.centroid_y_px + ay - (mt.centroid_y_px + ty)) < 1.0


def test_r_finds_the_area_again_same_size_only() -> None:
    image = PhantomSource(seed=1).render(0)[0]
    first, roi = scanner_screen(image, "grey-1280x720")
    moved = np.roll(first, (3, -5), axis=(0, 1))  # the image moved 5 px left, 3 px down
    other, _ = scanner_screen(image[:400], "grey-1280x720")  # a smaller image (depth changed)
    src = ListSource([first, moved, other])
    src.roi = parse_roi("auto")
    control = RunControl(source=src)
    assert KEY_ACTIONS[ord("r")] == "roi"
    seen = []
    for frame in src:
        seen.append((src.roi, frame.image.shape))
        control.find_roi_again()  # r pressed after every frame
    x, y, w, h = roi
    assert seen[0][0] == roi and seen[1][0] == (x - 5, y + 3, w, h)
    assert seen[2][0] == (x - 5, y + 3, w, h) and seen[2][1] == (h, w, 3)  # another size: not used
    used = [d["used"] for d in src.describe()["roi_auto"]]
    assert used == [True, True, False]
