"""DICOM ultrasound images and cine loops (``PATH.dcm``, a DICOM file without a suffix, a folder of
them, or ``dicom:PATH``), read with pydicom (compressed pixel data through its decoders: RLE
natively, JPEG baseline through pylibjpeg's libjpeg plugin).

What is read from each object:

* **Frames**: a single-frame object is one frame, a multi-frame object (a cine loop) its
  ``NumberOfFrames`` frames; a folder is its DICOM files in order (``InstanceNumber``, then the file
  name), frames concatenated (a series of single-frame images is one stream). Pixels are delivered
  as grey: RGB and YBR (converted to RGB by pydicom) and palette colour become grey with the BT.601
  weights; MONOCHROME1 is inverted; 8-bit stays uint8, more bits uint16.
* **Pixel spacing and image area**: from ``SequenceOfUltrasoundRegions``, the region whose
  ``RegionSpatialFormat`` is 1 (2-D tissue or flow; the largest if there are several): its
  ``PhysicalDeltaX`` / ``PhysicalDeltaY`` (cm per pixel when ``PhysicalUnitsX/YDirection`` is 3)
  become :attr:`Source.calibration` in mm, and ``RegionLocationMinX0 .. MaxY1`` (inclusive) the ROI
  (the scanner's image area, without its UI), unless ``--roi`` is given. Without such a region
  the spacing comes from ``PixelSpacing`` (mm, row then column), and without either the run is
  uncalibrated (the log and every output say so).
* **Frame times**: ``FrameTimeVector`` (ms increments) or ``FrameTime`` (ms), else ``CineRate`` /
  ``RecommendedDisplayFrameRate``, else the ``--fps`` given (24 by default): ``Frame.pts`` is
  the frame's offset from the first frame. With an acquisition time (``AcquisitionDateTime``,
  ``AcquisitionDate`` + ``AcquisitionTime``, or ``ContentDate`` + ``ContentTime``; its time zone from
  the value or ``TimezoneOffsetFromUTC``, else taken as UTC) ``Frame.t_source`` is that time plus
  the frame's offset, in seconds since 1970.

What cannot be read is refused when the source is opened, with the file and the reason (exit code
2): not a DICOM file, no pixel data, a 3-D volume (Enhanced US Volume, or frames that are slices),
a transfer syntax no installed decoder handles (e.g. MPEG-4 / H.264 video in DICOM). A frame that
fails to decode part-way ends the stream cleanly with ``source.failed`` set (exit code 3), the
frames before it kept, as with a truncated video file.

Offline (mn-segment) every frame is delivered as fast as the consumer takes it; live (mn-live) the
frames are released at their frame times and a frame that is already late when the next is due
is skipped and counted in ``Frame.dropped_before``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from realtime.calibration import Calibration
from realtime.frame import Frame
from realtime.sources.common import Pacer, Source, SourceError, SourceOptions, register_source

log = logging.getLogger(__name__)

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
"""File names taken as DICOM without looking inside (other files need the ``DICM`` preamble)."""
DEFAULT_FPS = 24.0
ENHANCED_US_VOLUME = "1.2.840.10008.5.1.4.1.1.6.2"
REGION_2D = 1  # RegionSpatialFormat: 2-D (tissue or flow)
UNITS_CM = 3  # PhysicalUnitsX/YDirection: cm
SPACING_TOL = 1e-3  # relative: two files of one stream must agree on the spacing this closely


def is_dicom_file(path: Path) -> bool:
    """A file named ``*.dcm`` (``.dicom``, ``.dic``) or one with the DICOM preamble (``DICM`` at byte 128)."""
    if not path.is_file():
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (see :func:`is_dicom_file`), by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_dicom_file(p))


def segment_inputs(folder: Path) -> list[Path]:
    """What ``mn-segment FOLDER`` takes from the DICOM files of a folder: the folder itself (one
    stream) when they are all single-frame images, else each file (each a cine loop of its own);
    ``[]`` when the folder holds no DICOM file."""
    files = dicom_files(folder)
    if not files:
        return []
    if all(_frames_declared(p) <= 1 for p in files):
        return [folder]
    return files


def _frames_declared(path: Path) -> int:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
        return int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:  # unreadable: counted as a loop of its own, refused with its reason when opened
        return 2


# --------------------------------------------------------------------------- what a header says


@dataclass
class DicomPart:
    """One DICOM object of a stream: its file, frames, geometry, calibration and times."""

    path: Path
    frames: int
    rows: int
    columns: int
    transfer_syntax: str
    photometric: str
    bits_stored: int
    instance: int | None
    region: tuple[int, int, int, int] | None = None  # x, y, w, h of the 2-D ultrasound region
    spacing: tuple[float, float] | None = None  # mm per column, mm per row
    spacing_from: str | None = None
    offsets_s: list[float] = field(default_factory=list)  # each frame's time from the first frame
    fps: float | None = None
    times_from: str | None = None
    start_epoch_s: float | None = None  # acquisition time, s since 1970
    start_text: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "frames": self.frames, "size": [self.columns, self.rows],
                "transfer_syntax": self.transfer_syntax, "photometric": self.photometric,
                "region": None if self.region is None else list(self.region),
                "spacing_mm": None if self.spacing is None else list(self.spacing), "spacing_from": self.spacing_from,
                "fps": self.fps, "frame_times_from": self.times_from, "acquisition_time": self.start_text,
                "notes": self.notes}


def read_part(path: Path, fps_default: float | None = None) -> DicomPart:
    """Read ``path``'s header (not its pixels) into a :class:`DicomPart`.

    Raises:
        SourceError: naming the file and the reason: not DICOM, no pixel data, a 3-D volume, a
            transfer syntax that cannot be decoded here.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise SourceError(f"{path} is not a DICOM file ({exc}); give a DICOM image or cine loop, or a folder of "
                          "them") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise SourceError(f"cannot read the DICOM file {path}: {type(exc).__name__}: {exc}") from None
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    if "Rows" not in ds or "Columns" not in ds:
        raise SourceError(f"{path} holds no image (no Rows/Columns: a report or a structured document?); give a DICOM "
                          "ultrasound image or cine loop")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    sop = str(ds.get("SOPClassUID", ""))
    if sop == ENHANCED_US_VOLUME or (frames > 1 and ("SpacingBetweenSlices" in ds or "VOLUME" in
                                                     [str(v).upper() for v in ds.get("ImageType", [])])):
        raise SourceError(f"{path} is a 3-D volume ({frames} slices"
                          f"{', Enhanced US Volume' if sop == ENHANCED_US_VOLUME else ''}): "
                          "mn-seg measures 2-D B-mode images; export the 2-D cine loop (Ultrasound Multi-frame Image) "
                          "from the scanner instead")
    _check_decodable(path, ts)
    part = DicomPart(path=path, frames=frames, rows=int(ds.Rows), columns=int(ds.Columns), transfer_syntax=ts,
                     photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
                     bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
                     instance=_int_or_none(ds.get("InstanceNumber")))
    _read_region(ds, part)
    _read_times(ds, part, fps_default)
    return part


