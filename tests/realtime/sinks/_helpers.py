"""A small typed FrameRecord for the sink tests, and a stand-in for OpenCV's HighGUI."""

from __future__ import annotations

import time

import cv2
import numpy as np

from realtime.morphometry import Measurement
from realtime.record import FrameRecord
from realtime.sinks.window import KEY_ACTIONS
from realtime.tracker import TrackedMeasurement, TrackStatus

KEYS = {action: code for code, action in KEY_ACTIONS.items()}


def record(i: int, status: str = "ok", area: float | None = 1000.0, latency: float = 20.0) -> FrameRecord:
    img = np.full((48, 64), 80, np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    cv2.circle(mask, (32, 24), 10, 1, -1)
    measurement = None if area is None else Measurement(
        area_px=area, area_mm2=None, perimeter_px=60.0, perimeter_mm=None, flattening_ratio=1.5, circularity=0.9,
        centroid_x_px=32.0, centroid_y_px=24.0, centroid_x_mm=None, centroid_y_mm=None, bbox=(22, 14, 21, 21),
        n_components=1, confidence=0.9)
    tracked = TrackedMeasurement(frame_index=i, t_s=i / 24, status=TrackStatus(status), measurement=measurement,
                                 n_detections=int(area is not None), nerve_labels=(1,) if area else (),
                                 frames_since_seen=0, displacement_px=float(i), csa_change_pct=0.0)
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0] if area else ()
    return FrameRecord(frame=i, t_s=i / 24, tracked=tracked, latency_ms=latency, dropped_before=i % 2,
                       timings_ms={"infer": 10.0, "preprocess": 1.0}, contours=tuple(contours), image=img,
                       mask=mask if area else None)


class FakeGUI:
    """OpenCV's HighGUI as far as the live window (:class:`realtime.sinks.window.LiveWindow`) uses it. ``keys``:
    what ``waitKey`` returns call by call (a key name of :data:`KEY_ACTIONS`, a key code, ``"close"`` to have the
    window closed by the window manager, or ``None``).
    ``qt``: once closed, ``getWindowProperty`` raises (OpenCV's Qt backend) instead of returning -1.
    It records what a person would notice: each window's flags as created (``flags``; OpenCV's values of the
    flags), the milliseconds each ``waitKey`` waits (``waits``), the order of the calls (``calls``) and every
    window title a call named (``titles``)."""

    WINDOW_NORMAL, WINDOW_KEEPRATIO, WINDOW_GUI_NORMAL, WND_PROP_VISIBLE = 0, 0, 16, 4
    error = cv2.error

    def __init__(self, keys: list[str | int | None] | None = None, qt: bool = False, sleep: bool = False) -> None:
        self.keys = list(keys or [])
        self.qt = qt
        self.sleep = sleep  # waitKey waits its milliseconds, as HighGUI does
        self.windows: dict[str, bool] = {}
        self.shown: list[np.ndarray] = []
        self.resized: list[tuple[int, int]] = []
        self.reopened = 0
        self.flags: dict[str, int] = {}
        self.waits: list[int] = []
        self.calls: list[str] = []
        self.titles: set[str] = set()

    def namedWindow(self, title: str, flags: int) -> None:  # noqa: N802 - OpenCV's names
        self.calls.append("namedWindow")
        self.titles.add(title)
        self.windows[title] = True
        self.flags[title] = flags

    def imshow(self, title: str, img: np.ndarray) -> None:
        self.calls.append("imshow")
        self.titles.add(title)
        if not self.windows.get(title):
            self.reopened += 1  # HighGUI opens a new (400x300) window for an imshow after a close
        self.windows[title] = True
        self.shown.append(img)

    def resizeWindow(self, title: str, w: int, h: int) -> None:  # noqa: N802
        self.titles.add(title)
        self.resized.append((w, h))

    def waitKey(self, ms: int) -> int:  # noqa: N802
        self.calls.append("waitKey")
        self.waits.append(ms)
        if self.sleep:
            time.sleep(ms / 1000)
        key = self.keys.pop(0) if self.keys else None
        if key == "close":
            for title in self.windows:
                self.windows[title] = False
            return -1
        if isinstance(key, int):  # a key code as HighGUI returns it, modifier bits included
            return key
        return -1 if key is None else KEYS[key]

    def getWindowProperty(self, title: str, prop: int) -> float:  # noqa: N802
        self.titles.add(title)
        if prop != self.WND_PROP_VISIBLE:
            raise cv2.error(f"property {prop} is not asked for by the live window")
        if not self.windows.get(title):
            if self.qt:
                raise cv2.error("NULL guiReceiver (please create a window)")
            return -1.0
        return 1.0

    def destroyWindow(self, title: str) -> None:  # noqa: N802
        self.calls.append("destroyWindow")
        self.titles.add(title)
        self.windows[title] = False

    def imwrite(self, path: str, img: np.ndarray) -> bool:
        return cv2.imwrite(path, img)
