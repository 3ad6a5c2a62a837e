"""realtime.sources.dicom on files pydicom writes from phantom frames: single- and multi-frame, uncompressed,
RLE (pydicom's encoder) and JPEG baseline (OpenCV's JPEG encapsulated by pydicom), the ultrasound region's
spacing and image area, PixelSpacing as the fallback, frame times, a folder, mn-segment and mn-live, and
the errors for what cannot be read."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MPEG4HP41,
    RLELossless,
    generate_uid,
)

from realtime import live_cli, segment_cli  # noqa: E402
from realtime.sinks.csv_sink import read_csv  # noqa: E402
from realtime.sources import SourceError, open_source  # noqa: E402
from realtime.sources.dicom import segment_inputs  # noqa: E402
from realtime.sources.phantom import PhantomSource  # noqa: E402
from tests.realtime._helpers import TruthEngine  # noqa: E402

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_VOLUME = "1.2.840.10008.5.1.4.1.1.6.2"
DX_CM, DY_CM = 0.007, 0.0085  # the region's PhysicalDeltaX/Y: 0.07 x 0.085 mm per pixel
OFFSET = (40, 30)  # where the B-mode image sits on the exported screen (x, y)


def screen(image: np.ndarray, colour: bool = False) -> np.ndarray:
    """A phantom frame on a scanner-like export: a larger canvas with text around the image."""
    h, w = image.shape[:2]
    canvas = np.zeros((h + 2 * OFFSET[1], w + 2 * OFFSET[0]), np.uint8)
    canvas[OFFSET[1]:OFFSET[1] + h, OFFSET[0]:OFFSET[0] + w] = image
    cv2.putText(canvas, "L12-5 MSK 12 MHz", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    if colour:
        canvas = np.repeat(canvas[:, :, None], 3, axis=2)
        cv2.putText(canvas, "Wrist", (w - 60, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 255), 1)  # RGB
    return canvas


def region_item(w: int, h: int) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat = 1
    r.RegionDataType = 1
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = OFFSET
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = OFFSET[0] + w - 1, OFFSET[1] + h - 1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
    r.PhysicalDeltaX, r.PhysicalDeltaY = DX_CM, DY_CM
    return r


def write_dicom(path: Path, frames: Sequence[np.ndarray], syntax: str = ExplicitVRLittleEndian, *,
                region: tuple[int, int] | None = None, pixel_spacing: tuple[float, float] | None = None,
                frame_time_ms: float | None = 40.0, frame_time_vector: Sequence[float] | None = None,
                acquisition: str | None = "20240506125320.250", tz: str | None = "+0200", sop: str | None = None,
                instance: int | None = None, **tags: Any) -> Path:
    """A DICOM ultrasound object of ``frames`` (grey or RGB uint8) written by pydicom."""
    arr = np.stack(frames)
    n, h, w = arr.shape[:3]
    colour = arr.ndim == 4
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = sop or (US_MULTIFRAME if n > 1 else US_IMAGE)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "US"
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if n > 1:
        ds.NumberOfFrames = n
    if instance is not None:
        ds.InstanceNumber = instance
    if region is not None:
        ds.SequenceOfUltrasoundRegions = [region_item(*region)]
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if frame_time_vector is not None:
        ds.FrameTimeVector = list(frame_time_vector)
    elif frame_time_ms is not None and n > 1:
        ds.FrameTime = frame_time_ms
    if acquisition is not None:
        ds.AcquisitionDateTime = acquisition
    if tz is not None:
        ds.TimezoneOffsetFromUTC = tz
    for k, v in tags.items():
        setattr(ds, k, v)
    if syntax == JPEGBaseline8Bit:
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
        if colour:
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
            ds.PhotometricInterpretation = "YBR_FULL_422"
        encoded = [cv2.imencode(".jpg", f[:, :, ::-1] if colour else f, params)[1].tobytes() for f in arr]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    elif syntax == MPEG4HP41:
        ds.PixelData = encapsulate([b"\x00\x00\x00\x01" + bytes(64)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = MPEG4HP41
    else:
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OB" if syntax != ImplicitVRLittleEndian else "OW"
        ds.file_meta.TransferSyntaxUID = syntax
        if syntax == RLELossless:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.save_as(path, enforce_file_format=True)
    return path


def phantom(n: int, seed: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ph = PhantomSource(seed=seed)
    rendered = [ph.render(i) for i in range(n)]
    return [r[0] for r in rendered], [r[1] for r in rendered]


def read_all(spec: str | Path, **kw: Any) -> tuple[list, Any]:
    with open_source(str(spec), realtime=False, **kw) as src:
        frames = list(src)
    return frames, src


T0 = dt.datetime(2024, 5, 6, 10, 53, 20, 250000, tzinfo=dt.timezone.utc).timestamp()  # 12:53:20.25 at +0200


def test_multiframe_region_calibrates_crops_and_times(tmp_path: Path) -> None:
    images, _ = phantom(4)
    h, w = images[0].shape
    path = write_dicom(tmp_path / "loop.dcm", [screen(i) for i in images], region=(w, h))
    frames, src = read_all(path)
    assert src.kind == "dicom" and len(frames) == 4
    assert src.roi == (OFFSET[0], OFFSET[1], w, h) and src.native_size == (w + 2 * OFFSET[0], h + 2 * OFFSET[1])
    assert all(np.array_equal(f.image, im) for f, im in zip(frames, images))  # the image area, exactly
    cal = src.calibration
    assert (cal.sx, cal.sy) == pytest.approx((0.07, 0.085)) and "SequenceOfUltrasoundRegions" in cal.source
    assert [f.pts for f in frames] == pytest.approx([0.0, 0.04, 0.08, 0.12]) and src.fps == pytest.approx(25.0)
    assert [f.t_source for f in frames] == pytest.approx([T0 + 0.04 * i for i in range(4)])
    info = src.describe()
    assert info["frames_declared"] == 4 and info["dicom"]["frame_times_from"] == "FrameTime"
    assert info["calibration"]["mm_per_px_x"] == pytest.approx(0.07)


@pytest.mark.parametrize("syntax, colour, max_err", [
    (ImplicitVRLittleEndian, False, 0),
    (ExplicitVRLittleEndian, True, 1),   # RGB -> grey (BT.601, rounded)
    (RLELossless, False, 0),
    (RLELossless, True, 1),
    (JPEGBaseline8Bit, False, 3),        # lossy: mean absolute error in grey levels
    (JPEGBaseline8Bit, True, 3),         # YBR_FULL_422
])
def test_transfer_syntaxes_and_colour_to_grey(tmp_path: Path, syntax: str, colour: bool, max_err: int) -> None:
    images, _ = phantom(3, seed=5)
    h, w = images[0].shape
    path = write_dicom(tmp_path / "x.dcm", [screen(i, colour) for i in images], syntax, region=(w, h),
                       frame_time_vector=[0, 30, 50])
    frames, src = read_all(path)
    assert len(frames) == 3 and all(f.image.dtype == np.uint8 and f.image.ndim == 2 for f in frames)
    err = [float(np.abs(f.image.astype(int) - im).mean()) for f, im in zip(frames, images)]
    assert max(err) <= max_err, err
    if max_err == 0:
        assert all(np.array_equal(f.image, im) for f, im in zip(frames, images))
    assert [f.pts for f in frames] == pytest.approx([0.0, 0.03, 0.08])
    assert src.describe()["dicom"]["transfer_syntax"] == syntax


def test_folder_of_single_frames_pixel_spacing_fallback_in_instance_order(tmp_path: Path) -> None:
    images, _ = phantom(3, seed=6)
    folder = tmp_path / "series"
    folder.mkdir()
    for k, name in enumerate(["c", "a", "b"]):  # file names out of order; InstanceNumber is the order
        write_dicom(folder / name, [images[k]], pixel_spacing=(0.09, 0.08), instance=k + 1, tz=None,
                    acquisition=f"20240506125320.{k * 2}")  # 0.2 s apart; no time zone: taken as UTC
    (folder / "notes.txt").write_text("not DICOM")
    assert segment_inputs(folder) == [folder]
    frames, src = read_all(folder)
    assert src.kind == "dicom" and src.roi is None and len(frames) == 3
    assert all(np.array_equal(f.image, im) for f, im in zip(frames, images))
    assert (src.calibration.sx, src.calibration.sy) == pytest.approx((0.08, 0.09))  # PixelSpacing is row, column
    assert "PixelSpacing" in src.calibration.source
    assert [f.pts for f in frames] == pytest.approx([0.0, 0.2, 0.4])
    t0 = dt.datetime(2024, 5, 6, 12, 53, 20, tzinfo=dt.timezone.utc).timestamp()
    assert frames[2].t_source == pytest.approx(t0 + 0.4)


def test_no_spacing_stays_uncalibrated(tmp_path: Path) -> None:
    images, _ = phantom(2)
    path = write_dicom(tmp_path / "plain.dcm", images, acquisition=None)
    frames, src = read_all(path)
    assert len(frames) == 2 and src.calibration is None and src.roi is None
    assert all(f.t_source is None for f in frames)


def test_mn_segment_dicom_mm2_within_1_percent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_cli, "open_engine", lambda args, batch=1: TruthEngine())
    _, masks = phantom(3, seed=7)
    h, w = masks[0].shape
    folder = tmp_path / "exports"
    folder.mkdir()
    write_dicom(folder / "loop1.dcm", [screen(m) for m in masks], RLELossless, region=(w, h))
    write_dicom(folder / "loop2.dcm", [screen(m) for m in masks[:2]], region=(w, h))
    out = tmp_path / "out"
    code = segment_cli.cli([str(folder), "--out", str(out), "--no-video", "--presence", "off", "--confirm", "1",
                            "--batch", "2", "-q"])
    assert code == 0
    for stem, n in (("loop1", 3), ("loop2", 2)):
        rows = read_csv(out / stem / "measurements.csv")
        summary = json.loads((out / stem / "summary.json").read_text())
        assert len(rows) == n and summary["calibration_detail"]["source"].startswith("DICOM SequenceOfUltrasound")
        assert summary["source_info"]["roi"] == [OFFSET[0], OFFSET[1], w, h]
        for i, row in enumerate(rows):
            truth = np.count_nonzero(masks[i]) * 0.07 * 0.085
            assert abs(float(row["area_mm2"]) - truth) / truth < 0.01
            assert float(row["source_time_s"]) == pytest.approx(T0 + 0.04 * i, abs=1e-3)


def test_mn_segment_measures_a_single_image_without_confirmation(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--confirm (2 by default) needs a next frame; a one-frame DICOM image has none and is measured
    at once, while the first frame of a two-frame loop waits for the second."""
    monkeypatch.setattr(segment_cli, "open_engine", lambda args, batch=1: TruthEngine())
    _, masks = phantom(2, seed=5)
    folder = tmp_path / "in"
    folder.mkdir()
    write_dicom(folder / "still.dcm", masks[:1], pixel_spacing=(0.1, 0.1))
    write_dicom(folder / "loop.dcm", masks, pixel_spacing=(0.1, 0.1))
    out = tmp_path / "out"
    assert segment_cli.cli([str(folder / "still.dcm"), str(folder / "loop.dcm"), "--out", str(out), "--no-video",
                            "--presence", "off", "-q"]) == 0
    (still,) = read_csv(out / "still" / "measurements.csv")
    assert still["status"] == "ok" and "rejected" not in still  # nothing can reject it here
    assert float(still["area_mm2"]) == pytest.approx(np.count_nonzero(masks[0]) * 0.01, rel=0.01)
    first, second = read_csv(out / "loop" / "measurements.csv")
    assert (first["status"], first["rejected"], first["area_mm2"]) == ("no_detection", "unconfirmed: 1 of 2 frames", "")
    assert second["status"] == "ok"
    assert json.loads((out / "still" / "summary.json").read_text())["tracker"]["confirm_frames"] == 1
    assert json.loads((out / "loop" / "summary.json").read_text())["tracker"]["confirm_frames"] == 2


