"""Frame sources: a video device, a video file, a synthetic wrist phantom, an animated still.

Every source yields :class:`~realtime.frame.Frame` objects and is chosen by a spec string::

    synthetic            the procedural carpal-tunnel phantom (seed 0, or ``seed=``)
    synthetic:SEED       the phantom with another anatomy and speckle
    animate:IMG[:MASK]   one annotated frame animated with known truth (MASK defaults to
                         ../Masks/<stem>.* next to IMG, the dataset layout)
    0, /dev/video0       a capture device (OpenCV, V4L2 on Linux)
    igtl://HOST[:PORT][/DEVICE]
                         IMAGE messages from an OpenIGTLink server (PlusServer, Slicer); port 18944
    PATH.dcm, DICOM dir  DICOM ultrasound images / cine loops (pydicom), a file or a folder of them
    PATH                 a video file PyAV opens (.mp4, .avi, .mov, ...)
    KIND:ARG             any registered kind explicitly (``device:1``, ``file:synthetic.mp4``)

Use :func:`open_source`; the kinds live in :data:`SOURCE_KINDS` (filled by
:func:`register_source`), so adding a kind is one new module, not a branch here. Failure
semantics are documented in :mod:`realtime.sources.common`: a stream that dies mid-way ends the
iteration cleanly with ``source.failed`` / ``source.error`` set, and
:meth:`Source.raise_if_failed` turns that into :class:`SourceLost` (exit code 3).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

from realtime.sources.common import (
    AUTO_ROI,
    EXIT_SOURCE_LOST,
    SOURCE_KINDS,
    RoiError,
    Source,
    SourceError,
    SourceLost,
    SourceOptions,
    parse_roi,
    register_source,
    source_class,
)

# Importing the kinds registers them (they import their heavy dependencies lazily).
from realtime.sources import device as _device  # noqa: F401,E402
from realtime.sources import file as _file  # noqa: F401,E402
from realtime.sources import phantom as _phantom  # noqa: F401,E402
from realtime.sources import animate as _animate  # noqa: F401,E402
from realtime.sources import igtl as _igtl  # noqa: F401,E402
from realtime.sources import dicom as _dicom  # noqa: F401,E402
from train.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_ROI", "EXIT_SOURCE_LOST", "SOURCE_KINDS", "RoiError", "Source", "SourceError", "SourceLost", "SourceOptions",
    "open_source", "parse_roi", "parse_spec", "register_source", "source_class",
]


def parse_spec(spec: str | int) -> tuple[str, str]:
    """Split a source spec into ``(kind, argument)``.

    ``KIND`` or ``KIND:ARG`` for a registered kind wins; otherwise each kind's ``claims(spec)`` is
    asked in ``claim_order`` (a device claims an integer or ``/dev/video*``; a file claims the
    rest).
    """
    text = str(spec).strip()
    if not text:
        raise UserError("empty source spec; give a file, a device (0 or /dev/video0), synthetic[:SEED] "
                        "or animate:IMAGE[:MASK]")
    head, sep, rest = text.partition(":")
    if head in SOURCE_KINDS and (sep or SOURCE_KINDS[head].bare_spec_ok):
        return head, rest
    if rest.startswith("//") and head.isidentifier():  # a URL of a kind no source reads (plus://, rtsp://, ...)
        raise UserError(f"{text!r}: mn-seg reads no {head}:// source. A PlusServer or 3D Slicer streams over "
                        "OpenIGTLink: igtl://HOST[:PORT][/DEVICE_NAME] (port 18944). Network video streams (rtsp://, "
                        "http://) are not read: capture the scanner's video output with a grabber (/dev/video0) or "
                        "give a recorded file")
    for cls in sorted(SOURCE_KINDS.values(), key=lambda c: c.claim_order):
        if cls.claims(text):
            return cls.kind, text
    raise UserError(f"cannot tell what kind of source {text!r} is; valid kinds: {', '.join(sorted(SOURCE_KINDS))}")


def open_source(
    spec: str | int,
    *,
    realtime: bool,
    roi: str | Sequence[int] | None = None,
    fps: float | None = None,
    size: str | Sequence[int] | None = None,
    reconnect_s: float = 5.0,
    seed: int | None = None,
    frames: int | None = None,
    **kind_options: Any,
) -> Source:
    """Open the source named by ``spec`` (see the module docstring).

    ``realtime``: live semantics (newest frame only, native pace) rather than every frame as fast as
    possible. ``roi``: ``(x, y, w, h)`` or ``"x,y,w,h"``, the scanner's image area, applied the same
    way by every source; ``"auto"`` finds it in the first frame (a grab of the whole scanner screen).
    ``fps`` / ``size``: requested from a device; ``fps`` also sets the rate of
    the generated sources. ``reconnect_s``: how long a device may stop delivering before the stream
    ends as failed. ``seed`` / ``frames``: generated sources' seed, and a frame limit for any
    source. ``kind_options`` go to the kind's constructor (e.g. ``capture_factory`` for a device).

    Raises :class:`~train.errors.UserError` (a subclass of it) naming the input for anything that
    cannot be opened.
    """
    if fps is not None and (not math.isfinite(float(fps)) or float(fps) <= 0):
        raise UserError(f"fps must be a positive number, got {fps!r}")
    if frames is not None and int(frames) < 0:
        raise UserError(f"frames must be >= 0, got {frames!r}")
    if reconnect_s < 0:
        raise UserError(f"reconnect_s must be >= 0, got {reconnect_s!r}")
    if size is not None:
        from train.preprocess import check_size, parse_size

        size = parse_size(size) if isinstance(size, str) else check_size(size)
    options = SourceOptions(
        realtime=bool(realtime), roi=parse_roi(roi), fps=None if fps is None else float(fps),
        size=size, reconnect_s=float(reconnect_s), seed=None if seed is None else int(seed),
        frames=None if frames is None else int(frames))
    kind, arg = parse_spec(spec)
    cls = source_class(kind)
    source = cls.from_spec(arg, spec=str(spec), options=options, **kind_options)
    log.info("opened %s source %s (fps %s%s)", kind, source.name,
             "?" if source.fps is None else f"{source.fps:g}", f", roi {source.roi}" if source.roi else "")
    return source
