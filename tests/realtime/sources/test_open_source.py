"""realtime.sources: spec parsing, the registry of source kinds, open_source's errors and options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from realtime.sources import (
    SOURCE_KINDS,
    RoiError,
    SourceError,
    open_source,
    parse_roi,
    parse_spec,
    source_class,
)
from train.errors import UserError


@pytest.mark.parametrize("spec,kind,arg", [
    ("synthetic", "synthetic", ""),
    ("synthetic:7", "synthetic", "7"),
    ("animate:a.png", "animate", "a.png"),
    ("animate:a.png:b.png", "animate", "a.png:b.png"),
    ("0", "device", "0"),
    (3, "device", "3"),
    ("/dev/video2", "device", "/dev/video2"),
    ("device:1", "device", "1"),
    ("clip.mp4", "file", "clip.mp4"),
    ("dir/synthetic.mp4", "file", "dir/synthetic.mp4"),
    ("file:synthetic", "file", "synthetic"),
    ("igtl://127.0.0.1:18944/Image_Reference", "igtl", "//127.0.0.1:18944/Image_Reference"),
    ("dicom:exports/loop", "dicom", "exports/loop"),
])
def test_parse_spec(spec: Any, kind: str, arg: str) -> None:
    assert parse_spec(spec) == (kind, arg)


@pytest.mark.parametrize("spec", ["plus://127.0.0.1:18944", "rtsp://scanner.local/live", "http://host/clip.mp4"])
def test_url_of_no_kind_says_what_is_read(spec: str) -> None:
    with pytest.raises(UserError, match=r"reads no (plus|rtsp|http):// source.*igtl://HOST\[:PORT\]"):
        parse_spec(spec)


def test_registry_lists_kinds() -> None:
    assert {"device", "file", "synthetic", "animate", "igtl", "dicom"} <= set(SOURCE_KINDS)
    with pytest.raises(KeyError, match="animate, device, dicom, file, igtl, synthetic"):
        source_class("webcam")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.mp4 does not exist"):
        open_source(str(tmp_path / "nope.mp4"), realtime=False)
    with pytest.raises(UserError, match="is a directory"):
        open_source(str(tmp_path), realtime=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match="cannot open .*bad.mp4"):
        open_source(str(bad), realtime=False)


def test_bad_options() -> None:
    with pytest.raises(UserError, match="fps"):
        open_source("synthetic", realtime=False, fps=0)
    with pytest.raises(RoiError, match="x,y,w,h"):
        parse_roi("1,2,3")
    with pytest.raises(RoiError, match="w and h > 0"):
        parse_roi((0, 0, 0, 10))
    assert parse_roi("10, 20, 300, 200") == (10, 20, 300, 200)


def test_mn_live_help_names_every_source_form() -> None:
    from realtime.live_cli import build_parser

    text = " ".join(build_parser().format_help().split())
    forms = {"device": "/dev/videoN", "file": "a video file", "dicom": "a DICOM file or a folder",
             "igtl": "igtl://HOST[:PORT][/DEVICE_NAME]", "synthetic": "synthetic[:SEED]",
             "animate": "animate:IMAGE[:MASK]"}
    assert set(forms) == set(SOURCE_KINDS)  # a new kind needs its form in --source's help
    for form in forms.values():
        assert form in text, form
