"""realtime.outputs: the sinks a command's outputs make, in the order that matters."""

from __future__ import annotations

from pathlib import Path

from realtime.outputs import Outputs, output_sinks
from realtime.sinks.base import Callback
from realtime.sinks.csv_sink import CsvSink
from realtime.sinks.masks import MaskSink
from realtime.sinks.summary import SummarySink
from realtime.sinks.truth import TruthSink
from realtime.sinks.video import VideoSink


def test_pixels_first_summary_last(tmp_path: Path) -> None:
    extra = Callback(print)
    sinks = output_sinks(Outputs(csv=tmp_path / "m.csv", video=tmp_path / "o.mp4", summary=tmp_path / "s.json",
                                 plot=tmp_path / "p.png", masks=tmp_path / "masks"), extra=[extra])
    assert [type(s) for s in sinks] == [VideoSink, MaskSink, CsvSink, TruthSink, Callback, SummarySink]
    assert sinks[4] is extra
    paths = {k: v for s in sinks for k, v in s.paths.items()}
    assert paths == {"csv": tmp_path / "m.csv", "video": tmp_path / "o.mp4", "summary": tmp_path / "s.json",
                     "plot": tmp_path / "p.png", "masks": tmp_path / "masks"}


def test_no_files_still_a_summary() -> None:
    sinks = output_sinks(Outputs())
    assert [type(s) for s in sinks] == [TruthSink, SummarySink] and sinks[-1].paths == {}


def test_every_output_in_its_place(tmp_path: Path) -> None:
    """The raw recording, mask volume and OpenIGTLink output store or send the frame (before the CSV: their
    write times reach it); the report, written from the summary, after it."""
    from realtime.sinks.igtl_out import IgtlOutSink
    from realtime.sinks.mask_volume import MaskVolumeSink
    from realtime.sinks.raw import RawSink
    from realtime.sinks.report import ReportSink

    sinks = output_sinks(Outputs(csv=tmp_path / "m.csv", summary=tmp_path / "s.json", raw=tmp_path / "raw.mkv",
                                 masks=tmp_path / "masks.seq.nrrd", masks_format="nrrd", report=tmp_path / "r.html",
                                 igtl={"port": 0}))
    assert [type(s) for s in sinks] == [RawSink, MaskVolumeSink, IgtlOutSink, CsvSink, TruthSink, SummarySink,
                                        ReportSink]
    assert sinks[1].fmt == "nrrd"
    paths = {k: v for s in sinks for k, v in s.paths.items()}
    assert paths["raw"] == tmp_path / "raw.mkv" and paths["masks"] == tmp_path / "masks.seq.nrrd"
    assert paths["report"] == tmp_path / "r.html"
