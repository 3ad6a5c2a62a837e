"""Does the detected region *look* like a median nerve? Appearance features and the score they give.

The size and shape checks of :mod:`realtime.presence` cannot tell a nerve from another round
structure of the right size: on other anatomy the network outlines a patch of muscle or a tendon
with a confidence as high as on a real nerve. What differs is the image around and at the edge of
the outline, and how sure the network is at that edge. On the dataset's annotated images a median
nerve at the wrist is ringed by a bright (hyperechoic) epineurium and fat, brighter than the tissue
a little further out, and the network's outline of it is sharp; on the nerve-free frames this
project makes from its own data (the nerve painted over, the wrist beside it, a phantom without a
nerve) the outlined region has no such ring and a blurred outline. Six numbers capture it, all
computed in a box around the mask, so one frame costs about a millisecond:

=============== =====================================================================================
``ring``        mean intensity in a band just outside the mask (width 15 % of the mask's equivalent
                side) minus the mean in the band beyond it (out to 3 times that width): the bright rim
``edge``        mean gradient magnitude (5x5 Gaussian-smoothed image) on the mask's boundary
``unsure``      share of the mask's bounding box where the network's probability is between 0.2 and
                0.8: a blurred, hesitant outline
``log_area``    natural log of the mask's area as a share of the frame
``inside``      mean intensity of the mask's core (the mask eroded by a 5x5 square; the mask itself if
                that leaves nothing) minus the mean of the band just outside it (``ring``'s inner band):
                a nerve's fascicles are darker than its bright sheath, a tendon's fibres are not
``ring_closed`` share of eight angular sectors about the mask's centroid in which that inner band is
                brighter than the band beyond it (sectors with fewer than 3 pixels in either band are left
                out; 0 when none is left): the epineurium rings a nerve all round, while a bright edge
                beside a random region lies on one side
=============== =====================================================================================

``inside`` and ``ring_closed`` came after the first four (2026-12-04): with them, on the nerve-free frames
this project makes (``python -m tools.presence_fit``'s fit frames, each scored by a check fit on other
patients), ``mn-realtime``'s check passes 9.1 % of the nerve-removed and 3.0 % of the off-nerve frames at the
same 99 % of true nerves kept, against 12.8 % and 6.1 % with the first four
(``python -m tools.appearance_ablation``, ``benchmarks/results/exploratory-appearance-features-*``). A
model file fit before them has four weights and scores the first four features
(:meth:`AppearanceModel.score`).

Intensities are divided by the frame's interquartile range (on every 4th pixel in each direction),
so gain and contrast settings change nothing. :class:`AppearanceModel` is a logistic regression over
these features (standardised), fit by ``python -m tools.presence_fit`` with patient-level
cross-validation and stored as JSON; its :meth:`~AppearanceModel.score` is the probability that the
region is a median nerve.

Two of the features (``unsure``, ``log_area``) describe the *segmentation model's* outline, so an
appearance model belongs to the segmentation model it was fit on: it is stored beside it, as the
model file's *sidecar* ``NAME.appearance.json`` next to ``NAME.pt`` (:func:`sidecar`; the bundled
models' in ``engines/bundled/``), and records the ``model_sha256`` of the file it was fit on.
:func:`appearance_for` picks a run's model: ``--appearance FILE`` when given, else the model's
sidecar, else the default bundled model's with a warning (another model's outlines: it may reject
this model's true nerves or pass its false ones).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import cv2
import numpy as np

from common.errors import UserError

log = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = ("ring", "edge", "unsure", "log_area", "inside", "ring_closed")
"""The features, in the order of :func:`appearance_features` and of a model's weights."""
SIDECAR_SUFFIX = ".appearance.json"
"""A model file's appearance model: ``NAME.pt`` -> ``NAME.appearance.json`` beside it (:func:`sidecar`)."""
RING_WIDTH = 0.15
"""Width of the inner band, as a share of the mask's equivalent side (sqrt of its area); at least 2 px."""
UNSURE = (0.2, 0.8)
"""Probabilities counted as an unsure outline."""
SECTORS = 8
"""Angular sectors of ``ring_closed``."""
MIN_SECTOR_PIXELS = 3
"""A sector counts for ``ring_closed`` when each band has at least this many pixels in it."""


