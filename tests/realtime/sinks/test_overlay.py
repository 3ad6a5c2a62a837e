"""realtime.sinks.overlay: the contour, panel and trace drawn on the frame."""

from __future__ import annotations

import cv2
import numpy as np

from realtime.sinks.overlay import STATUS_COLOURS, OverlayRenderer, run_warning, to_bgr8
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
    assert (drawn[80:] == expected[80:]).all()  # below the text panel (a single frame draws no trace)
    assert (drawn[80:] != to_bgr8(big.image)[80:]).any()


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
    assert red(warned).sum() > 50 and not red(plain).any()
