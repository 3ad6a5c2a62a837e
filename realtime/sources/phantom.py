"""A procedural B-mode phantom of the carpal tunnel with a scripted, known median nerve.

The picture (606 x 468, grey uint8), built in the log-envelope domain so that every layer adds:

* tissue map (static per seed): probe surface and bright skin line, subcutaneous layers with
  fascia lines, fibrous striated background, the transverse carpal ligament (a bright arc above the
  tunnel), flexor tendons (bright ovals with fibrillar, striated texture) below and beside the
  nerve, carpal bones (a bright surface line with an anechoic acoustic shadow below), and
  depth attenuation (exponential darkening of the envelope with depth);
* the median nerve, redrawn every frame: a hypoechoic oval with honeycomb fascicles (dark dots in
  a brighter interfascicular matrix, in the nerve's own coordinates so they deform with it) and a
  bright rim (epineurium, brightest where the beam meets it head-on, at top and bottom);
* speckle: spatially correlated Rayleigh noise (a blurred complex Gaussian field's magnitude),
  laterally elongated like a real point spread function, attached to the tissue; a bank of a few
  fields is cross-faded slowly so it decorrelates over time;
* log compression to grey levels.

The motion script (seconds; sampled at ``fps``, 24 by default): the nerve glides sideways
(amplitude 25-40 px, period 8 s), is compressed and released (flattening ratio from 1.5-2.0 to
3.2-3.8 and back, period 6 s, area shrinking by up to 15 % at peak compression, the top of the
nerve staying under the ligament) and tilts a little, while the whole image jitters by a pixel or
two (probe jitter). It repeats every :data:`SCRIPT_PERIOD_S` seconds. The truth mask is the
filled ellipse ``truth_params(index)`` describes (uint8 0/255), including the jitter.

Deterministic: the anatomy, the speckle bank and the script's amplitudes come from ``seed`` only,
and frame ``i`` is a pure function of ``(seed, i)`` (random access through :meth:`render`).
Static layers are precomputed; a frame costs one crop, the nerve's bounding box, a speckle
cross-fade and a conversion (a few ms on one core).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from realtime.sources.common import GeneratedSource, SourceOptions, register_source
from train.errors import UserError

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 606, 468
"""Frame size (W x H), that of the real dataset's frames."""
DEFAULT_FPS = 24.0
GLIDE_PERIOD_S = 8.0
COMPRESSION_PERIOD_S = 6.0
SCRIPT_PERIOD_S = 24.0
"""The script repeats after this long (the least common multiple of the two periods)."""
AREA_LOSS_AT_PEAK = 0.15
"""Fraction of the area lost at full compression."""

_PAD = 8  # margin of the static layers for the jitter shift (px)
_SPECKLE_BANK = 6  # speckle fields in the bank
_SPECKLE_HOLD = 12  # frames over which one speckle field fades into the next
_SPECKLE_CONTRAST = 0.85  # scale of the log speckle (a gentler log compression than the display's)
_GAIN = 40.0  # grey levels per log-envelope unit (natural log): about 55 dB of display range
_OFFSET = 116.0  # grey level of log-envelope 0 (plain soft tissue at the top)
_TEX = 192  # side of the nerve's canonical fascicle texture
_TEX_EXTENT = 1.08  # the texture covers u, v in [-extent, extent] (the nerve is the unit disc)