def test_mn_live_plays_a_cine_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_cli, "open_engine", lambda args, batch=1, live=False: TruthEngine())
    _, masks = phantom(4, seed=8)
    path = write_dicom(tmp_path / "loop.dcm", masks, pixel_spacing=(0.1, 0.1))
    out = tmp_path / "live"
    assert live_cli.cli(["--source", str(path), "--headless", "--no-video", "--presence", "off", "--out", str(out),
                         "-q"]) == 0
    rows = read_csv(out / "measurements.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert 1 <= len(rows) <= 4 and len(rows) + summary["frames_dropped"] == 4
    assert summary["calibration_detail"]["source"] == "DICOM PixelSpacing of loop.dcm"


@pytest.mark.parametrize("kind, needle", [
    ("not-dicom", "is not a DICOM file"),
    ("volume", "is a 3-D volume"),
    ("mpeg4", "MPEG-4 AVC/H.264"),
])
def test_what_cannot_be_read_is_named_exit_2(kind: str, needle: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    images, _ = phantom(2)
    path = tmp_path / f"{kind}.dcm"
    if kind == "not-dicom":
        path.write_bytes(b"\x00" * 300)
    elif kind == "volume":
        write_dicom(path, images, sop=US_VOLUME)
    else:
        write_dicom(path, images[:1], MPEG4HP41)
    with pytest.raises(SourceError, match=needle):
        open_source(str(path), realtime=False)
    code = live_cli.cli(["--source", str(path), "--headless", "--model", "lunet", "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and needle in err and "Traceback" not in err and err.count("\n") == 1
