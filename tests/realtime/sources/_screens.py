"""Synthetic scanner screens made from phantom frames: the B-mode image with a scanner's UI drawn around it
(text, icons, a grey bar and a colour bar, the depth scale, thumbnails), at several layouts (--roi auto tests)."""
from __future__ import annotations
import cv2
import numpy as np

LAYOUTS = {
    # name: screen (W, H), background BGR, image origin (x, y), depth scale side, thumbnails
    "black-1024x768": ((1024, 768), (0, 0, 0), (210, 110), "right", False),
    "grey-1280x720": ((1280, 720), (38, 35, 35), (640, 150), "left", False),
    "black-800x600-thumbs": ((800, 600), (0, 0, 0), (24, 40), "right", True),
}


def scanner_screen(image: np.ndarray, layout: str, depth_cm: int = 4) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``image`` (grey) on a scanner screen of ``layout``: text, icons, a colour bar, a grey bar, a depth
    scale (and thumbnails); returns the BGR screen and the image's true ROI."""
    (sw, sh), bg, (ox, oy), scale_side, thumbs = LAYOUTS[layout]
    h, w = image.shape[:2]
    s = np.empty((sh, sw, 3), np.uint8)
    s[:] = bg
    s[oy:oy + h, ox:ox + w] = image[:, :, None] if image.ndim == 2 else image
    font = cv2.FONT_HERSHEY_SIMPLEX
    white, grey, yellow = (235, 235, 235), (170, 170, 170), (40, 220, 230)
    cv2.putText(s, "ACME Ultra 9  L12-5  MSK Wrist", (12, 28), font, 0.7, white, 2)
    cv2.putText(s, "2024-05-06 12:53:20", (sw - 260, 28), font, 0.6, grey, 1)
    panel_x = 12 if ox > 200 else ox + w + 70
    for i, line in enumerate(["MI 0.8", "TIs 0.1", "Gain 52", "DR 60", "FR 24 Hz", "12.0 MHz", "Depth 4.0 cm"]):
        cv2.putText(s, line, (panel_x, 90 + 26 * i), font, 0.55, yellow if i < 2 else white, 1)
    for i, colour in enumerate([(0, 0, 220), (0, 200, 0), (220, 120, 0)]):  # icons
        cv2.circle(s, (panel_x + 12 + 34 * i, 300), 11, colour, -1)
        cv2.rectangle(s, (panel_x + 2 + 34 * i, 325), (panel_x + 22 + 34 * i, 345), colour, 2)
    # a grey bar (smooth ramp) and a colour bar
    bar_x = ox - 40 if scale_side == "right" else ox + w + 30
    ramp = np.linspace(255, 0, 160).astype(np.uint8)
    s[oy + 10:oy + 170, bar_x:bar_x + 12] = ramp[:, None, None]
    cmap = cv2.applyColorMap(ramp[:, None], cv2.COLORMAP_JET)
    s[oy + 190:oy + 350, bar_x:bar_x + 12] = cmap[:, 0][:, None]
    # depth scale: ticks every 0.5 cm, numbers every cm, 6 px away from the image
    px_per_cm = h / depth_cm
    tx = ox + w + 6 if scale_side == "right" else ox - 6
    d = 1 if scale_side == "right" else -1
    for k in range(2 * depth_cm + 1):
        y = min(oy + h - 1, int(round(oy + k * px_per_cm / 2)))
        cv2.line(s, (tx, y), (tx + d * (10 if k % 2 == 0 else 5), y), white, 1)
        if k % 2 == 0:
            label = str(k // 2)
            cv2.putText(s, label, (tx + d * 14 if d > 0 else tx - 28, y + 5), font, 0.45, white, 1)
    cv2.putText(s, "Freeze   Measure   Save   Print", (ox, min(sh - 8, oy + h + 24)), font, 0.5, grey, 1)
    if thumbs:
        small = cv2.resize(image, (96, 74), interpolation=cv2.INTER_AREA)
        for i in range(3):
            x = ox + w + 40
            y = oy + 20 + 90 * i
            if x + 96 <= sw and y + 74 <= sh:
                s[y:y + 74, x:x + 96] = small[:, :, None]
    return s, (ox, oy, w, h)