def _quartile_range(grey: np.ndarray) -> float:
    """Interquartile range of every 4th pixel of a ``uint8`` frame, as ``np.percentile``'s linear method
    gives it, from a histogram (a few times faster than sorting)."""
    sample = np.ascontiguousarray(grey[::4, ::4])
    counts = np.cumsum(cv2.calcHist([sample], [0], None, [256], [0, 256]).ravel())
    n = counts[-1]

    def value(rank: int) -> int:
        return int(np.searchsorted(counts, rank + 1))  # the rank-th smallest (0-based)

    out = []
    for q in (0.25, 0.75):
        h = (n - 1) * q
        lo = int(math.floor(h))
        out.append(value(lo) + (h - lo) * (value(min(lo + 1, int(n) - 1)) - value(lo)))
    return float(out[1] - out[0])


class RegionBands(NamedTuple):
    """A mask's surroundings as the appearance features and the echo ratio measure them, in a box about the mask:
    the frame's grey values there (``g``, ``float32``), the mask (``mm``), its core (the mask eroded by a 5x5
    square; the mask itself if that leaves nothing), the inner band (out to ``r`` px outside the mask) and the
    outer band (``r`` to ``3 r`` px), ``r`` = :data:`RING_WIDTH` of the mask's equivalent side (at least 2 px).
    Made once per frame by :meth:`of`; the presence gate reads both :meth:`echo_ratio` and :meth:`features` from
    it."""

    grey: np.ndarray
    g: np.ndarray
    mm: np.ndarray
    eroded: np.ndarray
    inner: np.ndarray
    outer: np.ndarray
    dist: np.ndarray
    area: int
    bbox: tuple[int, int, int, int]

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray) -> "RegionBands | None":
        """The bands of ``mask`` (non-zero = region) in ``image`` (grey ``uint8`` or BGR, the mask's size); None
        for an empty mask."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        if grey.dtype != np.uint8:
            grey = np.clip(grey, 0, 255).astype(np.uint8)
        m = (np.asarray(mask) > 0).astype(np.uint8)
        bx, by, bw, bh = cv2.boundingRect(m)
        if bw == 0 or bh == 0:
            return None
        h, w = m.shape
        area = int(cv2.countNonZero(m[by:by + bh, bx:bx + bw]))
        r = max(2, int(round(RING_WIDTH * math.sqrt(area))))
        pad = 3 * r + 4
        y0, y1, x0, x1 = max(0, by - pad), min(h, by + bh + pad), max(0, bx - pad), min(w, bx + bw + pad)
        mm = m[y0:y1, x0:x1]
        dist = cv2.distanceTransform((mm == 0).astype(np.uint8), cv2.DIST_L2, 5)  # 0 inside, px outside
        eroded = cv2.erode(mm, np.ones((5, 5), np.uint8)) > 0
        return cls(grey, grey[y0:y1, x0:x1].astype(np.float32), mm, eroded, (dist > 0) & (dist <= r),
                   (dist > r) & (dist <= 3 * r), dist, area, (bx, by, bw, bh))

    @property
    def core(self) -> np.ndarray:
        """The mask eroded by a 5x5 square; the mask itself if that leaves nothing."""
        return self.eroded if self.eroded.any() else self.mm > 0

    def features(self, prob: np.ndarray) -> np.ndarray:
        """:func:`appearance_features` of this region, ``prob`` the network's probability at the frame's size."""
        g = self.g / (_quartile_range(self.grey) + 1.0)
        mm, inner, outer, dist = self.mm, self.inner, self.outer, self.dist
        ring = float(g[inner].mean() - g[outer].mean()) if inner.any() and outer.any() else 0.0
        smooth = cv2.GaussianBlur(g, (5, 5), 0)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=1) / 2.0
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=1) / 2.0
        edge_band = (dist <= 2) & ~self.eroded
        edge = float(np.hypot(gx, gy)[edge_band].mean()) if edge_band.any() else 0.0
        bx, by, bw, bh = self.bbox
        box = prob[by:by + bh, bx:bx + bw]
        unsure = float(((box > UNSURE[0]) & (box < UNSURE[1])).mean())
        inside = float(g[self.core].mean() - g[inner].mean()) if inner.any() else 0.0
        h, w = self.grey.shape[:2]
        return np.array([ring, edge, unsure, math.log(self.area / float(h * w)), inside,
                         _ring_closed(g, mm, inner, outer)], dtype=np.float64)

    def echo_ratio(self) -> float | None:
        """:func:`echo_ratio` of this region."""
        if not self.outer.any():
            return None
        around, core = float(self.g[self.outer].mean()), float(self.g[self.core].mean())
        if around > 0:
            return core / around
        return math.inf if core > 0 else 0.0


def appearance_features(image: np.ndarray, mask: np.ndarray, prob: np.ndarray) -> np.ndarray | None:
    """The :data:`FEATURES` of the region ``mask`` in ``image`` (both at native resolution).

    Args:
        image: the frame, grey ``uint8 [H, W]`` or BGR ``[H, W, 3]``.
        mask: the nerve's mask ``[H, W]`` (non-zero = nerve).
        prob: the network's probability ``float [H, W]`` upsampled to the frame.

    Returns:
        ``float64 [len(FEATURES)]``, or None for an empty mask.
    """
    bands = RegionBands.of(image, mask)
    return None if bands is None else bands.features(prob)


def echo_ratio(image: np.ndarray, mask: np.ndarray) -> float | None:
    """How echoic the region ``mask`` of ``image`` is against the tissue around it: the mean grey value of its core
    (the mask eroded by a 5x5 square; the mask itself if that leaves nothing) over the mean of the band from 1 to 3
    ring widths outside it (``ring``'s outer band). A ratio, so gain and contrast do not move it.

    A median nerve is hypoechoic, its fascicles darker than the tissue about it but full of echoes: 0.48-0.99 on
    the dataset's 202 annotated masks. A vessel's lumen, a cyst or other fluid is anechoic, near black inside:
    about 0.1. :class:`realtime.presence.PresenceGate` rejects a region below ``min_echo_ratio``.

    Returns:
        The ratio (where the band around is black: 0 for a black core, infinity for any other), or None for an
        empty mask or one with no band around it inside the frame.
    """
    bands = RegionBands.of(image, mask)
    return None if bands is None else bands.echo_ratio()


def _ring_closed(g: np.ndarray, mm: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> float:
    """``ring_closed``: the share of :data:`SECTORS` angular sectors about the mask's centroid where the inner
    band is brighter than the outer one (see the module docstring)."""
    mom = cv2.moments(mm, binaryImage=True)
    cx, cy = mom["m10"] / mom["m00"], mom["m01"] / mom["m00"]
    ys, xs = np.nonzero(inner | outer)
    sector = ((np.arctan2(ys - cy, xs - cx) + math.pi) / (2 * math.pi) * SECTORS).astype(np.int64) % SECTORS
    values, is_inner = g[ys, xs], inner[ys, xs]
    n_in = np.bincount(sector[is_inner], minlength=SECTORS)
    n_out = np.bincount(sector[~is_inner], minlength=SECTORS)
    sum_in = np.bincount(sector[is_inner], weights=values[is_inner], minlength=SECTORS)
    sum_out = np.bincount(sector[~is_inner], weights=values[~is_inner], minlength=SECTORS)
    valid = (n_in >= MIN_SECTOR_PIXELS) & (n_out >= MIN_SECTOR_PIXELS)
    if not valid.any():
        return 0.0
    brighter = sum_in[valid] / n_in[valid] > sum_out[valid] / n_out[valid]
    return float(brighter.mean())


@dataclass(frozen=True)
class AppearanceModel:
    """A logistic regression over standardised :data:`FEATURES`; ``threshold`` is the lowest accepted score.

    ``hold_threshold`` (None: ``threshold``): the lowest score accepted for the nerve a track already follows
    (hysteresis, :meth:`threshold_for`): a new nerve must look like one beyond doubt, a nerve followed from frame
    to frame, in the place the tracker expects it, may look less typical for a while (a compression, a tilt)
    without being dropped. ``provenance`` records how it was fit (data, model, cross-validated rates); it is
    written into summaries with the presence gate's settings.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    hold_threshold: float | None = None
    file: str | None = field(default=None, compare=False)
    """Where it was read from (None: made in memory); not written by :meth:`save`."""

    def __post_init__(self) -> None:
        n = len(self.features)
        if tuple(self.features) != FEATURES[:n] or n == 0:
            raise UserError(f"appearance model features {list(self.features)} are not this mn-seg's {list(FEATURES)}; "
                            "refit it with python -m tools.presence_fit")
        if not (len(self.mean) == len(self.scale) == len(self.weights) == n):
            raise UserError("appearance model: mean, scale and weights need one value per feature")
        if not all(math.isfinite(v) for v in (*self.mean, *self.scale, *self.weights, self.bias, self.threshold)) \
                or any(s <= 0 for s in self.scale) or not 0.0 <= self.threshold <= 1.0:
            raise UserError("appearance model: every number must be finite, scales positive, the threshold in [0, 1]")
        if self.hold_threshold is not None and not (math.isfinite(self.hold_threshold)
                                                    and 0.0 <= self.hold_threshold <= self.threshold):
            raise UserError(f"appearance model: hold_threshold must be in [0, threshold {self.threshold:g}], got "
                            f"{self.hold_threshold!r}; refit it with python -m tools.presence_fit")

    def threshold_for(self, tracking: bool = False) -> float:
        """The lowest accepted score: :attr:`hold_threshold` for a nerve a track follows (``tracking``), else
        :attr:`threshold`."""
        return self.hold_threshold if tracking and self.hold_threshold is not None else self.threshold

    def score(self, features: np.ndarray | Sequence[float]) -> float:
        """Probability that the region is a median nerve, from the first ``len(self.features)`` of
        :func:`appearance_features`'s values (a model fit before later features were added scores its own)."""
        n = len(self.features)
        z = (np.asarray(features, dtype=np.float64)[:n] - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(z @ np.asarray(self.weights) + self.bias)
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("file")
        d.update(features=list(self.features), mean=list(self.mean), scale=list(self.scale),
                 weights=list(self.weights))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AppearanceModel":
        try:
            return cls(features=tuple(d["features"]), mean=tuple(map(float, d["mean"])),
                       scale=tuple(map(float, d["scale"])), weights=tuple(map(float, d["weights"])),
                       bias=float(d["bias"]), threshold=float(d["threshold"]), provenance=dict(d.get("provenance", {})),
                       hold_threshold=None if d.get("hold_threshold") is None else float(d["hold_threshold"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"appearance model: missing or malformed field ({exc}); refit it with "
                            "python -m tools.presence_fit") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON, atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def load_appearance_model(path: str | os.PathLike) -> AppearanceModel:
    """Read a model written by :meth:`AppearanceModel.save`.

    Raises:
        UserError: the file is missing or not a model.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"appearance model {path} does not exist (python -m tools.presence_fit writes it; "
                        "--presence shape checks size, shape and echo only)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"appearance model {path} cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"appearance model {path} is not a JSON object")
    return replace(AppearanceModel.from_dict(data), file=str(path))


def sidecar(model_file: str | os.PathLike) -> Path:
    """The appearance model that belongs to ``model_file``: ``NAME.appearance.json`` beside ``NAME.pt``."""
    path = Path(model_file)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def default_model_file() -> Path | None:
    """The default bundled model's appearance model (its sidecar); None when no model is bundled."""
    from engines.registry import bundled

    catalogue = bundled()
    model = catalogue.models.get(catalogue.default) if catalogue.default else None
    return sidecar(model) if model is not None else None


def _fit_on_other_version(model: AppearanceModel, model_file: Path) -> bool:
    from engines.cache import file_sha256

    expected = model.provenance.get("model_sha256")
    return bool(expected) and model_file.is_file() and file_sha256(model_file) != expected


def appearance_for(model_file: str | os.PathLike | None, explicit: str | os.PathLike | None = None) -> AppearanceModel:
    """The appearance model for a run of the segmentation model in ``model_file``.

    ``explicit`` (``--appearance FILE``) when given; else ``model_file``'s :func:`sidecar` (a warning when it
    records another version of the file); else the default bundled model's, with a warning that it was fit
    on another model's outlines (none when ``model_file`` is None: the caller does not know its model).

    Raises:
        UserError: the chosen file is missing or not an appearance model, or there is none to fall back on.
    """
    if explicit is not None:
        return load_appearance_model(explicit)
    fix = ("fit one with python -m tools.presence_fit --model {m} (it writes {s}), pass --appearance FILE, or use "
           "--presence shape (size, shape and echo checks only)")
    if model_file is not None:
        own = sidecar(model_file)
        if own.is_file():
            model = load_appearance_model(own)
            if _fit_on_other_version(model, Path(model_file)):
                log.warning("the presence gate's appearance model %s was fit on another version of %s; refit it: %s",
                            own, model_file, fix.format(m=model_file, s=own))
            return model
    default = default_model_file()
    if default is None or not default.is_file():
        raise UserError(f"no appearance model for the presence gate (looked for {sidecar(model_file or 'MODEL')}"
                        f"{f' and {default}' if default else ''}); "
                        + fix.format(m=model_file or "MODEL", s=sidecar(model_file or "MODEL")))
    if model_file is not None:  # not the default model: its own sidecar would have been found above
        log.warning("%s has no appearance model of its own (%s): the presence gate uses %s, fit on another model's "
                    "outlines, which may reject this model's true nerves or pass its false ones; %s",
                    model_file, sidecar(model_file), default, fix.format(m=model_file, s=sidecar(model_file)))
    return load_appearance_model(default)
