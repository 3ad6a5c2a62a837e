"""Temporal fusion: a frame's probabilities averaged with the previous frames', aligned by their motion.

A network segments every frame as if it were the first. The outline it draws moves a little with
each frame's speckle and noise, so the area a user reads changes by a few percent from one frame to
the next while the nerve hardly changed (``benchmarks.window_bench``: 2-6 % against the truth's
0.2 %). While the nerve is tracked, the previous frames know where its outline was. With
``--fusion W`` the map the mask is cut from is

    fused[t] = W * prob[t] + (1 - W) * shift(fused[t-1], d[t])

where ``d[t]`` is how far the nerve's surroundings moved since the previous frame: the frame as the
network saw it, a patch of a third of its width about the region followed (smoothed over the
speckle), found again in the current frame by normalised cross-correlation to a sub-pixel
(:func:`image_motion`). The image gives the motion, not the probable region's centroid: that centroid
moves when the outline changes shape, and a previous map moved by it drags the next outline after it
(a feedback that let one validation clip's outline swing between half and all of a wide nerve: 31
jumps at ``W = 0.35`` against 3 with the image's motion). Without an image, or where the patch
matches nowhere, the centroid's displacement is used. The outline is thus averaged over the last few
frames *where the nerve is now*: a translation (probe glide) is followed at once; a change of shape
(compression) reaches the mask with a mean delay of ``(1 - W) / W`` frames (1.9 frames, 77 ms at 24 fps,
for the default ``W = 0.35``; ``benchmarks.window_bench``'s lag on the animated validation clips: a mean
1.9 frames, 0.7 without fusion). ``W = 1`` turns fusion off.

With ``--fusion-motion affine`` (``motion="affine"``) ``d[t]`` is the affine motion of a smaller patch about the
nerve (:func:`image_affine`: the translation refined by enhanced correlation to six parameters), so the previous
map is also squeezed, widened and tilted as the tissue around the nerve was, and a compression is followed as a
glide is; where that refinement fails or is not believed, the translation is used. It costs 1-2 ms a frame. Its
area factor is the noisiest part of the estimate (on animated clips with fresh speckle, 0.66 % a frame against the
nerve's own 0.54 %), and fusion applies it to the previous map every frame; ``--fusion-motion shape`` divides it out
(determinant 1): the outline's shape follows the tissue at once, its area is averaged over frames as with the shift.

The rules, deterministic given the frames (``mn-segment`` on a recording and ``mn-live`` on the same
frames give the same rows):

1. The region followed is the one nearest the tracked nerve (the largest before there is one). A
   frame is fused only when the previous processed frame was measured (``ok`` / ``reacquired``,
   past the presence gate), both frames have a probable region at the same resolution, and the
   region moved by at most ``max_shift`` of the map's smaller side and kept its area within
   ``max_area_change`` (relative); anything else (a miss, a jump to another structure, a new window)
   starts again from the frame's own probabilities.
2. The mask and its components come from the fused map; the confidence and the presence gate read
   the frame's own probabilities (a fused map is less sharp at the edge by construction and would
   look "unsure" to the appearance check).

Each frame's CSV row says whether it was fused (``fused``: 1 or 0; empty with fusion off) and the
summary counts them (``fusion``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.errors import UserError

if TYPE_CHECKING:  # annotations only: the command line's --help imports this module (no numpy, no OpenCV)
    import numpy as np

DEFAULT_WEIGHT = 0.35
"""``--fusion``'s default: the current frame's weight. Chosen on the paper split's validation images animated
into clips (``benchmarks/results/fusion-image-motion-*``): steadier than 0.5 (raw area jitter 0.9 % against
1.2 %) for 0.7 frame more behind a change of shape (mean lag 1.9 against 1.2 frames); 0.25 is steadier
still (0.8 %) but 2.4 frames behind, with the largest flattening-ratio error."""

MOTION_PATCH = 1 / 3
"""The patch whose content gives the motion: this share of the map's width (3:4), about the nerve."""
MOTION_SMOOTH = 1.5 / 384
"""Gaussian smoothing before matching (share of the width: 1.5 px at 384): speckle is not motion."""
MIN_MATCH = 0.3
"""The lowest normalised correlation taken as the same content (below it the region's motion is used)."""
MOTIONS = ("shift", "affine", "shape")
"""``--fusion-motion``: how the previous map is moved onto this frame. ``shift``: by the patch's translation
(:func:`image_motion`); ``affine``: by the patch's affine motion (:func:`image_affine`: translation, and the
squeeze, widening, tilt and shear of compression), so a change of shape is followed as a glide is; ``shape``: the
same with its linear part scaled to keep areas (determinant 1), so the outline's shape follows the tissue at once
while its area is still averaged over frames (the affine's area factor is the noisiest part of its estimate)."""
DEFAULT_MOTION = "shift"
AFFINE_PATCH = 1 / 4
"""The patch whose content gives the affine motion: this share of the map's width (3:4), about the nerve; smaller
than the translation's, as the squeeze is the nerve's own and fades away from it."""
AFFINE_MAX_CHANGE = 0.1
"""An affine motion whose linear part differs from the identity by more than this (10 % a frame) is not believed:
the translation is used."""
_MIN_REGION_PX = 4  # regions smaller than this at the network's resolution give no position


