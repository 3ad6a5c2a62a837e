"""realtime.sinks.overlay: the contour, panel and trace drawn on the frame."""

from __future__ import annotations

import cv2
import numpy as np

from realtime.sinks.overlay import STATUS_COLOURS, TRACE_INK, OverlayRenderer, put_text, run_warning, text_width, to_bgr8
from realtime.tracker import Baseline
from tests.realtime.sinks._helpers import record


def test_overlay_draws_contour_panel_and_trace() -> None:
    r = OverlayRenderer(calibrated=False)
    out = None
    for i in range(5):
        out = r.render(record(i, area=1000.0 + 50 * i), fps=24.0)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    base = to_bgr8(record(0).image)
    assert np.abs(out.astype(int) - base).sum() > 0
    grey16 = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20)
    assert to_bgr8(grey16).shape == (48, 64, 3)


def test_draw_once_per_record_and_the_contour_is_the_traced_outline() -> None:
    renderer = OverlayRenderer()
    r = record(0)
    a = renderer.draw(r)
    assert renderer.draw(r) is a and "render" in r.timings_ms

    # the record's chain-compressed contour (as post-processing finds it) is drawn exactly as the outline
    # traced pixel by pixel on the mask would be
    big = record(0)
    big.image = np.full((200, 300), 80, np.uint8)
    big.mask = np.zeros((200, 300), np.uint8)
    cv2.ellipse(big.mask, (200, 140), (40, 22), 30, 0, 360, 1, -1)
    big.contours = tuple(cv2.findContours(big.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
    expected = to_bgr8(big.image)
    fill = expected.copy()
    fill[big.mask.astype(bool)] = STATUS_COLOURS["ok"]
    cv2.addWeighted(fill, 0.25, expected, 0.75, 0, dst=expected)
    outline = cv2.findContours(big.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
    cv2.drawContours(expected, outline, -1, STATUS_COLOURS["ok"], 1, cv2.LINE_AA)
    drawn = OverlayRenderer().render(big)
    nerve = np.s_[100:170, 150:250]  # around the nerve: below the text panel, above the legend
    assert (drawn[nerve] == expected[nerve]).all()
    assert (drawn[nerve] != to_bgr8(big.image)[nerve]).any()


def test_random_weights_are_written_on_every_frame(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from realtime.sinks.base import RunControl, RunInfo
    from realtime.sinks.video import VideoSink

    assert run_warning({"engine_notes": "random weights (architecture name given): for speed only"})
    assert run_warning({"engine_notes": "int8 parts"}) is None and run_warning({}) is None
    renderer = OverlayRenderer()
    sink = VideoSink(tmp_path / "o.mp4", renderer)
    sink.open(RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=24.0, calibrated=False,
                      metadata={"engine_notes": "random weights (architecture name given)"}))
    r = record(0, area=None)  # no nerve drawn: a wide frame for the text
    r.image = np.full((120, 320), 80, np.uint8)
    sink.write(r)
    sink.close()
    assert renderer.warning == "RANDOM WEIGHTS: not a measurement"
    warned, plain = renderer.render(r), OverlayRenderer().render(r)
    red = lambda img: (img[..., 2] > 200) & (img[..., 1] < 120) & (img[..., 0] < 120)  # noqa: E731
    panel = np.s_[:40]  # the text panel (the legend's 'lost' swatch below is red too)
    assert red(warned[panel]).sum() > 50 and not red(plain[panel]).any()


def _frame(r, w: int = 606, h: int = 468):  # type: ignore[no-untyped-def]
    """``r`` on a plain frame of the usual size, no nerve drawn (the panel, legend, scale bar and trace alone)."""
    r.image = np.full((h, w), 60, np.uint8)
    r.mask, r.contours = None, ()
    return r


def _baseline(area_px: float) -> Baseline:
    return Baseline(area_px=area_px, area_mm2=None, centroid_x_px=0.0, centroid_y_px=0.0, centroid_x_mm=None,
                    centroid_y_mm=None, n_frames=24, first_frame=0, last_frame=23, source="auto: first 1 s")


def test_scale_bar_is_a_round_number_of_mm_when_calibrated() -> None:
    renderer = OverlayRenderer(calibrated=True)
    renderer.mm_per_px = (0.1, 0.1)  # 606 px wide: at most 121 px, so 10 mm = 100 px
    out = renderer.render(_frame(record(0, area=None)))
    assert _longest_white_run(out[300:, :200]) == 100  # the bar: 10 mm, 100 pixels
    uncalibrated = OverlayRenderer(calibrated=False)
    uncalibrated.mm_per_px = (0.1, 0.1)
    plain = uncalibrated.render(_frame(record(0, area=None)))
    assert _longest_white_run(plain[300:, :200]) < 20  # no bar, only text


def _longest_white_run(img: np.ndarray) -> int:
    best = 0
    for row in (img == 255).all(axis=2):
        run = 0
        for white in row:
            run = run + 1 if white else 0
            best = max(best, run)
    return best


def test_legend_shows_every_status_colour() -> None:
    out = OverlayRenderer().render(_frame(record(0, area=None)))
    bottom = out[-30:, :300]
    for status, colour in STATUS_COLOURS.items():
        assert (bottom == colour).all(axis=2).sum() >= 49, status  # a filled swatch, 9x9 at 606 px


def test_trace_has_a_fixed_scale_around_the_baseline() -> None:
    """A 6 % change is a fifth of the height of a 30 % one (no autoscaling), and beyond +-30 % it is clipped."""

    def extent(change_pct: float) -> int:
        renderer = OverlayRenderer(calibrated=False)
        out = None
        for i, area in enumerate([1000.0] * 12 + [1000.0 * (1 + change_pct / 100)] * 12):
            r = _frame(record(i, area=area))
            r.tracked.baseline = _baseline(1000.0)
            out = renderer.render(r)
        assert renderer.trace_reference() == (1000.0, "baseline")
        box = out[-100:, -240:]
        ink = (np.abs(box.astype(int) - TRACE_INK) < 40).all(axis=2)
        rows = np.flatnonzero(ink.any(axis=1))
        return int(rows.max() - rows.min())

    small, full, beyond = extent(6.0), extent(30.0), extent(100.0)
    assert full >= 20 and abs(small - full / 5) <= 2 and beyond == full


def test_trace_without_baseline_is_around_the_median_and_says_so() -> None:
    renderer = OverlayRenderer(calibrated=False)
    for i, area in enumerate([900.0, 1000.0, 1100.0]):
        renderer.render(_frame(record(i, area=area)))
    assert renderer.trace_reference() == (1000.0, "median")


def test_panel_says_dropped_frames_in_orange_only_when_there_are_some() -> None:
    orange = lambda img: ((img[..., 0] < 90) & (img[..., 1] > 120) & (img[..., 1] < 200)  # noqa: E731
                          & (img[..., 2] > 200)).sum()
    calm, dropping = OverlayRenderer(), OverlayRenderer()
    for i in range(3):
        a, b = _frame(record(i)), _frame(record(i))
        a.dropped_before, b.dropped_before = 0, 2
        quiet, busy = calm.draw(a), dropping.draw(b)
    assert dropping.dropped_last_s() == 6 and calm.dropped_last_s() == 0
    assert orange(busy[:120]) > 30 and orange(quiet[:120]) == 0


def test_mm2_is_drawn_with_a_raised_2() -> None:
    img = np.zeros((40, 200, 3), np.uint8)
    put_text(img, "CSA 9.68 mm\u00b2", (4, 30), 0.45, (255, 255, 255))
    plain = np.zeros_like(img)
    put_text(plain, "CSA 9.68 mm", (4, 30), 0.45, (255, 255, 255))
    extra = (img != plain).any(axis=2)
    cols, rows = np.flatnonzero(extra.any(axis=0)), np.flatnonzero(extra.any(axis=1))
    assert cols.min() >= 4 + text_width("CSA 9.68 mm", 0.45) - 1  # after the unit
    assert rows.max() < 30 - 3  # above the baseline of the text
    assert text_width("mm\u00b2", 0.45) > text_width("mm", 0.45)
