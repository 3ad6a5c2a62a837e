"""The overlay drawn on each frame: nerve contour and translucent fill in the status colour, a text
panel, a legend of the colours, a scale bar when calibrated, and the CSA trace of the last seconds on
a fixed scale. :class:`OverlayRenderer` draws a record once however many outputs show it (the
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


#: What the outline and fill colour of the nerve mean (the panel's legend; ``no_detection`` draws none).
LEGEND = (("ok", "ok"), ("reacquired", "reacquired"), ("lost", "lost"), ("no_detection", "no nerve"))
#: The CSA trace's fixed scale: +-this many per cent around its reference (the baseline).
TRACE_RANGE_PCT = 30.0
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
RED = (60, 60, 255)
ORANGE = (0, 165, 255)
TRACE_INK = (0, 220, 255)


class OverlayRenderer:
    """Draws records onto their frames: the nerve's outline and fill in its status colour, a text panel
    (CSA in mm² when calibrated, else px and says so; change from the baseline; flattening ratio and
    circularity; the status in its colour; latency; the drawing rate and the frames dropped in the last
    second), a legend of the colours, a scale bar when calibrated, and the CSA trace of the last
    ``trace_s`` seconds on a fixed scale (+-:data:`TRACE_RANGE_PCT` % around the baseline, its line
    drawn; around the median of the trace, labelled so, while there is no baseline).

    ``calibrated``: the unit of the CSA shown (mm² or px); ``None`` reads it from each record.
    ``warning``: a line drawn in red on every frame (:func:`run_warning`); ``mm_per_px``: ``(sx, sy)``
    for the scale bar. The sinks that show the overlay set both from the run (:meth:`set_run`).
    Text scales with the frame (1 at 800 px wide and below), so it reads the same at the frame's size.
    """

    def __init__(self, calibrated: bool | None = None, trace_s: float = 10.0) -> None:
        self.calibrated = calibrated
        self.warning: str | None = None
        self.mm_per_px: tuple[float, float] | None = None
        self.trace_s = float(trace_s)
        self.trace: deque[tuple[float, float, bool]] = deque()  # (t_s, area, a pause before it)
        self._baseline_area: float | None = None
        self._times: list[tuple[float, int]] = []
        self._last: tuple[FrameRecord, np.ndarray] | None = None

    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        """Take what every picture of ``run`` shows from it: the random-weights warning, the pixel spacing."""
        self.warning = run_warning(run.metadata)
        cal = getattr(run.tracker, "calibration", None)
        self.mm_per_px = None if cal is None else (float(cal.sx), float(cal.sy))

    def fps(self, dropped: int = 0) -> float | None:
        """Records drawn per second over the last second (``None`` before the second one); ``dropped``: the
        frames the source dropped before this one (:meth:`dropped_last_s` adds them up)."""
        now = time.monotonic()
        self._times = [t for t in self._times if now - t[0] < 1.0] + [(now, dropped)]
        if len(self._times) < 2:
            return None
        return len(self._times) / max(now - self._times[0][0], 1e-3)

    def dropped_last_s(self) -> int:
        """Frames the source dropped over the last second (as :meth:`fps` saw them)."""
        return sum(d for _, d in self._times)

    def draw(self, record: FrameRecord) -> np.ndarray:
        """The overlay of ``record``, drawn on the first call for it (timed as its ``render`` stage) and
        the same picture for every later call (each output that shows it)."""
        if self._last is not None and self._last[0] is record:
            return self._last[1]
        fps = self.fps(record.dropped_before)
        with timed(record.timings_ms, "render"):
            out = self.render(record, fps)
        self._last = (record, out)
        return out

    def render(self, record: FrameRecord, fps: float | None = None) -> np.ndarray:
        if record.image is None:
            raise ValueError("record has no image to draw on (the pipeline keeps it for rendering)")
        out = to_bgr8(record.image)
        colour = STATUS_COLOURS.get(record.status, WHITE)
        if record.mask is not None and record.mask.any():
            mask = record.mask.astype(bool)
            fill = out.copy()
            fill[mask] = colour
            cv2.addWeighted(fill, 0.25, out, 0.75, 0, dst=out)
            cv2.drawContours(out, [_every_pixel(c) for c in record.contours], -1, colour, 1, cv2.LINE_AA)
        calibrated = record.calibrated if self.calibrated is None else self.calibrated
        area = _area(record, calibrated)
        self._add_trace(record, area, calibrated)
        k = text_scale(out)
        self._panel(out, record, fps, colour, calibrated, k)
        bottom = out.shape[0] - int(6 * k)
        bottom = self._legend(out, bottom, k)
        if calibrated and self.mm_per_px is not None:
            self._scale_bar(out, bottom, k)
        self._trace(out, calibrated, k)
        return out

    # ------------------------------------------------------------------------------------ the panel
    def _panel(self, img: np.ndarray, r: FrameRecord, fps: float | None, colour, calibrated: bool, k: float) -> None:
        m = r.measurement
        area = _area(r, calibrated)
        csa = (f"CSA {_fmt(area, 2)} mm\u00b2" if calibrated else f"CSA {_fmt(area, 0)} px (uncalibrated)")
        change = r.tracked.csa_change_pct
        if r.tracked.baseline is None:
            dcsa = "change from baseline: - (no baseline yet)"
        else:
            dcsa = f"change from baseline {_signed(change, 1)} %"
        status = {"no_detection": "no nerve"}.get(r.status, r.status)
        speed = f"latency {_fmt(r.latency_ms, 0)} ms   {_fmt(fps, 1)} fps"
        dropped = self.dropped_last_s()
        lines: list[tuple[str, tuple[int, int, int]]] = [
            (csa, WHITE), (dcsa, WHITE),
            (f"FR {_fmt(m and m.flattening_ratio, 2)}   circularity {_fmt(m and m.circularity, 2)}", WHITE),
            (f"status: {status}", colour),
            (speed + (f"   {dropped} dropped in 1 s" if dropped else ""), ORANGE if dropped else WHITE),
        ]
        if self.warning:
            lines.insert(0, (self.warning, RED))
        scale, lh = 0.45 * k, int(round(17 * k))
        x0, y0 = int(6 * k), int(6 * k)
        box_w = int(8 * k) + max(text_width(s, scale) for s, _ in lines)
        _shade(img, x0, y0, box_w, lh * len(lines) + int(6 * k))
        for i, (text, ink) in enumerate(lines):
            put_text(img, text, (x0 + int(4 * k), y0 + int(14 * k) + i * lh), scale, ink)

    def _legend(self, img: np.ndarray, bottom: int, k: float) -> int:
        """The status colours (the outline's and the status line's), bottom left; returns the top it used."""
        scale, sq = 0.38 * k, int(round(9 * k))
        h = int(round(16 * k))
        x0, y0 = int(6 * k), bottom - h
        items = [("outline:", None)] + [(label, STATUS_COLOURS[s]) for s, label in LEGEND]
        width = int(6 * k) + sum(text_width(t, scale) + (sq + int(4 * k) if c else 0) + int(8 * k) for t, c in items)
        _shade(img, x0, y0, width, h)
        x, base = x0 + int(4 * k), y0 + int(12 * k)
        for text, c in items:
            if c is not None:
                cv2.rectangle(img, (x, base - sq), (x + sq, base), c, -1)
                x += sq + int(4 * k)
            put_text(img, text, (x, base), scale, WHITE)
            x += text_width(text, scale) + int(8 * k)
        return y0 - int(4 * k)

    def _scale_bar(self, img: np.ndarray, bottom: int, k: float) -> None:
        """A horizontal bar of a round number of mm (about a fifth of the width at most), bottom left."""
        sx = self.mm_per_px[0]
        w = img.shape[1]
        mm = next((v for v in (50, 20, 10, 5, 2, 1, 0.5) if v / sx <= w / 5), None)
        if mm is None:
            return
        px = int(round(mm / sx))
        label = f"{mm:g} mm"
        scale = 0.4 * k
        x0, y = int(10 * k), bottom - int(4 * k)
        _shade(img, x0 - int(4 * k), y - int(18 * k), px + text_width(label, scale) + int(16 * k), int(22 * k))
        cv2.rectangle(img, (x0, y - max(1, int(2 * k)) + 1), (x0 + px - 1, y), WHITE, -1)  # px pixels wide
        for x in (x0, x0 + px - 1):
            cv2.line(img, (x, y - int(5 * k)), (x, y), WHITE, max(1, int(k)))
        put_text(img, label, (x0 + px + int(6 * k), y), scale, WHITE)

    # ------------------------------------------------------------------------------------ the trace
    def _add_trace(self, r: FrameRecord, area: float | None, calibrated: bool) -> None:
        if self.trace and r.t_s < self.trace[-1][0]:  # time went back (a new stream): start again
            self.trace.clear()
        value = float(area) if area is not None and r.measured else math.nan
        self.trace.append((float(r.t_s), value, bool(getattr(r, "paused_s", 0.0))))
        while self.trace and r.t_s - self.trace[0][0] > self.trace_s:
            self.trace.popleft()
        b = r.tracked.baseline
        self._baseline_area = None if b is None else (b.area_mm2 if calibrated else b.area_px)

    def trace_reference(self) -> tuple[float | None, str]:
        """The trace's 0 %: the baseline's area, else the median of the trace (``None`` without values)."""
        if self._baseline_area is not None and self._baseline_area > 0:
            return self._baseline_area, "baseline"
        vals = np.array([v for _, v, _ in self.trace], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        return (float(np.median(vals)) if vals.size else None), "median"

    def _trace(self, img: np.ndarray, calibrated: bool, k: float) -> None:
        ref, what = self.trace_reference()
        if ref is None or ref <= 0 or sum(math.isfinite(v) for _, v, _ in self.trace) < 2:
            return
        h, w = img.shape[:2]
        tw, th = min(int(230 * k), w // 2), min(int(90 * k), h // 4)
        x0, y0 = w - tw - int(6 * k), h - th - int(6 * k)
        _shade(img, x0, y0, tw, th)
        scale = 0.33 * k
        label_w = text_width("-30%", scale) + int(6 * k)
        top, bottom = y0 + int(16 * k), y0 + th - int(14 * k)
        left, right = x0 + label_w, x0 + tw - int(4 * k)
        unit = "mm\u00b2" if calibrated else "px"
        put_text(img, f"CSA vs {what} ({_fmt(ref, 2 if calibrated else 0)} {unit})", (x0 + int(3 * k),
                 y0 + int(11 * k)), scale, WHITE)
        span = TRACE_RANGE_PCT
        mid = (top + bottom) // 2
        for pct, y in ((span, top), (0.0, mid), (-span, bottom)):
            put_text(img, f"{pct:+.0f}%" if pct else "0%", (x0 + int(2 * k), y + int(4 * k)), scale, WHITE)
        for x in range(left, right, int(8 * k)):  # the reference line, dashed
            cv2.line(img, (x, mid), (min(x + int(4 * k), right), mid), (200, 200, 200), 1)
        put_text(img, f"last {self.trace_s:g} s", (right - text_width(f"last {self.trace_s:g} s", scale),
                 y0 + th - int(3 * k)), scale, WHITE)
        t_new = self.trace[-1][0]
        segments: list[list[tuple[int, int]]] = [[]]
        for t, v, pause in self.trace:
            if pause or not math.isfinite(v):
                segments.append([])
                if not math.isfinite(v):
                    continue
            pct = max(-span, min(span, 100.0 * (v - ref) / ref))
            x = right - (t_new - t) / self.trace_s * (right - left)
            y = mid - pct / span * (mid - top)
            segments[-1].append((int(round(x)), int(round(y))))
        for seg in segments:
            if len(seg) >= 2:
                cv2.polylines(img, [np.array(seg, np.int32)], False, TRACE_INK, 1, cv2.LINE_AA)
            elif len(seg) == 1:
                cv2.circle(img, seg[0], 1, TRACE_INK, -1)


def text_scale(img: np.ndarray) -> float:
    """How much larger the overlay's text and boxes are drawn than on an 800 px wide frame (never smaller)."""
    return max(1.0, img.shape[1] / 800.0)


