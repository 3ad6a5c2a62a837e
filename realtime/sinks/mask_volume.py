"""Every processed frame's nerve mask as one 2-D + time volume with its pixel spacing (``--masks nrrd`` /
``--masks nifti``), for 3D Slicer, MONAI, ITK-SNAP and the like.

One labelmap per processed frame, in the CSV's order (frame *k* of the volume is row *k* of
measurements.csv): uint8, 1 inside the nerve, 0 elsewhere, and all 0 where the nerve was not measured
(no detection, lost, rejected). Axes: x = image columns, y = image rows, a single slice, then time.
The spacing is the run's calibration (``sx`` mm per column, ``sy`` per row); an uncalibrated run
stores 1 x 1 and says so (NRRD ``content``, NIfTI ``descrip``).

* ``nrrd``: ``masks.seq.nrrd``, the volume sequence format of 3D Slicer's Sequences module (drag it
  into Slicer: a sequence of labelmap volumes, browsed with the sequence browser): ``sizes: W H 1 T``,
  ``kinds: domain domain domain list``, ``space directions`` from the spacing and ``none`` for the
  list axis, ``DataNodeClassName:=vtkMRMLLabelMapVolumeNode``, and ``axis 3 index values`` = the
  CSV's frame numbers. gzip-compressed. Read it with ``nrrd.read`` (pynrrd) as ``[W, H, 1, T]``.
* ``nifti``: ``masks.nii.gz``, NIfTI-1 ``[W, H, 1, T]`` with ``pixdim`` = (sx, sy, 1, 1/fps), units mm
  and s, the spacing in the qform and sform (nibabel, MONAI's ``LoadImage``).

Crash behaviour: a sequence file is written when the run ends. While it runs, each mask is appended
as it comes to an uncompressed data file beside it (``masks.partial.raw`` / ``masks.partial.img``),
and a small header that describes the frames written so far (``masks.partial.nhdr``, a detached NRRD
header, without the frame numbers; ``masks.partial.hdr``, a NIfTI-1 pair) is replaced atomically
after each frame (a few hundred bytes). A run that is killed leaves these two files, which open as
they are in Slicer, pynrrd or nibabel with every mask up to the last one written (a strict reader
such as pynrrd refuses the pair only if the process died in the microseconds between a frame's data
and its header). When the run ends normally the final file is assembled from the data file frame
by frame (memory stays flat however long the run) and the two partial files are removed; if the
final file cannot be written (disk full), they are kept, and the run fails with exit code 5.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from realtime.record import FrameRecord, timed
from realtime.sinks.base import RunInfo, Sink

log = logging.getLogger(__name__)

#: ``--masks`` formats written by :class:`MaskVolumeSink` (PNG files: :class:`realtime.sinks.masks.MaskSink`).
VOLUME_FORMATS = {"nrrd": ".seq.nrrd", "nifti": ".nii.gz"}
#: Per format: the partial header's and data file's suffixes (replacing the final suffix).
PARTIAL = {"nrrd": (".partial.nhdr", ".partial.raw"), "nifti": (".partial.hdr", ".partial.img")}
_CHUNK_FRAMES = 64  # frames read at a time while assembling the final file


class MaskVolumeSink(Sink):
    """The masks of a run as one NRRD sequence or NIfTI volume at ``path``; see the module docstring."""

    def __init__(self, path: str | os.PathLike, fmt: str) -> None:
        if fmt not in VOLUME_FORMATS:
            raise KeyError(f"unknown mask volume format {fmt!r}; choose one of {', '.join(VOLUME_FORMATS)}")
        self.path = Path(path)
        self.fmt = fmt
        suffix = VOLUME_FORMATS[fmt]
        stem = self.path.name[:-len(suffix)] if self.path.name.endswith(suffix) else self.path.stem
        self.partial_header = self.path.with_name(stem + PARTIAL[fmt][0])
        self.partial_data = self.path.with_name(stem + PARTIAL[fmt][1])
        self.paths = {"masks": self.path}
        self.name = f"masks {self.path}"
        self.spacing = (1.0, 1.0)
        self.calibrated = False
        self.fps = 24.0
        self.frames: list[int] = []  # the CSV's frame number of each item
        self.shape: tuple[int, int] | None = None  # (H, W)
        self._fd: int | None = None
        self._template = None  # the partial header (NRRD text, NIfTI header) of 0 frames

    def open(self, run: RunInfo) -> None:
        calibration = getattr(run.tracker, "calibration", None)
        if calibration is not None:
            self.spacing, self.calibrated = (float(calibration.sx), float(calibration.sy)), True
        self.fps = float(run.fps or 24.0)
        if self.fmt == "nrrd":  # the library's import (nibabel: most of a second) before the first frame, not in it
            import nrrd  # noqa: F401
        else:
            import nibabel  # noqa: F401
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.partial_data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, record: FrameRecord) -> None:
        with timed(record.timings_ms, "write"):
            if self.shape is None:
                if record.image is None:
                    raise ValueError(f"frame {record.frame} has no image: the mask size is unknown")
                self.shape = (int(record.image.shape[0]), int(record.image.shape[1]))
            if record.mask is not None:
                mask = (np.asarray(record.mask) > 0).astype(np.uint8)
                if mask.shape != self.shape:
                    raise ValueError(f"frame {record.frame}: a {mask.shape[1]}x{mask.shape[0]} mask in a sequence of "
                                     f"{self.shape[1]}x{self.shape[0]}")
            else:
                mask = np.zeros(self.shape, np.uint8)
            data = mask.tobytes()
            view = memoryview(data)
            while view:  # one frame, whole (os.write may write less than asked)
                view = view[os.write(self._fd, view):]
            self.frames.append(int(record.frame))
            self._write_partial_header()

    # ------------------------------------------------------------------ headers
    def _write_partial_header(self) -> None:
        """The partial header for the frames written so far: made once, only the frame count changes."""
        n = len(self.frames)
        if self._template is None:
            if self.fmt == "nrrd":
                self._template = nrrd_header(self.shape, 0, self.spacing, self.calibrated, None, encoding="raw",
                                             data_file=self.partial_data.name)
            else:
                self._template = nifti_header(self.shape, 0, self.spacing, self.fps, self.calibrated, pair=True)
        if self.fmt == "nrrd":
            h, w = self.shape
            data = self._template.replace(f"sizes: {w} {h} 1 0\n", f"sizes: {w} {h} 1 {n}\n", 1).encode()
        else:
            self._template["dim"][4] = n
            data = self._template.binaryblock
        _atomic_write(self.partial_header, data)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)
        if self.shape is None:  # no frame: no volume
            self.partial_data.unlink(missing_ok=True)
            self.partial_header.unlink(missing_ok=True)
            log.info("no frame: %s not written", self.path)
            return
        tmp = self.path.with_name(f".{os.getpid()}.tmp.{self.path.name}")  # the final suffix: nibabel reads it
        try:
            if self.fmt == "nrrd":
                self._assemble_nrrd(tmp)
            else:
                self._assemble_nifti(tmp)
            os.replace(tmp, self.path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            raise OSError(f"cannot write {self.path}: {exc}; the masks are kept in {self.partial_header} + "
                          f"{self.partial_data.name}") from exc
        self.partial_data.unlink(missing_ok=True)
        self.partial_header.unlink(missing_ok=True)
        log.info("wrote %d masks to %s", len(self.frames), self.path)

    def _frames_on_disk(self) -> np.ndarray:
        """The data file as ``[T, H, W]`` (memory-mapped: read as it is written out)."""
        h, w = self.shape
        return np.memmap(self.partial_data, dtype=np.uint8, mode="r", shape=(len(self.frames), h, w))

    def _assemble_nrrd(self, tmp: Path) -> None:
        import zlib

        header = nrrd_header(self.shape, len(self.frames), self.spacing, self.calibrated, self.frames, encoding="gzip")
        data = self._frames_on_disk()
        gz = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream; level 1: masks are mostly 0s
        with open(tmp, "wb") as fh:
            fh.write(header.encode() + b"\n")  # an attached header ends with a blank line
            for i in range(0, len(data), _CHUNK_FRAMES):
                fh.write(gz.compress(np.ascontiguousarray(data[i:i + _CHUNK_FRAMES]).tobytes()))
            fh.write(gz.flush())
            fh.flush()
            os.fsync(fh.fileno())
        del data

    def _assemble_nifti(self, tmp: Path) -> None:
        import nibabel as nib

        data = self._frames_on_disk()
        volume = data.transpose(2, 1, 0)[:, :, None, :]  # [W, H, 1, T], a view (Fortran order on disk)
        header = nifti_header(self.shape, len(self.frames), self.spacing, self.fps, self.calibrated, pair=False)
        image = nib.Nifti1Image(volume, header.get_best_affine(), header)
        image.set_data_dtype(np.uint8)
        nib.save(image, str(tmp))  # one frame at a time; the name's .nii.gz asks for gzip
        del image, volume, data


def nrrd_header(shape: tuple[int, int], n: int, spacing: tuple[float, float], calibrated: bool,
                frames: list[int] | None, encoding: str, data_file: str | None = None) -> str:
    """The NRRD header of ``n`` masks of ``shape`` (H, W): a 3D Slicer volume sequence (the list axis last,
    its index values ``frames``, the CSV's frame numbers, when given); ``data_file`` makes it a detached
    header."""
    import nrrd

    h, w = shape
    sx, sy = spacing
    lines = [
        "NRRD0005",
        "# Complete NRRD file format specification at: http://teem.sourceforge.net/nrrd/format.html",
        "# mn-seg nerve masks: one labelmap per processed frame (1 = nerve), item k = row k of measurements.csv",
        f"content: mn-seg nerve masks{'' if calibrated else ' (uncalibrated: spacing 1 x 1 pixel, not mm)'}",
        "type: uint8",
        "dimension: 4",
        "space: left-posterior-superior",
        f"sizes: {w} {h} 1 {n}",
        "space directions: " + nrrd.format_optional_matrix(np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1.0],
                                                                       [np.nan] * 3])),
        "kinds: domain domain domain list",
        'labels: "" "" "" "frame"',
        "endian: little",
        f"encoding: {encoding}",
        "space origin: (0,0,0)",
        "space units: " + ('"mm" "mm" "mm"' if calibrated else '"" "" ""'),
    ]
    if data_file is not None:
        lines.append(f"data file: {data_file}")
    lines += ["DataNodeClassName:=vtkMRMLLabelMapVolumeNode", "axis 3 index type:=numeric"]
    if frames is not None:
        lines.append("axis 3 index values:=" + nrrd.format_number_list(np.asarray(frames[:n], dtype=np.int64)))
    return "\n".join(lines) + "\n"


def nifti_header(shape: tuple[int, int], n: int, spacing: tuple[float, float], fps: float, calibrated: bool,
                 pair: bool):
    """The NIfTI-1 header of ``n`` masks of ``shape`` (H, W) as ``[W, H, 1, n]`` uint8 with the spacing in
    ``pixdim`` and the affine; ``pair``: a ``.hdr`` of a ``.hdr`` / ``.img`` pair (data from offset 0)."""
    import nibabel as nib

    h, w = shape
    sx, sy = spacing
    header = nib.nifti1.Nifti1PairHeader() if pair else nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((w, h, 1, max(n, 0)))
    affine = np.diag([sx, sy, 1.0, 1.0])
    header.set_qform(affine, code="scanner")
    header.set_sform(affine, code="scanner")
    header.set_zooms((sx, sy, 1.0, 1.0 / fps if fps > 0 else 1.0))
    header.set_xyzt_units("mm" if calibrated else "unknown", "sec")
    header["descrip"] = (b"mn-seg nerve masks, 1 = nerve" if calibrated
                         else b"mn-seg nerve masks, uncalibrated: 1 px")
    if pair:
        header["vox_offset"] = 0
    return header


def _atomic_write(path: Path, data: bytes) -> None:
    """``path`` holds the old bytes or the new ones, never a torn file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
