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
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from train.errors import UserError

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
