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
