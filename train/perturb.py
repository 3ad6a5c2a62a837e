"""How a real scanner changes the picture: acquisition perturbations of an image and its mask.

One small function per change a different machine, probe setting or video path brings, each a
deterministic function of a *level* (and, for noise, a generator), so the same code serves two
purposes:

- the robustness report (``benchmarks/robustness.py``) applies each perturbation at fixed levels
  (:data:`REPORT_LEVELS`) to native validation images and measures how accuracy moves;
- the training augmentation ``mn-train --augment acquisition`` (:class:`train.augment.AcquisitionAugment`)
  draws random levels of the same functions.

Images are float32 ``[H, W]`` in the 8-bit range ``[0, 255]`` (a native grey frame as float, or a
preprocessed frame mapped there); masks are float32 ``[H, W]`` in ``[0, 1]`` (soft edges allowed).
Geometric perturbations move both; intensity perturbations touch the image only. Outside the
field of view the picture is black (0), as outside an ultrasound sector.

Perturbations and their level:

=========== ===================================================================================
``zoom``     content scaled by the level about the middle of the top edge (the transducer face),
             frame size kept (a different depth / pixel size: 0.8 = the nerve 20 % smaller in
             pixels); zoom-out pads black
``aspect``   horizontal scale only (a frame grabber with a different pixel aspect)
``crop``     a border of ``level`` x the side cut away on all four sides (a smaller field of
             view; the output is smaller, as a cropped video would be)
``pad``      a black border of ``level`` x the side added on all four sides
``shift``    the content moved sideways by ``level`` x the width, black fill
``depth``    the content moved down by ``level`` x the height, black above (a standoff)
``rotate``   rotation by ``level`` degrees about the centre (probe tilt in the image plane)
``compress`` the nerve compressed (probe pressure, a moving wrist): the region around the mask's
             centroid scaled vertically by ``level`` and widened by ``level ** -0.6`` (area x
             ``level ** 0.4``), fading into no motion over a ring (:func:`compress`)
``gain``     intensities x level, clipped to 255 (overall gain)
``gamma``    ``255 (x/255)^level`` (contrast curve / dynamic range)
``tgc``      depth-dependent brightness ``exp(level (y/H - 1/2))`` (time-gain compensation)
``speckle``  multiplicative speckle ``x (1 + level N)``, N blurred with sigma 0.8 px
``blur``     Gaussian blur of sigma ``level`` pixels
``jpeg``     JPEG round trip at quality ``level``
``h264``     one H.264 intra frame at CRF ``level`` (PyAV, libx264)
=========== ===================================================================================
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from typing import Callable, Mapping

import cv2
import numpy as np

from train.errors import UserError

log = logging.getLogger(__name__)

PerturbFn = Callable[[np.ndarray, np.ndarray, float, np.random.Generator], tuple[np.ndarray, np.ndarray]]
"""``f(image, mask, level, rng) -> (image, mask)`` on float32 ``[H, W]`` arrays."""


def _planes(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.ascontiguousarray(image, dtype=np.float32)
    mask = np.ascontiguousarray(mask, dtype=np.float32)
    if image.ndim != 2 or mask.shape != image.shape:
        raise ValueError(f"perturbations take [H, W] image and mask of one size, got {image.shape} and {mask.shape}")
    return image, mask


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


def warp_box(image: np.ndarray, mask: np.ndarray, box: tuple[float, float, float, float],
             out_wh: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Show the region ``box = (x0, y0, x1, y1)`` (pixels of the input, may reach outside it) as the
    whole output frame (``out_wh``, default the input size); outside the input is black.

    One affine covers zoom (a box smaller or larger than the frame, same centre), a changed field
    of view (an off-centre box) and a changed aspect (a box of another shape).
    """
    image, mask = _planes(image, mask)
    h, w = image.shape
    ow, oh = out_wh or (w, h)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty box {box}")
    sx, sy = ow / (x1 - x0), oh / (y1 - y0)
    # pixel centres: output (u + 0.5) = sx * (x + 0.5 - x0)
    matrix = np.array([[sx, 0.0, sx * (0.5 - x0) - 0.5], [0.0, sy, sy * (0.5 - y0) - 0.5]], dtype=np.float64)
    warp = dict(dsize=(int(ow), int(oh)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return cv2.warpAffine(image, matrix, **warp), np.clip(cv2.warpAffine(mask, matrix, **warp), 0.0, 1.0)


def zoom(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Content scaled by ``level`` about the middle of the top edge (the transducer face, where a
    scanner's depth setting scales from); the frame keeps its size."""
    _check_positive("zoom", level)
    h, w = np.shape(image)
    half_w = w / (2.0 * level)
    return warp_box(image, mask, (w / 2.0 - half_w, 0.0, w / 2.0 + half_w, h / level))


def aspect(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Content scaled by ``level`` horizontally only, about the centre."""
    _check_positive("aspect", level)
    h, w = np.shape(image)
    half_w = w / (2.0 * level)
    return warp_box(image, mask, (w / 2.0 - half_w, 0.0, w / 2.0 + half_w, float(h)))


def crop(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """A border of ``level`` x each side cut away (the output is smaller)."""
    if not 0.0 <= level < 0.5:
        raise UserError(f"crop level is a fraction of the side in [0, 0.5), got {level}")
    image, mask = _planes(image, mask)
    h, w = image.shape
    dx, dy = int(round(level * w)), int(round(level * h))
    return image[dy:h - dy, dx:w - dx].copy(), mask[dy:h - dy, dx:w - dx].copy()


def pad(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """A black border of ``level`` x each side added (the output is larger)."""
    if level < 0:
        raise UserError(f"pad level must be >= 0, got {level}")
    image, mask = _planes(image, mask)
    h, w = image.shape
    dx, dy = int(round(level * w)), int(round(level * h))
    border = dict(top=dy, bottom=dy, left=dx, right=dx, borderType=cv2.BORDER_CONSTANT, value=0.0)
    return cv2.copyMakeBorder(image, **border), cv2.copyMakeBorder(mask, **border)


def shift(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Content moved sideways by ``level`` x the width (the probe placed elsewhere along the wrist, or
    the image placed elsewhere in the video frame); black fill."""
    h, w = np.shape(image)
    dx = level * w
    return warp_box(image, mask, (-dx, 0.0, w - dx, float(h)))


def depth(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Content moved down by ``level`` x the height, black above (a gel standoff, or a scanner that
    starts the image lower in its frame). Upward moves are not offered: nothing lies above the skin."""
    if level < 0:
        raise UserError(f"depth level moves the content down, a fraction of the height >= 0; got {level}")
    h, w = np.shape(image)
    dy = level * h
    return warp_box(image, mask, (0.0, -dy, float(w), h - dy))


def rotate(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Rotation by ``level`` degrees about the centre (counter-clockwise as displayed); black fill."""
    image, mask = _planes(image, mask)
    h, w = image.shape
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(level), 1.0)
    warp = dict(dsize=(w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return cv2.warpAffine(image, matrix, **warp), np.clip(cv2.warpAffine(mask, matrix, **warp), 0.0, 1.0)


COMPRESS_WIDENING = 0.6
"""``compress``: the horizontal scale is ``level ** -COMPRESS_WIDENING`` (a squeezed nerve widens, in part)."""
COMPRESS_BLEND = 0.25
"""``compress``: width of the ring over which the compression fades out, as a share of the shorter side."""


def compress(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """The nerve compressed, as under probe pressure or a moving wrist: a local deformation about the
    mask's centroid ``c``.

    Inside a disc about ``c`` that holds the whole deformed mask with a margin, the frame is exactly the
    affine image of the input under a vertical scale ``level`` and a horizontal scale ``level ** -0.6``
    about ``c`` (so the nerve flattens and its area becomes ``level ** 0.4`` of what it was). Over a ring
    of :data:`COMPRESS_BLEND` x the shorter side around that disc the displacement fades smoothly to
    none, so the rest of the frame stays where it was; above the nerve it also fades towards the top
    row, so the probe's face stays in place (as ``animate:`` clips do). Image and mask go through the
    same mapping (bilinear, border replicated). An empty mask, or ``level`` 1, leaves both as they are.
    """
    _check_positive("compress", level)
    image, mask = _planes(image, mask)
    ys, xs = np.nonzero(mask > 0.5)
    if level == 1.0 or len(xs) == 0:
        return image.copy(), mask.copy()
    h, w = image.shape
    cx, cy = float(xs.mean()), float(ys.mean())
    sx, sy = level ** -COMPRESS_WIDENING, level
    reach = float(np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2).max()) + 1.0
    inner = reach * max(sx, sy, 1.0) + 0.02 * max(h, w) + 2.0
    blend = COMPRESS_BLEND * min(h, w)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32) - cx, np.arange(h, dtype=np.float32) - cy)
    t = np.clip((np.hypot(gx, gy) - inner) / blend, 0.0, 1.0)
    weight = 1.0 - t * t * (3.0 - 2.0 * t)  # 1 in the disc, smoothstep to 0 across the ring
    top = cy + (float(ys.min()) - cy) * sy - 3.0  # the flattened mask's top, less a margin
    if top > 4.0:  # the probe's face (row 0) stays put: fade the displacement out above the nerve
        u = np.clip((gy + cy) / np.float32(top), 0.0, 1.0)
        weight = weight * (u * u * (3.0 - 2.0 * u))
    # backward map: an output pixel at c + d shows the input at c + d / scale (inside the disc)
    map_x = (cx + gx + weight * gx * np.float32(1.0 / sx - 1.0)).astype(np.float32)
    map_y = (cy + gy + weight * gy * np.float32(1.0 / sy - 1.0)).astype(np.float32)
    warp = dict(interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.remap(image, map_x, map_y, **warp), np.clip(cv2.remap(mask, map_x, map_y, **warp), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# intensity
# ---------------------------------------------------------------------------------------------


def gain(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Intensities times ``level``, clipped to 255 (saturation as in an 8-bit frame)."""
    _check_positive("gain", level)
    image, mask = _planes(image, mask)
    return np.clip(image * np.float32(level), 0.0, 255.0), mask


def gamma(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """``255 * (x / 255) ** level``."""
    _check_positive("gamma", level)
    image, mask = _planes(image, mask)
    x = np.clip(image, 0.0, 255.0) / np.float32(255.0)
    return (np.power(x, np.float32(level)) * np.float32(255.0)).astype(np.float32), mask


def tgc(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """Depth-dependent brightness: row ``y`` times ``exp(level * (y / H - 1/2))``, clipped to 255."""
    image, mask = _planes(image, mask)
    h = image.shape[0]
    rows = np.exp(np.float32(level) * (np.arange(h, dtype=np.float32) / max(h - 1, 1) - np.float32(0.5)))
    return np.clip(image * rows[:, None], 0.0, 255.0), mask


def speckle(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative speckle ``x * (1 + level * N)``, N standard normal blurred with sigma 0.8 px."""
    if level < 0:
        raise UserError(f"speckle level must be >= 0, got {level}")
    image, mask = _planes(image, mask)
    rng = rng if rng is not None else np.random.default_rng(0)
    noise = rng.standard_normal(image.shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=0.8, borderType=cv2.BORDER_REFLECT)
    noise /= max(float(noise.std()), 1e-6)
    return np.clip(image * (1.0 + np.float32(level) * noise), 0.0, 255.0), mask


def blur(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blur of sigma ``level`` pixels (0: unchanged)."""
    image, mask = _planes(image, mask)
    if level <= 0:
        return image.copy(), mask
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(level), borderType=cv2.BORDER_REFLECT), mask


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """JPEG encode and decode at quality ``level`` (1-100)."""
    if not 1 <= level <= 100:
        raise UserError(f"jpeg level is a quality in [1, 100], got {level}")
    image, mask = _planes(image, mask)
    ok, data = cv2.imencode(".jpg", _to_uint8(image), [cv2.IMWRITE_JPEG_QUALITY, int(round(level))])
    if not ok:  # pragma: no cover - OpenCV always has a JPEG encoder
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).astype(np.float32), mask


def h264(image: np.ndarray, mask: np.ndarray, level: float, rng: np.random.Generator | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """One H.264 intra frame at constant rate factor ``level`` (0-51; 23 is libx264's default).

    Needs PyAV (``av``); odd sides are padded by one black pixel for the 4:2:0 encoder and cut
    off again.
    """
    if not 0 <= level <= 51:
        raise UserError(f"h264 level is a CRF in [0, 51], got {level}")
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise UserError("the h264 perturbation needs PyAV: pip install av") from None
    image, mask = _planes(image, mask)
    h, w = image.shape
    grey = _to_uint8(image)
    padded = cv2.copyMakeBorder(grey, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=0)
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = padded.shape[1], padded.shape[0]
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 24)
    codec.options = {"crf": str(int(round(level))), "preset": "veryfast", "tune": "zerolatency"}
    frame = av.VideoFrame.from_ndarray(cv2.cvtColor(padded, cv2.COLOR_GRAY2RGB), format="rgb24")
    packets = list(codec.encode(frame)) + list(codec.encode(None))
    decoder = av.CodecContext.create("h264", "r")
    decoded = []
    for packet in packets:
        decoded.extend(decoder.decode(packet))
    decoded.extend(decoder.decode(None))
    if not decoded:  # pragma: no cover - libx264 always yields the frame at flush
        raise RuntimeError("the H.264 round trip returned no frame")
    out = decoded[0].to_ndarray(format="gray")[:h, :w]
    return out.astype(np.float32), mask


def remove_nerve(image: np.ndarray, mask: np.ndarray, margin: int | None = None) -> np.ndarray | None:
    """``image`` with the nerve (``mask > 0.5`` dilated by ``margin`` px, default 2 % of the width)
    replaced by the tissue beside it, or None when neither side has room.

    The fill is the same region shifted sideways by 1.2x its width (to the side with room), blended
    in with a feathered edge: a frame of the same anatomy without a median nerve, for negatives in
    training (``mn-train --nerve-removed``) and in the presence report (``mn-presence``). Works on
    any float or integer image; returns the input's dtype.
    """
    image = np.asarray(image)
    h, w = image.shape[:2]
    margin = int(margin if margin is not None else max(2, round(0.02 * w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    region = cv2.dilate((np.asarray(mask) > 0.5).astype(np.uint8), kernel)
    xs = np.nonzero(region.any(axis=0))[0]
    if len(xs) == 0:
        return None
    width = int(xs.max() - xs.min() + 1)
    for offset in (int(1.2 * width), -int(1.2 * width)):
        if xs.min() + offset >= 0 and xs.max() + offset < w:
            break
    else:
        return None
    donor = np.roll(image.astype(np.float32), -offset, axis=1)  # donor[y, x] = image[y, x + offset]
    alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigmaX=max(margin / 2.0, 0.5))
    alpha = np.maximum(alpha, region.astype(np.float32) * 0.999)
    out = image.astype(np.float32) * (1 - alpha) + donor * alpha
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
    return out.astype(image.dtype)


def _check_positive(name: str, level: float) -> None:
    if not (math.isfinite(level) and level > 0):
        raise UserError(f"{name} level must be a positive number, got {level}")


PERTURBATIONS: Mapping[str, PerturbFn] = {
    "zoom": zoom, "aspect": aspect, "crop": crop, "pad": pad, "shift": shift, "depth": depth, "rotate": rotate,
    "gain": gain, "gamma": gamma, "tgc": tgc, "speckle": speckle, "blur": blur, "jpeg": jpeg, "h264": h264,
    "compress": compress,
}
"""Every perturbation by name (the robustness report's rows)."""

REPORT_LEVELS: Mapping[str, tuple[float, ...]] = {
    "zoom": (0.8, 0.9, 1.1, 1.2),
    "aspect": (0.85, 1.15),
    "crop": (0.04, 0.08),
    "pad": (0.05, 0.1),
    "shift": (-0.1, 0.1),
    "depth": (0.05, 0.1),
    "rotate": (-10.0, -5.0, 5.0, 10.0),
    "gain": (0.6, 1.5),
    "gamma": (0.7, 1.4),
    "tgc": (-1.0, 1.0),
    "speckle": (0.15, 0.3),
    "blur": (1.0, 2.0),
    "jpeg": (40.0, 15.0),
    "h264": (28.0, 36.0),
    "compress": (0.85, 0.75),
}
"""The levels the robustness report uses by default: what a different scanner or video path plausibly
brings (zoom / pixel size +-20 %, a field of view 4-8 % smaller or 5-10 % larger, aspect +-15 %,
rotation up to 10 degrees, gain x0.6-1.5, ...) and the nerve compressed by 15 and 25 % (the
animated clips' ``animate:`` compression reaches 25 %)."""

IDENTITY_LEVELS: Mapping[str, float] = {
    "zoom": 1.0, "aspect": 1.0, "crop": 0.0, "pad": 0.0, "shift": 0.0, "depth": 0.0, "rotate": 0.0, "gain": 1.0,
    "gamma": 1.0, "tgc": 0.0, "speckle": 0.0, "blur": 0.0, "compress": 1.0,
}
"""Levels that leave the image as it is (the codecs have none)."""


def perturb(name: str, image: np.ndarray, mask: np.ndarray, level: float,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply perturbation ``name`` at ``level``.

    Raises:
        UserError: an unknown name (the message lists the known ones) or a level out of range.
    """
    try:
        fn = PERTURBATIONS[name]
    except KeyError:
        raise UserError(f"unknown perturbation {name!r}; choose from: {', '.join(PERTURBATIONS)}") from None
    return fn(image, mask, float(level), rng if rng is not None else np.random.default_rng(0))


def parse_levels(specs: list[str] | None) -> dict[str, tuple[float, ...]]:
    """``["zoom=0.8,1.2", "jpeg"]`` -> ``{"zoom": (0.8, 1.2), "jpeg": REPORT_LEVELS["jpeg"]}``; ``None`` -> all."""
    if not specs:
        return dict(REPORT_LEVELS)
    out: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip()
        if name not in PERTURBATIONS:
            raise UserError(f"unknown perturbation {name!r}; choose from: {', '.join(PERTURBATIONS)}")
        if not values:
            out[name] = tuple(REPORT_LEVELS[name])
            continue
        try:
            out[name] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise UserError(f"levels of {name} must be numbers separated by commas, got {values!r}") from None
    return out
