"""``report.html``: a run at a glance in the browser, one self-contained file beside the other outputs.

What it holds: how the run ended; its settings (source, mode, frame size), calibration, model and
engine; the summary table (frames, statuses, CSA / flattening ratio / circularity min, median, max,
displacement, deformation, the truth score when there is one); the CSA / flattening-ratio /
circularity plot (plot.png, embedded); a strip of overlay frames at the minimum, median and maximum
CSA; the latency and per-stage times; links to the CSV, the videos, the masks and summary.json.

Self-contained: inline CSS, images embedded as ``data:`` URIs, no script and nothing fetched from
the network; the links to the other outputs are relative, so the folder can be moved or zipped whole.

Bounded memory: the strip's frames come from the frames seen, not a second pass. The minimum and the
maximum are exact (their image and mask are kept, drawn at the end); the median's frame is the
measured frame closest to the run's median CSA among an evenly spread sample of at most
:data:`SAMPLES` frames drawn as small JPEGs while the run goes on (the sample's spacing doubles when it
is full). The report is written when the run ends (after summary.json and the plot: list it after
the summary sink), atomically.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from realtime.record import STAGES, FrameRecord
from realtime.sinks.base import RunInfo, Sink

log = logging.getLogger(__name__)

SAMPLES = 64
THUMB_WIDTH = 480
#: Output kinds linked from the report, in order, with what a person reads them with.
LINKS = (("csv", "per-frame measurements (CSV)"), ("video", "overlay video"), ("raw", "raw recording (FFV1)"),
         ("masks", "masks"), ("summary", "summary.json"), ("plot", "plot"))


@dataclasses.dataclass
class _Shot:
    area: float
    frame: int
    t_s: float
    record: FrameRecord | None = None  # min / max: the record (its pixels kept), drawn at the end
    jpeg: bytes | None = None  # a sample: drawn already


class ReportSink(Sink):
    """Writes ``path`` (report.html) when the run ends; see the module docstring."""

    def __init__(self, path: str | os.PathLike, samples: int = SAMPLES) -> None:
        self.path = Path(path)
        self.paths = {"report": self.path}
        self.name = f"report {self.path}"
        self.samples_max = samples
        self._run: RunInfo | None = None
        self._renderer = None
        self._min: _Shot | None = None
        self._max: _Shot | None = None
        self._samples: list[_Shot] = []
        self._stride = 1
        self._measured = 0

    def open(self, run: RunInfo) -> None:
        from realtime.sinks.overlay import OverlayRenderer

        self._run = run
        self._renderer = OverlayRenderer(calibrated=run.calibrated)
        self._renderer.set_run(run)  # as the overlay video: the random-weights warning, the scale bar
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: FrameRecord) -> None:
        area = record.area
        if not record.measured or area is None or not math.isfinite(area) or record.image is None:
            return
        if self._min is None or area < self._min.area:
            self._min = _Shot(area, record.frame, record.t_s, record=_keep(record))
        if self._max is None or area > self._max.area:
            self._max = _Shot(area, record.frame, record.t_s, record=_keep(record))
        if self._measured % self._stride == 0:
            self._samples.append(_Shot(area, record.frame, record.t_s, jpeg=self._thumb(record)))
            if len(self._samples) > self.samples_max:
                self._samples = self._samples[::2]
                self._stride *= 2
        self._measured += 1

    def _thumb(self, record: FrameRecord) -> bytes:
        import cv2

        bgr = self._renderer.render(record)
        h, w = bgr.shape[:2]
        if w > THUMB_WIDTH:
            bgr = cv2.resize(bgr, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise OSError("cannot encode a JPEG for the report")
        return buf.tobytes()

    def strip(self, median: float | None) -> list[tuple[str, _Shot]]:
        """The strip's frames: ``(label, shot)`` at the minimum, median and maximum CSA."""
        out: list[tuple[str, _Shot]] = []
        if self._min is not None:
            out.append(("minimum CSA", self._min))
        if median is not None and self._samples:
            out.append(("median CSA", min(self._samples, key=lambda s: (abs(s.area - median), s.frame))))
        if self._max is not None:
            out.append(("maximum CSA", self._max))
        return out

    def close(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        summary = run.summary or {}
        shots = []
        for label, shot in self.strip((summary.get("csa") or {}).get("median")):
            jpeg = shot.jpeg if shot.jpeg is not None else self._thumb(shot.record)
            shots.append((label, shot, jpeg))
        text = render_html(run, summary, shots, self.path.parent)
        self._min = self._max = None
        self._samples = []
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("wrote %s", self.path)


def _keep(record: FrameRecord) -> FrameRecord:
    """A copy of ``record`` that keeps its pixels after the pipeline releases them (drawn at the end)."""
    return dataclasses.replace(record, timings_ms=dict(record.timings_ms),
                               image=None if record.image is None else record.image.copy(),
                               mask=None if record.mask is None else record.mask.copy(), truth=None)


# ---------------------------------------------------------------------------------------------- HTML
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2a44;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .ended{opacity:.85}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:16px 0;padding:12px 18px}
h2{font-size:16px;margin:4px 0 10px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:3px 14px 3px 0;border-bottom:1px solid #eef0f3;vertical-align:top}
th{font-weight:600;color:#3b4456}
td.n{text-align:right}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;flex:1 1 300px;max-width:480px}
figure img{width:100%;border:1px solid #dde1e7;border-radius:4px;display:block}
figcaption{font-size:13px;color:#3b4456;margin-top:4px}
img.plot{max-width:100%;border:1px solid #dde1e7}
.bad{color:#b3261e;font-weight:600}
.ok{color:#1e7d32;font-weight:600}
.note{color:#6b7280}
code{background:#eef0f3;padding:1px 4px;border-radius:3px}
"""


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v not in (None, ""))
    return f"<table>{body}</table>"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def render_html(run: RunInfo, summary: dict[str, Any], shots: list[tuple[str, _Shot, bytes]], folder: Path) -> str:
    """The report page of a finished run (``summary``: what the summary sink left in ``run.summary``)."""
    meta = {**run.metadata, **summary}
    unit = (summary.get("units") or {}).get("area", "px")
    area_unit = "mm²" if unit == "mm2" else "px (uncalibrated)"
    code = summary.get("exit_code", run.exit_code)
    ended = summary.get("ended_because", run.reason)
    source = meta.get("source", "")
    parts = [f"<header><h1>mn-seg run: {_e(source)}</h1><div class='ended'>ended: {_e(ended)} "
             f"(<span>exit code {_e(code)}</span>) · written {_e(dt.datetime.now().isoformat(timespec='seconds'))}"
             "</div></header><main>"]
    if code not in (0, None):
        parts.append(f"<section><p class='bad'>The run did not end normally (exit code {_e(code)}): {_e(ended)}. "
                     "The numbers below cover the frames processed before it ended.</p></section>")
    versions = meta.get("versions") or {}
    settings = [("source", source), ("mode", meta.get("mode")), ("batch", meta.get("batch")),
                ("frame size", _frame_size(summary)), ("frames processed", summary.get("frames_processed")),
                ("wall time", f"{_fmt(summary.get('wall_time_s'), 1)} s"),
                ("processing rate", f"{_fmt(summary.get('processing_fps'), 1)} frames/s")]
    parts.append(f"<section><h2>Settings</h2>{_table(settings)}</section>")
    calibration = [("calibration", meta.get("calibration")), ("detail", _flat(meta.get("calibration_detail"))),
                   ("area unit", area_unit)]
    parts.append(f"<section><h2>Calibration</h2>{_table(calibration)}</section>")
    engine = [("model", meta.get("model")), ("model file", meta.get("model_file")), ("backend", meta.get("backend")),
              ("precision", meta.get("precision")), ("device", meta.get("device")),
              ("network input", meta.get("input_size")), ("engine notes", meta.get("engine_notes")),
              ("mn-seg", versions.get("mn-seg"))]
    parts.append(f"<section><h2>Model and engine</h2>{_table(engine)}</section>")
    parts.append(f"<section><h2>Summary</h2>{_summary_table(summary, area_unit)}</section>")
    parts.append(_plot_section(run, folder))
    parts.append(_strip_section(shots, area_unit))
    parts.append(f"<section><h2>Latency</h2>{_latency_table(summary)}</section>")
    parts.append(_links_section(run, folder))
    parts.append("</main>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>mn-seg report: {_e(Path(str(source)).name or source)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def _frame_size(summary: dict[str, Any]) -> str | None:
    info = summary.get("source_info") or {}
    size = info.get("size") or info.get("frame_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return f"{size[0]} x {size[1]} px"
    return None if size is None else str(size)


def _flat(value: Any) -> str | None:
    if isinstance(value, dict):  # the calibration's detail: its numbers and their source (the text is shown above)
        return ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None and k not in ("text", "calibrated"))
    return None if value is None else str(value)


def _summary_table(s: dict[str, Any], area_unit: str) -> str:
    rows = ["<tr><th></th><th>min</th><th>median</th><th>max</th></tr>"]
    for label, key, digits in ((f"CSA ({area_unit})", "csa", 2), ("CSA (px)", "csa_px", 0),
                               ("flattening ratio", "flattening_ratio", 2), ("circularity", "circularity", 3)):
        d = s.get(key) or {}
        rows.append(f"<tr><th>{_e(label)}</th>" + "".join(f"<td class='n'>{_fmt(d.get(k), digits)}</td>"
                                                           for k in ("min", "median", "max")) + "</tr>")
    stats = "<table>" + "".join(rows) + "</table>"
    counts = s.get("status_counts") or {}
    deformation = s.get("deformation") or {}
    units = s.get("units") or {}
    other = [("frames processed", s.get("frames_processed")), ("frames dropped (live policy)", s.get("frames_dropped")),
             ("statuses", ", ".join(f"{k} {v}" for k, v in counts.items())),
             (f"largest displacement ({units.get('displacement', 'px')})", _fmt(s.get("max_displacement"))),
             ("CSA max / min", _fmt(deformation.get("csa_max_over_min"), 3)),
             ("flattening ratio range", _fmt(deformation.get("fr_range"), 3))]
    truth = s.get("truth")
    if truth:
        other += [("truth: frames scored", truth.get("frames")), ("truth: Dice mean", _fmt(truth.get("dice_mean"), 3)),
                  ("truth: |CSA error| median", _fmt(_pct(truth.get("csa_rel_error_median")), 1) + " %")]
    return stats + "<br>" + _table(other)


def _pct(x: Any) -> float | None:
    return None if x is None else 100.0 * float(x)


def _plot_section(run: RunInfo, folder: Path) -> str:
    plot = run.outputs.get("plot")
    if plot is not None and Path(plot).is_file() and Path(plot).suffix.lower() in (".png", ".jpg", ".jpeg", ".svg"):
        mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".svg": "image/svg+xml"}[Path(plot).suffix.lower()]
        img = ("<img class='plot' alt='CSA, flattening ratio and circularity over time' "
               f"src='{_data_uri(Path(plot).read_bytes(), mime)}'>")
    else:
        img = "<p class='note'>No plot (no frame was processed, or no plot file was asked for).</p>"
    return f"<section><h2>CSA, flattening ratio and circularity over time</h2>{img}</section>"


def _strip_section(shots: list[tuple[str, _Shot, bytes]], area_unit: str) -> str:
    if not shots:
        return "<section><h2>Frames</h2><p class='note'>No frame with a measured nerve.</p></section>"
    figures = "".join(
        f"<figure><img alt='{_e(label)}' src='{_data_uri(jpeg, 'image/jpeg')}'><figcaption><b>{_e(label)}</b>: "
        f"{_fmt(shot.area, 2)} {_e(area_unit)}, frame {shot.frame}, t = {_fmt(shot.t_s, 2)} s</figcaption></figure>"
        for label, shot, jpeg in shots)
    return f"<section><h2>Frames at the minimum, median and maximum CSA</h2><div class='grid'>{figures}</div></section>"


def _latency_table(s: dict[str, Any]) -> str:
    keys = ("p50", "p90", "p95", "p99", "max")
    rows = ["<tr><th>ms</th>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>"]
    lat = s.get("latency_ms") or {}
    rows.append("<tr><th>capture to measurement</th>" + "".join(f"<td class='n'>{_fmt(lat.get(k), 1)}</td>"
                                                              for k in keys) + "</tr>")
    stages = s.get("stage_ms") or {}
    for stage in STAGES:
        if stage in stages:
            rows.append(f"<tr><th>{_e(stage)}</th>" + "".join(f"<td class='n'>{_fmt(stages[stage].get(k), 2)}</td>"
                                                             for k in keys) + "</tr>")
    skipped = s.get("latency_warmup_frames_excluded")
    note = f"<p class='note'>The first {skipped} frames (warm-up) are left out.</p>" if skipped else ""
    return "<table>" + "".join(rows) + "</table>" + note


def _links_section(run: RunInfo, folder: Path) -> str:
    items = []
    for kind, label in LINKS:
        path = run.outputs.get(kind)
        if path is None or not Path(path).exists():
            continue
        rel = Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()
        if Path(path).is_dir():
            rel += "/"
        items.append(f"<li><a href='{_e(rel)}'>{_e(rel)}</a>: {_e(label)}</li>")
    body = f"<ul>{''.join(items)}</ul>" if items else "<p class='note'>No other output files.</p>"
    return f"<section><h2>Files</h2>{body}</section>"
