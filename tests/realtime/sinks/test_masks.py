"""realtime.sinks.masks: one PNG per measured frame, named by frame index, timed as the write stage."""

from __future__ import annotations

from pathlib import Path

import cv2

from realtime.sinks.masks import MaskSink
from tests.realtime.sinks._helpers import record


def test_masks_written_for_measured_frames_only(tmp_path: Path) -> None:
    sink = MaskSink(tmp_path / "masks")
    sink.open(None)  # type: ignore[arg-type]  (needs nothing of the run)
    measured, missed = record(3), record(4, status="no_detection", area=None)
    sink.write(measured)
    sink.write(missed)
    sink.close()
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["000003.png"]
    png = cv2.imread(str(tmp_path / "masks" / "000003.png"), cv2.IMREAD_GRAYSCALE)
    assert set(png.ravel().tolist()) == {0, 255} and (png > 0).sum() == measured.mask.sum()
    assert measured.timings_ms["write"] >= 0 and "write" not in missed.timings_ms
    assert sink.paths == {"masks": tmp_path / "masks"}


def test_the_folder_is_made_with_its_parents_or_reused_and_the_sink_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "masks"
    sink = MaskSink(folder)
    assert sink.name == f"masks {folder}"
    sink.open(None)  # type: ignore[arg-type]
    assert folder.is_dir()
    MaskSink(folder).open(None)  # type: ignore[arg-type]  (a folder that exists is fine)


def test_a_mask_that_cannot_be_written_names_its_file(tmp_path: Path) -> None:
    import shutil

    import pytest

    sink = MaskSink(tmp_path / "masks")
    sink.open(None)  # type: ignore[arg-type]
    shutil.rmtree(tmp_path / "masks")  # the folder vanished under the run
    with pytest.raises(OSError, match=r"^cannot write .*masks/000007\.png$"):
        sink.write(record(7))
