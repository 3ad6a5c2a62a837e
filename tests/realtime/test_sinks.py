"""Sinks: the CSV contract, a playable video, summary arithmetic, overlay and plot files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.morphometry import Measurement
from realtime.record import CSV_COLUMNS, STAGE_COLUMNS, FrameRecord, format_cell
from realtime.sinks.csv_sink import CsvSink, read_csv
from realtime.sinks.overlay import OverlayRenderer, to_bgr8
from realtime.sinks.summary import SummaryBuilder, latency_stats, plot_series, write_json
from realtime.sinks.video import ThreadedWriter, VideoWriter
from realtime.tracker import TrackedMeasurement, TrackStatus


def _record(i: int, status: str = "ok", area: float | None = 1000.0, latency: float = 20.0) -> FrameRecord:
    img = np.full((48, 64), 80, np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    cv2.circle(mask, (32, 24), 10, 1, -1)
    measurement = None if area is None else Measurement(
        area_px=area, area_mm2=None, perimeter_px=60.0, perimeter_mm=None, flattening_ratio=1.5, circularity=0.9,
        centroid_x_px=32.0, centroid_y_px=24.0, centroid_x_mm=None, centroid_y_mm=None, bbox=(22, 14, 21, 21),
        n_components=1, confidence=0.9)
    tracked = TrackedMeasurement(frame_index=i, t_s=i / 24, status=TrackStatus(status), measurement=measurement,
                                 n_detections=int(area is not None), nerve_labels=(1,) if area else (),
                                 frames_since_seen=0, displacement_px=float(i), csa_change_pct=0.0)
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0] if area else ()
    return FrameRecord(frame=i, t_s=i / 24, tracked=tracked, latency_ms=latency, dropped_before=i % 2,
                       timings_ms={"infer": 10.0, "preprocess": 1.0}, contours=tuple(contours), image=img,
                       mask=mask if area else None)


def test_csv_contract_units_and_flush(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    sink = CsvSink(path, metadata={"calibration": "uncalibrated", "model": "lunet"}, flush_s=0.0)
    sink.write(_record(0))
    # flushed as it goes: readable before close
    rows = read_csv(path)
    assert len(rows) == 1 and list(rows[0].keys()) == CSV_COLUMNS + STAGE_COLUMNS
    sink.write(_record(1, status="no_detection", area=None))
    sink.close()
    text = path.read_text()
    assert "# calibration: uncalibrated" in text and "# area_mm2:" in text
    rows = read_csv(path)
    assert rows[0]["area_px"] == "1000" and rows[0]["area_mm2"] == "" and rows[0]["infer_ms"] == "10"
    assert rows[1]["status"] == "no_detection" and rows[1]["area_px"] == ""
    assert rows[1]["dropped_before"] == "1"


def test_format_cell() -> None:
    assert format_cell(None) == "" and format_cell(float("nan")) == ""
    assert format_cell(0.0416666) == "0.0417" and format_cell(3) == "3" and format_cell(2.5) == "2.5"


def test_video_plays_with_every_frame(tmp_path: Path) -> None:
    import av

    path = tmp_path / "o.mp4"
    writer = ThreadedWriter(VideoWriter(path, fps=24))
    for i in range(30):
        img = np.zeros((47, 63, 3), np.uint8)  # odd size: padded to even
        cv2.putText(img, str(i), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.put(img)
    writer.close()
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 30 and (frames[0].width, frames[0].height) == (64, 48)


def test_threaded_writer_reraises_sink_errors() -> None:
    class Failing:
        def write(self, item):
            raise OSError("disk full")

        def close(self):
            pass

    w = ThreadedWriter(Failing())
    w.put(1)
    with pytest.raises(OSError, match="disk full"):
        w.close()


def test_threaded_writer_drop_when_full_never_blocks() -> None:
    class Slow:
        def write(self, item):
            time.sleep(0.05)

        def close(self):
            pass

    w = ThreadedWriter(Slow(), maxsize=2, drop_when_full=True)
    t0 = time.perf_counter()
    for i in range(20):
        w.put(i)
    assert time.perf_counter() - t0 < 0.5
    w.close()
    assert w.dropped > 0


def test_latency_stats_known_values() -> None:
    s = latency_stats(list(range(1, 101)))  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01) and s["max"] == 100
    assert s["mean"] == pytest.approx(50.5) and s["n"] == 100
    assert latency_stats([])["p50"] is None


def test_summary_counts_and_deformation(tmp_path: Path) -> None:
    b = SummaryBuilder(warmup=1)
    areas = [1000.0, 800.0, None, 1200.0]
    statuses = ["ok", "ok", "no_detection", "reacquired"]
    for i, (a, st) in enumerate(zip(areas, statuses)):
        b.add(_record(i, status=st, area=a, latency=10.0 * (i + 1)))
    d = b.to_dict(model="lunet")
    assert d["frames_processed"] == 4 and d["frames_dropped"] == 2 and d["frames_seen"] == 6
    assert d["status_counts"] == {"ok": 2, "no_detection": 1, "reacquired": 1}
    assert d["csa"] == {"min": 800.0, "median": 1000.0, "max": 1200.0} and d["units"]["area"] == "px"
    assert d["deformation"]["csa_max_over_min"] == pytest.approx(1.5)
    assert d["latency_ms"]["n"] == 3 and d["latency_ms"]["max"] == 40.0  # the first frame is warm-up
    assert d["max_displacement"] == 3.0 and d["model"] == "lunet"
    write_json(tmp_path / "s.json", d)
    assert json.loads((tmp_path / "s.json").read_text())["csa"]["max"] == 1200.0
    plot_series(tmp_path / "p.png", b, title="test")
    assert cv2.imread(str(tmp_path / "p.png")) is not None


def test_overlay_draws_contour_panel_and_trace() -> None:
    r = OverlayRenderer(calibrated=False)
    out = None
    for i in range(5):
        out = r.render(_record(i, area=1000.0 + 50 * i), fps=24.0)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    base = to_bgr8(_record(0).image)
    assert np.abs(out.astype(int) - base).sum() > 0
    grey16 = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20)
    assert to_bgr8(grey16).shape == (48, 64, 3)
