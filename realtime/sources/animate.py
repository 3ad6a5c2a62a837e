"""An annotated still turned into a sequence with known truth (``animate:IMAGE[:MASK]``).

Each frame is the still moved by a smooth rigid motion (sinusoidal translation of a few px and
rotation of a few degrees) combined with an anisotropic compression about the nerve (the mask's
centroid): the vertical axis shrinks down to :data:`MIN_VERTICAL_SCALE` and the horizontal one
widens to compensate in part (``sx = sy ** -0.6``, so the area drops by about 11 % at peak).

The compression is local. Around the nerve (a disc that holds the whole mask with a margin) the
frame is exactly the affine image of the still under :meth:`AnimateSource.transform`; from there
it blends smoothly, over :data:`BLEND_PX` pixels, into the rigid motion alone, which moves the rest
of the frame. (A global affine squeeze about a nerve 100 px below the probe would pull the
probe's bright surface line 25 px down and smear replicated border rows over the top and bottom
of the frame.) Above the nerve the blend also fades towards the top row, so the probe's surface
stays in place. Image and mask go through the same mapping: ``cv2.warpAffine`` for the rigid part,
``cv2.remap`` near the nerve, bilinear for the image, bilinear then a 50 % threshold for the mask,
border replicate; so the truth mask is exactly the affine image of the annotated one. Then fresh
speckle-like multiplicative noise (correlated Rayleigh) is applied to the image. The image keeps
its format (BGR, grey, 8- or 16-bit).

Without an explicit MASK the mask is looked up in the dataset layout, ``../Masks/<stem>.*`` next to
``.../Images/<stem>.png``; if there is none, ``Frame.truth`` is ``None``. Deterministic: frame ``i``
depends only on ``(seed, i)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.sources.common import GeneratedSource, SourceOptions, register_source
from train.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_FPS = 24.0
DEFAULT_FRAMES = 144
"""Length when not live and no ``frames`` is given: one compression cycle at 24 fps."""
MIN_VERTICAL_SCALE = 0.75
COMPRESSION_PERIOD_S = 6.0
"""One compression cycle (released, compressed, released), in seconds; ``compression_period_s`` changes it.
``glide_scale`` multiplies the glide's amplitude (3-6 px across, 2-4 px in depth by default); ``border_crop``
cuts that many pixels from every edge of each frame and its truth (a narrower field of view than the still's, as
another scanner or depth setting shows the same anatomy; 0 by default)."""
WIDENING_EXPONENT = 0.6
"""``sx = sy ** -WIDENING_EXPONENT``: the horizontal widening that partly compensates the squeeze."""
BLEND_PX = 110.0
"""Width of the ring over which the local compression fades into the rigid motion."""
NOISE_STRENGTH = 0.3
"""Multiplicative noise: ``image * (1 + NOISE_STRENGTH * (n - 1))`` with ``n`` Rayleigh, mean 1."""
_IMAGE_EXTS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
_NOISE_BANK = 4
_NOISE_PAD = 32


def find_mask(image_path: Path) -> Path | None:
    """The mask of a dataset image: ``<root>/Masks/<stem>.*`` for ``<root>/Images/<stem>.ext``."""
    folder = image_path.resolve().parent.parent / "Masks"
    if not folder.is_dir():
        return None
    for cand in sorted(folder.glob(f"{image_path.stem}.*")):
        if cand.suffix.lower() in _IMAGE_EXTS:
            return cand
    return None


@dataclass(frozen=True)
class AnimateParams:
    """The motion at one frame: translation (px), rotation (degrees, OpenCV's sense), the vertical
    and horizontal compression scales about ``center``, and the resulting 2x3 matrix."""

    tx: float
    ty: float
    angle: float
    sx: float
    sy: float
    center: tuple[float, float]
    matrix: np.ndarray

    @property
    def area_factor(self) -> float:
        """How much any area (the nerve's included) is scaled: ``|det|`` of the linear part."""
        return float(abs(np.linalg.det(self.matrix[:, :2])))


@register_source("animate")
class AnimateSource(GeneratedSource):
    """An annotated still animated with rigid motion, compression and fresh speckle.

    ``live`` paces frames at ``fps`` with live semantics (newest due frame, skips counted); else
    frames come as fast as rendered. Length: ``frames``, else endless when live, else
    :data:`DEFAULT_FRAMES`.
    """

    claim_order = 30

    @classmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kind_options: Any) -> "AnimateSource":
        if not arg.strip():
            raise UserError("animate: needs an image, as animate:IMAGE[:MASK]")
        image, mask = arg, None
        if not Path(arg).exists() and ":" in arg:
            image, mask = arg.rsplit(":", 1)
        return cls(image, mask or None, seed=options.seed or 0, fps=options.fps or DEFAULT_FPS,
                   live=options.realtime, frames=options.frames, spec=spec, options=options, **kind_options)

    def __init__(self, image: str | Path, mask: str | Path | None = None, *, seed: int = 0,
                 fps: float = DEFAULT_FPS, live: bool = False, frames: int | None = None,
                 spec: str | None = None, options: SourceOptions | None = None,
                 compression_period_s: float = COMPRESSION_PERIOD_S, glide_scale: float = 1.0,
                 border_crop: int = 0) -> None:
        import cv2

        options = options or SourceOptions(realtime=live, fps=fps, seed=seed, frames=frames)
        self.image_path = Path(image).expanduser()
        super().__init__(spec or f"animate:{image}" + (f":{mask}" if mask else ""), options,
                         name=f"animated {self.image_path.name}")
        if fps <= 0:
            raise UserError(f"fps must be positive, got {fps}")
        if not (math.isfinite(compression_period_s) and compression_period_s > 0):
            raise UserError(f"the compression period must be a positive number of seconds, got {compression_period_s}")
        self.compression_period_s = float(compression_period_s)
        if not (math.isfinite(glide_scale) and glide_scale >= 0):
            raise UserError(f"the glide scale must be a number >= 0 (1: the default glide, 0: none), got {glide_scale}")
        self.glide_scale = float(glide_scale)
        if isinstance(border_crop, bool) or not isinstance(border_crop, int) or border_crop < 0:
            raise UserError(f"the border crop is a whole number of pixels >= 0, got {border_crop!r}")
        self.border_crop = border_crop
        if options.size is not None:
            log.warning("%s: a requested size applies to devices only; the image's own size is used", self.name)
        self.seed = int(seed)
        self.fps = float(fps)
        self.realtime = bool(live)
        self.length = frames if frames is not None else (None if live else DEFAULT_FRAMES)
        self.still = _read_image(self.image_path, "image")
        h, w = self.still.shape[:2]
        if 4 * self.border_crop >= min(h, w):
            raise UserError(f"a border crop of {self.border_crop} px leaves half or less of the {w}x{h} image's side; "
                            f"crop at most {(min(h, w) - 1) // 4} px")
        if mask is not None:
            self.mask_path: Path | None = Path(mask).expanduser()
        else:
            self.mask_path = find_mask(self.image_path)
            if self.mask_path is None:
                log.info("%s: no mask given and none at ../Masks/%s.*; frames carry no truth", self.name,
                         self.image_path.stem)
        self.mask: np.ndarray | None = None
        if self.mask_path is not None:
            m = _read_image(self.mask_path, "mask")
            if m.ndim == 3:
                m = m.max(axis=2)
            if m.shape[:2] != (h, w):
                raise UserError(f"mask {self.mask_path} is {m.shape[1]}x{m.shape[0]} but image {self.image_path} "
                                f"is {w}x{h}; they must match")
            self.mask = np.where(m > 0, 255, 0).astype(np.uint8)
            if not self.mask.any():
                log.warning("%s: the mask %s is empty", self.name, self.mask_path)
        if self.mask is not None and self.mask.any():
            mom = cv2.moments(self.mask, binaryImage=True)
            self.center = (mom["m10"] / mom["m00"], mom["m01"] / mom["m00"])
            ys, xs = np.nonzero(self.mask)
            reach = float(np.sqrt((xs - self.center[0]) ** 2 + (ys - self.center[1]) ** 2).max()) + 1.0
        else:
            self.center = ((w - 1) / 2.0, (h - 1) / 2.0)
            reach = min(w, h) / 6.0
        # inside this radius (about the moved centroid) the frame is exactly affine: it holds the
        # whole compressed mask (the largest scale is sx <= MIN_VERTICAL_SCALE ** -WIDENING_EXPONENT)
        # the mask's convex hull, to find the top of the moved mask in each frame
        self._hull = (cv2.convexHull(cv2.findNonZero(self.mask)).reshape(-1, 2).astype(np.float64)
                      if self.mask is not None and self.mask.any() else None)
        self.inner_radius = reach * MIN_VERTICAL_SCALE ** -WIDENING_EXPONENT + 8.0
        self.outer_radius = self.inner_radius + BLEND_PX
        rng = np.random.default_rng(self.seed)
        self._motion = {
            "ax": rng.uniform(3, 6) * self.glide_scale, "ay": rng.uniform(2, 4) * self.glide_scale,
            "rot": rng.uniform(2, 4),
            "tx_period": rng.uniform(4.5, 6.0), "ty_period": rng.uniform(3.2, 4.4), "rot_period": rng.uniform(6, 8),
            "phases": rng.uniform(0, 2 * np.pi, 3),
        }
        self._noise = self._build_noise(rng, w, h)

    @staticmethod
    def _build_noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
        """Correlated Rayleigh fields, mean 1, on a padded canvas cropped at a random offset per frame."""
        import cv2

        hp, wp = h + _NOISE_PAD, w + _NOISE_PAD
        bank = np.empty((_NOISE_BANK, hp, wp), np.float32)
        for k in range(_NOISE_BANK):
            re_ = cv2.GaussianBlur(rng.standard_normal((hp, wp)).astype(np.float32), (0, 0), 1.4, sigmaY=0.7)
            im_ = cv2.GaussianBlur(rng.standard_normal((hp, wp)).astype(np.float32), (0, 0), 1.4, sigmaY=0.7)
            env = np.sqrt(re_ * re_ + im_ * im_)
            env /= env.mean()
            bank[k] = 1.0 + NOISE_STRENGTH * (env - 1.0)
        return bank

    # ------------------------------------------------------------------ the script

    def compression(self, index: int) -> float:
        """0 (released) .. 1 (fully compressed) at frame ``index``."""
        return 0.5 - 0.5 * math.cos(2 * math.pi * (index / self.fps) / self.compression_period_s)

    def truth_params(self, index: int) -> AnimateParams:
        """The motion at frame ``index`` and its affine matrix (source pixel -> frame pixel)."""
        m = self._motion
        t = index / self.fps
        ph = m["phases"]
        tx = m["ax"] * math.sin(2 * math.pi * t / m["tx_period"] + ph[0])
        ty = m["ay"] * math.sin(2 * math.pi * t / m["ty_period"] + ph[1])
        angle = m["rot"] * math.sin(2 * math.pi * t / m["rot_period"] + ph[2])
        sy = 1.0 - (1.0 - MIN_VERTICAL_SCALE) * self.compression(index)
        sx = sy ** -WIDENING_EXPONENT
        cx, cy = self.center
        th = math.radians(angle)
        rot = np.array([[math.cos(th), math.sin(th)], [-math.sin(th), math.cos(th)]])  # cv2's sense
        lin = rot @ np.diag([sx, sy])
        off = np.array([cx + tx, cy + ty]) - lin @ np.array([cx, cy])
        matrix = np.hstack([lin, off[:, None]]).astype(np.float64)
        return AnimateParams(tx, ty, angle, sx, sy, (cx, cy), matrix)

    def transform(self, index: int) -> np.ndarray:
        """The 2x3 affine matrix of frame ``index`` (exact around the nerve, see the module doc)."""
        return self.truth_params(index).matrix

    def rigid_transform(self, index: int) -> np.ndarray:
        """The rigid part of frame ``index``'s motion (no compression): how the far field moves."""
        p = self.truth_params(index)
        cx, cy = p.center
        th = math.radians(p.angle)
        lin = np.array([[math.cos(th), math.sin(th)], [-math.sin(th), math.cos(th)]])
        off = np.array([cx + p.tx, cy + p.ty]) - lin @ np.array([cx, cy])
        return np.hstack([lin, off[:, None]])

    def _warp(self, image: np.ndarray, affine: np.ndarray, rigid: np.ndarray) -> np.ndarray:
        """Rigid motion everywhere, the full affine near the nerve, a smooth blend in between."""
        import cv2

        h, w = image.shape[:2]
        out = cv2.warpAffine(image, rigid, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cx, cy = affine @ np.array([self.center[0], self.center[1], 1.0])
        ro = self.outer_radius
        x0, x1 = max(int(cx - ro), 0), min(int(math.ceil(cx + ro)) + 1, w)
        y0, y1 = max(int(cy - ro), 0), min(int(math.ceil(cy + ro)) + 1, h)
        if x1 <= x0 or y1 <= y0:
            return out
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        ai = cv2.invertAffineTransform(affine).astype(np.float32)
        ri = cv2.invertAffineTransform(rigid).astype(np.float32)
        d = np.sqrt((xs - np.float32(cx)) ** 2 + (ys - np.float32(cy)) ** 2)
        t = np.clip((ro - d) / (ro - self.inner_radius), 0.0, 1.0)
        wgt = t * t * (3.0 - 2.0 * t)  # 1 inside the inner radius, 0 beyond the outer one
        # the probe's surface (row 0) does not move with the compression: fade it out above the
        # nerve, without reaching into the disc that holds the moved mask
        if self._hull is not None:
            top_in = float((affine[1, :2] @ self._hull.T).min() + affine[1, 2]) - 3.0  # the moved mask's top
        else:
            top_in = cy - self.inner_radius
        if top_in > 4.0:
            u = np.clip(ys / np.float32(top_in), 0.0, 1.0)
            wgt = wgt * (u * u * (3.0 - 2.0 * u))
        diff = ai - ri
        map_x = ri[0, 0] * xs + ri[0, 1] * ys + ri[0, 2] + wgt * (diff[0, 0] * xs + diff[0, 1] * ys + diff[0, 2])
        map_y = ri[1, 0] * xs + ri[1, 1] * ys + ri[1, 2] + wgt * (diff[1, 0] * xs + diff[1, 1] * ys + diff[1, 2])
        out[y0:y1, x0:x1] = cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
        return out

    # ------------------------------------------------------------------ rendering

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame ``index`` as ``(image, truth)``; the image keeps the still's format."""

        h, w = self.still.shape[:2]
        mat = self.transform(index)
        rigid = self.rigid_transform(index)
        warped = self._warp(self.still, mat, rigid)
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.integers(_NOISE_BANK))
        oy, ox = (int(v) for v in rng.integers(0, _NOISE_PAD, 2))
        noise = self._noise[k, oy:oy + h, ox:ox + w]
        if warped.ndim == 3:
            noise = noise[:, :, None]
        info = np.iinfo(warped.dtype) if warped.dtype.kind in "ui" else None
        out = warped.astype(np.float32) * noise
        if info is not None:
            np.clip(out, info.min, info.max, out=out)
        image = out.astype(warped.dtype)
        truth = None
        if self.mask is not None:
            m = self._warp(self.mask, mat, rigid)
            truth = np.where(m >= 128, 255, 0).astype(np.uint8)
        if self.border_crop:  # a narrower field of view: the same anatomy, the frame's edges cut away
            b = self.border_crop
            image = np.ascontiguousarray(image[b:h - b, b:w - b])
            truth = None if truth is None else np.ascontiguousarray(truth[b:h - b, b:w - b])
        return image, truth

    # ------------------------------------------------------------------ Source

    def _describe_extra(self) -> dict[str, Any]:
        return {
            "image": str(self.image_path),
            "mask": None if self.mask_path is None else str(self.mask_path),
            "seed": self.seed,
            "frames": self.length,
            "has_truth": self.mask is not None,
            "min_vertical_scale": MIN_VERTICAL_SCALE,
            "compression_period_s": self.compression_period_s,
            "glide_scale": self.glide_scale,
            "border_crop_px": self.border_crop,
        }


def _read_image(path: Path, what: str) -> np.ndarray:
    import cv2

    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory; give an image file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"cannot read {what} {path} (not an image OpenCV can decode)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image