def _check_decodable(path: Path, ts: str) -> None:
    import pydicom
    from pydicom.uid import UID

    uid = UID(ts)
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError:
        raise SourceError(f"{path}: its pixel data is in the transfer syntax {uid.name} ({uid}), which no DICOM "
                          "decoder here reads; export it uncompressed, RLE or JPEG baseline (or convert it, e.g. "
                          "gdcmconv --raw IN OUT)") from None
    if not decoder.is_available:
        missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in (decoder.missing_dependencies or {}).items()) \
            if isinstance(getattr(decoder, "missing_dependencies", None), dict) else \
            ", ".join(getattr(decoder, "missing_dependencies", []) or [])
        raise SourceError(f"{path}: its pixel data is in the transfer syntax {uid.name} ({uid}) and no decoder for it "
                          f"is installed ({missing or 'none available'}); install one, e.g. pip install pylibjpeg "
                          "pylibjpeg-libjpeg, or export the file uncompressed")


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _read_region(ds: Any, part: DicomPart) -> None:
    """The 2-D ultrasound region's ROI and spacing, else ``PixelSpacing``."""
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", []) or []:
        if _int_or_none(item.get("RegionSpatialFormat")) != REGION_2D:
            continue
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(part.columns - 1, x1), min(part.rows - 1, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        spacing = None
        if (_int_or_none(item.get("PhysicalUnitsXDirection")) == UNITS_CM
                and _int_or_none(item.get("PhysicalUnitsYDirection")) == UNITS_CM):
            try:
                dx, dy = abs(float(item.PhysicalDeltaX)) * 10.0, abs(float(item.PhysicalDeltaY)) * 10.0
            except (AttributeError, TypeError, ValueError):
                dx = dy = float("nan")
            if math.isfinite(dx) and math.isfinite(dy) and dx > 0 and dy > 0:
                spacing = (dx, dy)
        regions.append(((x0, y0, x1 - x0 + 1, y1 - y0 + 1), spacing))
    if regions:
        regions.sort(key=lambda r: (r[1] is not None, r[0][2] * r[0][3]), reverse=True)
        part.region, part.spacing = regions[0]
        if part.spacing is not None:
            part.spacing_from = "DICOM SequenceOfUltrasoundRegions (2-D region, PhysicalDeltaX/Y)"
        if len(regions) > 1:
            part.notes.append(f"{len(regions)} 2-D ultrasound regions: the largest calibrated one is used "
                              f"({', '.join(str(list(r[0])) for r in regions)})")
    if part.spacing is None and "PixelSpacing" in ds:
        try:
            row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        except (TypeError, ValueError):
            row_mm = col_mm = float("nan")
        if math.isfinite(row_mm) and math.isfinite(col_mm) and row_mm > 0 and col_mm > 0:
            part.spacing, part.spacing_from = (col_mm, row_mm), "DICOM PixelSpacing"


def _read_times(ds: Any, part: DicomPart, fps_default: float | None) -> None:
    n = part.frames
    ftv = ds.get("FrameTimeVector")
    ft = ds.get("FrameTime")
    offsets: list[float] | None = None
    if ftv is not None and n > 1:
        values = [float(v) for v in (ftv if hasattr(ftv, "__iter__") and not isinstance(ftv, str) else [ftv])]
        if len(values) == n and all(math.isfinite(v) and v >= 0 for v in values):
            cum = np.cumsum(values) / 1000.0
            offsets = [float(c - cum[0]) for c in cum]
            part.times_from = "FrameTimeVector"
            if offsets[-1] > 0:
                part.fps = (n - 1) / offsets[-1]
        else:
            part.notes.append(f"FrameTimeVector has {len(values)} values for {n} frames: ignored")
    if offsets is None and ft is not None:
        try:
            period = float(ft) / 1000.0
        except (TypeError, ValueError):
            period = 0.0
        if period > 0:
            part.fps, part.times_from = 1.0 / period, "FrameTime"
    if offsets is None and part.fps is None:
        for tag in ("CineRate", "RecommendedDisplayFrameRate"):
            rate = ds.get(tag)
            try:
                rate = float(rate) if rate is not None else 0.0
            except (TypeError, ValueError):
                rate = 0.0
            if rate > 0:
                part.fps, part.times_from = rate, tag
                break
    if offsets is None:
        if part.fps is None:
            part.fps = fps_default or DEFAULT_FPS
            part.times_from = f"none in the file: {part.fps:g} frames/s assumed"
        offsets = [i / part.fps for i in range(n)]
    part.offsets_s = offsets
    part.start_epoch_s, part.start_text = _acquisition_time(ds)


def _acquisition_time(ds: Any) -> tuple[float | None, str | None]:
    """The object's acquisition (or content) time as s since 1970, and how it was read."""
    from pydicom.valuerep import DA, DT, TM

    text = None
    try:
        if ds.get("AcquisitionDateTime"):
            text = str(ds.AcquisitionDateTime)
            when = DT(text)
        else:
            for date_tag, time_tag in (("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime")):
                if ds.get(date_tag) and ds.get(time_tag):
                    text = f"{ds.get(date_tag)} {ds.get(time_tag)}"
                    day, clock = DA(str(ds.get(date_tag))), TM(str(ds.get(time_tag)))
                    when = dt.datetime.combine(day, clock)
                    break
            else:
                return None, None
    except (ValueError, TypeError) as exc:
        log.debug("acquisition time %r not read: %s", text, exc)
        return None, None
    if when.tzinfo is None:
        offset = str(ds.get("TimezoneOffsetFromUTC", "") or "")
        tz = _tz(offset)
        when = dt.datetime(when.year, when.month, when.day, when.hour, when.minute, when.second, when.microsecond,
                           tzinfo=tz or dt.timezone.utc)
        text = f"{text} ({'UTC' + offset if tz else 'no time zone given: taken as UTC'})"
    return when.timestamp(), text


def _tz(offset: str) -> dt.timezone | None:
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        minutes = int(offset[1:3]) * 60 + int(offset[3:])
        return dt.timezone(dt.timedelta(minutes=minutes if offset[0] == "+" else -minutes))
    return None


# --------------------------------------------------------------------------- pixels


def to_grey(pixels: np.ndarray, part: DicomPart, ds: Any = None) -> np.ndarray:
    """A decoded frame (as pydicom gives it: RGB for colour) -> grey uint8, or uint16 for more than 8 bits."""
    import cv2

    photometric = part.photometric.upper()
    if photometric == "PALETTE COLOR" and ds is not None and pixels.ndim == 2:
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        rgb = pixels[:, :, :3]
        if rgb.dtype == np.uint8:
            grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        else:
            grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif pixels.ndim == 3 and pixels.shape[2] == 1:
        grey = pixels[:, :, 0]
    else:
        grey = pixels
    if grey.dtype not in (np.uint8, np.uint16):  # signed, 32-bit or float pixels: clipped to the stored range
        eight = part.bits_stored <= 8
        grey = np.clip(np.rint(grey.astype(np.float64)), 0, 255 if eight else 65535).astype(
            np.uint8 if eight else np.uint16)
    if photometric == "MONOCHROME1":  # 0 is white
        top = (1 << min(part.bits_stored, grey.dtype.itemsize * 8)) - 1
        grey = (top - np.minimum(grey, top)).astype(grey.dtype)
    return np.ascontiguousarray(grey)


def _decoding_plugin(ts: str) -> str:
    """pylibjpeg for the JPEG transfer syntaxes when it is installed (pydicom's choice otherwise)."""
    import pydicom
    from pydicom.uid import UID

    uid = UID(ts)
    if uid.is_compressed and "JPEG" in uid.name.upper() and "2000" not in uid.name:
        try:
            if "pylibjpeg" in pydicom.pixels.get_decoder(uid).available_plugins:
                return "pylibjpeg"
        except NotImplementedError:
            pass
    return ""


# --------------------------------------------------------------------------- the source


@register_source("dicom")
class DicomSource(Source):
    """Frames of DICOM ultrasound objects; see the module docstring."""

    claim_order = 80  # before the video file fallback

    @classmethod
    def claims(cls, spec: str) -> bool:
        path = Path(spec).expanduser()
        if path.suffix.lower() in DICOM_SUFFIXES:
            return True
        try:
            if path.is_dir():
                return bool(dicom_files(path))
            return is_dicom_file(path)
        except OSError:
            return False

    @classmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kind_options: Any) -> "DicomSource":
        return cls(arg, spec=spec, options=options, **kind_options)

    def __init__(self, path: str | Path, *, spec: str | None = None, options: SourceOptions = SourceOptions()) -> None:
        import pydicom  # noqa: F401 - fails here, with the source named, if the dependency is missing

        self.path = Path(path).expanduser()
        super().__init__(spec or str(path), options, name=str(self.path))
        if not self.path.exists():
            raise SourceError(f"DICOM input {self.path} does not exist")
        if self.path.is_dir():
            files = dicom_files(self.path)
            if not files:
                raise SourceError(f"folder {self.path} holds no DICOM file (*.dcm, or files with the DICM preamble)")
        else:
            files = [self.path]
        if options.size is not None:
            log.warning("%s: a requested size applies to capture devices only; the file's own size is used", self.name)
        parts = [read_part(p, options.fps) for p in files]
        parts.sort(key=lambda p: (p.instance is None, p.instance or 0, p.path.name))
        self.parts = parts
        self._check_consistent()
        first = parts[0]
        self.frames_declared = sum(p.frames for p in parts)
        self.fps = first.fps
        self.region = first.region
        if first.spacing is not None:
            self.calibration = Calibration(first.spacing[0], first.spacing[1],
                                           f"{first.spacing_from} of {first.path.name}")
            log.info("%s: pixel spacing %s", self.name, self.calibration.text())
        else:
            log.warning("%s: no pixel spacing in the file (no 2-D ultrasound region with PhysicalDeltaX/Y in cm, no "
                        "PixelSpacing): measurements stay in pixels unless --mm-per-px or --depth-mm is given",
                        self.name)
        if first.region is not None:
            if options.roi is None:
                self.roi = first.region
                log.info("%s: image area %s from the ultrasound region (RegionLocationMinX0..MaxY1)", self.name,
                         ",".join(str(v) for v in first.region))
            else:
                log.info("%s: --roi given: the file's ultrasound region %s is not used", self.name,
                         ",".join(str(v) for v in first.region))
        for note in {n for p in parts for n in p.notes}:
            log.info("%s: %s", self.name, note)
        self.frames_decoded = 0
        self._offsets = self._stream_offsets()

    def _check_consistent(self) -> None:
        first = self.parts[0]
        for part in self.parts[1:]:
            if (part.rows, part.columns) != (first.rows, first.columns):
                raise SourceError(f"{part.path} is {part.columns}x{part.rows}, {first.path.name} {first.columns}x"
                                  f"{first.rows}: the files of one stream must have one size (segment them one by one)")
            if part.region != first.region:
                raise SourceError(f"{part.path}: its ultrasound region {part.region} differs from {first.path.name}'s "
                                  f"{first.region}; segment the files one by one")
            a, b = first.spacing, part.spacing
            if (a is None) != (b is None) or (a and b and any(abs(x - y) > SPACING_TOL * max(x, y)
                                                               for x, y in zip(a, b))):
                raise SourceError(f"{part.path}: its pixel spacing {b} mm differs from {first.path.name}'s {a} mm; "
                                  "segment the files one by one")

    def _stream_offsets(self) -> list[tuple[float, float | None]]:
        """``(pts, source time)`` of every frame of the stream, files one after the other."""
        out: list[tuple[float, float | None]] = []
        starts = [p.start_epoch_s for p in self.parts]
        by_clock = len(self.parts) > 1 and all(s is not None for s in starts)
        t_end = 0.0
        for part in self.parts:
            base = (part.start_epoch_s - starts[0]) if by_clock else t_end  # type: ignore[operator]
            for off in part.offsets_s:
                src = None if part.start_epoch_s is None else part.start_epoch_s + off
                out.append((base + off, src))
            period = 1.0 / part.fps if part.fps else 1.0 / DEFAULT_FPS
            t_end = base + (part.offsets_s[-1] if part.offsets_s else 0.0) + period
        return out

    # -- frames

    def _decoded(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(stream index, grey image)`` of every frame, decoding file after file."""
        import pydicom
        from pydicom.pixels import iter_pixels

        index = 0
        for part in self.parts:
            ds = pydicom.dcmread(part.path, stop_before_pixels=True) if part.photometric.upper() == "PALETTE COLOR" \
                else None
            local = 0
            try:
                for pixels in iter_pixels(part.path, decoding_plugin=_decoding_plugin(part.transfer_syntax)):
                    if self._stop.is_set():
                        return
                    grey = to_grey(pixels, part, ds)
                    index += 1
                    local += 1
                    self.frames_decoded = index
                    yield index - 1, grey
            except GeneratorExit:
                raise
            except Exception as exc:  # a frame pydicom cannot decode: the frames before it count
                msg = (f"{part.path}: frame {local} of {part.frames} cannot be decoded "
                       f"({type(exc).__name__}: {exc})")
                if index == 0:
                    raise SourceError(msg + "; the file may be corrupt, or compressed in a way the decoder does "
                                      "not support: export it uncompressed") from None
                self.fail(msg)
                return

    def _frames(self) -> Iterator[Frame]:
        pacer = Pacer(self._stop) if self.realtime else None
        pending: tuple[int, np.ndarray] | None = None
        dropped = 0
        for index, image in self._decoded():
            if pacer is None:
                yield self._frame(index, image, 0)
                continue
            # live: a frame is released at its time; one that is late when the next is due is skipped
            if pending is not None:
                if pacer.elapsed() >= self._offsets[index][0]:
                    dropped += 1
                else:
                    if not pacer.wait_until(self._offsets[pending[0]][0]):
                        return
                    yield self._frame(pending[0], pending[1], dropped)
                    dropped = 0
            else:
                pacer.start()
            pending = (index, image)
        if pending is not None and not self._stop.is_set():
            if pacer is not None and not pacer.wait_until(self._offsets[pending[0]][0]):
                return
            yield self._frame(pending[0], pending[1], dropped)

    def _frame(self, index: int, image: np.ndarray, dropped: int) -> Frame:
        pts, t_source = self._offsets[index] if index < len(self._offsets) else (index / (self.fps or DEFAULT_FPS),
                                                                                 None)
        return Frame(index, time.monotonic(), pts, image, dropped, t_source=t_source)

    def _describe_extra(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "path": str(self.path),
            "files": len(self.parts),
            "frames_declared": self.frames_declared,
            "frames_decoded": self.frames_decoded,
            "ultrasound_region": None if self.region is None else list(self.region),
        }
        if len(self.parts) == 1:
            info["dicom"] = self.parts[0].describe()
        else:
            info["dicom"] = [p.describe() for p in self.parts[:50]]
        return info
