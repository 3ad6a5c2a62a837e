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
    sink.open(SimpleNamespace(calibrated=False, metadata={}, tracker=None))
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
    sink.open(SimpleNamespace(calibrated=False, metadata={}, tracker=None))
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


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "The HTML report"): what a person reads
# ---------------------------------------------------------------------------------------------
import html as html_mod  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402

from realtime.sinks.base import RunControl, RunInfo  # noqa: E402
from realtime.sinks.report import _Shot, render_html  # noqa: E402


def _rows(text: str) -> dict[str, list[str]]:
    """Each table row of the page: its heading -> its cells (unescaped, tags left out)."""
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", text):
        cells = [html_mod.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
        if cells and cells[0]:
            out[cells[0]] = cells[1:]
    return out


def _run(tmp_path: Path, **kw) -> RunInfo:  # type: ignore[no-untyped-def]
    return RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=24.0, calibrated=True, **kw)


SUMMARY = {
    "units": {"area": "mm2", "displacement": "mm"}, "exit_code": 0, "ended_because": "end of source",
    "frames_processed": 120, "frames_dropped": 3, "wall_time_s": 5.04, "processing_fps": 23.81,
    "source_info": {"size": [606, 468]}, "status_counts": {"ok": 110, "lost": 10},
    "csa": {"min": 9.126, "median": 10.5, "max": 12.0}, "csa_px": {"min": 912.5, "median": 1050.0, "max": 1200.0},
    "flattening_ratio": {"min": 1.234, "median": 1.5, "max": 2.0},
    "circularity": {"min": 0.8125, "median": 0.9, "max": float("nan")},
    "max_displacement": 1.26, "deformation": {"csa_max_over_min": 1.31507, "fr_range": 0.766},
    "latency_ms": {"p50": 20.04, "p90": 25.0, "p95": 26.5, "p99": 30.0, "max": 41.26},
    "stage_ms": {"write": {"p50": 1.5, "p90": 2.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
                 "infer": {"p50": 12.345, "p90": 13.0, "p95": 14.0, "p99": 15.0, "max": 16.0}},
    "latency_warmup_frames_excluded": 5,
}


def test_the_numbers_a_person_reads_each_in_its_place(tmp_path: Path) -> None:
    run = _run(tmp_path, metadata={"source": "clip <1>.mp4", "mode": "live", "batch": 1, "model": "lunet",
                                   "model_file": "m.pt", "backend": "torch", "precision": "fp32", "device": "cpu",
                                   "input_size": "128x96", "engine_notes": None, "versions": {"mn-seg": "0.9"},
                                   "calibration": "0.1000 x 0.1000 mm/px",
                                   "calibration_detail": {"sx": 0.1, "sy": 0.1, "text": "x", "calibrated": True,
                                                          "source": "--mm-per-px", "note": None}})
    text = render_html(run, SUMMARY, [], tmp_path)
    rows = _rows(text)
    assert rows["source"] == ["clip <1>.mp4"] and rows["mode"] == ["live"] and rows["batch"] == ["1"]
    assert rows["frame size"] == ["606 x 468 px"] and rows["frames processed"] == ["120"]
    assert rows["wall time"] == ["5.0 s"] and rows["processing rate"] == ["23.8 frames/s"]
    assert rows["calibration"] == ["0.1000 x 0.1000 mm/px"] and rows["area unit"] == ["mm²"]
    assert rows["detail"] == ["sx: 0.1, sy: 0.1, source: --mm-per-px"]  # its numbers, not the text again
    assert [rows[k] for k in ("model", "model file", "backend", "precision", "device", "network input", "mn-seg")] == [
        ["lunet"], ["m.pt"], ["torch"], ["fp32"], ["cpu"], ["128x96"], ["0.9"]]
    assert "engine notes" not in rows  # nothing to say: no row
    assert rows["CSA (mm²)"] == ["9.13", "10.50", "12.00"] and rows["CSA (px)"] == ["912", "1050", "1200"]
    assert rows["flattening ratio"] == ["1.23", "1.50", "2.00"] and rows["circularity"] == ["0.812", "0.900", "–"]
    assert rows["frames dropped (live policy)"] == ["3"] and rows["statuses"] == ["ok 110, lost 10"]
    assert rows["largest displacement (mm)"] == ["1.26"] and rows["CSA max / min"] == ["1.315"]
    assert rows["flattening ratio range"] == ["0.766"] and "truth: Dice mean" not in rows
    assert rows["capture to measurement"] == ["20.0", "25.0", "26.5", "30.0", "41.3"]
    assert rows["ms"] == ["p50", "p90", "p95", "p99", "max"]
    assert rows["infer"] == ["12.35", "13.00", "14.00", "15.00", "16.00"] and rows["write"][0] == "1.50"
    stages = [k for k in rows if k in ("infer", "write")]
    assert stages == ["infer", "write"]  # in the loop's order
    assert "<p class='note'>The first 5 frames (warm-up) are left out.</p>" in text
    assert re.search(r"<h1>mn-seg run: clip &lt;1&gt;.mp4</h1><div class='ended'>ended: end of source "
                     r"\(<span>exit code 0</span>\) · written \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d</div>", text)
    assert "<title>mn-seg report: clip &lt;1&gt;.mp4</title>" in text and "did not end normally" not in text
    for heading in ("Settings", "Calibration", "Model and engine", "Summary", "Latency", "Files",
                    "CSA, flattening ratio and circularity over time", "Frames"):
        assert f"<h2>{heading}</h2>" in text, heading


def test_an_uncalibrated_run_with_truth_that_failed(tmp_path: Path) -> None:
    summary = {"exit_code": 5, "ended_because": "cannot write overlay.mp4", "csa": {"min": 912.5},
               "source_info": {"frame_size": "606x468"}, "max_displacement": 3.0,
               "truth": {"frames": 40, "dice_mean": 0.91234, "csa_rel_error_median": 0.0456},
               "latency_ms": {}, "stage_ms": {}}
    run = _run(tmp_path, metadata={"source": "/data/a/clip.mp4"})
    text = render_html(run, summary, [], tmp_path)
    rows = _rows(text)
    assert rows["CSA (px (uncalibrated))"] == ["912.50", "–", "–"] and rows["area unit"] == ["px (uncalibrated)"]
    assert rows["largest displacement (px)"] == ["3.00"] and rows["frame size"] == ["606x468"]
    assert rows["truth: frames scored"] == ["40"] and rows["truth: Dice mean"] == ["0.912"]
    assert rows["truth: |CSA error| median"] == ["4.6 %"]
    assert rows["capture to measurement"] == ["–"] * 5 and "wall time" in rows and rows["wall time"] == ["– s"]
    assert ("<p class='bad'>The run did not end normally (exit code 5): cannot write overlay.mp4. The numbers "
            "below cover the frames processed before it ended.</p>") in text
    assert "<title>mn-seg report: clip.mp4</title>" in text and "warm-up" not in text
    assert "<p class='note'>No frame with a measured nerve.</p>" in text
    assert "<p class='note'>No other output files.</p>" in text
    assert "<p class='note'>No plot (no frame was processed, or no plot file was asked for).</p>" in text
    # without a summary: the run's own exit code and reason
    bare = render_html(RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=24.0,
                               calibrated=False, exit_code=3, reason="source failed"), {}, [], tmp_path)
    assert "ended: source failed (<span>exit code 3</span>)" in bare and "exit code 3): source failed." in bare


