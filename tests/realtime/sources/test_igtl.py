"""realtime.sources.igtl against a real pyigtl.OpenIGTLinkServer on 127.0.0.1 sending phantom frames:
pixels and formats, the spacing from the IJK-to-RAS matrix as the run's calibration (mm² against the
truth), device filtering, reconnecting after a server restart, and the errors."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl")

from realtime import live_cli  # noqa: E402
from realtime.sinks.csv_sink import read_csv  # noqa: E402
from realtime.sources import SourceError, SourceLost, open_source  # noqa: E402
from realtime.sources.igtl import image_plane, parse_igtl_spec, plane_matrix, to_frame_image  # noqa: E402
from realtime.sources.phantom import PhantomSource  # noqa: E402
from tests.realtime._helpers import TruthEngine  # noqa: E402

SX, SY = 0.07, 0.085  # mm per column, mm per row: anisotropic, so a swapped axis shows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def matrix(sx: float = SX, sy: float = SY) -> np.ndarray:
    m = np.eye(4)
    m[0, 0], m[1, 1] = -sx, -sy  # PLUS's Image_Reference points the axes as it likes; the length counts
    m[:3, 3] = (12.0, -4.0, 30.0)
    return m


class Server:
    """A pyigtl server on 127.0.0.1:port (its signal handlers put back: it installs its own)."""

    def __init__(self, port: int) -> None:
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        self.server = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
        for s, h in saved.items():
            signal.signal(s, h)

    def wait_client(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.is_connected():
            assert time.monotonic() < deadline, "the source never connected"
            time.sleep(0.01)

    def send(self, message: pyigtl.MessageBase, timeout: float = 10.0) -> bool:
        """Queue ``message`` and wait until it went out (False if the client went away)."""
        self.server.send_message(message, wait=False)
        deadline = time.monotonic() + timeout
        while self.server.outgoing_messages:
            if not self.server.is_connected() or time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def image(self, image: np.ndarray, timestamp: float, device: str = "Image_Reference",
              ijk: np.ndarray | None = None) -> bool:
        return self.send(pyigtl.ImageMessage(image, ijk_to_world_matrix=matrix() if ijk is None else ijk,
                                             timestamp=timestamp, device_name=device))

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(free_port())
    yield s
    s.stop()


def phantom_truth(n: int) -> list[np.ndarray]:
    ph = PhantomSource(seed=3)
    return [ph.render(i)[1] for i in range(n)]


def test_spec_and_plane_conventions() -> None:
    assert parse_igtl_spec("//10.0.0.2") == ("10.0.0.2", 18944, None)
    assert parse_igtl_spec("//localhost:18945/Image_Reference") == ("localhost", 18945, "Image_Reference")
    with pytest.raises(SourceError, match="port"):
        parse_igtl_spec("//h:99999")
    img = np.arange(24, dtype=np.uint8).reshape(1, 4, 6)  # k, j, i: one slice of 4 rows, 6 columns
    plane, spacing = image_plane(img, np.diag([0.1, 0.2, 0.5, 1.0]))
    assert plane.shape == (4, 6) and spacing == pytest.approx((0.1, 0.2))
    vol = np.zeros((3, 4, 6), np.uint8)
    with pytest.raises(SourceError, match="3-D volume"):
        image_plane(vol, np.eye(4))
    f, note = to_frame_image(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert f.dtype == np.uint8 and f.tolist() == [[0, 128, 255]] and "scaled by 255" in note
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    assert to_frame_image(rgb)[0][0, 0].tolist() == [0, 0, 200]  # BGR


def test_plane_matrix_follows_the_pictures_columns_and_rows() -> None:
    m = np.array([[0.0, 0.2, 0.0, 5.0], [0.1, 0.0, 0.0, 6.0], [0.0, 0.0, 0.5, 7.0], [0, 0, 0, 1]])  # i->A, j->R
    one_slice = plane_matrix((1, 4, 6), m)  # k flat: columns = i, rows = j
    assert np.allclose(one_slice, m)
    packed = plane_matrix((4, 6, 1), m)  # pyigtl's own packing of a 2-D array: i flat, rows = k, columns = j
    assert np.allclose(packed[:3, 0], m[:3, 1]) and np.allclose(packed[:3, 1], m[:3, 2])
    assert np.allclose(packed[:3, 2], m[:3, 0]) and np.allclose(packed[:3, 3], m[:3, 3])


def test_frame_matrix_is_the_senders_geometry_moved_to_the_roi(server: Server) -> None:
    grey = PhantomSource(seed=1).render(0)[0]
    m = matrix()
    with open_source(f"igtl://127.0.0.1:{server.server.port}", realtime=True, roi="10,20,300,200") as src:
        it = iter(src)
        server.wait_client()
        assert server.image(grey[None], 5.0, ijk=m)
        frame = next(it)
        geometry = src.frame_matrix
    assert frame.image.shape == (200, 300)
    assert np.allclose(geometry[:3, :3], m[:3, :3])
    assert np.allclose(geometry[:3, 3], m[:3, 3] + 10 * m[:3, 0] + 20 * m[:3, 1])  # voxel (10, 20) of the sender


def test_images_formats_timestamp_spacing_and_device_filter(server: Server) -> None:
    ph = PhantomSource(seed=1)
    grey = [ph.render(i)[0] for i in range(3)]
    got: list = []
    with open_source(f"igtl://127.0.0.1:{server.server.port}/Image_Reference", realtime=True) as src:
        assert src.kind == "igtl"
        it = iter(src)
        server.wait_client()
        sent = [
            (grey[0][None], 100.25),                                         # uint8, one slice
            ((grey[1].astype(np.uint16) * 257)[None], 100.5),                # uint16
            ((grey[2].astype(np.float32) / 255.0)[None], 100.75),            # float 0-1
            (np.repeat(grey[0][None, :, :, None], 3, axis=3), 101.0),        # RGB, 3 components
        ]
        for image, ts in sent:
            # another device and a transform in between: ignored
            assert server.image(np.zeros((1, 8, 8), np.uint8), ts, device="Other")
            assert server.send(pyigtl.TransformMessage(np.eye(4), device_name="ProbeToTracker"))
            assert server.image(image, ts)
            got.append(next(it))
        info = src.describe()
    assert [f.t_source for f in got] == [100.25, 100.5, 100.75, 101.0]
    assert [f.pts for f in got] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert np.array_equal(got[0].image, grey[0])
    assert got[1].image.dtype == np.uint16 and np.array_equal(got[1].image, grey[1].astype(np.uint16) * 257)
    assert got[2].image.dtype == np.uint8 and np.abs(got[2].image.astype(int) - grey[2]).max() <= 1
    assert got[3].image.shape == (*grey[0].shape, 3) and np.array_equal(got[3].image[..., 1], grey[0])
    assert all(f.t_wall is not None and abs(f.t_wall - time.time()) < 600 for f in got)
    assert src.calibration is not None and (src.calibration.sx, src.calibration.sy) == pytest.approx((SX, SY))
    assert "OpenIGTLink" in src.calibration.source
    assert info["device"] == "Image_Reference" and info["messages_ignored"] >= 8
    assert info["ignored_devices"] == ["Other", "ProbeToTracker"] and info["calibration"]["calibrated"]


def test_mn_live_mm2_within_1_percent_of_truth(server: Server, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_cli, "open_engine", lambda args, batch=1, live=False: TruthEngine())
    masks = phantom_truth(6)
    done = threading.Event()

    def send() -> None:  # the phantom's truth masks (a perfect network's input), frame i stamped 1000 + i
        server.wait_client()
        i = 0
        while not done.is_set() and server.image(masks[i % len(masks)][None], 1000.0 + i % len(masks)):
            i += 1
            time.sleep(0.01)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    out = tmp_path / "live"
    code = live_cli.cli(["--source", f"igtl://127.0.0.1:{server.server.port}", "--headless", "--no-video",
                         "--frames", "8", "--presence", "off", "--confirm", "1", "--out", str(out), "-q"])
    done.set()
    assert code == 0
    rows = read_csv(out / "measurements.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == 8
    assert summary["calibration_detail"]["source"].startswith("OpenIGTLink IMAGE matrix of device Image_Reference")
    assert summary["calibration_detail"]["mm_per_px_x"] == pytest.approx(SX)
    assert summary["calibration_detail"]["mm_per_px_y"] == pytest.approx(SY)
    assert summary["source_info"]["kind"] == "igtl"
    errors = []
    for row in rows:
        i = int(round(float(row["source_time_s"]))) - 1000
        truth_mm2 = np.count_nonzero(masks[i]) * SX * SY
        errors.append(abs(float(row["area_mm2"]) - truth_mm2) / truth_mm2)
        assert row["wall_time_utc"].endswith("Z") and "T" in row["wall_time_utc"]
    assert max(errors) < 0.01, errors


def test_reconnects_after_a_server_restart_then_gives_up_exit_3() -> None:
    port = free_port()
    first = Server(port)
    img = PhantomSource(seed=2).render(0)[0][None]
    src = open_source(f"igtl://127.0.0.1:{port}", realtime=True, reconnect_s=5.0, retry_interval_s=0.05)
    with src:
        it = iter(src)
        first.wait_client()
        assert first.image(img, 1.0)
        assert next(it).t_source == 1.0
        first.stop()
        second = Server(port)  # the same port, as a restarted PlusServer
        try:
            second.wait_client()
            assert second.image(img, 2.0)
            f = next(it)
            # at least one reconnect: on a loaded machine the client may first reach the closing server once more
            assert f.t_source == 2.0 and src.reconnects >= 1 and f.index == 1
            src.reconnect_s = 0.3  # from now on nobody comes back
        finally:
            second.stop()
        assert next(it, None) is None
    assert src.failed and "could not be reconnected to within 0.3 s" in src.error
    with pytest.raises(SourceLost) as info:
        src.raise_if_failed()
    assert info.value.exit_code == 3


def test_a_volume_is_refused_with_the_reason(server: Server) -> None:
    with open_source(f"igtl://127.0.0.1:{server.server.port}", realtime=True) as src:
        it = iter(src)
        server.wait_client()
        assert server.image(np.zeros((3, 16, 16), np.uint8), 1.0)
        with pytest.raises(SourceError, match="3-D volume of 16x16x3 voxels"):
            next(it)


def test_nothing_listening_is_exit_2_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    port = free_port()
    code = live_cli.cli(["--source", f"igtl://127.0.0.1:{port}/Image_Reference", "--headless", "--model", "lunet",
                         "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"127.0.0.1:{port}" in err and "nothing listens there" in err and "Traceback" not in err
    assert err.count("\n") == 1