def text_width(text: str, scale: float) -> int:
    """Width in pixels of ``text`` as :func:`put_text` draws it."""
    main, sup = text.split("\u00b2") if "\u00b2" in text else (text, None)
    w = cv2.getTextSize(main, FONT, scale, 1)[0][0] if main else 0
    if sup is not None:
        w += (cv2.getTextSize("2", FONT, scale * 0.6, 1)[0][0]
              + (cv2.getTextSize(sup, FONT, scale, 1)[0][0] if sup else 0))
    return w


def put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, ink) -> None:  # type: ignore[no-untyped-def]
    """``cv2.putText`` with one ``²`` drawn as a raised small 2 (OpenCV's Hershey fonts have no ²)."""
    if "\u00b2" not in text:
        cv2.putText(img, text, org, FONT, scale, ink, 1, cv2.LINE_AA)
        return
    main, rest = text.split("\u00b2", 1)
    cv2.putText(img, main, org, FONT, scale, ink, 1, cv2.LINE_AA)
    x = org[0] + cv2.getTextSize(main, FONT, scale, 1)[0][0]
    raise_px = int(round(cv2.getTextSize("m", FONT, scale, 1)[0][1] * 0.7))
    cv2.putText(img, "2", (x, org[1] - raise_px), FONT, scale * 0.6, ink, 1, cv2.LINE_AA)
    x += cv2.getTextSize("2", FONT, scale * 0.6, 1)[0][0]
    if rest:
        cv2.putText(img, rest, (x, org[1]), FONT, scale, ink, 1, cv2.LINE_AA)


def _area(record: FrameRecord, calibrated: bool) -> float | None:
    m = record.measurement
    if m is None:
        return None
    return m.area_mm2 if calibrated else float(m.area_px)


def _shade(img: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    """Darken a box (the background of text), clipped to the image."""
    x1, y1 = max(0, x + max(0, w)), max(0, y + max(0, h))  # a box over the top or left edge: its part inside
    x, y = max(0, x), max(0, y)
    sub = img[y:y1, x:x1]
    sub[:] = (sub * 0.35).astype(np.uint8)


class RenderSink(Sink):
    """Draws every record's overlay and shows it to no one: mn-bench times the render stage of a loop
    without outputs (the write stage is then 0 ms: nothing is written)."""

    name = "overlay (not shown)"

    def __init__(self, renderer: OverlayRenderer | None = None) -> None:
        self.renderer = renderer or OverlayRenderer()

    def write(self, record: FrameRecord) -> None:
        self.renderer.draw(record)
        record.timings_ms.setdefault("write", 0.0)


def _signed(value, digits: int) -> str:  # type: ignore[no-untyped-def]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):+.{digits}f}"


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):.{digits}f}"
