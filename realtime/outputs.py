"""The outputs a command asks for, assembled into the list of sinks a :class:`~realtime.pipeline.Pipeline`
hands every record to.

:class:`Outputs` names the files (any may be ``None``); :func:`output_sinks` makes their sinks, in
the order that matters: the sinks that draw and store the frame's pixels first (their render and
write times then reach the CSV row), then the CSV, the truth score, any extra sinks (a progress
bar), and the summary last (it reads the truth score and every output's path when the run ends).
The OpenIGTLink output and the raw recording are there too (the sinks that send or store the frame);
the report, written from the summary, comes after it. A new kind of output is a new sink module plus
one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from realtime.sinks.base import Sink
from realtime.sinks.csv_sink import CsvSink
from realtime.sinks.igtl_out import IgtlOutSink
from realtime.sinks.mask_volume import MaskVolumeSink
from realtime.sinks.masks import MaskSink
from realtime.sinks.overlay import OverlayRenderer
from realtime.sinks.raw import RawSink
from realtime.sinks.report import ReportSink
from realtime.sinks.summary import SummarySink
from realtime.sinks.truth import TruthSink
from realtime.sinks.video import VideoSink
from realtime.sinks.window import LiveWindow, WindowSink


@dataclass
class Outputs:
    """Where a run's results go; any of them may be ``None``."""

    csv: Path | None = None
    video: Path | None = None
    summary: Path | None = None
    plot: Path | None = None
    masks: Path | None = None  # per-frame nerve masks: a folder of PNGs, or one NRRD / NIfTI file (masks_format)
    masks_format: str = "png"  # png | nrrd | nifti (--masks FORMAT)
    raw: Path | None = None  # the raw recording (FFV1 .mkv), --record-raw
    report: Path | None = None  # report.html
    igtl: dict[str, Any] = field(default_factory=dict)  # --igtl-out: IgtlOutSink's arguments (port, bind, ...)


def output_sinks(outputs: Outputs, *, window: LiveWindow | None = None, csv_header: dict[str, Any] | None = None,
                 warmup: int = 0, extra: Sequence[Sink] = ()) -> list[Sink]:
    """The sinks of ``outputs`` (and of a live ``window``), ordered as the module docstring says.

    ``csv_header``: the CSV's comment lines (run metadata); ``warmup``: frames left out of the
    summary's latency statistics; ``extra``: more sinks, given each record after the CSV.
    The summary sink is always there (the run's summary is returned even when no file is asked for).
    """
    renderer = OverlayRenderer()
    sinks: list[Sink] = []
    if outputs.video:
        sinks.append(VideoSink(outputs.video, renderer))
    if window is not None:
        sinks.append(WindowSink(window, renderer))
    if outputs.raw:
        sinks.append(RawSink(outputs.raw))
    if outputs.masks:
        sinks.append(MaskSink(outputs.masks) if outputs.masks_format == "png"
                     else MaskVolumeSink(outputs.masks, outputs.masks_format))
    if outputs.igtl:
        sinks.append(IgtlOutSink(**outputs.igtl))
    if outputs.csv:
        sinks.append(CsvSink(outputs.csv, metadata=csv_header))
    sinks.append(TruthSink())
    sinks.extend(extra)
    sinks.append(SummarySink(outputs.summary, plot=outputs.plot, warmup=warmup))
    if outputs.report:
        sinks.append(ReportSink(outputs.report))
    return sinks
