"""On-the-fly joint augmentation of image and mask, as the authors' Keras ImageDataGenerator.

The paper trained with ``rotation_range=20``, ``width_shift_range=0.1``,
``shear_range=0.1`` (Keras reads shear in degrees, so +-0.1 deg), ``horizontal_flip``,
``fill_mode='nearest'`` and bilinear resampling, with the same random transform
for the image and its mask (paper-code-spec.md section 3.3). Here one affine matrix
per sample is built about the image centre and applied to both arrays with
``cv2.warpAffine`` (``INTER_LINEAR``, ``BORDER_REPLICATE`` = Keras' 'nearest' fill);
the flip is folded into the same matrix, applied after the rest as Keras does. Masks
stay soft (bilinear, no re-binarisation).

Differences from Keras that do not matter statistically: Keras rotates about
``(n/2 + 0.5)`` in index coordinates, one pixel off the true centre ``(n-1)/2`` used
here; and Keras' random stream cannot be reproduced anyway.

Beyond the paper, :class:`StrongAugment` (``mn-train --augment strong``) adds a joint elastic
deformation and image-only intensity transforms (gamma, contrast, speckle, blur), then
re-z-scores the image; :class:`AcquisitionAugment` (``acquisition``) adds what another scanner brings,
:class:`CompressAugment` (``compress``) the nerve flattened as in a dynamic scan. :func:`make_augment`
builds each by name (:data:`AUGMENT_NAMES`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import cv2
import numpy as np

from train.errors import UserError

if TYPE_CHECKING:  # train.data imports torch; keep this module light for the CLI's --help
    from train.data import AugmentFn

log = logging.getLogger(__name__)


@dataclass
class AugmentConfig:
    """Ranges of the random transform (the paper's values by default).

    Attributes:
        rotation_deg: angle drawn uniformly in [-rotation_deg, rotation_deg] degrees.
        width_shift: horizontal shift drawn in [-width_shift, width_shift] x width.
        shear_deg: shear angle drawn in [-shear_deg, shear_deg] degrees.
        hflip: mirror left-right with probability 0.5.
    """

    rotation_deg: float = 20.0
    width_shift: float = 0.1
    shear_deg: float = 0.1
    hflip: bool = True

    def __post_init__(self) -> None:
        for name in ("rotation_deg", "width_shift", "shear_deg"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise UserError(f"augmentation {name} must be a non-negative number, got {value}")
            setattr(self, name, value)
        if not 0.0 <= self.width_shift < 1.0:
            raise UserError(f"augmentation width_shift is a fraction of the width (< 1), got {self.width_shift}")
        self.hflip = bool(self.hflip)

    def to_config(self) -> dict[str, Any]:
        """JSON-able record of the ranges."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AugmentConfig:
        """Rebuild from :meth:`to_config` output."""
        try:
            return cls(**dict(config))
        except TypeError as exc:
            raise UserError(f"malformed augmentation record: {exc}") from None


@dataclass(frozen=True)
class AugmentParams:
    """One drawn transform.

    Attributes:
        angle_deg: rotation, counter-clockwise as displayed (OpenCV's convention).
        shift: horizontal shift as a fraction of the width (positive = to the right).
        shear_deg: shear angle in degrees (Keras' shear matrix).
        flip: mirror left-right after the affine.
    """

    angle_deg: float = 0.0
    shift: float = 0.0
    shear_deg: float = 0.0
    flip: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Loggable/JSON-able form."""
        return asdict(self)

    def matrix(self, width: int, height: int) -> np.ndarray:
        """The 2x3 forward affine (source pixel -> destination pixel) for a ``width x height`` image."""
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a = math.radians(self.angle_deg)
        s = math.radians(self.shear_deg)
        rotation = np.array([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        shear = np.array([[math.cos(s), 0.0, 0.0], [-math.sin(s), 1.0, 0.0], [0.0, 0.0, 1.0]])
        to_origin = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
        back = np.array([[1.0, 0.0, cx + self.shift * width], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
        full = back @ rotation @ shear @ to_origin
        if self.flip:
            full = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ full
        return full[:2]


class JointAugment:
    """Callable ``(image, mask, rng) -> (image, mask)`` applying one random affine to both.

    Arrays are float32 ``[H, W]`` or ``[1, H, W]``; the output keeps the input's shape.
    Use :meth:`sample_params` and :meth:`apply` separately to see or fix the transform.
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config if config is not None else AugmentConfig()

    def __repr__(self) -> str:
        return f"JointAugment({self.config!r})"

    def to_config(self) -> dict[str, Any]:
        """JSON-able record for the checkpoint: ``{"name": "paper", "affine": {...}}``."""
        return {"name": "paper", "affine": self.config.to_config()}

    def sample_params(self, rng: np.random.Generator) -> AugmentParams:
        """Draw a transform. Always consumes four numbers, whatever the config."""
        cfg = self.config
        angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
        shift = rng.uniform(-cfg.width_shift, cfg.width_shift)
        shear = rng.uniform(-cfg.shear_deg, cfg.shear_deg)
        flip = bool(rng.random() < 0.5) and cfg.hflip
        return AugmentParams(float(angle), float(shift), float(shear), flip)

    @staticmethod
    def _plane(array: np.ndarray, what: str) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2:
            raise ValueError(f"{what} must be [H, W] or [1, H, W], got shape {array.shape}")
        return np.ascontiguousarray(array, dtype=np.float32)

    def apply(self, image: np.ndarray, mask: np.ndarray, params: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
        """Apply the transform ``params`` to ``image`` and ``mask`` (same shape required)."""
        image_shape, mask_shape = np.shape(image), np.shape(mask)
        image_2d, mask_2d = self._plane(image, "image"), self._plane(mask, "mask")
        if image_2d.shape != mask_2d.shape:
            raise ValueError(f"image {image_shape} and mask {mask_shape} differ in size")
        height, width = image_2d.shape
        matrix = params.matrix(width, height)
        warp = dict(dsize=(width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out_image = cv2.warpAffine(image_2d, matrix, **warp)
        out_mask = np.clip(cv2.warpAffine(mask_2d, matrix, **warp), 0.0, 1.0)
        return out_image.reshape(image_shape), out_mask.reshape(mask_shape)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        params = self.sample_params(rng)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("augment %s", params.to_dict())
        return self.apply(image, mask, params)


def _validate_ranges(config: Any, probabilities: tuple[str, ...], non_negative: tuple[str, ...],
                     pairs: tuple[str, ...]) -> None:
    """Check and normalise the fields of an augmentation config in place: probabilities in [0, 1],
    non-negative finite numbers, and ``(low, high)`` pairs with ``0 < low <= high``."""
    for name in probabilities:
        value = float(getattr(config, name))
        if not 0.0 <= value <= 1.0:
            raise UserError(f"augmentation {name} is a probability in [0, 1], got {value}")
        setattr(config, name, value)
    for name in non_negative:
        value = float(getattr(config, name))
        if not math.isfinite(value) or value < 0:
            raise UserError(f"augmentation {name} must be a non-negative number, got {value}")
        setattr(config, name, value)
    for name in pairs:
        try:
            low, high = (float(v) for v in getattr(config, name))
        except (TypeError, ValueError):
            raise UserError(f"augmentation {name} must be a (low, high) pair, got {getattr(config, name)!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise UserError(f"augmentation {name} must satisfy 0 < low <= high, got ({low}, {high})")
        setattr(config, name, (low, high))


def check_speckle_range(value: Any) -> tuple[float, float]:
    """``(low, high)`` speckle strengths with ``0 <= low <= high``, finite (``mn-train --speckle``)."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"the speckle range must be two strengths LOW HIGH, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high):
        raise UserError(f"the speckle range must satisfy 0 <= LOW <= HIGH, got ({low:g}, {high:g}); "
                        f"the fixed strength of --augment strong is {StrongAugmentConfig.speckle:g}")
    return low, high


class _RangesConfig:
    """Shared behaviour of the range configs: a JSON record and its inverse."""

    record_name = "augmentation"

    def to_config(self) -> dict[str, Any]:
        """JSON-able record of the ranges (pairs as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Any:
        """Rebuild from :meth:`to_config` output."""
        try:
            return cls(**dict(config))
        except TypeError as exc:
            raise UserError(f"malformed {cls.record_name} record: {exc}") from None


@dataclass
class StrongAugmentConfig(_RangesConfig):
    """Extra ranges of :class:`StrongAugment` (on top of the paper's affine, :class:`AugmentConfig`).

    Attributes:
        elastic_p: probability of the elastic deformation.
        elastic_alpha: largest displacement of the elastic field, as a fraction of the width.
        elastic_sigma: smoothness (Gaussian sigma) of the field, as a fraction of the width.
        gamma: range of the gamma applied to the min-max-normalised image.
        contrast: range of the contrast factor (about the image mean).
        brightness: largest brightness shift, in image standard deviations.
        speckle: strength of the multiplicative speckle ``1 + speckle * N(0, 1)``.
        speckle_sigma: Gaussian sigma (pixels) blurring the speckle noise.
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur's sigma (pixels).
        speckle_range: when given, ``(low, high)``: each image's speckle strength is drawn uniformly from it
            instead of the fixed ``speckle`` (``mn-train --speckle LO HI``: scanners differ in how grainy the
            image is, and a network that has seen one strength outlines a noisier nerve smaller).
    """

    elastic_p: float = 0.5
    elastic_alpha: float = 0.03
    elastic_sigma: float = 0.06
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.2
    speckle: float = 0.15
    speckle_sigma: float = 0.8
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.2)
    speckle_range: tuple[float, float] | None = None

    record_name = "strong augmentation"

    def __post_init__(self) -> None:
        _validate_ranges(self, ("elastic_p", "blur_p"),
                         ("elastic_alpha", "elastic_sigma", "brightness", "speckle", "speckle_sigma"),
                         ("gamma", "contrast", "blur_sigma"))
        if self.speckle_range is not None:
            self.speckle_range = check_speckle_range(self.speckle_range)


class StrongAugment:
    """Callable ``(image, mask, rng) -> (image, mask)``: the paper's affine and more.

    Steps, all drawn from ``rng`` (so deterministic for a given generator state):

    1. the paper's joint affine (:class:`JointAugment`);
    2. with probability ``elastic_p``, a joint elastic deformation: uniform noise in [-1, 1]
       blurred with a Gaussian of ``elastic_sigma * W``, scaled so that its largest displacement
       is ``elastic_alpha * W`` pixels, applied to image and mask with ``cv2.remap``
       (``INTER_LINEAR``, ``BORDER_REFLECT``);
    3. image only, on the min-max-normalised image in [0, 1]: gamma; contrast (about the mean) and
       brightness (in standard deviations), clipped to [0, 1]; multiplicative speckle
       ``x * (1 + speckle * blur(N(0, 1)))``; with probability ``blur_p`` a Gaussian blur;
    4. a per-image z-score (mean 0, population std 1), as :func:`train.preprocess.preprocess_image`
       does for every frame at inference.

    Because of step 4 a global contrast/brightness change only acts through the clip at [0, 1]
    (saturation, as in an 8-bit frame); gamma, speckle and blur change the image's shape of
    intensities. Masks stay soft in [0, 1] and are never intensity-transformed.
    """

    def __init__(self, config: StrongAugmentConfig | None = None, affine: AugmentConfig | None = None) -> None:
        self.config = config if config is not None else StrongAugmentConfig()
        self.affine = JointAugment(affine)

    def __repr__(self) -> str:
        return f"StrongAugment({self.config!r}, affine={self.affine.config!r})"

    def to_config(self) -> dict[str, Any]:
        """JSON-able record for the checkpoint: ``{"name": "strong", "affine": {...}, "strong": {...}}``."""
        return {"name": "strong", "affine": self.affine.config.to_config(), "strong": self.config.to_config()}

    def elastic(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One random smooth displacement field applied to both ``[H, W]`` float32 arrays."""
        height, width = image.shape
        sigma = max(self.config.elastic_sigma * width, 1e-3)
        alpha = self.config.elastic_alpha * width
        fields = []
        for _ in range(2):
            noise = rng.uniform(-1.0, 1.0, size=(height, width)).astype(np.float32)
            smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
            peak = float(np.abs(smooth).max())
            fields.append(smooth * np.float32(alpha / peak) if peak > 0 else smooth)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        map_x, map_y = xx + fields[0], yy + fields[1]
        warp = dict(interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out_image = cv2.remap(image, map_x, map_y, **warp)
        out_mask = np.clip(cv2.remap(mask, map_x, map_y, **warp), 0.0, 1.0)
        return out_image, out_mask

    def intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The image-only transforms of step 3 and the z-score of step 4, on an ``[H, W]`` float32 image."""
        cfg = self.config
        low, high = float(image.min()), float(image.max())
        x = (image - low) / (high - low) if high > low else np.zeros_like(image)
        x = np.power(x, np.float32(rng.uniform(*cfg.gamma)))
        scale = rng.uniform(*cfg.contrast)
        shift = rng.uniform(-cfg.brightness, cfg.brightness) * float(x.std())
        mean = float(x.mean())
        x = np.clip((x - mean) * scale + mean + shift, 0.0, 1.0)
        strength = cfg.speckle if cfg.speckle_range is None else rng.uniform(*cfg.speckle_range)
        noise = rng.standard_normal(x.shape).astype(np.float32)
        if cfg.speckle_sigma > 0:
            noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=cfg.speckle_sigma, borderType=cv2.BORDER_REFLECT)
        x = x * (1.0 + np.float32(strength) * noise)
        if rng.random() < cfg.blur_p:
            sigma = rng.uniform(*cfg.blur_sigma)
            x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
        return zscore(x)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        image_shape, mask_shape = np.shape(image), np.shape(mask)
        out_image, out_mask = self.affine(image, mask, rng)
        out_image = JointAugment._plane(out_image, "image")
        out_mask = JointAugment._plane(out_mask, "mask")
        if rng.random() < self.config.elastic_p:
            out_image, out_mask = self.elastic(out_image, out_mask, rng)
        out_image = self.intensity(out_image, rng)
        return out_image.reshape(image_shape), out_mask.astype(np.float32).reshape(mask_shape)


@dataclass
class AcquisitionAugmentConfig(_RangesConfig):
    """Ranges of :class:`AcquisitionAugment`: how another scanner, setting or video path changes a frame.

    Attributes:
        fov_p: probability of a changed field of view (zoom, aspect, off-centre window).
        zoom: range of the content's scale (log-uniform): 0.8-1.25 = pixel size +-20 %.
        aspect: range of the extra horizontal scale (log-uniform).
        offset: largest shift of the window's centre, as a fraction of the side.
        tgc_p, tgc: probability and largest level of depth-dependent brightness (:func:`train.perturb.tgc`).
        gain_p, gain: probability and range of an overall gain with saturation (:func:`train.perturb.gain`).
        codec_p, jpeg_quality: probability and quality range of a JPEG round trip (block artefacts as
            in a compressed video).
    """

    fov_p: float = 0.7
    zoom: tuple[float, float] = (0.8, 1.25)
    aspect: tuple[float, float] = (0.87, 1.15)
    offset: float = 0.08
    tgc_p: float = 0.4
    tgc: float = 1.2
    gain_p: float = 0.3
    gain: tuple[float, float] = (0.6, 1.6)
    codec_p: float = 0.3
    jpeg_quality: tuple[float, float] = (15.0, 90.0)

    record_name = "acquisition augmentation"

    def __post_init__(self) -> None:
        _validate_ranges(self, ("fov_p", "tgc_p", "gain_p", "codec_p"), ("offset", "tgc"),
                         ("zoom", "aspect", "gain", "jpeg_quality"))
        if self.jpeg_quality[1] > 100:
            raise UserError(f"augmentation jpeg_quality is at most 100, got {self.jpeg_quality}")


class AcquisitionAugment:
    """Callable ``(image, mask, rng) -> (image, mask)``: :class:`StrongAugment` plus what a different
    scanner brings (``mn-train --augment acquisition``).

    Steps, all drawn from ``rng``:

    1. the paper's joint affine;
    2. the image mapped to the 8-bit range (min-max), so that black is black; with a ``compress``
       configuration (``mn-train --augment acquisition --compress LEVEL P``), the nerve then compressed as
       :class:`CompressAugment` compresses it (:meth:`CompressAugmentConfig.draw`; the anatomy before the
       scanner's view of it);
    3. with probability ``fov_p`` a changed field of view (:func:`train.perturb.warp_box`): the
       content zoomed by a log-uniform factor in ``zoom`` about the top edge (the transducer face,
       where a depth change scales from), stretched horizontally by one in ``aspect``, the window
       moved sideways and its top up or down by up to ``offset`` of the side (a standoff, a
       cropped band of the video); what falls outside the original frame is black, as outside a
       scanner's sector;
    4. with probability ``elastic_p`` the strong elastic deformation;
    5. image only: depth-dependent brightness (``tgc``), gain with saturation (``gain``), then the
       strong intensity transforms (gamma, contrast, speckle, blur) and, with probability
       ``codec_p``, a JPEG round trip; a per-image z-score last.

    The functions are those of :mod:`train.perturb`, which the robustness report applies at fixed
    levels (``benchmarks/robustness.py``).
    """

    def __init__(self, config: AcquisitionAugmentConfig | None = None, strong: StrongAugmentConfig | None = None,
                 affine: AugmentConfig | None = None, compress: CompressAugmentConfig | None = None) -> None:
        self.config = config if config is not None else AcquisitionAugmentConfig()
        self.strong = StrongAugment(strong, affine)
        self.compress = compress

    def __repr__(self) -> str:
        extra = f", compress={self.compress!r}" if self.compress is not None else ""
        return f"{type(self).__name__}({self.config!r}, strong={self.strong!r}{extra})"

    def to_config(self) -> dict[str, Any]:
        """``{"name": "acquisition", "affine": {...}, "strong": {...}, "acquisition": {...}}``, and ``"compress":
        {...}`` when the nerve is compressed too."""
        out = {"name": "acquisition", "affine": self.strong.affine.config.to_config(),
               "strong": self.strong.config.to_config(), "acquisition": self.config.to_config()}
        if self.compress is not None:
            out["compress"] = self.compress.to_config()
        return out

    def field_of_view(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Step 3 on ``[H, W]`` arrays (image in the 8-bit range)."""
        from train.perturb import warp_box

        cfg = self.config
        h, w = image.shape
        z = math.exp(rng.uniform(math.log(cfg.zoom[0]), math.log(cfg.zoom[1])))
        a = math.exp(rng.uniform(math.log(cfg.aspect[0]), math.log(cfg.aspect[1])))
        cx = w / 2.0 + rng.uniform(-cfg.offset, cfg.offset) * w
        top = rng.uniform(-cfg.offset, cfg.offset) * h
        half_w = w / (2.0 * z * a)
        return warp_box(image, mask, (cx - half_w, top, cx + half_w, top + h / z))

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        from train.perturb import gain, jpeg, tgc

        cfg = self.config
        image_shape, mask_shape = np.shape(image), np.shape(mask)
        out_image, out_mask = self.strong.affine(image, mask, rng)
        out_image = JointAugment._plane(out_image, "image")
        out_mask = JointAugment._plane(out_mask, "mask")
        low, high = float(out_image.min()), float(out_image.max())
        out_image = ((out_image - low) * np.float32(255.0 / (high - low)) if high > low
                     else np.zeros_like(out_image))
        if self.compress is not None:
            out_image, out_mask = self.compress.draw(out_image, out_mask, rng)
        if rng.random() < cfg.fov_p:
            out_image, out_mask = self.field_of_view(out_image, out_mask, rng)
        if rng.random() < self.strong.config.elastic_p:
            out_image, out_mask = self.strong.elastic(out_image, out_mask, rng)
        if rng.random() < cfg.tgc_p:
            out_image, _ = tgc(out_image, out_mask, rng.uniform(-cfg.tgc, cfg.tgc))
        if rng.random() < cfg.gain_p:
            out_image, _ = gain(out_image, out_mask, rng.uniform(*cfg.gain))
        out_image = self.strong.intensity(out_image, rng)
        if rng.random() < cfg.codec_p:
            low, high = float(out_image.min()), float(out_image.max())
            scaled = (out_image - low) * np.float32(255.0 / (high - low)) if high > low else out_image * 0
            out_image = zscore(jpeg(scaled, out_mask, rng.uniform(*cfg.jpeg_quality))[0])
        return out_image.reshape(image_shape), out_mask.astype(np.float32).reshape(mask_shape)


class FieldOfViewAugment(AcquisitionAugment):
    """``mn-train --augment fov``: :class:`AcquisitionAugment` without the scanner's intensity changes (depth-dependent
    brightness, gain, JPEG): the affine, the 8-bit mapping, the compression when configured, the changed field of
    view, the elastic deformation and the strong intensity transforms. It separates what the field of view teaches
    from what the intensity changes do (refiners trained with ``acquisition`` outlined larger areas and lost heavy
    speckle, ``docs/journal.md``)."""

    def __init__(self, config: AcquisitionAugmentConfig | None = None, strong: StrongAugmentConfig | None = None,
                 affine: AugmentConfig | None = None, compress: CompressAugmentConfig | None = None) -> None:
        super().__init__(config if config is not None else AcquisitionAugmentConfig(tgc_p=0.0, gain_p=0.0, codec_p=0.0),
                         strong, affine, compress)

    def to_config(self) -> dict[str, Any]:
        """As :meth:`AcquisitionAugment.to_config`, named ``fov``."""
        return {**super().to_config(), "name": "fov"}


@dataclass
class CompressAugmentConfig(_RangesConfig):
    """Ranges of :class:`CompressAugment`'s compression step.

    Attributes:
        compress_p: probability that the nerve is compressed.
        level: range of the vertical scale about the nerve (uniform): 0.75 = flattened by 25 %, as the
            ``animate:`` clips' compression at its peak (:func:`train.perturb.compress`).
    """

    compress_p: float = 0.5
    level: tuple[float, float] = (0.75, 1.0)

    record_name = "compression augmentation"

    def __post_init__(self) -> None:
        _validate_ranges(self, ("compress_p",), (), ("level",))
        if self.level[1] > 1.0:
            raise UserError(f"augmentation level is a vertical scale in (0, 1] (1: no compression), got {self.level}")

    def draw(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """With probability ``compress_p``, ``image`` and ``mask`` compressed at a level drawn uniformly in ``level``
        (:func:`train.perturb.compress`); else both as they are."""
        from train.perturb import compress

        if rng.random() < self.compress_p:
            return compress(image, mask, rng.uniform(*self.level))
        return image, mask


class CompressAugment:
    """Callable ``(image, mask, rng) -> (image, mask)``: :class:`StrongAugment` plus the nerve compressed
    (``mn-train --augment compress``).

    The networks learn a nerve's outline from stills; in a dynamic scan the probe's pressure and the
    wrist's movement flatten it, which no still-image augmentation above does (the paper's affine
    rotates and shears, the elastic field moves pixels by a few percent of the width). Steps, all drawn
    from ``rng``:

    1. the paper's joint affine;
    2. with probability ``compress_p``, :func:`train.perturb.compress` at a level drawn uniformly in
       ``level``: the region around the nerve flattened about its centroid and widened in part, fading
       into no motion over a ring, the probe's face in place (the truth mask goes along);
    3. the strong elastic deformation (probability ``elastic_p``) and intensity transforms, and the
       per-image z-score, as :class:`StrongAugment`.
    """

    def __init__(self, config: CompressAugmentConfig | None = None, strong: StrongAugmentConfig | None = None,
                 affine: AugmentConfig | None = None) -> None:
        self.config = config if config is not None else CompressAugmentConfig()
        self.strong = StrongAugment(strong, affine)

    def __repr__(self) -> str:
        return f"CompressAugment({self.config!r}, strong={self.strong!r})"

    def to_config(self) -> dict[str, Any]:
        """``{"name": "compress", "affine": {...}, "strong": {...}, "compress": {...}}``."""
        return {"name": "compress", "affine": self.strong.affine.config.to_config(),
                "strong": self.strong.config.to_config(), "compress": self.config.to_config()}

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        image_shape, mask_shape = np.shape(image), np.shape(mask)
        out_image, out_mask = self.strong.affine(image, mask, rng)
        out_image = JointAugment._plane(out_image, "image")
        out_mask = JointAugment._plane(out_mask, "mask")
        out_image, out_mask = self.config.draw(out_image, out_mask, rng)
        if rng.random() < self.strong.config.elastic_p:
            out_image, out_mask = self.strong.elastic(out_image, out_mask, rng)
        out_image = self.strong.intensity(out_image, rng)
        return out_image.reshape(image_shape), out_mask.astype(np.float32).reshape(mask_shape)


def zscore(image: np.ndarray) -> np.ndarray:
    """Per-image z-score (mean 0, population std 1; a constant image -> 0), as float32."""
    image = np.asarray(image, dtype=np.float64)
    std = float(image.std())
    centred = image - image.mean()
    return (centred / std if std > 0 and np.isfinite(std) else np.zeros_like(centred)).astype(np.float32)


#: ``mn-train --augment`` choices and what they build (``None``: no augmentation).
AUGMENTERS: dict[str, Callable[[], AugmentFn] | None] = {
    "paper": JointAugment,
    "strong": StrongAugment,
    "acquisition": AcquisitionAugment,
    "fov": FieldOfViewAugment,
    "compress": CompressAugment,
    "none": None,
}
AUGMENT_NAMES = tuple(AUGMENTERS)


SPECKLE_AUGMENTS = ("strong", "acquisition", "fov", "compress")
"""The augmentations with a speckle step (``speckle_range`` applies to them)."""

COMPRESS_AUGMENTS = ("compress", "acquisition", "fov")
"""The augmentations that can compress the nerve (``compress`` always, ``acquisition`` and ``fov`` when given
``--compress``)."""
COMPRESS_AUGMENTS_TEXT = f"{', '.join(COMPRESS_AUGMENTS[:-1])} or {COMPRESS_AUGMENTS[-1]}"
""":data:`COMPRESS_AUGMENTS` as the error messages name them."""


def check_compress(value: Any) -> tuple[float, float]:
    """``(level, p)`` of ``mn-train --compress``: the lowest vertical scale ``0 < level <= 1`` (the nerve flattened
    by up to ``1 - level``) and the probability ``0 <= p <= 1`` that an image is compressed."""
    try:
        level, p = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"--compress takes two numbers LEVEL P, got {value!r}") from None
    if not (math.isfinite(level) and 0.0 < level <= 1.0 and math.isfinite(p) and 0.0 <= p <= 1.0):
        raise UserError(f"--compress LEVEL P: LEVEL is the lowest vertical scale in (0, 1] (0.75 = flattened by up "
                        f"to 25 %, the default {CompressAugmentConfig.level[0]:g}) and P a probability in [0, 1] "
                        f"(default {CompressAugmentConfig.compress_p:g}); got ({level:g}, {p:g})")
    return level, p


def make_augment(name: str, speckle_range: tuple[float, float] | None = None,
                 compress: tuple[float, float] | None = None) -> AugmentFn | None:
    """The augmentation called ``name`` (one of :data:`AUGMENT_NAMES`) with default ranges, or ``None``;
    ``speckle_range``: each image's speckle strength drawn from it (:class:`StrongAugmentConfig`);
    ``compress``: ``(level, p)`` of ``--augment compress`` (:func:`check_compress`; the level is drawn from
    ``[level, 1]``), or of the compression ``--augment acquisition`` then adds (none without it).

    Raises:
        UserError: an unknown name (the message lists the known ones), a speckle range for an augmentation
            without speckle, or compression settings for one that cannot compress (:data:`COMPRESS_AUGMENTS`).
    """
    try:
        factory = AUGMENTERS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown augmentation {name!r}; choose one of: {', '.join(AUGMENT_NAMES)}") from None
    if compress is not None and name not in COMPRESS_AUGMENTS:
        raise UserError(f"--compress LEVEL P sets the nerve's compression of --augment "
                        f"{COMPRESS_AUGMENTS_TEXT}; --augment {name} has none")
    if speckle_range is not None and name not in SPECKLE_AUGMENTS:
        raise UserError(f"--speckle sets the speckle step of --augment {', '.join(SPECKLE_AUGMENTS)}; "
                        f"--augment {name} has none")
    if speckle_range is None and compress is None:
        return None if factory is None else factory()
    strong = StrongAugmentConfig(speckle_range=speckle_range) if speckle_range is not None else None
    if name == "strong":
        return StrongAugment(strong)
    config = None
    if compress is not None:
        level, p = check_compress(compress)
        config = CompressAugmentConfig(compress_p=p, level=(level, 1.0))
    if name == "compress":
        return CompressAugment(config, strong=strong)
    return factory(strong=strong, compress=config)  # acquisition, fov: the names left with speckle or compression


def augment_record(augment: AugmentFn | None) -> dict[str, Any]:
    """JSON-able description of ``augment`` for the run config (``{"name": "none"}`` for ``None``)."""
    if augment is None:
        return {"name": "none"}
    to_config = getattr(augment, "to_config", None)
    return to_config() if callable(to_config) else {"name": type(augment).__name__}
