"""realtime.sinks.igtl_out against real OpenIGTLink clients (pyigtl's client, and raw sockets that misbehave):
the mask as an IMAGE labelmap with the run's spacing, the measurements as JSON in a STRING message, a
late client served from the next frame, and a client that stops reading or vanishes never holding the
loop up or stopping the server."""

from __future__ import annotations

import json
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl")

from common.errors import UserError  # noqa: E402
from realtime.calibration import Calibration  # noqa: E402
from realtime.sinks.igtl_out import IgtlOutSink, bind_server, check_device_name, measurement_json  # noqa: E402
from tests.realtime.sinks._helpers import record  # noqa: E402

SX, SY = 0.07, 0.085


def run_info(calibration: Calibration | None = Calibration(SX, SY)) -> SimpleNamespace:
    return SimpleNamespace(tracker=SimpleNamespace(calibration=calibration), source=object(), extras={}, fps=24.0)


def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def sink():
    s = IgtlOutSink(port=0)  # the system picks a free port
    s.open(run_info())
    yield s
    s.close()


def receive(client, device: str, sink: IgtlOutSink, frame: int):
    """Publish ``record(frame)`` until ``client`` has a message of ``device`` (it may connect after the first)."""
    got = None
    deadline = time.monotonic() + 20.0
    while got is None:
        assert time.monotonic() < deadline, f"no {device} message arrived"
        sink.write(record(frame))
        got = client.wait_for_message(device, timeout=0.2)
    return got


def test_mask_as_labelmap_with_spacing_and_measurements_as_json(sink: IgtlOutSink) -> None:
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=sink.port)
    try:
        image = receive(client, "NerveMask", sink, frame=7)
        text = client.wait_for_message("NerveMeasurements", timeout=10.0)
    finally:
        client.stop()
    expected = record(7).mask
    assert image.image.shape == (1, 48, 64)  # k, j, i: one slice of rows x columns
    assert image.image.dtype == np.uint8 and np.array_equal(image.image[0], expected)  # 1 = nerve, 0 elsewhere
    spacing = np.linalg.norm(image.ijk_to_world_matrix[:3, :3], axis=0)
    assert spacing == pytest.approx([SX, SY, 1.0], rel=1e-5)  # i along the columns, j along the rows
    data = json.loads(text.string)
    assert data["frame"] == 7 and data["status"] == "ok" and data["area_px"] == 1000.0
    assert data["flattening_ratio"] == 1.5 and (data["centroid_x_px"], data["centroid_y_px"]) == (32.0, 24.0)
    assert data["area_mm2"] is None and data["calibrated"] is False  # the record's own (uncalibrated helper)


def test_json_of_a_frame_without_nerve_has_nulls() -> None:
    data = json.loads(measurement_json(record(3, status="no_detection", area=None)))
    assert data["frame"] == 3 and data["status"] == "no_detection"
    assert data["area_mm2"] is None and data["area_px"] is None and data["centroid_x_px"] is None


def test_a_client_that_stops_reading_neither_slows_nor_stops_the_run() -> None:
    """A client that connects and never reads: the loop's writes all return (each only leaves the frame in
    a slot), the stuck client is dropped once its socket took nothing for ``stall_s``, and a client that
    connects afterwards gets frames."""
    sink = IgtlOutSink(port=0, stall_s=0.5)
    sink.open(run_info())
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", sink.port))
    try:
        wait_for(lambda: sink.clients_served == 1, "the stuck client to be accepted")
        big = record(0)
        big.image = np.zeros((1000, 1000), np.uint8)
        big.mask = np.ones((1000, 1000), np.uint8)  # 1 MB a frame: the stuck socket's buffers fill after a few
        done = threading.Event()

        def loop() -> None:  # the run goes on until the server has given up on the stuck client
            for i in range(100_000):
                big.frame = i
                sink.write(big)
                if sink.connected == 0:
                    break
                time.sleep(0.002)
            done.set()

        writer = threading.Thread(target=loop, daemon=True)
        writer.start()
        writer.join(60.0)
        assert done.is_set() and sink.connected == 0, "the stuck client held the loop up, or was never dropped"
        assert sink.describe()["frames_skipped_for_slow_clients"] > 0
        client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=sink.port)
        try:
            image = receive(client, "NerveMask", sink, frame=big.frame + 1)
        finally:
            client.stop()
        assert image.image.shape == (1, 48, 64)
    finally:
        stuck.close()
        sink.close()
    assert sink.clients_served == 2


def test_a_vanished_client_is_dropped_and_the_next_one_served(sink: IgtlOutSink) -> None:
    gone = socket.create_connection(("127.0.0.1", sink.port))
    wait_for(lambda: sink.clients_served == 1, "the client to be accepted")
    gone.close()
    for i in range(5):
        sink.write(record(i))
    wait_for(lambda: sink.connected == 0, "the vanished client to be dropped")
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=sink.port)
    try:
        assert receive(client, "NerveMask", sink, frame=9).device_name == "NerveMask"
    finally:
        client.stop()


def test_port_in_use_and_bad_names_are_clear_errors() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(UserError, match="port is in use"):
            bind_server("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    with pytest.raises(UserError, match="not an address"):
        bind_server("no-such-host.invalid", 18944)
    with pytest.raises(UserError, match="1 to 20"):
        check_device_name("A" * 21, "--igtl-device")


def test_summary_section(sink: IgtlOutSink) -> None:
    run = run_info()
    s = IgtlOutSink(port=0, device="Mask2")
    s.open(run)
    s.write(record(0))
    s.close()
    assert run.extras["igtl_out"]["image_device"] == "Mask2" and run.extras["igtl_out"]["frames_published"] == 1
