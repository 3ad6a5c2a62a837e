"""The single preprocessing function shared by training and every inference engine.

A native frame (any size, grey or colour) becomes the network input in three steps,
exactly as the authors' Keras code did (paper-code-spec.md, section 3.1):

1. grey: OpenCV ``cvtColor`` BGR->GRAY (ITU-R BT.601 weights 0.299 R + 0.587 G +
   0.114 B), the conversion behind the authors' ``cv2.imread(path,
   cv2.IMREAD_GRAYSCALE)``. Grey pixels (R = G = B) come out identical; OpenCV's
   decoders (BMP, libpng) round coloured pixels their own way, at most one grey level
   apart. On the paper's frames only the few coloured scanner markers are affected
   (bit-identical for the original BMP files of the project's data).
2. resize to the model size with ``cv2.resize(..., interpolation=INTER_LINEAR)``
   (bilinear, no antialiasing), in the input's own dtype (uint8 stays uint8, as in
   the original code);
3. per-image z-score: subtract the mean and divide by the population standard
   deviation of the resized image, computed in float64, stored as float32. A constant
   image becomes all zeros.

Masks are resized the same way (bilinear, so edges become soft) and divided by 255
with no re-binarisation, which is what the paper trained on.

Sizes are always ``(width, height)``, OpenCV's order; arrays are ``[H, W]``.
The checkpoint records :data:`PREPROCESSING_ID` and :func:`preprocessing_config`
so an engine can refuse a checkpoint trained with a different pipeline.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable

import cv2
import numpy as np

from train.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_SIZE: tuple[int, int] = (384, 288)
"""The paper's network input size, ``(width, height)``."""

PREPROCESSING_ID = "grey-bt601/resize-linear/zscore-per-image/v1"
"""Names the preprocessing below; change it whenever its output changes."""

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX\u00d7]\s*(\d+)\s*$")

# BT.601 luma weights in OpenCV's channel order (B, G, R); used where cvtColor
# has no implementation for the dtype (float64).
_BGR_WEIGHTS = np.array([0.114, 0.587, 0.299], dtype=np.float64)
_CVT_DTYPES = (np.uint8, np.uint16, np.float32)
_GREY_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


def check_size(size: Iterable[int]) -> tuple[int, int]:
    """Return ``size`` as a ``(width, height)`` tuple of positive ints, or raise UserError."""
    try:
        values = tuple(size)
    except TypeError:
        raise UserError(f"size must be a (width, height) pair, got {size!r}") from None
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise UserError(f"size must be a (width, height) pair of integers, got {size!r}")
    width, height = int(values[0]), int(values[1])
    if width <= 0 or height <= 0:
        raise UserError(f"size must be positive, got {width}x{height} (width x height)")
    return width, height


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"384x288"`` (width x height) into ``(384, 288)``.

    Raises:
        UserError: the text is not two positive integers separated by ``x``.
    """
    match = _SIZE_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise UserError(
            f"invalid size {text!r}: write it as WIDTHxHEIGHT in pixels, e.g. "
            f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}"
        )
    return check_size((int(match.group(1)), int(match.group(2))))


def to_grey(image: np.ndarray) -> np.ndarray:
    """Return a 2-D grey image of the same dtype as ``image``.

    Accepts ``[H, W]`` (returned as is), ``[H, W, 1]``, ``[H, W, 3]`` BGR and
    ``[H, W, 4]`` BGRA arrays of dtype uint8, uint16, float32 or float64. Colour is
    converted with BT.601 weights (``cv2.COLOR_BGR2GRAY``); alpha is ignored.

    Raises:
        UserError: any other shape or dtype, or an empty image.
    """
    image = np.asarray(image)
    if image.dtype.type not in _GREY_DTYPES:
        raise UserError(
            f"unsupported image dtype {image.dtype}: expected uint8, uint16, float32 or float64"
        )
    if image.size == 0:
        raise UserError(f"empty image (shape {image.shape})")
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise UserError(
            f"unsupported image shape {image.shape}: expected HxW grey, HxWx1, HxWx3 BGR or HxWx4 BGRA"
        )
    channels = image.shape[2]
    if channels == 1:
        return image[:, :, 0]
    if image.dtype.type in _CVT_DTYPES:
        code = cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    grey = image[:, :, :3].astype(np.float64) @ _BGR_WEIGHTS
    return grey.astype(image.dtype, copy=False)


def _resize(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D array to ``size`` = (W, H), keeping its dtype."""
    if grey.shape[1] == size[0] and grey.shape[0] == size[1]:
        return grey
    return cv2.resize(np.ascontiguousarray(grey), size, interpolation=cv2.INTER_LINEAR)


def preprocess_image(image: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Turn a native frame into the network input: float32 ``[H, W]``, zero mean, unit std.

    Args:
        image: see :func:`to_grey` for the accepted shapes and dtypes.
        size: model input ``(width, height)``.

    Raises:
        UserError: unsupported image, bad size, or non-finite pixel values.
    """
    size = check_size(size)
    resized = _resize(to_grey(image), size).astype(np.float64)
    mean = resized.mean()
    std = resized.std()  # population std (ddof=0), as numpy/Keras did
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise UserError("image contains NaN or infinite values; it cannot be normalised")
    if np.ptp(resized) == 0 or std == 0:
        return np.zeros((size[1], size[0]), dtype=np.float32)
    return ((resized - mean) / std).astype(np.float32)


def preprocess_mask(mask: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Resize a uint8 {0, 255} mask bilinearly and scale it to float32 [0, 1], soft edges kept.

    A bool mask is taken as {0, 255}. There is deliberately no re-binarisation: the
    paper's targets have soft edges.

    Raises:
        UserError: a mask that is neither uint8 nor bool, or a bad size.
    """
    size = check_size(size)
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * np.uint8(255)
    if mask.dtype != np.uint8:
        raise UserError(f"mask must be uint8 with values 0 and 255 (got dtype {mask.dtype})")
    resized = _resize(to_grey(mask), size)
    return (resized.astype(np.float64) / 255.0).astype(np.float32)


def preprocess_batch(images: Iterable[np.ndarray], size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Preprocess several frames into one float32 ``[N, 1, H, W]`` array."""
    size = check_size(size)
    planes = [preprocess_image(image, size) for image in images]
    if not planes:
        return np.zeros((0, 1, size[1], size[0]), dtype=np.float32)
    return np.stack(planes)[:, None]


def preprocessing_config(size: tuple[int, int] = DEFAULT_SIZE) -> dict[str, Any]:
    """JSON-able description of the preprocessing, stored in every checkpoint."""
    width, height = check_size(size)
    return {
        "id": PREPROCESSING_ID,
        "size": [width, height],
        "size_order": "width,height",
        "colour": "grey, cv2.COLOR_BGR2GRAY (BT.601)",
        "interpolation": "cv2.INTER_LINEAR",
        "normalisation": "per-image z-score (mean, population std; constant image -> 0)",
        "dtype": "float32",
        "mask": "cv2.INTER_LINEAR resize of 0/255 mask, divided by 255, soft (no re-binarisation)",
    }
