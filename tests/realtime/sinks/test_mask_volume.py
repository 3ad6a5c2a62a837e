"""realtime.sinks.mask_volume: the masks as one NRRD volume sequence (3D Slicer's) or NIfTI volume, read back
with pynrrd and nibabel: spacing, a frame's pixels, the CSV's frame numbers, empty frames where the nerve
was not measured; the partial files a killed run leaves open as they are; the formats match the flag."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import nrrd
import numpy as np
import pytest

from realtime.calibration import Calibration
from realtime.cli_common import MASK_FORMATS, MASK_NAMES
from realtime.sinks.mask_volume import VOLUME_FORMATS, MaskVolumeSink
from tests.realtime.sinks._helpers import record

SX, SY = 0.07, 0.085


def records() -> list:
    """Frames 10, 12, ..., 20; frame 14 without a nerve."""
    return [record(f, status="no_detection", area=None) if f == 14 else record(f) for f in range(10, 21, 2)]


def write(path: Path, fmt: str, calibration=Calibration(SX, SY), close: bool = True) -> tuple[MaskVolumeSink, list]:
    sink = MaskVolumeSink(path, fmt)
    sink.open(SimpleNamespace(tracker=SimpleNamespace(calibration=calibration), fps=25.0))
    recs = records()
    for r in recs:
        sink.write(r)
    if close:
        sink.close()
    return sink, recs


def as_frames(volume: np.ndarray) -> np.ndarray:
    """[W, H, 1, T] -> [T, H, W]."""
    assert volume.ndim == 4 and volume.shape[2] == 1
    return volume[:, :, 0, :].transpose(2, 1, 0)


def test_nrrd_sequence_for_slicer(tmp_path: Path) -> None:
    _, recs = write(tmp_path / "masks.seq.nrrd", "nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.seq.nrrd"]  # the partial files are gone
    data, header = nrrd.read(str(tmp_path / "masks.seq.nrrd"))
    assert data.shape == (64, 48, 1, 6) and data.dtype == np.uint8
    assert header["kinds"] == ["domain", "domain", "domain", "list"] and header["encoding"] == "gzip"
    directions = header["space directions"]
    assert np.allclose(directions[:3], np.diag([SX, SY, 1.0])) and np.isnan(directions[3]).all()
    assert header["DataNodeClassName"] == "vtkMRMLLabelMapVolumeNode"
    assert header["axis 3 index values"].split() == ["10", "12", "14", "16", "18", "20"]  # the CSV's frames
    frames = as_frames(data)
    assert np.array_equal(frames[1], recs[1].mask) and frames[1].sum() == recs[1].mask.sum() > 0
    assert frames[2].sum() == 0  # frame 14: no nerve


def test_nifti_volume_with_spacing(tmp_path: Path) -> None:
    _, recs = write(tmp_path / "masks.nii.gz", "nifti")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.nii.gz"]
    image = nib.load(str(tmp_path / "masks.nii.gz"))
    assert image.shape == (64, 48, 1, 6) and image.get_data_dtype() == np.uint8
    assert image.header.get_zooms() == pytest.approx((SX, SY, 1.0, 1 / 25.0))
    assert image.header.get_xyzt_units() == ("mm", "sec")
    assert np.allclose(image.affine, np.diag([SX, SY, 1.0, 1.0]))
    frames = as_frames(np.asanyarray(image.dataobj))
    assert np.array_equal(frames[3], recs[3].mask) and frames[2].sum() == 0


@pytest.mark.parametrize("fmt, header_name, reader", [("nrrd", "masks.partial.nhdr", "nrrd"),
                                                      ("nifti", "masks.partial.hdr", "nibabel")])
def test_a_killed_run_leaves_readable_partial_files(tmp_path: Path, fmt: str, header_name: str, reader: str) -> None:
    sink, recs = write(tmp_path / ("masks" + VOLUME_FORMATS[fmt]), fmt, close=False)  # the process "dies" here
    assert not (tmp_path / ("masks" + VOLUME_FORMATS[fmt])).exists()
    if reader == "nrrd":
        data, header = nrrd.read(str(tmp_path / header_name))
        assert np.allclose(header["space directions"][:3], np.diag([SX, SY, 1.0]))
    else:
        image = nib.load(str(tmp_path / header_name))
        assert image.header.get_zooms()[:2] == pytest.approx((SX, SY))
        data = np.asanyarray(image.dataobj)
    frames = as_frames(data)
    assert len(frames) == 6 and np.array_equal(frames[5], recs[5].mask)
    sink.close()


def test_uncalibrated_says_so(tmp_path: Path) -> None:
    write(tmp_path / "masks.seq.nrrd", "nrrd", calibration=None)
    _, header = nrrd.read(str(tmp_path / "masks.seq.nrrd"))
    assert "uncalibrated" in header["content"] and np.allclose(header["space directions"][:3], np.eye(3))


def test_formats_agree_with_the_flag() -> None:
    assert set(MASK_FORMATS) == {"png", *VOLUME_FORMATS}
    assert all(MASK_NAMES[f].endswith(suffix) for f, suffix in VOLUME_FORMATS.items())
    with pytest.raises(KeyError, match="nrrd, nifti"):
        MaskVolumeSink("m.tiff", "tiff")


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "Mask files and volumes")
# ---------------------------------------------------------------------------------------------

HEADER = """NRRD0005
# Complete NRRD file format specification at: http://teem.sourceforge.net/nrrd/format.html
# mn-seg nerve masks: one labelmap per processed frame (1 = nerve), item k = row k of measurements.csv
content: mn-seg nerve masks{content}
type: uint8
dimension: 4
space: left-posterior-superior
sizes: 64 48 1 6
space directions: {directions} (0,0,1) none
kinds: domain domain domain list
labels: "" "" "" "frame"
endian: little
encoding: {encoding}
space origin: (0,0,0)
space units: {units}
{data_file}DataNodeClassName:=vtkMRMLLabelMapVolumeNode
axis 3 index type:=numeric
{values}"""


@pytest.mark.parametrize("calibrated", [True, False])
def test_the_nrrd_headers_word_for_word(tmp_path: Path, calibrated: bool) -> None:
    calibration = Calibration(SX, SY) if calibrated else None
    fields = dict(content="" if calibrated else " (uncalibrated: spacing 1 x 1 pixel, not mm)",
                  directions=("(0.070000000000000007,0,0) (0,0.085000000000000006,0)" if calibrated
                              else "(1,0,0) (0,1,0)"),
                  units='"mm" "mm" "mm"' if calibrated else '"" "" ""')
    sink, _ = write(tmp_path / "m.seq.nrrd", "nrrd", calibration=calibration, close=False)
    assert sink.partial_header.read_text() == HEADER.format(**fields, encoding="raw", values="",
                                                            data_file="data file: m.partial.raw\n")
    sink.close()
    head = (tmp_path / "m.seq.nrrd").read_bytes().split(b"\n\n")[0].decode() + "\n"
    assert head == HEADER.format(**fields, encoding="gzip", data_file="",
                                 values="axis 3 index values:=10 12 14 16 18 20\n")


@pytest.mark.parametrize("calibrated", [True, False])
def test_the_nifti_headers_field_by_field(tmp_path: Path, calibrated: bool) -> None:
    calibration = Calibration(SX, SY) if calibrated else None
    sx, sy = (SX, SY) if calibrated else (1.0, 1.0)
    sink, _ = write(tmp_path / "m.nii.gz", "nifti", calibration=calibration, close=False)
    partial = nib.load(str(sink.partial_header)).header
    raw = sink.partial_header.read_bytes()  # as other readers see it (nibabel fixes the magic up on load)
    assert raw[344:348] == b"ni1\0" and np.frombuffer(raw[108:112], "<f4")[0] == 0.0  # a pair; data at offset 0
    sink.close()
    final = nib.load(str(tmp_path / "m.nii.gz")).header
    assert partial["magic"] == b"ni1" and final["magic"] == b"n+1"  # a .hdr/.img pair, then one .nii.gz
    for h in (partial, final):
        assert h.get_data_shape() == (64, 48, 1, 6)
        assert h.get_zooms() == pytest.approx((sx, sy, 1.0, 1 / 25))
        assert h.get_xyzt_units() == (("mm" if calibrated else "unknown"), "sec")
        assert h["descrip"] == (b"mn-seg nerve masks, 1 = nerve" if calibrated
                                else b"mn-seg nerve masks, uncalibrated: 1 px")
        assert (int(h["qform_code"]), int(h["sform_code"])) == (1, 1)  # scanner
        np.testing.assert_allclose(h.get_sform(), np.diag([sx, sy, 1.0, 1.0]), rtol=1e-6)
        np.testing.assert_allclose(h.get_qform(), np.diag([sx, sy, 1.0, 1.0]), rtol=1e-6)


def test_nifti_header_edges() -> None:
    from realtime.sinks.mask_volume import nifti_header

    assert nifti_header((48, 64), 0, (1.0, 1.0), 25.0, False, pair=False).get_data_shape() == (64, 48, 1, 0)
    assert nifti_header((48, 64), 3, (1.0, 1.0), 0.0, False, pair=False).get_zooms()[3] == 1.0  # no frame rate
    assert nifti_header((48, 64), 3, (1.0, 1.0), 0.5, False, pair=False).get_zooms()[3] == pytest.approx(2.0)
    assert nifti_header((48, 64), 3, (1.0, 1.0), 25.0, False, pair=True)["vox_offset"] == 0


def test_open_write_and_close_details(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import os

    caplog.set_level(logging.INFO, logger="realtime.sinks.mask_volume")
    path = tmp_path / "a" / "b" / "masks.nii.gz"
    sink = MaskVolumeSink(path, "nifti")
    assert sink.name == f"masks {path}"
    sink.open(SimpleNamespace(tracker=SimpleNamespace(), fps=None))  # a tracker without a calibration, no fps
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(sink.partial_data).st_mode & 0o777) == 0o644 & ~umask
    r = record(3)
    sink.write(r)
    assert r.timings_ms["write"] >= 0
    sink.close()
    h = nib.load(str(path)).header
    assert h.get_zooms()[3] == pytest.approx(1 / 24) and h.get_xyzt_units()[0] == "unknown"
    assert [m.getMessage() for m in caplog.records] == [f"wrote 1 masks to {path}"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["masks.nii.gz"]  # the partial files removed


def test_a_run_without_frames_writes_nothing_and_other_names(tmp_path: Path, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="realtime.sinks.mask_volume")
    sink = MaskVolumeSink(tmp_path / "m.seq.nrrd", "nrrd")
    sink.open(SimpleNamespace(tracker=None, fps=24.0))
    sink.close()
    assert list(tmp_path.iterdir()) == []
    assert [m.getMessage() for m in caplog.records] == [f"no frame: {tmp_path / 'm.seq.nrrd'} not written"]
    other = MaskVolumeSink(tmp_path / "x.nrrd", "nrrd")  # not the usual suffix: the partial files take the stem
    assert (other.partial_header.name, other.partial_data.name) == ("x.partial.nhdr", "x.partial.raw")
