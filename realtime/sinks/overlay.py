"""The overlay drawn on each frame: nerve contour and translucent fill, a text panel, and a short
scrolling CSA trace. :class:`OverlayRenderer` draws a record once however many outputs show it (the
overlay video, the live window: :meth:`OverlayRenderer.draw`); :class:`RenderSink` draws and shows
it to no one (mn-bench times the render stage that way)."""

from __future__ import annotations

import math
import time
from collections import deque

import cv2
import numpy as np

from realtime.record import FrameRecord, timed
from realtime.sinks.base import Sink

STATUS_COLOURS = {  # BGR
    "ok": (80, 220, 80),
    "reacquired": (80, 220, 220),
    "lost": (60, 60, 240),
    "no_detection": (160, 160, 160),
}


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any frame (grey, BGR, BGRA, 16-bit) as 8-bit BGR for drawing."""
    img = image
    if img.dtype != np.uint8:
        hi = float(img.max()) if img.size else 1.0
        img = (img.astype(np.float32) * (255.0 / max(hi, 1.0))).clip(0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img.copy()


def _every_pixel(contour: np.ndarray) -> np.ndarray:
    """A chain-compressed contour (``CHAIN_APPROX_SIMPLE``: straight runs kept as their end points) with
    every boundary pixel back (``CHAIN_APPROX_NONE``'s points), so the anti-aliased outline is drawn
    pixel by pixel, exactly as a contour traced on the mask would be."""
    p = contour.reshape(-1, 2).astype(np.int64)
    d = np.roll(p, -1, axis=0) - p
    n = np.maximum(np.abs(d).max(axis=1), 1)
    start = np.repeat(np.arange(len(p)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return (p[start] + np.sign(d)[start] * k[:, None]).reshape(-1, 1, 2).astype(np.int32)


def run_warning(metadata: dict) -> str | None:
    """What every picture of the run must say: that the model has random weights (an architecture name
    was given, the engine notes say so), or ``None``."""
    return "RANDOM WEIGHTS: not a measurement" if "random weights" in str(metadata.get("engine_notes") or "") else None


class OverlayRenderer:
    """Draws records onto their frames; keeps the last ``trace_len`` areas for the CSA trace.

    ``calibrated``: the unit of the CSA shown (mm² or px); ``None`` reads it from each record.
    ``warning``: a line drawn in red on every frame (:func:`run_warning`; set by the sinks that show
    the overlay when the run opens).
    """

    def __init__(self, calibrated: bool | None = None, trace_len: int = 120) -> None:
        self.calibrated = calibrated
        self.warning: str | None = None
        self.trace: deque[float] = deque(maxlen=trace_len)
        self._times: list[float] = []
        self._last: tuple[FrameRecord, np.ndarray] | None = None

    def fps(self) -> float | None:
        """Records drawn per second over the last second (``None`` before the second one)."""
        now = time.monotonic()
        self._times = [t for t in self._times if now - t < 1.0] + [now]
        if len(self._times) < 2:
            return None
        return len(self._times) / max(now - self._times[0], 1e-3)

    def draw(self, record: FrameRecord) -> np.ndarray:
        """The overlay of ``record``, drawn on the first call for it (timed as its ``render`` stage) and
        the same picture for every later call (each output that shows it)."""
        if self._last is not None and self._last[0] is record:
            return self._last[1]
        fps = self.fps()
        with timed(record.timings_ms, "render"):
            out = self.render(record, fps)
        self._last = (record, out)
        return out

    def render(self, record: FrameRecord, fps: float | None = None) -> np.ndarray:
        if record.image is None:
            raise ValueError("record has no image to draw on (the pipeline keeps it for rendering)")
        out = to_bgr8(record.image)
        colour = STATUS_COLOURS.get(record.status, (255, 255, 255))
        if record.mask is not None and record.mask.any():
            mask = record.mask.astype(bool)
            fill = out.copy()
            fill[mask] = colour
            cv2.addWeighted(fill, 0.25, out, 0.75, 0, dst=out)
            cv2.drawContours(out, [_every_pixel(c) for c in record.contours], -1, colour, 1, cv2.LINE_AA)
        calibrated = record.calibrated if self.calibrated is None else self.calibrated
        area = _area(record, calibrated)
        self.trace.append(float(area) if area is not None else math.nan)
        self._panel(out, record, fps, colour, calibrated)
        self._trace(out)
        return out

    def _panel(self, img: np.ndarray, r: FrameRecord, fps: float | None, colour, calibrated: bool) -> None:
        m = r.measurement
        unit = "mm2" if calibrated else "px"
        area = _area(r, calibrated)
        lines = [
            f"CSA {_fmt(area, 2 if calibrated else 0)} {unit}" + ("" if calibrated else " (uncalibrated)"),
            f"FR {_fmt(m and m.flattening_ratio, 2)}   circ {_fmt(m and m.circularity, 2)}",
            f"{r.status}   {_fmt(fps, 1)} fps   {_fmt(r.latency_ms, 0)} ms",
        ]
        if r.tracked.csa_change_pct is not None:
            lines.insert(1, f"dCSA {_fmt(r.tracked.csa_change_pct, 1)} %")
        if self.warning:
            lines.insert(0, self.warning)
        x0, y0, lh = 6, 6, 17
        box_w = 8 + max(cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] for s in lines)
        sub = img[y0:y0 + lh * len(lines) + 6, x0:x0 + box_w]
        sub[:] = (sub * 0.35).astype(np.uint8)
        for i, text in enumerate(lines):
            ink = colour if i == len(lines) - 1 else (60, 60, 255) if text == self.warning else (255, 255, 255)
            cv2.putText(img, text, (x0 + 4, y0 + 14 + i * lh), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ink, 1, cv2.LINE_AA)

    def _trace(self, img: np.ndarray) -> None:
        vals = np.array(self.trace, dtype=np.float64)
        if np.isfinite(vals).sum() < 2:
            return
        h, w = img.shape[:2]
        tw, th = min(200, w // 3), min(60, h // 6)
        x0, y0 = w - tw - 6, h - th - 6
        sub = img[y0:y0 + th, x0:x0 + tw]
        sub[:] = (sub * 0.35).astype(np.uint8)
        lo, hi = np.nanmin(vals), np.nanmax(vals)
        span = max(hi - lo, 1e-6)
        xs = x0 + np.linspace(0, tw - 1, self.trace.maxlen)[-len(vals):]
        ys = y0 + th - 4 - (vals - lo) / span * (th - 8)
        pts = [(int(x), int(y)) for x, y in zip(xs, ys) if math.isfinite(y)]
        cv2.polylines(img, [np.array(pts, np.int32)], False, (0, 220, 255), 1, cv2.LINE_AA)
        cv2.putText(img, "CSA", (x0 + 3, y0 + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def _area(record: FrameRecord, calibrated: bool) -> float | None:
    m = record.measurement
    if m is None:
        return None
    return m.area_mm2 if calibrated else float(m.area_px)


class RenderSink(Sink):
    """Draws every record's overlay and shows it to no one: mn-bench times the render stage of a loop
    without outputs (the write stage is then 0 ms: nothing is written)."""

    name = "overlay (not shown)"

    def __init__(self, renderer: OverlayRenderer | None = None) -> None:
        self.renderer = renderer or OverlayRenderer()

    def write(self, record: FrameRecord) -> None:
        self.renderer.draw(record)
        record.timings_ms.setdefault("write", 0.0)


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):.{digits}f}"
