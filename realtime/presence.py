"""Is there a median nerve at all? The plausibility gate every detection passes before it is measured.

A segmentation network always finds *something* that looks most like a nerve: on a lifted probe,
on another part of the wrist or on another body part it outlines a tendon, a vessel or a patch of
muscle with a probability as high as on a real nerve. Reporting that as a CSA would be a number
that looks real and is not. So before the tracker accepts a detection, :class:`PresenceGate`
checks that it is plausible as a median nerve at the wrist; a rejected detection is treated as no
detection at all (status ``no_detection``, empty measurement columns, the reason in the
``rejected`` column).

The checks and their default bounds. Bounds in pixels are relative to the frame so they hold at
any capture size; each comes from the 202 annotated masks of the project's dataset (range shown)
widened for a different zoom (+-20 % in length, i.e. x0.69-1.44 in area), aspect (+-15 %) and
annotation noise, so that no true nerve of the dataset comes close to a bound:

=================== ============================ =============================================
check               default                      dataset's masks
=================== ============================ =============================================
area / frame area   0.2 % .. 6.5 %               0.49 % .. 2.99 % (0.60 .. 1.58 % for 90 %)
area (calibrated)   2 .. 40 mm²                  median nerve at the carpal tunnel: about 5-10
                                                 mm² healthy, up to ~25 mm² in severe CTS
flattening ratio    <= 11                        1.97 .. 7.52
circularity         >= 0.20                      0.32 .. 0.78
confidence          >= ``min_confidence``        mean probability inside the nerve's mask
echo ratio          >= 0.20                      0.48 .. 0.99
=================== ============================ =============================================

The *echo ratio* (:func:`realtime.appearance.echo_ratio`, checked when the frame is given) is the mean grey value
of the region's core over that of the tissue around it: a median nerve is hypoechoic, darker than its surroundings
but full of echoes from its fascicles, while a vessel's lumen, a cyst or other fluid is anechoic, near black (about
0.1: the neck's veins and arteries, the ulnar artery beside the wrist's nerves, a ganglion). A ratio does not move
with gain or contrast. The bound lies between a lumen's (about 0.1) and the lowest of the network's outlines of
held-out nerves (folds 1 and 2: 0.47 on the clean images; 0.34 under gamma 1.4, which takes the ratio to its 1.4th
power; 0.28 where a black border was added and the outline ran into it), and ``mn-realtime``'s of the 202 images
(0.48; 0.35 under gamma 1.4); see ``benchmarks/results/exploratory-echo-ratio-amd-vm-2026-12-07/``.

Then, with ``--presence on`` (the default), the region's *appearance*
(:mod:`realtime.appearance`): a bright rim around it, a sharp outline and a confident network at
its edge, scored by a logistic regression fit on the project's own nerve-free frames with
patient-level cross-validation; a score below the model's threshold is rejected
(``"appearance 0.12 < 0.40"``). A model may have a lower *hold* threshold for the nerve a track already
follows (hysteresis: ``"appearance 0.12 < 0.20 (tracked)"``), so a nerve must look like one to be taken up
and may then look less typical for a while (compressed, tilted) without being dropped.
``--presence shape`` keeps only the size, shape and echo checks above.
Each segmentation model has its own appearance model (its outline's sharpness is one of the features):
the model file's sidecar ``NAME.appearance.json``, or ``--appearance FILE``.

The gate is pure (no state): plausibility of motion over time is the tracker's gate. Its
settings are recorded in every summary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from common.errors import UserError

if TYPE_CHECKING:  # annotations only: this module stays light for the command line's --help
    import numpy as np

    from realtime.appearance import AppearanceModel
    from realtime.calibration import Calibration
    from realtime.morphometry import Measurement

PRESENCE_MODES = ("on", "shape", "off")
"""``--presence``: ``on`` size, shape, echo and appearance; ``shape`` size, shape and echo only; ``off`` no gate."""


@dataclass(frozen=True)
class PresenceGate:
    """Plausibility bounds of a median nerve (see the module docstring); ``None`` turns one check off."""

    min_area_frac: float | None = 0.002
    max_area_frac: float | None = 0.065
    min_area_mm2: float | None = 2.0
    max_area_mm2: float | None = 40.0
    max_flattening: float | None = 11.0
    min_circularity: float | None = 0.20
    min_confidence: float | None = 0.5
    min_echo_ratio: float | None = 0.2
    appearance: AppearanceModel | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "appearance":
                continue
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UserError(f"presence gate {name} must be a non-negative number or None, got {value!r}")
        for low, high in (("min_area_frac", "max_area_frac"), ("min_area_mm2", "max_area_mm2")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo >= hi:
                raise UserError(f"presence gate {low} ({lo}) must be below {high} ({hi})")

    def describe(self) -> dict[str, Any]:
        """JSON-able bounds for summaries (the appearance model with its weights and provenance)."""
        d = {k: v for k, v in asdict(self).items() if k != "appearance"}
        d["appearance"] = {**self.appearance.to_dict(), "file": self.appearance.file} \
            if self.appearance is not None else None
        return d

    def check(self, m: Measurement, frame_wh: tuple[int, int], calibration: Calibration | None = None, *,
              image: np.ndarray | None = None, mask: np.ndarray | None = None,
              prob: np.ndarray | None = None, tracking: bool = False) -> str | None:
        """``None`` when ``m`` is a plausible median nerve in a frame of ``frame_wh`` pixels, else why not.

        The reason is a short token with the value, e.g. ``"area 0.08% of frame < 0.2%"``. The echo check runs
        when ``image`` and ``mask`` (native resolution) are given, the appearance check when the gate has a model
        and ``prob`` is given too;
        ``tracking``: ``m`` is the nerve a track follows, judged by the model's hold threshold
        (:meth:`realtime.appearance.AppearanceModel.threshold_for`).
        """
        return self.assess(m, frame_wh, calibration, image=image, mask=mask, prob=prob, tracking=tracking)[0]

    def assess(self, m: Measurement, frame_wh: tuple[int, int], calibration: Calibration | None = None, *,
               image: np.ndarray | None = None, mask: np.ndarray | None = None,
               prob: np.ndarray | None = None, tracking: bool = False) -> tuple[str | None, float | None]:
        """:meth:`check`'s reason and the appearance score the decision used: the appearance model's probability
        that the region is a median nerve, ``None`` where no appearance check ran (no model, no image, or a size,
        shape or echo check that already turned the region away)."""
        frame_area = float(frame_wh[0]) * float(frame_wh[1])
        if m.area_px <= 0 or frame_area <= 0:
            return "empty", None
        reason = self._size_and_shape(m, frame_area, calibration)
        if reason is not None:
            return reason, None
        echo_check = self.min_echo_ratio is not None
        appearance_check = self.appearance is not None and prob is not None
        if image is None or mask is None or not (echo_check or appearance_check):
            return None, None
        from realtime.appearance import RegionBands

        bands = RegionBands.of(image, mask)  # one pass over the region serves both checks
        if bands is None:
            return ("empty", None) if appearance_check else (None, None)
        echo = bands.echo_ratio() if echo_check else None
        if echo is not None and echo < self.min_echo_ratio:
            return f"anechoic: echo {echo:.2f} of the tissue around < {self.min_echo_ratio:g}", None
        if appearance_check:
            score = self.appearance.score(bands.features(prob))
            threshold = self.appearance.threshold_for(tracking)
            if score < threshold:
                held = tracking and self.appearance.hold_threshold is not None
                return f"appearance {score:.2f} < {threshold:.2f}" + (" (tracked)" if held else ""), score
            return None, score
        return None, None

    def _size_and_shape(self, m: Measurement, frame_area: float, calibration: Calibration | None) -> str | None:
        """Why ``m`` fails a size, shape or confidence bound, or None."""
        frac = m.area_px / frame_area
        if self.min_area_frac is not None and frac < self.min_area_frac:
            return f"area {100 * frac:.2f}% of frame < {100 * self.min_area_frac:.2f}%"
        if self.max_area_frac is not None and frac > self.max_area_frac:
            return f"area {100 * frac:.2f}% of frame > {100 * self.max_area_frac:.2f}%"
        if calibration is not None and m.area_mm2 is not None:
            if self.min_area_mm2 is not None and m.area_mm2 < self.min_area_mm2:
                return f"area {m.area_mm2:.1f} mm2 < {self.min_area_mm2:g} mm2"
            if self.max_area_mm2 is not None and m.area_mm2 > self.max_area_mm2:
                return f"area {m.area_mm2:.1f} mm2 > {self.max_area_mm2:g} mm2"
        if (self.max_flattening is not None and m.flattening_ratio is not None
                and m.flattening_ratio > self.max_flattening):
            return f"flattening {m.flattening_ratio:.1f} > {self.max_flattening:g}"
        if self.min_circularity is not None and m.circularity is not None and m.circularity < self.min_circularity:
            return f"circularity {m.circularity:.2f} < {self.min_circularity:g}"
        if self.min_confidence is not None and m.confidence is not None and m.confidence < self.min_confidence:
            return f"confidence {m.confidence:.2f} < {self.min_confidence:g}"
        return None


def gated_model_file(engine: Any) -> str | None:
    """The model file whose appearance model gates ``engine``'s detections (``engine.info.source``); None for
    random weights (an architecture name: there is no model to fit one on) or an engine that names no file."""
    from engines.base import RANDOM_WEIGHTS_NOTE

    info = getattr(engine, "info", None)
    if info is None or RANDOM_WEIGHTS_NOTE in (getattr(info, "notes", None) or []):
        return None
    return getattr(info, "source", None) or None


def make_presence_gate(mode: str, min_confidence: float | None = None, appearance_model: str | None = None,
                       model_file: str | None = None) -> PresenceGate | None:
    """The gate for ``--presence on|shape|off`` (``off``: every detection is measured, as before the gate).

    ``on`` reads the appearance model ``appearance_model`` (``--appearance FILE``) when given, else the one
    that belongs to the segmentation model in ``model_file`` (:func:`realtime.appearance.appearance_for`).
    """
    if mode not in PRESENCE_MODES:
        raise UserError(f"--presence must be one of {', '.join(PRESENCE_MODES)}, got {mode!r}")
    if mode == "off":
        return None
    appearance = None
    if mode == "on":
        from realtime.appearance import appearance_for

        appearance = appearance_for(model_file, appearance_model)
    if min_confidence is not None:
        return PresenceGate(min_confidence=min_confidence, appearance=appearance)
    return PresenceGate(appearance=appearance)
