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