@dataclass
class Region:
    """The probable region followed from frame to frame (network-input pixels)."""

    x: float
    y: float
    area: float


@dataclass
class TemporalFusion:
    """``fused, was_fused = fusion.apply(prob, image)`` per frame, then ``fusion.observe(measured)``; one per run."""

    weight: float = DEFAULT_WEIGHT
    threshold: float = 0.5
    max_shift: float = 0.1
    max_area_change: float = 0.5
    motion: str = DEFAULT_MOTION
    counts: dict[str, int] = field(default_factory=lambda: {"fused": 0, "own": 0}, init=False)
    _fused: np.ndarray | None = field(default=None, init=False, repr=False)
    _region: Region | None = field(default=None, init=False)
    _regions: list[Region] = field(default_factory=list, init=False, repr=False)
    _measured: bool = field(default=False, init=False)
    _image: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (0.0 < self.weight <= 1.0):
            raise UserError(f"--fusion must be in (0, 1] (the current frame's weight; 1 turns fusion off), "
                            f"got {self.weight:g}")
        if not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"the fusion's threshold must be in [0, 1], got {self.threshold:g}")
        if self.max_shift <= 0 or self.max_area_change <= 0:
            raise UserError("the fusion's max_shift and max_area_change must be positive")
        if self.motion not in MOTIONS:
            raise UserError(f"--fusion-motion must be one of {', '.join(MOTIONS)}, got {self.motion!r}")

    @property
    def region(self) -> Region | None:
        """The region followed (network-input pixels): the last frame's, nearest the tracked nerve."""
        return self._region

    def reset(self) -> None:
        """Forget the previous frames (the next frame starts from its own probabilities)."""
        self._fused, self._region, self._regions, self._measured, self._image = None, None, [], False, None

    def apply(self, prob: np.ndarray, image: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """The map to cut the mask from (float32 ``[h, w]``) and whether it was fused (rule 1). ``image``: the
        frame as the network saw it (same size as ``prob``), whose content gives the motion."""
        import cv2

        p = _as_map(prob)
        img = None if image is None else _as_map(image)
        img = img if img is not None and img.shape == p.shape else None
        region = self._follow(p)
        prev, fused = self._fused, False
        out = p
        if self._measured and prev is not None and prev.shape == p.shape and region is not None \
                and self._region is not None:
            limit = self.max_shift * min(p.shape)
            moved_by = (region.x - self._region.x, region.y - self._region.y)
            change = abs(region.area - self._region.area) / self._region.area
            if math.hypot(*moved_by) <= limit and change <= self.max_area_change:
                matrix = _translation(*moved_by)  # without an image, or where its content matches nowhere
                if self._image is not None and img is not None:
                    centre = (self._region.x, self._region.y)
                    motion = image_motion(self._image, img, centre, limit)
                    if motion is not None:
                        matrix = _translation(*motion)
                        if self.motion != "shift":
                            affine = image_affine(self._image, img, centre, limit, shift=motion)
                            if affine is not None:
                                matrix = _area_kept(affine, centre) if self.motion == "shape" else affine
                moved = cv2.warpAffine(prev, matrix, (p.shape[1], p.shape[0]), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
                out = cv2.addWeighted(p, self.weight, moved, 1.0 - self.weight, 0.0)
                fused = True
        self._fused, self._region, self._measured, self._image = out, region, False, img
        self.counts["fused" if fused else "own"] += 1
        return out, fused

    def observe(self, measured: bool, centre: tuple[float, float] | None = None) -> None:
        """Whether the frame just applied was measured (rule 1: only then is the next one fused) and, when it
        was, where the tracker put the nerve (network-input pixels): the region followed is then the nerve's."""
        self._measured = bool(measured)
        if measured and centre is not None and self._regions:
            self._region = _nearest(self._regions, centre)

    def _follow(self, p: np.ndarray) -> Region | None:
        """The region of ``p >= threshold`` nearest the previous one (the largest on a first frame)."""
        import cv2
        import numpy as np

        binary = (p >= np.float32(self.threshold)).view(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        regions = []
        for contour in contours:  # the outline's moments (Green's theorem): a few points, not every pixel
            m = cv2.moments(contour)
            if m["m00"] >= _MIN_REGION_PX:
                regions.append(Region(m["m10"] / m["m00"], m["m01"] / m["m00"], float(m["m00"])))
        self._regions = regions
        if not regions:
            return None
        if self._region is None:
            return max(regions, key=lambda r: (r.area, -r.y, -r.x))
        return _nearest(regions, (self._region.x, self._region.y))

    def describe(self) -> dict[str, Any]:
        """Settings and how many frames were fused (for the summary)."""
        return {"weight": self.weight, "motion": self.motion, "max_shift": self.max_shift,
                "max_area_change": self.max_area_change, "frames": dict(self.counts)}


def _as_map(a: Any) -> np.ndarray:
    """float32 ``[h, w]`` from ``[h, w]`` or ``[1, ..., h, w]``."""
    import numpy as np

    m = np.asarray(a, dtype=np.float32)
    return m.reshape(m.shape[-2:]) if m.ndim > 2 else m


def _nearest(regions: list[Region], point: tuple[float, float]) -> Region:
    """The region whose centroid is nearest ``point``; of equally near ones, the larger."""
    x, y = point
    return min(regions, key=lambda r: (math.hypot(r.x - x, r.y - y), -r.area))


def image_motion(prev: np.ndarray, cur: np.ndarray, centre: tuple[float, float],
                 search: float) -> tuple[float, float] | None:
    """How far the content around ``centre`` moved from ``prev`` to ``cur`` (px, same-size float images):
    a patch of :data:`MOTION_PATCH` of the image's width about ``centre`` in ``prev``, smoothed over the
    speckle, found in ``cur`` within ``search`` px by normalised cross-correlation, to a sub-pixel by a
    parabola through the peak. None when the patch does not fit, shows no structure, or matches nowhere
    (correlation below :data:`MIN_MATCH`)."""
    import cv2
    import numpy as np

    h, w = cur.shape
    half_x, half_y = _patch_half(MOTION_PATCH, w)
    cx, cy = round(centre[0]), round(centre[1])
    x0, x1 = max(0, cx - half_x), min(w, cx + half_x)
    y0, y1 = max(0, cy - half_y), min(h, cy + half_y)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    reach = max(1, math.ceil(search))
    sx0, sx1 = max(0, x0 - reach), min(w, x1 + reach)
    sy0, sy1 = max(0, y0 - reach), min(h, y1 + reach)
    sigma = MOTION_SMOOTH * w
    template = cv2.GaussianBlur(np.ascontiguousarray(prev[y0:y1, x0:x1]), (0, 0), sigma)
    area = cv2.GaussianBlur(np.ascontiguousarray(cur[sy0:sy1, sx0:sx1]), (0, 0), sigma)
    if float(template.std()) < 1e-6 or float(area.std()) < 1e-6:
        return None
    score = cv2.matchTemplate(area, template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (px, py) = cv2.minMaxLoc(score)
    if not math.isfinite(best) or best < MIN_MATCH:
        return None

    def vertex(a: float, b: float, c: float) -> float:  # the parabola's peak, in (-0.5, 0.5) of the middle
        curve = a - 2.0 * b + c
        return 0.0 if curve >= 0 else float(np.clip(0.5 * (a - c) / curve, -0.5, 0.5))

    fx = vertex(score[py, px - 1], score[py, px], score[py, px + 1]) if 0 < px < score.shape[1] - 1 else 0.0
    fy = vertex(score[py - 1, px], score[py, px], score[py + 1, px]) if 0 < py < score.shape[0] - 1 else 0.0
    return float(sx0 + px + fx - x0), float(sy0 + py + fy - y0)


def _patch_half(share: float, width: int) -> tuple[int, int]:
    """Half the width and height (px) of a 4:3 patch ``share`` of the map's ``width`` wide (8 px at least)."""
    half_x = max(8, round(share * width / 2))
    return half_x, max(8, round(half_x * 0.75))


def _translation(dx: float, dy: float) -> np.ndarray:
    import numpy as np

    return np.float32([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def _area_kept(matrix: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """``matrix`` with its linear part divided by the square root of its determinant (areas kept), the point
    ``centre`` still sent where ``matrix`` sends it."""
    import numpy as np

    lin = matrix[:, :2].astype(np.float64)
    lin = lin / math.sqrt(abs(float(np.linalg.det(lin))))
    c = np.array(centre, np.float64)
    offset = matrix[:, :2].astype(np.float64) @ c + matrix[:, 2].astype(np.float64) - lin @ c
    return np.hstack([lin, offset[:, None]]).astype(np.float32)


def image_affine(prev: np.ndarray, cur: np.ndarray, centre: tuple[float, float],
                 search: float, shift: tuple[float, float] | None = None) -> np.ndarray | None:
    """The affine motion (2x3, ``prev`` pixels -> ``cur`` pixels) of the content around ``centre``: where
    :func:`image_motion` finds the content again (its translation also sizes the margin searched), a patch of
    :data:`AFFINE_PATCH` of the width about ``centre``, smoothed as there, matched by enhanced-correlation
    maximisation (``cv2.findTransformECC``, six parameters, from the identity). A compressed nerve's
    surroundings squeeze, widen and tilt with it, which a translation cannot say. None where
    :func:`image_motion` finds nothing, the match does not converge, its correlation is under
    :data:`MIN_MATCH`, or its linear part is further than :data:`AFFINE_MAX_CHANGE` from the identity. ``shift``:
    :func:`image_motion`'s answer where the caller has it already."""
    import cv2
    import numpy as np

    shift = shift if shift is not None else image_motion(prev, cur, centre, search)
    if shift is None:
        return None
    h, w = cur.shape
    half_x, half_y = _patch_half(AFFINE_PATCH, w)
    pad = math.ceil(math.hypot(*shift)) + 12  # room for the content to move into
    cx, cy = round(centre[0]), round(centre[1])
    x0, x1 = max(0, cx - half_x - pad), min(w, cx + half_x + pad)
    y0, y1 = max(0, cy - half_y - pad), min(h, cy + half_y + pad)
    sigma = MOTION_SMOOTH * w
    template = cv2.GaussianBlur(np.ascontiguousarray(prev[y0:y1, x0:x1]), (0, 0), sigma)
    area = cv2.GaussianBlur(np.ascontiguousarray(cur[y0:y1, x0:x1]), (0, 0), sigma)
    inside = np.zeros(template.shape, np.uint8)  # the patch itself, where the template is compared
    inside[max(0, cy - half_y) - y0:min(h, cy + half_y) - y0, max(0, cx - half_x) - x0:min(w, cx + half_x) - x0] = 1
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-4)
    try:
        rho, warp = cv2.findTransformECC(template, area, warp, cv2.MOTION_AFFINE, criteria, inside, 1)
    except cv2.error:  # no convergence, or a degenerate patch
        return None
    lin = warp[:, :2].astype(np.float64)
    if not (math.isfinite(rho) and rho >= MIN_MATCH and np.isfinite(warp).all()
            and float(np.abs(lin - np.eye(2)).max()) <= AFFINE_MAX_CHANGE):
        return None
    origin = np.array([x0, y0], np.float64)  # the crop's pixels -> the frame's
    offset = warp[:, 2].astype(np.float64) + origin - lin @ origin
    return np.hstack([lin, offset[:, None]]).astype(np.float32)


def make_fusion(weight: float, threshold: float = 0.5, motion: str = DEFAULT_MOTION) -> TemporalFusion | None:
    """The fusion for ``--fusion W`` (``W = 1``: None, every frame on its own) and ``--fusion-motion``."""
    fusion = TemporalFusion(weight=float(weight), threshold=threshold, motion=motion)
    return None if fusion.weight == 1.0 else fusion


def fusion_weight(text: str) -> float:
    """``--fusion W`` (argparse type): the current frame's weight, in (0, 1]."""
    import argparse

    try:
        weight = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected the current frame's weight, a number in (0, 1], got {text!r}") \
            from None
    if not (0.0 < weight <= 1.0):
        raise argparse.ArgumentTypeError(f"{text}: the current frame's weight must be in (0, 1] (1 turns fusion off)")
    return weight