@dataclass(frozen=True)
class NerveParams:
    """The scripted nerve at one frame: centre ``(cx, cy)`` and semi-axes ``a`` (along the
    ellipse's own x axis, the major one) and ``b`` in pixels, ``angle`` in degrees, OpenCV's
    ``cv2.ellipse`` convention (image coordinates, y down: a positive angle turns the major axis
    clockwise on screen). The mask is the filled ellipse."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    @property
    def center(self) -> tuple[float, float]:
        return self.cx, self.cy

    @property
    def axes(self) -> tuple[float, float]:
        return self.a, self.b

    @property
    def flattening(self) -> float:
        """Major / minor axis."""
        return max(self.a, self.b) / min(self.a, self.b)

    @property
    def area(self) -> float:
        """pi a b, px^2."""
        return math.pi * self.a * self.b

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class _Anatomy:
    """Seeded constants of one phantom."""

    cx0: float
    top0: float  # y of the nerve's top under the ligament (before jitter)
    a0: float
    ratio0: float
    ratio1: float
    glide_amp: float
    tilt0: float
    tilt_amp: float
    jitter: tuple[tuple[float, float, float], ...]  # (axis 0=x/1=y, amplitude px, freq Hz) ...
    jitter_phase: tuple[float, ...]


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blur(a: np.ndarray, sx: float, sy: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(a, (0, 0), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_REFLECT)


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int], sx: float, sy: float) -> np.ndarray:
    """Gaussian noise blurred anisotropically, rescaled to unit standard deviation (float32)."""
    n = _blur(rng.standard_normal(shape).astype(np.float32), sx, sy)
    return (n - n.mean()) / (n.std() + 1e-6)


@register_source("synthetic")
class PhantomSource(GeneratedSource):
    """The synthetic carpal-tunnel phantom as a source (``synthetic`` or ``synthetic:SEED``).

    ``live`` (``realtime`` in :func:`~realtime.sources.open_source`): frames are released at ``fps``
    on the monotonic clock; a consumer slower than that gets the newest due frame and the skipped
    ones are counted in ``dropped_before``. Otherwise frames come as fast as they are rendered.
    Length: ``frames`` if given, else endless when live and one script period
    (:data:`SCRIPT_PERIOD_S`, 576 frames at 24 fps) otherwise.
    """

    bare_spec_ok = True
    claim_order = 20

    @classmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kind_options: Any) -> "PhantomSource":
        seed = options.seed
        if arg.strip():
            try:
                seed = int(arg)
            except ValueError:
                raise UserError(f"synthetic:SEED needs an integer seed, got {arg!r}") from None
        return cls(seed=seed or 0, fps=options.fps or DEFAULT_FPS, live=options.realtime, frames=options.frames,
                   spec=spec, options=options, **kind_options)

    def __init__(self, seed: int = 0, fps: float = DEFAULT_FPS, live: bool = False, frames: int | None = None, *,
                 label: bool = True, spec: str | None = None, options: SourceOptions | None = None) -> None:
        import cv2

        options = options or SourceOptions(realtime=live, fps=fps, seed=seed, frames=frames)
        super().__init__(spec or f"synthetic:{seed}", options, name=f"synthetic phantom (seed {seed})")
        if options.size is not None:
            log.warning("%s: the phantom is always %dx%d; the requested size is ignored", self.name, WIDTH, HEIGHT)
        if fps <= 0:
            raise UserError(f"fps must be positive, got {fps}")
        self.seed = int(seed)
        self.fps = float(fps)
        self.realtime = bool(live)
        self.length = frames if frames is not None else (None if live else int(round(SCRIPT_PERIOD_S * self.fps)))
        self.label = label
        rng = np.random.default_rng(self.seed)
        self._anat = self._draw_anatomy(rng)
        hp, wp = HEIGHT + 2 * _PAD, WIDTH + 2 * _PAD
        self._tissue = self._build_tissue(rng, wp, hp)
        self._speckle = self._build_speckle(rng, wp, hp)
        self._texture = self._build_fascicles(rng)
        y = np.arange(HEIGHT, dtype=np.float32)
        # depth attenuation: the envelope decays exponentially (linearly in log), plus the roll-off
        # of the deep field where only the noise floor is left
        self._atten = (-2.0 * y / HEIGHT - 1.6 * _smoothstep(330, 440, y)).astype(np.float32)[:, None]
        self._label_mask: np.ndarray | None = None
        if label:
            m = np.zeros((HEIGHT, WIDTH), np.uint8)
            cv2.putText(m, "SYN", (20, 392), cv2.FONT_HERSHEY_SIMPLEX, 0.55, 255, 2, cv2.LINE_AA)
            cv2.circle(m, (12, 10), 4, 255, 1, cv2.LINE_AA)
            ys, xs = np.nonzero(m)
            self._label_box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
            y0, y1, x0, x1 = self._label_box
            self._label_mask = m[y0:y1, x0:x1]

    # ------------------------------------------------------------------ the script

    def _draw_anatomy(self, rng: np.random.Generator) -> _Anatomy:
        jit = []
        for axis, amp in ((0, 1.6), (0, 0.9), (1, 1.0), (1, 0.5)):
            jit.append((axis, amp * rng.uniform(0.7, 1.2), rng.uniform(0.25, 1.3)))
        return _Anatomy(
            cx0=rng.uniform(255, 345), top0=rng.uniform(64, 80), a0=rng.uniform(34, 44),
            ratio0=rng.uniform(1.5, 2.0), ratio1=rng.uniform(3.2, 3.8), glide_amp=rng.uniform(25, 40),
            tilt0=rng.uniform(-7, 7), tilt_amp=rng.uniform(1.5, 4.0), jitter=tuple(jit),
            jitter_phase=tuple(rng.uniform(0, 2 * np.pi, len(jit))))

    def compression(self, index: int) -> float:
        """0 (released) .. 1 (fully compressed) at frame ``index``."""
        t = index / self.fps
        return 0.5 - 0.5 * math.cos(2 * math.pi * t / COMPRESSION_PERIOD_S)

    def jitter(self, index: int) -> tuple[int, int]:
        """Whole-image translation (dx, dy) in px at frame ``index`` (probe jitter)."""
        t = index / self.fps
        d = [0.0, 0.0]
        for (axis, amp, freq), ph in zip(self._anat.jitter, self._anat.jitter_phase):
            d[axis] += amp * math.sin(2 * math.pi * freq * t + ph)
        return int(round(d[0])), int(round(d[1]))

    def truth_params(self, index: int) -> NerveParams:
        """The nerve ellipse at frame ``index`` in image pixels, jitter included."""
        an = self._anat
        t = index / self.fps
        c = self.compression(index)
        area0 = math.pi * an.a0 * an.a0 / an.ratio0
        area = area0 * (1.0 - AREA_LOSS_AT_PEAK * c)
        ratio = an.ratio0 + (an.ratio1 - an.ratio0) * c
        a = math.sqrt(area / math.pi * ratio)
        b = math.sqrt(area / (math.pi * ratio))
        glide = math.sin(2 * math.pi * t / GLIDE_PERIOD_S)
        angle = an.tilt0 + an.tilt_amp * glide
        dx, dy = self.jitter(index)
        th = math.radians(angle)
        half_h = math.sqrt((a * math.sin(th)) ** 2 + (b * math.cos(th)) ** 2)  # vertical half-extent
        return NerveParams(an.cx0 + an.glide_amp * glide + dx, an.top0 + half_h + dy, a, b, angle)

    # ------------------------------------------------------------------ static layers

    def _ligament_y(self, x: np.ndarray | float) -> np.ndarray | float:
        """Lower edge of the transverse carpal ligament (anatomy coordinates, before padding)."""
        an = self._anat
        return an.top0 - 7.0 + 0.0009 * (np.asarray(x, dtype=np.float32) - an.cx0) ** 2

    def _build_tissue(self, rng: np.random.Generator, wp: int, hp: int) -> np.ndarray:
        """Echogenicity (log envelope) of everything that does not move, on the padded canvas."""
        import cv2

        an = self._anat
        yy, xx = np.mgrid[0:hp, 0:wp].astype(np.float32)
        y = yy - _PAD  # anatomy coordinates
        x = xx - _PAD
        # fibrous soft tissue: low-frequency echogenicity variation plus laterally streaked structure
        L = 0.35 * _unit_noise(rng, (hp, wp), 30, 18) + 0.30 * _unit_noise(rng, (hp, wp), 9, 1.3)
        L += 0.15 * _unit_noise(rng, (hp, wp), 3.5, 0.8)
        # skin: the probe's surface, the bright entry echo, a darker subcutis with fascia lines
        L += 3.0 * _smoothstep(3.5, 1.0, y) + 1.4 * np.exp(-((y - 6.0) / 2.2) ** 2)
        L -= 0.35 * _smoothstep(10, 16, y) * _smoothstep(45, 35, y)
        for _ in range(int(rng.integers(3, 6))):
            y0 = rng.uniform(16, an.top0 - 22)
            wav = y0 + 3.0 * np.sin(x / rng.uniform(40, 90) + rng.uniform(0, 6)) + rng.uniform(-0.01, 0.01) * (x - 300)
            strength = 0.9 * _smoothstep(0.0, 1.0, _unit_noise(rng, (1, wp), 25, 1)[0] + 0.8)[None, :]
            L += strength * np.exp(-((y - wav) / rng.uniform(0.8, 1.6)) ** 2)
        # short bright fibrous streaks (septa, fascial planes), mostly horizontal
        streaks = np.zeros((hp, wp), np.float32)
        for _ in range(int(rng.integers(45, 65))):
            sy0 = rng.uniform(14, 300) + _PAD
            sx0 = rng.uniform(0, wp)
            length, tilt = rng.uniform(15, 80), rng.uniform(-0.12, 0.12)
            p0 = (int(sx0 - length / 2), int(sy0 - tilt * length / 2))
            p1 = (int(sx0 + length / 2), int(sy0 + tilt * length / 2))
            cv2.line(streaks, p0, p1, float(rng.uniform(0.4, 1.0)), 1, cv2.LINE_AA)
        L += 1.1 * _blur(streaks, 2.5, 0.6) * 2.0
        # thenar / hypothenar muscle on the sides: slightly darker, with oblique striation
        for side in (-1, 1):
            cxm = an.cx0 + side * rng.uniform(190, 240)
            mu = np.exp(-(((x - cxm) / 70.0) ** 2 + ((y - 110) / 55.0) ** 2))
            strip = np.sin((x * 0.35 + side * y * 0.9) / 2.2 + rng.uniform(0, 6)).astype(np.float32)
            L += mu * (-0.45 + 0.25 * strip)

        # flexor tendons below and beside the nerve (bright ovals with fibrillar texture)
        lig = self._ligament_y(x)
        nerve_bottom = an.top0 + 2 * an.a0 / an.ratio0 + 6
        fib = 0.7 * _unit_noise(rng, (hp, wp), 1.0, 0.6) + 0.5 * _unit_noise(rng, (hp, wp), 4.0, 0.7)
        tendon_in = np.zeros((hp, wp), np.float32)
        tendon_rim = np.zeros((hp, wp), np.float32)
        tendons = []
        span = an.glide_amp + an.a0 * math.sqrt(an.ratio1 / an.ratio0) + 8  # where the nerve may go
        beside_x = an.cx0 + rng.choice([-1, 1]) * (span + 38)
        tendons.append((beside_x, nerve_bottom - 20, rng.uniform(26, 32), rng.uniform(18, 22)))
        row_y = nerve_bottom + rng.uniform(20, 28)
        for k, dxk in enumerate(np.linspace(-120, 120, 4) + rng.uniform(-10, 10, 4)):
            tendons.append((an.cx0 + dxk, row_y + rng.uniform(-5, 8) + (k % 2) * 4, rng.uniform(26, 34),
                            rng.uniform(17, 23)))
        for dxk in (-65, 0, 60):
            tendons.append((an.cx0 + dxk + rng.uniform(-10, 10), row_y + rng.uniform(44, 54), rng.uniform(26, 34),
                            rng.uniform(16, 21)))
        for tcx, tcy, ta, tb in tendons:
            th = math.radians(rng.uniform(-15, 15))
            u = ((x - tcx) * math.cos(th) + (y - tcy) * math.sin(th)) / ta
            v = (-(x - tcx) * math.sin(th) + (y - tcy) * math.cos(th)) / tb
            r = np.sqrt(u * u + v * v)
            tendon_in = np.maximum(tendon_in, _smoothstep(1.05, 0.92, r))
            tendon_rim = np.maximum(tendon_rim, np.exp(-((r - 1.0) / 0.07) ** 2))
        fib = np.maximum(fib, -0.6)  # fibrils: bright stipples on a moderately bright ground
        L = L * (1 - tendon_in) + tendon_in * (0.5 + 0.55 * fib) + 0.35 * tendon_rim
        self._tendons = tendons
        # loose connective tissue of the tunnel a little darker
        tunnel = _smoothstep(0, 12, y - lig) * _smoothstep(row_y + 90, row_y + 60, y) * \
            _smoothstep(170, 140, np.abs(x - an.cx0))
        L -= 0.25 * tunnel * (1 - tendon_in)

        # transverse carpal ligament: a bright, fibrillar arc above the tunnel, attached to the bones
        thick = rng.uniform(6, 9)
        in_lig = _smoothstep(thick + 1.5, thick - 1.0, lig - y) * _smoothstep(-1.5, 1.0, lig - y)
        in_lig *= _smoothstep(185, 150, np.abs(x - an.cx0))
        L = L * (1 - 0.7 * in_lig) + in_lig * (1.3 + 0.4 * _unit_noise(rng, (hp, wp), 6, 0.7))

        # carpal bones: a bright surface echo and an anechoic shadow below it
        bones = [  # (cx, top y, half width, height of the dome): sides high, floor deep
            (an.cx0 - rng.uniform(235, 265), rng.uniform(150, 175), rng.uniform(50, 70), rng.uniform(35, 50)),
            (an.cx0 + rng.uniform(235, 265), rng.uniform(140, 170), rng.uniform(50, 70), rng.uniform(35, 50)),
            (an.cx0 - rng.uniform(60, 110), rng.uniform(295, 315), rng.uniform(60, 85), rng.uniform(25, 40)),
            (an.cx0 + rng.uniform(60, 110), rng.uniform(290, 320), rng.uniform(60, 85), rng.uniform(25, 40)),
        ]
        shadow = np.zeros((hp, wp), np.float32)
        surface = np.zeros((hp, wp), np.float32)
        for bcx, btop, bw, bh in bones:
            q = np.clip(np.abs(x - bcx) / bw, 0.0, 1.0)
            ys = btop + bh * (1.0 - np.sqrt(1.0 - q * q))  # the top of an elliptic dome
            slope = q / np.sqrt(1.0 - np.minimum(q * q, 0.999)) * bh / bw
            facing = 1.0 / (1.0 + 0.8 * slope * slope)  # a specular echo fades where the surface tilts
            inside_x = _smoothstep(1.02, 0.85, q)
            d = y - ys
            surface = np.maximum(surface, inside_x * facing * np.exp(-((d - 1.5) / 2.0) ** 2))
            shadow = np.maximum(shadow, inside_x * _smoothstep(2.0, 14.0, d))
        shadow = _blur(shadow, 9.0, 2.0)
        L = L * (1 - shadow) + shadow * (-2.0 + 0.3 * _unit_noise(rng, (hp, wp), 8, 3))
        L += 2.4 * surface * (1 + 0.25 * _unit_noise(rng, (hp, wp), 10, 2))
        self._bones = bones
        return np.ascontiguousarray(L.astype(np.float32))

    def _build_speckle(self, rng: np.random.Generator, wp: int, hp: int) -> np.ndarray:
        """A bank of log-Rayleigh speckle fields, zero mean, laterally elongated grains."""
        bank = np.empty((_SPECKLE_BANK, hp, wp), np.float32)
        for k in range(_SPECKLE_BANK):
            re_ = _blur(rng.standard_normal((hp, wp)).astype(np.float32), 2.8, 1.1)
            im_ = _blur(rng.standard_normal((hp, wp)).astype(np.float32), 2.8, 1.1)
            env = np.sqrt(re_ * re_ + im_ * im_) + 1e-3
            lg = np.log(env)
            lg = np.maximum(lg, np.median(lg) - 1.4)  # clip the deep nulls (dark "cracks")
            lg = _blur(lg, 0.8, 0.5)
            bank[k] = _SPECKLE_CONTRAST * (lg - lg.mean())
        return bank

    def _build_fascicles(self, rng: np.random.Generator) -> np.ndarray:
        """The nerve's interior in its own unit-disc coordinates (channel 0: dark fascicles in a
        brighter matrix) and the modulation of its rim's brightness (channel 1)."""
        n = _TEX
        c = np.linspace(-_TEX_EXTENT, _TEX_EXTENT, n, dtype=np.float32)
        v, u = np.meshgrid(c, c, indexing="ij")
        tex = np.full((n, n), -0.75, np.float32)
        spacing = 0.34
        dark = np.zeros((n, n), np.float32)
        rows = np.arange(-1.0, 1.0 + 1e-6, spacing * 0.866)
        for j, vy in enumerate(rows):
            for ux in np.arange(-1.0 + (j % 2) * spacing / 2, 1.0 + 1e-6, spacing):
                pu, pv = ux + rng.uniform(-0.06, 0.06), vy + rng.uniform(-0.06, 0.06)
                if pu * pu + pv * pv > 0.80 ** 2:
                    continue
                rad = rng.uniform(0.09, 0.14)
                ru, rv = rad * rng.uniform(0.9, 1.25), rad
                d = ((u - pu) / ru) ** 2 + ((v - pv) / rv) ** 2
                dark = np.maximum(dark, _smoothstep(1.2, 0.6, d))
        tex -= 0.85 * dark
        tex += 0.12 * _unit_noise(rng, (n, n), 2.0, 2.0)
        rim_mod = np.clip(1.0 + 0.35 * _unit_noise(rng, (n, n), 6.0, 6.0), 0.3, 1.8)  # uneven epineurium
        return np.ascontiguousarray(np.dstack([_blur(tex, 1.2, 1.2), rim_mod]).astype(np.float32))

    # ------------------------------------------------------------------ rendering

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index`` as ``(image, truth)``: grey uint8 ``[468, 606]`` and mask uint8 0/255."""
        import cv2

        if index < 0:
            raise ValueError("index must be >= 0")
        p = self.truth_params(index)
        dx, dy = self.jitter(index)
        r0, c0 = _PAD - dy, _PAD - dx  # content moves by (dx, dy)
        L = self._tissue[r0:r0 + HEIGHT, c0:c0 + WIDTH].copy()
        truth = np.zeros((HEIGHT, WIDTH), np.uint8)

        # the nerve, in its bounding box (margin for the rim)
        th = math.radians(p.angle)
        cos_t, sin_t = math.cos(th), math.sin(th)
        ex = math.sqrt((p.a * cos_t) ** 2 + (p.b * sin_t) ** 2) + 6
        ey = math.sqrt((p.a * sin_t) ** 2 + (p.b * cos_t) ** 2) + 6
        x0, x1 = max(int(p.cx - ex), 0), min(int(math.ceil(p.cx + ex)) + 1, WIDTH)
        y0, y1 = max(int(p.cy - ey), 0), min(int(math.ceil(p.cy + ey)) + 1, HEIGHT)
        if x1 > x0 and y1 > y0:
            ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(p.cy)
            xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(p.cx)
            # the major axis points along (cos, sin) in image coordinates, as cv2.ellipse draws it
            xr = xs * cos_t + ys * sin_t
            yr = ys * cos_t - xs * sin_t
            u = xr / p.a
            v = yr / p.b
            r2 = u * u + v * v
            truth[y0:y1, x0:x1] = np.where(r2 <= 1.0, 255, 0).astype(np.uint8)
            r = np.sqrt(r2) + 1e-6
            grad = np.sqrt((u / p.a) ** 2 + (v / p.b) ** 2) / r + 1e-6
            dist = (r - 1.0) / grad  # signed distance to the boundary, px (approximately)
            scale = (_TEX - 1) / (2 * _TEX_EXTENT)
            tex = cv2.remap(self._texture, ((u + _TEX_EXTENT) * scale).astype(np.float32),
                            ((v + _TEX_EXTENT) * scale).astype(np.float32), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
            inner, rim_mod = tex[:, :, 0], tex[:, :, 1]
            w_in = np.clip(0.5 - dist / 1.2, 0.0, 1.0)
            facing = (v / r) ** 2  # 1 at top and bottom, where the beam meets the epineurium head-on
            rim = (1.0 + 1.0 * facing) * rim_mod * np.exp(-((dist - 0.5) / 1.8) ** 2)
            box = L[y0:y1, x0:x1]
            box *= 1.0 - w_in
            box += inner * w_in + rim

        # speckle attached to the tissue, cross-faded through the bank
        k, w = divmod(index, _SPECKLE_HOLD)
        w = w / _SPECKLE_HOLD
        s0 = self._speckle[k % _SPECKLE_BANK, r0:r0 + HEIGHT, c0:c0 + WIDTH]
        s1 = self._speckle[(k + 1) % _SPECKLE_BANK, r0:r0 + HEIGHT, c0:c0 + WIDTH]
        norm = 1.0 / math.sqrt((1 - w) ** 2 + w ** 2)
        cv2.scaleAdd(s0, (1 - w) * norm, L, dst=L)
        cv2.scaleAdd(s1, w * norm, L, dst=L)
        L += self._atten
        image = np.empty((HEIGHT, WIDTH), np.uint8)
        np.clip(L * _GAIN + _OFFSET, 0, 255, out=L)
        image[...] = L
        if self._label_mask is not None:
            ly0, ly1, lx0, lx1 = self._label_box
            patch = image[ly0:ly1, lx0:lx1]
            np.maximum(patch, (self._label_mask.astype(np.uint16) * 215 // 255).astype(np.uint8), out=patch)
        return image, truth

    # ------------------------------------------------------------------ Source

    def _describe_extra(self) -> dict[str, Any]:
        an = self._anat
        return {
            "seed": self.seed,
            "frames": self.length,
            "native_size": [WIDTH, HEIGHT],
            "script": {
                "glide_amplitude_px": round(an.glide_amp, 2), "glide_period_s": GLIDE_PERIOD_S,
                "compression_period_s": COMPRESSION_PERIOD_S, "flattening_from": round(an.ratio0, 3),
                "flattening_to": round(an.ratio1, 3), "area_loss_at_peak": AREA_LOSS_AT_PEAK,
                "area0_px": round(math.pi * an.a0 * an.a0 / an.ratio0, 1),
            },
        }
