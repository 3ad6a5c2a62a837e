"""realtime.sinks.report: report.html from a real run (settings, summary, the plot and the strip embedded,
relative links to the other outputs), the strip's frames at the minimum, median and maximum CSA, and
the page rendered by headless Chromium (non-blank, no console message)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from realtime.calibration import Calibration
from realtime.frame import Frame
from realtime.outputs import Outputs, output_sinks
from realtime.pipeline import Pipeline, PipelineConfig
from realtime.sinks.report import ReportSink
from realtime.tracker import Tracker
from tests.realtime._helpers import TruthEngine, ellipse_mask
from tests.realtime.sinks._helpers import record

AXES = [30, 45, 22, 38, 52, 26, 41]  # the nerve's half-axis per frame: its CSA follows (min frame 2, max frame 4)


def strip_of(areas: list[float], samples: int = 64) -> list[tuple[str, int]]:
    sink = ReportSink("unused.html", samples=samples)
    sink.open(SimpleNamespace(calibrated=False, metadata={}))
    for i, area in enumerate(areas):
        sink.write(record(i, area=area))
    median = float(np.median(areas))
    return [(label, shot.frame) for label, shot in sink.strip(median)]


def test_strip_frames_at_min_median_max() -> None:
    assert strip_of([5.0, 1.0, 9.0, 3.0, 7.0]) == [("minimum CSA", 1), ("median CSA", 0), ("maximum CSA", 2)]


def test_strip_sample_stays_bounded_and_spread() -> None:
    """With more frames than the sample holds, the sample thins evenly and still finds a frame at the median."""
    areas = [float(a) for a in range(1000, 0, -1)]  # frame i has area 1000 - i: median 500.5 near frame 500
    sink = ReportSink("unused.html", samples=16)
    sink.open(SimpleNamespace(calibrated=False, metadata={}))
    for i, area in enumerate(areas):
        sink.write(record(i, area=area))
    assert len(sink._samples) <= 16 + 1
    frames = [s.frame for s in sink._samples]
    assert frames == sorted(frames) and frames[0] == 0 and frames[-1] >= 900  # spread over the whole run
    labels = dict((label, shot.frame) for label, shot in sink.strip(500.5))
    assert labels["minimum CSA"] == 999 and labels["maximum CSA"] == 0
    assert abs(labels["median CSA"] - 500) <= 1000 // 16  # the nearest sampled frame


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 7 frames through the real pipeline and sinks (a perfect stand-in engine), calibrated."""
    folder = tmp_path_factory.mktemp("run")
    frames = [Frame(index=i, t_capture=time.monotonic(), pts=i / 24, image=ellipse_mask(300, 200, ax, ax))
              for i, ax in enumerate(AXES)]
    outputs = Outputs(csv=folder / "measurements.csv", video=folder / "overlay.mp4", summary=folder / "summary.json",
                      plot=folder / "plot.png", report=folder / "report.html", masks=folder / "masks.nii.gz",
                      masks_format="nifti")
    pipe = Pipeline(TruthEngine(), Tracker(Calibration(0.1, 0.1, "--mm-per-px 0.1"), fps=24.0), output_sinks(outputs),
                    PipelineConfig(metadata={"source": "seven discs", "model": "truth", "backend": "fake",
                                             "calibration": "0.1000 x 0.1000 mm/px (from --mm-per-px 0.1)"}))
    assert pipe.run(frames).exit_code == 0
    return folder


def test_report_contents(report_run: Path) -> None:
    text = (report_run / "report.html").read_text()
    for heading in ("Settings", "Calibration", "Model and engine", "Summary", "Latency", "Files",
                    "CSA, flattening ratio and circularity over time", "minimum CSA", "median CSA", "maximum CSA"):
        assert heading in text, heading
    assert "seven discs" in text and "0.1000 x 0.1000 mm/px" in text and "mm²" in text
    # the strip: frame 2 (smallest disc), frame 4 (largest); captions carry their CSA
    captions = re.findall(r"<b>(\w+ CSA)</b>: ([\d.]+) mm², frame (\d+)", text)
    assert [(c[0], int(c[2])) for c in captions] == [("minimum CSA", 2), ("median CSA", 3), ("maximum CSA", 4)]
    # self-contained: every image is embedded; nothing is fetched
    sources = re.findall(r"src='([^']*)'", text)
    assert len(sources) == 4 and all(s.startswith("data:image/") for s in sources)  # the plot and three frames
    png = base64.b64decode(sources[0].split(",", 1)[1])
    assert png == (report_run / "plot.png").read_bytes()
    jpeg = cv2.imdecode(np.frombuffer(base64.b64decode(sources[1].split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape[1] == 480  # a thumbnail of the 606-px frame
    assert "<script" not in text and "http://" not in text and "https://" not in text
    links = re.findall(r"<a href='([^']*)'", text)
    assert links == ["measurements.csv", "overlay.mp4", "masks.nii.gz", "summary.json", "plot.png"]  # relative
    assert all((report_run / link).exists() for link in links)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine (Debian: apt-get install chromium); the "
                                                "report is not rendered in a browser here")
def test_report_renders_in_headless_chromium(report_run: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1200,2400", f"--screenshot={shot}", "--enable-logging=stderr",
                           "--log-level=0", f"--user-data-dir={tmp_path / 'profile'}",
                           (report_run / "report.html").resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no error, warning or message of any kind from the page
    image = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (2400, 1200)
    assert image.std() > 20  # not blank: text, tables, the plot and the frames
    # the strip's frames are drawn: their black backgrounds are the only large dark areas of the light page
    assert (image.max(axis=2) < 30).sum() > 50_000
