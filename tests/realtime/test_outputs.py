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