def test_the_plot_embedded_by_its_kind_and_links_relative(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "plot.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (out / "m.csv").write_text("x")
    (out / "masks").mkdir()
    (tmp_path / "elsewhere.mkv").write_bytes(b"x")
    run = _run(tmp_path, outputs={"plot": out / "plot.svg", "csv": out / "m.csv", "masks": out / "masks",
                                  "raw": tmp_path / "elsewhere.mkv", "video": out / "missing.mp4"})
    text = render_html(run, {}, [], out)
    svg = base64.b64encode((out / "plot.svg").read_bytes()).decode()
    assert (f"<img class='plot' alt='CSA, flattening ratio and circularity over time' "
            f"src='data:image/svg+xml;base64,{svg}'>") in text
    assert re.findall(r"<li>(.*?)</li>", text) == [
        "<a href='m.csv'>m.csv</a>: per-frame measurements (CSV)",
        "<a href='../elsewhere.mkv'>../elsewhere.mkv</a>: raw recording (FFV1)", "<a href='masks/'>masks/</a>: masks",
        "<a href='plot.svg'>plot.svg</a>: plot"]  # in order; the video that is not there left out
    for suffix, mime in ((".png", "image/png"), (".JPG", "image/jpeg"), (".jpeg", "image/jpeg")):
        (out / f"p{suffix}").write_bytes(b"\x89")
        assert f"src='data:{mime};base64,iQ=='" in render_html(_run(tmp_path, outputs={"plot": out / f"p{suffix}"}),
                                                                 {}, [], out)
    (out / "p.pdf").write_bytes(b"%PDF")
    assert "No plot" in render_html(_run(tmp_path, outputs={"plot": out / "p.pdf"}), {}, [], out)


def test_the_strip_captions(tmp_path: Path) -> None:
    shots = [("minimum CSA", _Shot(9.126, 12, 0.5), b"\xff\xd8"), ("maximum CSA", _Shot(12.0, 40, 1.666), b"\xff")]
    text = render_html(_run(tmp_path), {"units": {"area": "mm2"}}, shots, tmp_path)
    assert re.findall(r"<figcaption>(.*?)</figcaption>", text) == [
        "<b>minimum CSA</b>: 9.13 mm², frame 12, t = 0.50 s", "<b>maximum CSA</b>: 12.00 mm², frame 40, t = 1.67 s"]
    assert "<img alt='minimum CSA' src='data:image/jpeg;base64,/9g='>" in text


def test_values_as_a_person_reads_them() -> None:
    from realtime.sinks.report import _flat, _fmt, _frame_size

    assert [_fmt(None), _fmt(True), _fmt(False), _fmt(3), _fmt(np.int64(4)), _fmt(2.345), _fmt(np.float32(0.5), 1),
            _fmt(float("inf")), _fmt("x")] == ["–", "yes", "no", "3", "4", "2.35", "0.5", "–", "x"]
    assert _frame_size({}) is None and _frame_size({"source_info": {"size": [1, 2, 3]}}) == "[1, 2, 3]"
    assert _flat(None) is None and _flat(3) == "3" and _flat({"a": None, "b": 2}) == "b: 2"


def test_the_sink_writes_atomically_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a" / "report.html"
    sink = ReportSink(path)
    assert sink.name == f"report {path}" and sink.paths == {"report": path} and sink.samples_max == 64
    sink.close()  # never opened: nothing written
    assert not path.exists()
    run = _run(tmp_path, metadata={"source": "s"})
    sink.open(run)
    assert path.parent.is_dir()
    sink.write(record(0, area=5.0))
    with caplog.at_level(logging.INFO, logger="realtime.sinks.report"):
        sink.close()
    assert [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.report"] == [f"wrote {path}"]
    assert path.read_text().startswith("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>")
    assert os.listdir(path.parent) == ["report.html"]  # no temporary file left
    sink.close()  # once only


def test_frames_that_cannot_be_in_the_strip_are_left_out() -> None:
    sink = ReportSink("unused.html")
    sink.open(SimpleNamespace(calibrated=False, metadata={}, tracker=None))
    lost = record(0, status="lost", area=None)
    nan = record(1, area=float("nan"))
    no_image = record(2, area=3.0)
    no_image.image = None
    for r in (lost, nan, no_image):
        sink.write(r)
    assert sink.strip(3.0) == [] and sink._measured == 0
    sink.write(record(3, area=4.0))
    sink.write(record(4, area=4.0))  # a tie: the first kept as minimum and maximum
    assert [(label, s.frame) for label, s in sink.strip(4.0)] == [("minimum CSA", 3), ("median CSA", 3),
                                                                  ("maximum CSA", 3)]
    assert [(label, s.frame) for label, s in sink.strip(None)] == [("minimum CSA", 3), ("maximum CSA", 3)]


def test_thumbnails_480_px_wide_at_most() -> None:
    sink = ReportSink("unused.html")
    sink.open(SimpleNamespace(calibrated=False, metadata={}, tracker=None))
    wide = record(0)
    wide.image = np.full((300, 961), 80, np.uint8)
    wide.mask, wide.contours = None, ()
    small = record(1)
    shapes = [cv2.imdecode(np.frombuffer(sink._thumb(r), np.uint8), cv2.IMREAD_COLOR).shape for r in (wide, small)]
    assert shapes == [(150, 480, 3), (48, 64, 3)]  # 300 x 480 / 961 = 149.8


# ---------------------------------------------------------------------------------------------
# found by mutation testing, first full run of report.py (docs/mutation-testing.md, "The HTML report")
# ---------------------------------------------------------------------------------------------
import dataclasses  # noqa: E402
import io  # noqa: E402
from collections import defaultdict  # noqa: E402
from html.parser import HTMLParser  # noqa: E402

from realtime.record import FrameRecord  # noqa: E402
from realtime.sinks import overlay as overlay_mod  # noqa: E402
from realtime.sinks.overlay import STATUS_COLOURS  # noqa: E402


class Page(HTMLParser):
    """The written page as a browser reads it (tag names in any case, entities decoded): the sections'
    headings and table rows (each a list of its cells' text), the texts of the headings, paragraphs, captions
    and list items, the pictures and the links; and ``faults``: an element closed out of order or never
    closed, and text outside the elements that hold text (characters loose between sections, tables, rows,
    cells, figures or list items, which a reader would see as stray text on the page)."""

    VOID = {"meta", "img", "br"}
    HOLDERS = {"title", "style", "h1", "h2", "span", "p", "th", "td", "figcaption", "b", "a", "li"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.faults: list[str] = []
        self.headings: list[str] = []
        self.sections: dict[str, list[list[str]]] = {}
        self.texts: dict[str, list[str]] = defaultdict(list)
        self.images: list[dict[str, str | None]] = []
        self.links: list[tuple[str | None, str]] = []
        self._open: list[tuple[str, dict[str, str | None], list[str]]] = []
        self._row: list[str] = []
        self.feed(text)
        self.close()
        self.faults += [f"<{tag}> never closed" for tag, _, _ in self._open]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in self.VOID:
            return
        self._open.append((tag, dict(attrs), []))
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self._open or self._open[-1][0] != tag:
            self.faults.append(f"</{tag}> closes <{self._open[-1][0] if self._open else None}>")
            if tag not in [t for t, _, _ in self._open]:
                return
            while self._open[-1][0] != tag:
                self._open.pop()
        _, attrs, parts = self._open.pop()
        text = "".join(parts)
        if tag in ("th", "td"):
            self._row.append(text)
        elif tag == "tr":
            self.sections[self.headings[-1]].append(self._row)
        elif tag == "h2":
            self.headings.append(text)
            self.sections[text] = []
        elif tag == "a":
            self.links.append((attrs.get("href"), text))
        if tag in ("title", "h1", "p", "figcaption", "li"):
            self.texts[tag].append(text)

    def handle_data(self, data: str) -> None:
        for _, _, parts in self._open:
            parts.append(data)
        if data.strip():
            tag, attrs, _ = self._open[-1] if self._open else ("", {}, [])
            if tag not in self.HOLDERS and not (tag == "div" and attrs.get("class") == "ended"):
                self.faults.append(f"text {data!r} loose in <{tag}>")

    def rows(self, heading: str) -> dict[str, list[str]]:
        return {cells[0]: cells[1:] for cells in self.sections[heading]}


HEADINGS = ["Settings", "Calibration", "Model and engine", "Summary", "CSA, flattening ratio and circularity over time",
            "Frames at the minimum, median and maximum CSA", "Latency", "Files"]


def test_a_full_page_holds_nothing_stray_and_each_table_row_by_row(tmp_path: Path) -> None:
    (tmp_path / "plot.png").write_bytes(b"\x89PNG")
    (tmp_path / "o'neil.csv").write_text("x")  # a name with a quote: the link's address stays whole
    run = _run(tmp_path, outputs={"plot": tmp_path / "plot.png", "csv": tmp_path / "o'neil.csv"},
               metadata={"source": "clip <1>.mp4", "mode": "live", "batch": 1, "model": "lunet", "model_file": "m.pt",
                         "backend": "torch", "precision": "fp32", "device": "cpu", "input_size": "128x96",
                         "engine_notes": "random weights (an architecture name)", "versions": {"mn-seg": "0.9"},
                         "calibration": "0.1000 x 0.1000 mm/px",
                         "calibration_detail": {"sx": 0.1, "sy": 0.1, "text": "x", "source": "--mm-per-px"}})
    summary = {**SUMMARY, "truth": {"frames": 40, "dice_mean": 0.91234, "csa_rel_error_median": 0.125}}
    shots = [("minimum CSA", _Shot(9.126, 12, 0.5), b"\xff\xd8"), ("median CSA", _Shot(10.5, 20, 0.8333), b"\xff"),
             ("maximum CSA", _Shot(12.0, 40, 1.666), b"\xd8")]
    page = Page(render_html(run, summary, shots, tmp_path))
    assert page.faults == []
    assert page.headings == HEADINGS
    assert page.sections["Settings"] == [
        ["source", "clip <1>.mp4"], ["mode", "live"], ["batch", "1"], ["frame size", "606 x 468 px"],
        ["frames processed", "120"], ["wall time", "5.0 s"], ["processing rate", "23.8 frames/s"]]
    assert page.sections["Calibration"] == [["calibration", "0.1000 x 0.1000 mm/px"],
                                            ["detail", "sx: 0.1, sy: 0.1, source: --mm-per-px"], ["area unit", "mm²"]]
    assert page.sections["Model and engine"] == [
        ["model", "lunet"], ["model file", "m.pt"], ["backend", "torch"], ["precision", "fp32"], ["device", "cpu"],
        ["network input", "128x96"], ["engine notes", "random weights (an architecture name)"], ["mn-seg", "0.9"]]
    assert page.sections["Summary"] == [
        ["", "min", "median", "max"], ["CSA (mm²)", "9.13", "10.50", "12.00"], ["CSA (px)", "912", "1050", "1200"],
        ["flattening ratio", "1.23", "1.50", "2.00"], ["circularity", "0.812", "0.900", "–"],
        ["frames processed", "120"], ["frames dropped (live policy)", "3"], ["statuses", "ok 110, lost 10"],
        ["largest displacement (mm)", "1.26"], ["CSA max / min", "1.315"], ["flattening ratio range", "0.766"],
        ["truth: frames scored", "40"], ["truth: Dice mean", "0.912"], ["truth: |CSA error| median", "12.5 %"]]
    assert page.sections["Latency"] == [
        ["ms", "p50", "p90", "p95", "p99", "max"], ["capture to measurement", "20.0", "25.0", "26.5", "30.0", "41.3"],
        ["infer", "12.35", "13.00", "14.00", "15.00", "16.00"], ["write", "1.50", "2.00", "2.00", "3.00", "4.00"]]
    assert page.texts["figcaption"] == ["minimum CSA: 9.13 mm², frame 12, t = 0.50 s",
                                        "median CSA: 10.50 mm², frame 20, t = 0.83 s",
                                        "maximum CSA: 12.00 mm², frame 40, t = 1.67 s"]
    assert [(i["alt"], i["src"]) for i in page.images] == [
        ("CSA, flattening ratio and circularity over time", "data:image/png;base64,iVBORw=="),
        ("minimum CSA", "data:image/jpeg;base64,/9g="), ("median CSA", "data:image/jpeg;base64,/w=="),
        ("maximum CSA", "data:image/jpeg;base64,2A==")]
    assert page.links == [("o'neil.csv", "o'neil.csv"), ("plot.png", "plot.png")]
    assert page.texts["li"] == ["o'neil.csv: per-frame measurements (CSV)", "plot.png: plot"]
    assert page.texts["p"] == ["The first 5 frames (warm-up) are left out."]
    assert page.texts["h1"] == ["mn-seg run: clip <1>.mp4"] and page.texts["title"] == ["mn-seg report: clip <1>.mp4"]


def test_an_empty_page_holds_nothing_stray_and_no_empty_row(tmp_path: Path) -> None:
    """A run that ended before any frame, with no metadata and no summary: every section is there, each row
    without a value left out (no source, no statuses), the numbers that are missing shown as '–'."""
    run = RunInfo(source=None, engine=None, tracker=None, control=RunControl(), fps=24.0, calibrated=False,
                  exit_code=3, reason="source failed")
    page = Page(render_html(run, {}, [], tmp_path))
    assert page.faults == []
    assert page.headings == HEADINGS[:5] + ["Frames"] + HEADINGS[6:]
    assert page.texts["h1"] == ["mn-seg run: "] and page.texts["title"] == ["mn-seg report: "]  # no source named
    assert page.sections["Settings"] == [["wall time", "– s"], ["processing rate", "– frames/s"]]
    assert page.sections["Calibration"] == [["area unit", "px (uncalibrated)"]]
    assert page.sections["Model and engine"] == []
    dash = ["–", "–", "–"]
    assert page.sections["Summary"] == [
        ["", "min", "median", "max"], ["CSA (px (uncalibrated))", *dash], ["CSA (px)", *dash],
        ["flattening ratio", *dash], ["circularity", *dash],
        ["largest displacement (px)", "–"], ["CSA max / min", "–"], ["flattening ratio range", "–"]]
    assert page.sections["Latency"] == [["ms", "p50", "p90", "p95", "p99", "max"],
                                        ["capture to measurement", "–", "–", "–", "–", "–"]]
    assert page.texts["p"] == [
        "The run did not end normally (exit code 3): source failed. The numbers below cover the frames processed "
        "before it ended.", "No plot (no frame was processed, or no plot file was asked for).",
        "No frame with a measured nerve.", "No other output files."]
    assert page.images == [] and page.links == []
    # a truth score without a CSA error: the row says so
    truth = Page(render_html(run, {"truth": {"frames": 2, "dice_mean": 0.5}}, [], tmp_path)).rows("Summary")
    assert truth["truth: |CSA error| median"] == ["– %"] and truth["truth: Dice mean"] == ["0.500"]


def nerve_record(i: int, area: float, *, size: tuple[int, int] = (400, 300), calibrated: bool = False,
                 mask: bool = True) -> FrameRecord:
    """A measured frame (status ok, ``t_s`` = i / 24): a grey (80) picture ``size`` (w, h) with the nerve a disc
    of radius 40 at its centre; ``area``: its CSA in the run's unit (mm² when ``calibrated``)."""
    rec = record(i, area=area)
    w, h = size
    rec.image = np.full((h, w), 80, np.uint8)
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (w // 2, h // 2), 40, 1, -1)
    rec.contours = tuple(cv2.findContours(disc, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
    rec.mask = disc if mask else None
    if calibrated:
        m = dataclasses.replace(rec.tracked.measurement, area_mm2=area)
        rec.tracked = dataclasses.replace(rec.tracked, measurement=m)
        rec.calibrated = True
    return rec


def strip_pictures(path: Path) -> dict[str, np.ndarray]:
    """The strip's pictures of a written report, by label, decoded."""
    page = Page(path.read_text(encoding="utf-8"))
    assert page.faults == []
    return {i["alt"]: cv2.imdecode(np.frombuffer(base64.b64decode(i["src"].split(",", 1)[1]), np.uint8),
                                   cv2.IMREAD_COLOR) for i in page.images if i["src"].startswith("data:image/jpeg")}


FILL = np.array(STATUS_COLOURS["ok"]) * 0.25 + 80 * 0.75  # the nerve on grey 80, filled at a quarter of "ok"'s colour


def test_the_strip_draws_each_frame_as_it_was_when_seen(tmp_path: Path) -> None:
    """The minimum and maximum are drawn at the end: from a copy of their pixels, not from the buffers the
    source and the pipeline go on to reuse; with the nerve filled in its status colour, as the overlay video."""
    sink = ReportSink(tmp_path / "report.html")
    sink.open(_run(tmp_path, summary={"csa": {"median": 20.0}}))
    for i, area in enumerate([20.0, 10.0, 30.0]):
        rec = nerve_record(i, area)
        sink.write(rec)
        rec.image[:] = 255  # the buffers written over by the next frame
        rec.mask[:] = 0
    sink.close()
    pictures = strip_pictures(tmp_path / "report.html")
    assert list(pictures) == ["minimum CSA", "median CSA", "maximum CSA"]
    for label, picture in pictures.items():
        assert picture.shape == (300, 400, 3)
        assert np.abs(picture[150, 200].astype(float) - FILL).max() <= 4, label  # the nerve, filled
        assert np.abs(picture[150, 300].astype(float) - 80).max() <= 4, label  # the frame's own grey


def test_a_frame_without_a_mask_is_still_in_the_strip(tmp_path: Path) -> None:
    sink = ReportSink(tmp_path / "report.html")
    sink.open(_run(tmp_path))
    sink.write(nerve_record(0, 10.0, mask=False))
    sink.close()
    pictures = strip_pictures(tmp_path / "report.html")
    assert list(pictures) == ["minimum CSA", "maximum CSA"]  # no summary, so no median
    for picture in pictures.values():
        assert np.abs(picture[150, 200].astype(float) - 80).max() <= 4  # the frame, without a nerve drawn


def test_the_strip_captions_from_the_frames_written(tmp_path: Path) -> None:
    """1001 frames, a sample of 16: every 64th frame is sampled; the median's frame is the sampled frame
    nearest the run's median CSA, here frame 64, which holds exactly the median (501 px)."""
    areas = [float(i + 1) for i in range(1001)]
    areas[64], areas[500] = areas[500], areas[64]
    sink = ReportSink(tmp_path / "report.html", samples=16)
    run = _run(tmp_path, summary={"csa": {"median": float(np.median(areas))}, "units": {"area": "px"}})
    run.calibrated = False
    sink.open(run)
    for i, area in enumerate(areas):
        sink.write(record(i, area=area))
    sink.close()
    page = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert page.texts["figcaption"] == ["minimum CSA: 1.00 px (uncalibrated), frame 0, t = 0.00 s",
                                        "median CSA: 501.00 px (uncalibrated), frame 64, t = 2.67 s",
                                        "maximum CSA: 1001.00 px (uncalibrated), frame 1000, t = 41.67 s"]


def test_the_report_in_folders_not_made_yet(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "report.html"
    sink = ReportSink(path)
    sink.open(_run(tmp_path))
    sink.close()
    assert path.is_file()


def test_the_page_is_utf8_whatever_the_locale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page says it is UTF-8 (its meta charset) and holds '–', '·' and '²': it is written so on a machine
    whose locale encoding is ASCII too."""
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: encoding or "ascii")
    path = tmp_path / "report.html"
    sink = ReportSink(path)
    sink.open(_run(tmp_path, summary={"units": {"area": "mm2"}}))
    sink.close()
    text = path.read_bytes().decode("utf-8")
    assert "<meta charset='utf-8'>" in text and "mm²" in text and " · written " in text


def test_the_strip_pictures_say_what_the_overlay_video_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every picture of a run with random weights says so in red (``run_warning``), and a calibrated run's
    pictures carry the scale bar (0.1 mm/px, 400 px wide: 5 mm), as the overlay video's frames do."""
    texts: list[tuple[str, tuple[int, ...]]] = []
    put = cv2.putText

    def spy(img, text, org, font, scale, ink, thickness, line_type):  # type: ignore[no-untyped-def]
        texts.append((text, tuple(ink)))
        return put(img, text, org, font, scale, ink, thickness, line_type)

    monkeypatch.setattr(overlay_mod.cv2, "putText", spy)
    tracker = Tracker(Calibration(0.1, 0.1, "--mm-per-px 0.1"), fps=24.0)
    run = dataclasses.replace(_run(tmp_path, metadata={"engine_notes": "random weights (an architecture name)"},
                                   summary={"csa": {"median": 2.0}, "units": {"area": "mm2"}}), tracker=tracker)
    sink = ReportSink(tmp_path / "report.html")
    sink.open(run)
    for i, area in enumerate([2.0, 1.0, 3.0]):
        sink.write(nerve_record(i, area, calibrated=True))
    sink.close()
    drawn = sum(t.startswith("status: ") for t, _ in texts)  # one status line a picture
    assert drawn == 5  # three samples while the run goes, the minimum and the maximum at the end
    assert texts.count(("RANDOM WEIGHTS: not a measurement", overlay_mod.RED)) == drawn
    assert [t for t, _ in texts].count("5 mm") == drawn
    assert sum(bool(re.fullmatch(r"CSA \d\.\d\d mm", t)) for t, _ in texts) == drawn  # mm² (its ² drawn apart)
    assert len(strip_pictures(tmp_path / "report.html")) == 3


def jpeg_luma_table(data: bytes) -> list[int]:
    """The first quantisation table (luminance) of a baseline JPEG, in the file's order."""
    at = data.index(b"\xff\xdb")  # DQT
    assert data[at + 4] == 0  # 8-bit entries, table 0
    return list(data[at + 5:at + 5 + 64])


# JPEG's example luminance table (ITU-T T.81 Annex K.1), which libjpeg scales by 200 - 2 q % for a quality q >= 50
K1 = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
      14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
      49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]


def test_thumbnails_jpeg_quality_85_averaged_down_and_never_0_px_tall() -> None:
    sink = ReportSink("unused.html")
    sink.open(SimpleNamespace(calibrated=False, metadata={}, tracker=None))
    small = sink._thumb(record(0))
    assert sorted(jpeg_luma_table(small)) == sorted(max(1, (q * 30 + 50) // 100) for q in K1)  # quality 85
    # 1440 px wide, a one-pixel white line every third column: shrunk 3 x, each thumbnail pixel is the mean of
    # the three it covers (85), not one of them (0 or 255), so thin lines stay visible
    lines = record(1)
    lines.image = np.zeros((480, 1440), np.uint8)
    lines.image[:, ::3] = 255
    lines.mask, lines.contours = None, ()
    thumb = cv2.imdecode(np.frombuffer(sink._thumb(lines), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (160, 480, 3)
    assert abs(float(thumb[60:100, 200:300].mean()) - 85) <= 3
    flat = record(2)  # a frame 1000 x 3 px: 480 x 1.44 rounds to 1 px
    flat.image = np.full((3, 1000), 80, np.uint8)
    flat.mask, flat.contours = None, ()
    assert cv2.imdecode(np.frombuffer(sink._thumb(flat), np.uint8), cv2.IMREAD_COLOR).shape == (1, 480, 3)
