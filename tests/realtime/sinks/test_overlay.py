"""realtime.sinks.overlay: the contour, panel and trace drawn on the frame."""

from __future__ import annotations

import cv2
import numpy as np

from realtime.sinks.overlay import (
    STATUS_COLOURS,
    TRACE_INK,
    OverlayRenderer,
    put_text,
    run_warning,
    text_width,
    to_bgr8,
)
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


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "The overlay")
# ---------------------------------------------------------------------------------------------
import dataclasses  # noqa: E402
import math  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from realtime.sinks import overlay as overlay_mod  # noqa: E402

WHITE, RED, ORANGE = (255, 255, 255), (60, 60, 255), (0, 165, 255)
GREEN, GREY = STATUS_COLOURS["ok"], STATUS_COLOURS["no_detection"]


@pytest.fixture
def texts(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every ``cv2.putText`` of the overlay as ``(text, org, scale, ink)`` (drawn as well); the font, thickness
    and anti-aliasing checked on every call."""
    calls: list[tuple] = []
    put = cv2.putText

    def spy(img, text, org, font, scale, ink, thickness, line_type):  # type: ignore[no-untyped-def]
        assert (font, thickness, line_type) == (cv2.FONT_HERSHEY_SIMPLEX, 1, cv2.LINE_AA)
        assert isinstance(img, np.ndarray) and img.ndim == 3  # drawn on the picture
        calls.append((text, tuple(org), round(scale, 6), tuple(ink)))
        return put(img, text, org, font, scale, ink, thickness, line_type)

    monkeypatch.setattr(overlay_mod.cv2, "putText", spy)
    return calls


def _w(text: str, scale: float) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]


def test_the_panel_says_each_quantity_in_its_unit_17_px_apart(texts: list[tuple]) -> None:
    out = OverlayRenderer(calibrated=False).render(_frame(record(0)), fps=24.0)
    panel = [t for t in texts if t[2] == 0.45]
    assert panel == [
        ("CSA 1000 px (uncalibrated)", (10, 20), 0.45, WHITE),
        ("change from baseline: - (no baseline yet)", (10, 37), 0.45, WHITE),
        ("FR 1.50   circularity 0.90", (10, 54), 0.45, WHITE),
        ("status: ok", (10, 71), 0.45, GREEN),  # the status in the outline's colour
        ("latency 20 ms   24.0 fps", (10, 88), 0.45, WHITE)]
    # the box behind it: from (6, 6), 8 px wider than the widest line, 17 px a line plus 6, darkened to 35 %
    right, low = 6 + 8 + _w("change from baseline: - (no baseline yet)", 0.45) - 1, 6 + 5 * 17 + 6 - 1
    assert out[low, 6].tolist() == out[6, right].tolist() == [21, 21, 21]  # 60 x 0.35
    assert out[low + 1, 6].tolist() == out[6, right + 1].tolist() == out[5, 6].tolist() == [60, 60, 60]


def test_the_panel_calibrated_with_a_baseline_a_warning_and_drops(texts: list[tuple]) -> None:
    renderer = OverlayRenderer(calibrated=True)
    renderer.warning = "RANDOM WEIGHTS: not a measurement"
    r = _frame(record(1))
    r.dropped_before = 3
    r.tracked.measurement = dataclasses.replace(r.tracked.measurement, area_mm2=12.345)
    r.tracked.csa_change_pct = 5.04
    r.tracked.baseline = _baseline(1000.0)
    renderer.draw(r)  # the first frame drawn: no rate yet
    panel = [t for t in texts if t[2] == 0.45]
    assert panel == [
        ("RANDOM WEIGHTS: not a measurement", (10, 20), 0.45, RED),  # first, in red
        ("CSA 12.35 mm", (10, 37), 0.45, WHITE),
        ("change from baseline +5.0 %", (10, 54), 0.45, WHITE),
        ("FR 1.50   circularity 0.90", (10, 71), 0.45, WHITE),
        ("status: ok", (10, 88), 0.45, GREEN),
        ("latency 20 ms   - fps   3 dropped in 1 s", (10, 105), 0.45, ORANGE)]
    raised = [t for t in texts if t[0] == "2" and t[2] == 0.27]  # mm², the ² a small raised 2
    assert raised and raised[0][1][0] == 10 + _w("CSA 12.35 mm", 0.45)


def test_a_frame_without_a_nerve_says_so(texts: list[tuple]) -> None:
    r = _frame(record(0, status="no_detection", area=None))
    r.tracked.csa_change_pct = math.nan
    r.tracked.baseline = _baseline(1000.0)
    r.latency_ms = math.nan
    OverlayRenderer(calibrated=True).render(r)
    assert [t[0] for t in texts if t[2] == 0.45] == [
        "CSA - mm", "change from baseline - %", "FR -   circularity -", "status: no nerve", "latency - ms   - fps"]
    assert [t[3] for t in texts if t[2] == 0.45][3] == GREY


@pytest.mark.parametrize("status", ["reacquired", "lost"])
def test_the_status_line_in_its_colour(texts: list[tuple], status: str) -> None:
    OverlayRenderer(calibrated=False).render(_frame(record(0, status=status)))
    assert (f"status: {status}", (10, 71), 0.45, STATUS_COLOURS[status]) in texts


def test_the_legend_labels_each_colour_bottom_left(texts: list[tuple]) -> None:
    out = OverlayRenderer(calibrated=False).render(_frame(record(0, area=None)))
    legend = [t for t in texts if t[2] == 0.38]
    assert [t[0] for t in legend] == ["outline:", "ok", "reacquired", "lost", "no nerve"]
    assert {t[1][1] for t in legend} == {458} and {t[3] for t in legend} == {WHITE}  # 468 - 6 - 16 + 12
    x = 10  # 8 px after each label; a 9 px swatch (10 pixels drawn) 4 px before each coloured label
    for (text, (tx, _), _, _), status in zip(legend, [None, "ok", "reacquired", "lost", "no_detection"]):
        if status is not None:
            assert (out[449:459, x:x + 10] == STATUS_COLOURS[status]).all(), status
            assert not (out[448, x:x + 10] == STATUS_COLOURS[status]).all(axis=1).any()
            x += 13
        assert tx == x, text
        x += _w(text, 0.38) + 8
    assert out[446, 6].tolist() == [21, 21, 21] and out[445, 6].tolist() == [60, 60, 60]  # its box, 16 px high
    right = 6 + 6 + sum(_w(t[0], 0.38) + 8 for t in legend) + 4 * 13 - 1  # 2 px after the last label's gap
    assert out[446, right].tolist() == out[461, right].tolist() == [21, 21, 21] and x == right - 1
    assert out[446, right + 1].tolist() == out[462, 6].tolist() == [60, 60, 60]


@pytest.mark.parametrize("sx, width, label, px", [(0.1, 606, "10 mm", 100), (0.1, 500, "10 mm", 100),
                                                 (0.2, 606, "20 mm", 100), (0.02, 606, "2 mm", 100),
                                                 (0.01, 606, "1 mm", 100),
                                                 (0.1, 499, "5 mm", 50), (0.08, 606, "5 mm", 62),
                                                 (0.0045, 606, "0.5 mm", 111), (0.5, 606, "50 mm", 100),
                                                 (0.004, 606, None, 0)])
def test_the_scale_bar_is_the_largest_round_length_within_a_fifth_of_the_width(
        texts: list[tuple], sx: float, width: int, label: str | None, px: int) -> None:
    renderer = OverlayRenderer(calibrated=True)
    renderer.mm_per_px = (sx, sx * 3)  # only the horizontal spacing counts
    out = renderer.render(_frame(record(0, area=None), w=width))
    bar = [t for t in texts if t[2] == 0.4]
    if label is None:
        assert bar == []
        return
    assert bar == [(label, (10 + px + 6, 438), 0.4, WHITE)]  # 6 px after the bar, on its lower edge
    assert (out[437:439, 10:10 + px] == 255).all()  # 2 px thick, exactly px wide, 4 px above the legend's box
    assert not (out[437:439, 10 + px] == 255).all() and not (out[436, 11:10 + px - 1] == 255).all(axis=1).any()
    assert (out[433:437, 10] == 255).all() and (out[433:437, 9 + px] == 255).all()  # the end ticks, 5 px up
    assert not (out[432, 10] == 255).all() and not (out[432, 9 + px] == 255).all()
    # its box: from (6, 420), 22 px high, the bar, the label and 16 px wide
    right = 6 + px + _w(label, 0.4) + 16 - 1
    assert out[420, 6].tolist() == out[441, 6].tolist() == out[430, right].tolist() == [21, 21, 21]
    assert out[419, 6].tolist() == out[442, 6].tolist() == out[430, 5].tolist() == [60, 60, 60]
    assert out[430, right + 1].tolist() == [60, 60, 60]


def test_text_and_boxes_scale_with_a_wide_frame(texts: list[tuple]) -> None:
    renderer = OverlayRenderer(calibrated=True)
    renderer.mm_per_px = (0.05, 0.05)
    renderer.render(_frame(record(0), w=1600, h=1000), fps=24.0)  # k = 2
    assert ("CSA - mm", (20, 40), 0.9, WHITE) in texts and ("status: ok", (20, 142), 0.9, GREEN) in texts
    assert ("outline:", (20, 988 - 32 + 24), 0.76, WHITE) in texts  # 1000 - 12 - 32 + 24
    assert ("10 mm", (20 + 200 + 12, 1000 - 12 - 32 - 8 - 8), 0.8, WHITE) in texts  # at most 320 px: 200 px


def _trace_frames(values, baseline: float | None = 1000.0, calibrated: bool = False, paused_at=(), dt=0.1):
    """Records at ``t = i * dt`` with the areas ``values`` (``None``: not measured), on the usual frame."""
    out = []
    for i, v in enumerate(values):
        r = _frame(record(i, area=v, status="ok" if v is not None else "no_detection"))
        r.t_s = i * dt
        if v is not None and calibrated:
            r.tracked.measurement = dataclasses.replace(r.tracked.measurement, area_mm2=v / 100)
        if baseline is not None:
            b = _baseline(baseline)
            r.tracked.baseline = dataclasses.replace(b, area_mm2=baseline / 100) if calibrated else b
        r.paused_s = 1.5 if i in paused_at else 0.0
        out.append(r)
    return out


def _draw_all(renderer: OverlayRenderer, records) -> np.ndarray:
    out = None
    for r in records:
        out = renderer.render(r)
    return out


# the trace's box at 606 x 468: x 370-599, y 372-461; plot from top 388 to bottom 448 (0 % at 418, 1 px a per
# cent), from left = 370 + the width of "-30%" + 6 to right 596
LEFT = 370 + _w("-30%", 0.33) + 6
RIGHT, TOP, MID, BOTTOM = 596, 388, 418, 448


def _inked(img: np.ndarray) -> np.ndarray:
    """Where the trace's ink is strong (its anti-aliased line's own row; the labels are white, the 0 % line grey)."""
    return (img[..., 0] < 60) & (img[..., 1] > 120) & (img[..., 2] > 150)


def _ink_rows(out: np.ndarray) -> set[int]:
    return {372 + int(y) for y in np.flatnonzero(_inked(out[372:462, 370:600]).any(axis=1))}


def test_the_trace_box_labels_and_scale(texts: list[tuple]) -> None:
    out = _draw_all(OverlayRenderer(calibrated=False), _trace_frames([1100.0] * 11))  # +10 % for 1 s
    small = [t[:2] for t in texts if t[2] == 0.33][-5:]  # the last frame's labels
    assert small == [("CSA vs baseline (1000 px)", (373, 383)), ("+30%", (372, 392)), ("0%", (372, 422)),
                     ("-30%", (372, 452)), ("last 10 s", (RIGHT - _w("last 10 s", 0.33), 459))]
    assert _ink_rows(out) == {408}  # +10 %: 10 px above the 0 % line
    x_first = int(round(RIGHT - 1.0 / 10 * (RIGHT - LEFT)))  # 1 s of a 10 s window: a tenth of the width
    ink = np.flatnonzero(_inked(out[408]))
    assert ink.min() in (x_first, x_first + 1) and ink.max() in (RIGHT - 1, RIGHT)
    dashes = (out[MID, LEFT:RIGHT + 1] == 200).all(axis=1)  # the 0 % line, dashed: 5 px on, 3 off
    assert dashes[:5].all() and not dashes[5:8].any() and dashes[8:13].all()
    assert out[372, 370].tolist() == [21, 21, 21] and out[461, 599].tolist() == [21, 21, 21]  # its box, 230 x 90
    assert out[371, 370].tolist() == out[372, 369].tolist() == out[462, 599].tolist() == [60, 60, 60]


@pytest.mark.parametrize("value, row", [(1200.0, 398), (900.0, 428), (1300.0, TOP), (2000.0, TOP),
                                        (700.0, BOTTOM), (100.0, BOTTOM), (1000.0, MID)])
def test_the_trace_is_1_px_a_per_cent_clipped_at_30(value: float, row: int) -> None:
    out = _draw_all(OverlayRenderer(calibrated=False), _trace_frames([value] * 5))
    assert _ink_rows(out) == {row}


def test_the_trace_calibrated_in_mm2_and_around_the_median_without_a_baseline(texts: list[tuple]) -> None:
    _draw_all(OverlayRenderer(calibrated=True), _trace_frames([1100.0] * 3, calibrated=True))
    assert [t[0] for t in texts if t[2] == 0.33][-6:-4] == ["CSA vs baseline (10.00 mm", ")"]  # mm², 2 decimals
    texts.clear()
    renderer = OverlayRenderer(calibrated=False)
    out = _draw_all(renderer, _trace_frames([900.0, 1000.0, 1100.0, 1000.0], baseline=None))
    assert [t[0] for t in texts if t[0].startswith("CSA vs")][-1] == "CSA vs median (1000 px)"
    assert renderer.trace_reference() == (1000.0, "median")
    assert max(_ink_rows(out)) == 428 and min(_ink_rows(out)) == 408  # -10 % and +10 % of the median


def test_no_trace_until_two_measured_frames_and_not_around_nothing() -> None:
    renderer = OverlayRenderer(calibrated=False)
    out = _draw_all(renderer, _trace_frames([None, 1100.0, None]))
    assert out[400, 380].tolist() == [60, 60, 60]  # one value: no box
    assert renderer.trace_reference() == (1000.0, "baseline")
    nothing = OverlayRenderer(calibrated=False)
    _draw_all(nothing, _trace_frames([None, None], baseline=None))
    assert nothing.trace_reference() == (None, "median")
    zero = OverlayRenderer(calibrated=False)
    out = _draw_all(zero, _trace_frames([1100.0, 1200.0], baseline=0.0))  # a baseline of 0: the median instead
    assert zero.trace_reference() == (1150.0, "median")


def test_a_pause_or_an_unmeasured_frame_breaks_the_line_and_a_lone_point_is_a_dot() -> None:
    values = [1100.0] * 5 + [1200.0] * 5
    joined = _draw_all(OverlayRenderer(calibrated=False), _trace_frames(values))
    broken = _draw_all(OverlayRenderer(calibrated=False), _trace_frames(values, paused_at=(5,)))
    assert _ink_rows(broken) == {398, 408}  # the two levels, not the step between them
    assert len(_ink_rows(joined)) > 2  # the step drawn
    gap = _draw_all(OverlayRenderer(calibrated=False), _trace_frames([1100.0] * 5 + [None] + [1200.0] * 5))
    assert _ink_rows(gap) == {398, 408}
    dot = _draw_all(OverlayRenderer(calibrated=False), _trace_frames([1100.0] * 5 + [None, 1200.0, None]))
    x = int(round(RIGHT - 0.1 / 10 * (RIGHT - LEFT)))  # the lone point, 0.1 s before the newest frame
    assert (dot[397:400, x] == TRACE_INK).all() and (dot[398, x - 1:x + 2] == TRACE_INK).all()  # radius 1


def test_the_trace_keeps_the_last_trace_s_and_starts_again_when_time_goes_back() -> None:
    renderer = OverlayRenderer(calibrated=False, trace_s=2.0)
    _draw_all(renderer, _trace_frames([1100.0] * 31))  # 0 to 3 s
    assert [round(t, 1) for t, _, _ in renderer.trace][0] == 1.0 and len(renderer.trace) == 21  # exactly 2 s kept
    assert renderer.trace[-1] == (3.0, 1100.0, False)
    renderer.render(_trace_frames([1200.0] * 2)[1])  # a new stream: t = 0.1 s
    assert list(renderer.trace) == [(0.1, 1200.0, False)]
    paused = _trace_frames([1100.0, None], paused_at=(1,))[1]
    renderer.render(paused)
    assert math.isnan(renderer.trace[-1][1]) and renderer.trace[-1][2] is True


def test_a_baseline_in_the_runs_unit() -> None:
    renderer = OverlayRenderer(calibrated=True)
    _draw_all(renderer, _trace_frames([1100.0] * 2, calibrated=True))
    assert renderer.trace_reference() == (10.0, "baseline")
    assert renderer.trace[-1][1] == 11.0  # mm²
    renderer = OverlayRenderer()  # the unit from each record
    r = _trace_frames([1100.0] * 2)[1]
    r.calibrated = True
    r.tracked.measurement = dataclasses.replace(r.tracked.measurement, area_mm2=11.0)
    renderer.render(r)
    assert renderer.trace[-1][1] == 11.0


# drawing helpers with known answers ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["ellipse", "rectangle", "diagonal", "dot", "line"])
def test_every_boundary_pixel_back_from_a_compressed_contour(shape: str) -> None:
    mask = np.zeros((60, 80), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(mask, (40, 30), (25, 12), 30, 0, 360, 1, -1)
    elif shape == "rectangle":
        mask[10:40, 5:70] = 1
    elif shape == "diagonal":
        cv2.fillPoly(mask, [np.array([[10, 10], [50, 50], [10, 50]], np.int32)], 1)
    elif shape == "dot":
        mask[7, 9] = 1
    else:
        mask[20, 10:60] = 1
    (simple,) = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    (every,) = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
    got = overlay_mod._every_pixel(simple)
    assert got.dtype == np.int32 and got.shape == every.shape and np.array_equal(got, every)


def test_put_text_raises_the_2_of_mm2_and_text_width_counts_it(texts: list[tuple]) -> None:
    img = np.zeros((40, 300, 3), np.uint8)
    put_text(img, "a mm\u00b2 b", (4, 30), 0.45, WHITE)
    raise_px = int(round(cv2.getTextSize("m", cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][1] * 0.7))
    x2 = 4 + _w("a mm", 0.45)
    assert texts == [("a mm", (4, 30), 0.45, WHITE), ("2", (x2, 30 - raise_px), 0.27, WHITE),
                     (" b", (x2 + _w("2", 0.27), 30), 0.45, WHITE)]
    assert text_width("a mm\u00b2 b", 0.45) == _w("a mm", 0.45) + _w("2", 0.27) + _w(" b", 0.45)
    assert text_width("mm\u00b2", 0.45) == _w("mm", 0.45) + _w("2", 0.27)
    assert text_width("\u00b2", 0.45) == _w("2", 0.27) and text_width("", 0.45) == 0
    assert text_width("plain", 0.45) == _w("plain", 0.45)
    assert text_width("mm\u00b2 and a longer text", 0.45) == (_w("mm", 0.45) + _w("2", 0.27)
                                                            + _w(" and a longer text", 0.45))
    texts.clear()
    put_text(img, "mm\u00b2", (4, 30), 0.45, WHITE)  # nothing after the 2
    assert [t[0] for t in texts] == ["mm", "2"]


def test_frames_of_every_kind_as_8_bit_bgr() -> None:
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    assert (to_bgr8(grey) == grey[..., None]).all() and to_bgr8(grey).shape == (2, 2, 3)
    assert (to_bgr8(grey[..., None]) == grey[..., None]).all() and to_bgr8(grey[..., None]).shape == (2, 2, 3)
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 99
    assert (to_bgr8(bgra) == (10, 20, 30)).all() and to_bgr8(bgra).shape == (2, 2, 3)
    bgr = np.full((2, 2, 3), 7, np.uint8)
    copy = to_bgr8(bgr)
    assert (copy == bgr).all() and copy is not bgr and not np.shares_memory(copy, bgr)
    wide = np.array([[0, 1000], [2000, 4000]], np.uint16)  # scaled so that the maximum is 255
    assert to_bgr8(wide)[..., 0].tolist() == [[0, 63], [127, 255]] and to_bgr8(wide).dtype == np.uint8
    dim = np.array([[0.0, 0.5], [0.25, 0.75]], np.float32)  # a maximum under 1: scaled as if it were 1
    assert to_bgr8(dim)[..., 0].tolist() == [[0, 127], [63, 191]]
    hot = np.array([[-5.0, 300.0]], np.float64) * np.array([[1.0, 1.0]])
    assert to_bgr8(hot)[..., 0].tolist() == [[0, 255]]  # clipped


def test_shade_darkens_a_box_clipped_to_the_picture() -> None:
    """A box over the top left corner: its part inside the picture (it was moved inside, whole, before)."""
    img = np.full((10, 10, 3), 100, np.uint8)
    overlay_mod._shade(img, -2, -3, 5, 6)
    assert (img[:3, :3] == 35).all() and (img[3:, :] == 100).all() and (img[:, 3:] == 100).all()
    overlay_mod._shade(img, 8, 8, -4, 5)  # an empty box
    assert (img[3:, :] == 100).all()


def test_text_scale_and_the_run_warning() -> None:
    assert [overlay_mod.text_scale(np.zeros((2, w))) for w in (400, 800, 1200, 1600)] == [1.0, 1.0, 1.5, 2.0]
    assert run_warning({"engine_notes": "x random weights y"}) == "RANDOM WEIGHTS: not a measurement"
    assert run_warning({"engine_notes": None}) is None and run_warning({"engine_notes": "Random Weights"}) is None


def test_set_run_takes_the_warning_and_the_spacing() -> None:
    from realtime.calibration import Calibration

    renderer = OverlayRenderer()
    renderer.set_run(SimpleNamespace(metadata={"engine_notes": "random weights"},
                                     tracker=SimpleNamespace(calibration=Calibration(0.07, 0.085))))
    assert renderer.warning == "RANDOM WEIGHTS: not a measurement" and renderer.mm_per_px == (0.07, 0.085)
    renderer.set_run(SimpleNamespace(metadata={}, tracker=None))
    assert renderer.warning is None and renderer.mm_per_px is None


def test_the_rate_and_the_drops_of_the_last_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [10.0]
    monkeypatch.setattr(overlay_mod.time, "monotonic", lambda: now[0])
    renderer = OverlayRenderer()
    assert renderer.fps(2) is None and renderer.dropped_last_s() == 2  # one frame: no rate yet
    now[0] = 10.25
    assert renderer.fps(1) == pytest.approx(2 / 0.25) and renderer.dropped_last_s() == 3
    now[0] = 10.5
    assert renderer.fps(0) == pytest.approx(3 / 0.5)
    now[0] = 11.0  # the first frame is exactly 1 s old: gone
    assert renderer.fps(0) == pytest.approx(3 / 0.75) and renderer.dropped_last_s() == 1
    now[0] = 11.0
    assert renderer.fps(0) == pytest.approx(4 / 0.75)
    same = OverlayRenderer()
    same.fps()
    assert same.fps() == pytest.approx(2 / 1e-3) and same.dropped_last_s() == 0  # at once: not a division by 0


def test_render_needs_an_image() -> None:
    r = record(0)
    r.image = None
    with pytest.raises(ValueError) as err:
        OverlayRenderer().render(r)
    assert str(err.value) == "record has no image to draw on (the pipeline keeps it for rendering)"


def test_the_nerve_filled_at_a_quarter_of_its_colour() -> None:
    r = record(0)
    r.image = np.full((200, 300), 80, np.uint8)
    r.mask = np.zeros((200, 300), np.uint8)
    r.mask[120:160, 150:250] = 1
    r.contours = tuple(cv2.findContours(r.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
    out = OverlayRenderer().render(r)
    expected = np.round(0.25 * np.array(STATUS_COLOURS["ok"]) + 0.75 * 80).astype(int)  # 80, 115, 80
    assert (np.abs(out[130:150, 160:240].astype(int) - expected) <= 1).all()
    assert (out[110, 160:240] == 80).all()  # outside: untouched
    assert (out[120, 160:240, 1] > 180).all()  # the outline, anti-aliased, brighter than the fill
    empty = record(0)
    empty.image, empty.mask, empty.contours = r.image, np.zeros_like(r.mask), ()
    assert (OverlayRenderer().render(empty)[110:170, 100:290] == 80).all()  # an empty mask: nothing drawn


def _box_corners(out: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    """A darkened box exactly at ``x, y, w, h`` (60 -> 21) on the plain frame."""
    for cx, cy in ((x, y), (x + w - 1, y), (x, y + h - 1), (x + w - 1, y + h - 1)):
        assert out[cy, cx].tolist() == [21, 21, 21], (cx, cy)
    for cx, cy in ((x - 1, y), (x, y - 1), (x + w, y + h - 1), (x + w - 1, y + h)):
        assert out[cy, cx].tolist() == [60, 60, 60], (cx, cy)


def test_everything_twice_as_large_on_a_1600_px_frame(texts: list[tuple]) -> None:
    renderer = OverlayRenderer(calibrated=True)
    renderer.mm_per_px = (0.05, 0.05)
    first = None
    for r in _trace_frames([1280.0] * 4, calibrated=True):  # +28 %: 56 px above the 0 % line at 2 px a per cent
        texts.clear()  # the last frame's
        r.image = np.full((1000, 1600), 60, np.uint8)
        out = renderer.render(r, fps=24.0)
        first = out if first is None else first  # one value: no trace over the legend's right end
    texts_k2 = list(texts)
    # the panel: from (12, 12), 34 px a line, 16 px wider than its widest line
    widest = max(_w(t[0], 0.9) for t in texts_k2 if t[2] == 0.9)
    _box_corners(out, 12, 12, 16 + widest, 5 * 34 + 12)
    # the legend: 32 px high from y 956; 18 px swatches (19 pixels drawn) 8 px before their labels, 16 px between
    legend = [t for t in texts_k2 if t[2] == 0.76]
    x = 20
    for (text, (tx, ty), _, _), status in zip(legend, [None, "ok", "reacquired", "lost", "no_detection"]):
        assert ty == 980
        if status is not None:
            assert (out[962:981, x:x + 19] == STATUS_COLOURS[status]).all(), status
            x += 26
        assert tx == x, text
        x += _w(text, 0.76) + 16
    _box_corners(first, 12, 956, 12 + sum(_w(t[0], 0.76) + 16 for t in legend) + 4 * 26, 32)
    # the scale bar: 10 mm = 200 px (a fifth of 1600 px is 320), 4 px thick, end ticks 2 px thick and 10 px up
    assert ("10 mm", (232, 940), 0.8, WHITE) in texts_k2
    assert (out[937:941, 20:220] == 255).all() and not (out[936, 23:217] == 255).all(axis=1).any()
    assert (out[930:941, 19:22] == 255).all() and (out[930:941, 218:221] == 255).all()  # 2 px lines: 3 columns
    assert not (out[928, 19:22] == 255).all(axis=1).any() and not (out[935, 22] == 255).all()
    _box_corners(out, 12, 904, 200 + _w("10 mm", 0.8) + 32, 44)
    # the trace: a 460 x 180 box from (1128, 808); 0 % at y 900, +-30 % at 840 and 960; labels at 0.66
    _box_corners(out, 1128, 808, 460, 180)
    label_w = _w("-30%", 0.66) + 12
    small = [t[:2] for t in texts_k2 if t[2] == 0.66]
    assert small[-6:] == [("CSA vs baseline (10.00 mm", (1134, 830)), (")", small[-5][1]), ("+30%", (1132, 848)),
                          ("0%", (1132, 908)),
                          ("-30%", (1132, 968)), ("last 10 s", (1580 - _w("last 10 s", 0.66), 982))]
    rows = {808 + int(y) for y in np.flatnonzero(_inked(out[808:988, 1128 + label_w:1588]).any(axis=1))}
    assert rows == {844}  # 900 - 2 x 28
    dashes = (out[900, 1128 + label_w:1580] == 200).all(axis=1)  # 9 px on, 7 off
    assert dashes[:9].all() and not dashes[9:16].any() and dashes[16:25].all()


def test_the_panel_shows_the_drawing_rate_of_the_last_second(texts: list[tuple],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    now = [10.0]
    monkeypatch.setattr(overlay_mod.time, "monotonic", lambda: now[0])
    renderer = OverlayRenderer(calibrated=False)
    renderer.draw(_frame(record(0)))
    now[0] = 10.5
    renderer.draw(_frame(record(2)))  # two frames in 0.5 s
    assert ("latency 20 ms   4.0 fps", (10, 88), 0.45, WHITE) in texts


def test_trace_edges_two_values_a_small_reference_and_a_repeated_time() -> None:
    two = _draw_all(OverlayRenderer(calibrated=False), _trace_frames([None, 1100.0, 1100.0]))
    assert _ink_rows(two) == {408}  # two values are enough
    tiny = OverlayRenderer(calibrated=True)  # areas under 1 mm²: still a trace, around its baseline
    out = _draw_all(tiny, _trace_frames([55.0] * 3, baseline=50.0, calibrated=True))
    assert tiny.trace_reference() == (0.5, "baseline") and _ink_rows(out) == {408}
    same = OverlayRenderer(calibrated=False)
    records = _trace_frames([1100.0, 1200.0])
    records[1].t_s = records[0].t_s  # the same time twice: kept, not a new stream
    _draw_all(same, records)
    assert len(same.trace) == 2


def test_trace_segments_are_open_anti_aliased_lines_and_two_points_are_a_line() -> None:
    v = _draw_all(OverlayRenderer(calibrated=False), _trace_frames([1200.0, 1000.0, 1200.0], dt=2.0))  # a V
    x_mid = int(round(RIGHT - 2.0 / 10 * (RIGHT - LEFT)))  # its bottom, 2 s before the newest point
    assert {372 + int(y) for y in np.flatnonzero(_inked(v[372:462, x_mid]))} == {418}  # not closed back along 398
    box = v[372:462, LEFT:RIGHT + 1].astype(int)
    partial = (box[..., 0] < 30) & (box[..., 1] > 60) & (box[..., 1] < 180) & (box[..., 2] > box[..., 1])
    assert partial.sum() > 20  # anti-aliased: pixels the sloping line covers in part, between ink and box
    pair = _draw_all(OverlayRenderer(calibrated=False), _trace_frames([1100.0] * 2 + [None] + [1200.0] * 2))
    assert _ink_rows(pair) == {398, 408}  # each two-point segment a line
    dot = _draw_all(OverlayRenderer(calibrated=False), _trace_frames([1100.0] * 5 + [None, 1200.0, None]))
    x = int(round(RIGHT - 0.1 / 10 * (RIGHT - LEFT)))
    assert not (dot[396, x] == TRACE_INK).all() and not (dot[398, x + 2] == TRACE_INK).all()  # radius 1, not 2


def test_shade_of_an_empty_or_outside_box_darkens_nothing() -> None:
    img = np.full((10, 10, 3), 100, np.uint8)
    for box in ((0, 0, 0, 5), (0, 0, 5, 0), (-10, 0, 5, 5), (0, -10, 5, 5)):
        overlay_mod._shade(img, *box)
        assert (img == 100).all(), box


def test_a_short_frames_trace_is_a_quarter_of_its_height_and_nothing_before_a_frame() -> None:
    assert OverlayRenderer().trace_reference() == (None, "median")  # nothing drawn yet
    records = _trace_frames([1100.0] * 3)
    for r in records:
        r.image = np.full((200, 606), 60, np.uint8)
    out = _draw_all(OverlayRenderer(calibrated=False), records)
    _box_corners(out, 370, 200 - 50 - 6, 230, 50)  # 50 px high: a quarter of 200, not 90


def test_every_part_of_a_bifid_nerve_is_outlined() -> None:
    r = record(0)
    r.image = np.full((200, 300), 80, np.uint8)
    r.mask = np.zeros((200, 300), np.uint8)
    r.mask[120:140, 120:150] = 1
    r.mask[120:140, 200:230] = 1
    r.contours = tuple(cv2.findContours(r.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
    assert len(r.contours) == 2
    out = OverlayRenderer().render(r)
    assert (out[120, 125:145, 1] > 180).all() and (out[120, 205:225, 1] > 180).all()  # both outlines
