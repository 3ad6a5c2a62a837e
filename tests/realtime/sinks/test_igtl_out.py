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
PATIENCE_S = 5.0
"""How long a test waits for what takes milliseconds on loopback (a client accepted, a frame sent): a server that
never does it fails the test after this long."""


def run_info(calibration: Calibration | None = Calibration(SX, SY)) -> SimpleNamespace:
    return SimpleNamespace(tracker=SimpleNamespace(calibration=calibration), source=object(), extras={}, fps=24.0)


def wait_for(predicate, what: str, timeout: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def small_buffer_client(sink: IgtlOutSink, what: str) -> socket.socket:
    """A raw client with a 4 kB receive buffer, connected to ``sink`` and accepted by it."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", sink.port))
    wait_for(lambda: sink.clients_served == 1, what)
    return client


@pytest.fixture
def sink():
    s = IgtlOutSink(port=0)  # the system picks a free port
    s.open(run_info())
    yield s
    s.close()


def receive(client, device: str, sink: IgtlOutSink, frame: int):
    """Publish ``record(frame)`` until ``client`` has a message of ``device`` (it may connect after the first)."""
    got = None
    deadline = time.monotonic() + PATIENCE_S
    while got is None:
        assert time.monotonic() < deadline, f"no {device} message arrived"
        sink.write(record(frame))
        got = client.wait_for_message(device, timeout=0.2)
    return got


def test_mask_as_labelmap_with_spacing_and_measurements_as_json(sink: IgtlOutSink) -> None:
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=sink.port)
    try:
        image = receive(client, "NerveMask", sink, frame=7)
        text = client.wait_for_message("NerveMeasurements", timeout=PATIENCE_S)
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
    stuck = small_buffer_client(sink, "the stuck client to be accepted")
    try:
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
        writer.join(2 * PATIENCE_S)
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


# ---------------------------------------------------------------------------------------------
# found by mutation testing (docs/mutation-testing.md, "The OpenIGTLink output")
# ---------------------------------------------------------------------------------------------
import logging  # noqa: E402

from realtime.sinks.igtl_out import mask_matrix  # noqa: E402


def unpack_all(data: bytes) -> list:
    """The OpenIGTLink messages in ``data``, read back by pyigtl: ``(header fields, message)`` each."""
    out = []
    while data:
        fields = pyigtl.MessageBase.parse_header(data[:pyigtl.MessageBase.IGTL_HEADER_SIZE])
        body = data[pyigtl.MessageBase.IGTL_HEADER_SIZE:pyigtl.MessageBase.IGTL_HEADER_SIZE + fields["body_size"]]
        message = pyigtl.MessageBase.create_message(fields["message_type"])
        message.unpack(fields, body)
        out.append((fields, message))
        data = data[pyigtl.MessageBase.IGTL_HEADER_SIZE + fields["body_size"]:]
    return out


def test_one_frame_packed_as_an_image_then_a_string_with_the_capture_time() -> None:
    sink = IgtlOutSink(port=0, device="Mask2", text_device="Text2")
    sink.spacing = (SX, SY)
    mask = np.zeros((3, 4), np.uint8)
    mask[1, 2], mask[2, 3] = 255, 7  # anything above 0 is the nerve: 1
    (image_fields, image), (text_fields, text) = unpack_all(sink._pack((5, mask, (3, 4), '{"a":1}', 1700000000.25)))
    assert (image_fields["message_type"], image_fields["device_name"]) == ("IMAGE", "Mask2")
    assert (text_fields["message_type"], text_fields["device_name"]) == ("STRING", "Text2")
    assert image_fields["timestamp"] == pytest.approx(1700000000.25, abs=1e-6) and text.timestamp == image.timestamp
    assert image.image.dtype == np.uint8 and image.image.tolist() == [[[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]
    assert image.world_coordinate_system == "ras"  # the header says RAS (pyigtl's default is LPS)
    assert np.allclose(image.ijk_to_world_matrix, np.diag([SX, SY, 1.0, 1.0]))  # RAS: i the columns, j the rows
    assert text.string == '{"a":1}'
    (_, empty), _ = unpack_all(sink._pack((6, None, (3, 4), "{}", 1.0)))  # no mask: all 0 at the frame's size
    assert empty.image.tolist() == [[[0] * 4] * 3] and empty.image.dtype == np.uint8


def test_the_mask_in_the_sources_own_frame_when_it_has_one() -> None:
    frame = np.array([[0.0, 0.3, 0, 10], [-0.3, 0, 0, 20], [0, 0, 1.5, 30], [0, 0, 0, 1]], np.float32)
    assert mask_matrix((0.5, 0.25)).tolist() == [[0.5, 0, 0, 0], [0, 0.25, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    got = mask_matrix((0.5, 0.25), frame)
    assert got.dtype == np.float64 and np.array_equal(got, frame)
    sink = IgtlOutSink(port=0)
    source = SimpleNamespace(frame_matrix=frame)
    run = SimpleNamespace(tracker=SimpleNamespace(calibration=None), source=source, extras={}, fps=24.0)
    sink.open(run)
    try:
        assert sink.spacing == (1.0, 1.0) and sink.input_matrix is frame
        (_, image), _ = unpack_all(sink._pack((1, None, (2, 2), "{}", 1.0)))
    finally:
        sink.close()
    assert np.allclose(image.ijk_to_world_matrix, frame)


def test_the_json_of_a_calibrated_frame_word_for_word() -> None:
    from realtime.morphometry import Measurement

    r = record(12)
    r.calibrated = True
    r.tracked.measurement = Measurement(
        area_px=1000.0, area_mm2=6.25, perimeter_px=60.0, perimeter_mm=4.8, flattening_ratio=1.5, circularity=0.9,
        centroid_x_px=32.0, centroid_y_px=24.0, centroid_x_mm=2.5, centroid_y_mm=float("nan"), bbox=(22, 14, 21, 21),
        n_components=1, confidence=np.float32(0.75))
    r.tracked.csa_change_pct = float("inf")
    assert measurement_json(r) == (
        '{"frame":12,"t_s":0.5,"status":"ok","calibrated":true,"area_mm2":6.25,"area_px":1000.0,'
        '"flattening_ratio":1.5,"circularity":0.9,"centroid_x_px":32.0,"centroid_y_px":24.0,"centroid_x_mm":2.5,'
        '"centroid_y_mm":null,"confidence":0.75,"csa_change_pct":null}')
    r.tracked.csa_change_pct = -12.5
    assert json.loads(measurement_json(r))["csa_change_pct"] == -12.5


def test_device_names_are_1_to_20_ascii_characters() -> None:
    assert check_device_name("A" * 20, "--igtl-device") == "A" * 20 and check_device_name("B", "--x") == "B"
    with pytest.raises(UserError) as err:
        check_device_name("A" * 21, "--igtl-device")
    assert str(err.value) == f"--igtl-device {'A' * 21!r}: an OpenIGTLink device name has 1 to 20 characters"
    with pytest.raises(UserError) as err:
        check_device_name("", "--igtl-text-device")
    assert str(err.value) == "--igtl-text-device '': an OpenIGTLink device name has 1 to 20 characters"
    with pytest.raises(UserError) as err:
        check_device_name("Nerv\u00e9", "--igtl-device")
    assert str(err.value) == "--igtl-device 'Nerv\u00e9': an OpenIGTLink device name is ASCII"
    with pytest.raises(UserError) as err:
        IgtlOutSink(port=0, device="x" * 21)
    assert str(err.value) == f"--igtl-device {'x' * 21!r}: an OpenIGTLink device name has 1 to 20 characters"
    with pytest.raises(UserError) as err:
        IgtlOutSink(port=0, text_device="")
    assert str(err.value) == "--igtl-text-device '': an OpenIGTLink device name has 1 to 20 characters"


def test_binding_errors_say_what_to_do() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(UserError) as err:
            bind_server("127.0.0.1", port)
    finally:
        taken.close()
    assert str(err.value) == (f"--igtl-out {port}: the port is in use on 127.0.0.1 (another mn-live, Slicer or "
                              "PlusServer listening there?): choose another port")
    with pytest.raises(UserError) as err:
        bind_server("192.0.2.1", 18944)  # TEST-NET-1: an address of no machine here
    assert str(err.value) == ("--igtl-out 18944 on 192.0.2.1: cannot listen: Cannot assign requested address (ports "
                              "below 1024 need privileges; --igtl-bind must be an address of this machine)")
    with pytest.raises(UserError) as err:
        bind_server("no-such-host.invalid", 18944)
    assert str(err.value).startswith("--igtl-bind no-such-host.invalid: not an address of this machine (")
    sock = bind_server("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1  # a restart finds its port again
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
        client = socket.create_connection(sock.getsockname())  # listening
        client.close()
    finally:
        sock.close()


def test_open_and_close_say_where_and_what_and_the_summary_has_it_all(caplog: pytest.LogCaptureFixture) -> None:
    run = run_info()
    sink = IgtlOutSink(port=0)
    assert sink.name == "OpenIGTLink output 127.0.0.1:0" and sink.paths == {} and sink.stall_s == 5.0
    with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
        sink.open(run)
        assert sink.spacing == (SX, SY) and sink.port > 0
        client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=sink.port)
        try:
            receive(client, "NerveMask", sink, frame=1)
        finally:
            client.stop()
        wait_for(lambda: sink.connected == 0, "the client to be dropped")
        sink.close()
        sink.close()  # once only
    port = sink.port
    messages = [r.getMessage() for r in caplog.records if r.name == "realtime.sinks.igtl_out"]
    assert messages[0] == (f"OpenIGTLink output on 127.0.0.1:{port} (this machine only): IMAGE NerveMask, STRING "
                           "NerveMeasurements")
    assert messages[1].startswith("OpenIGTLink client 127.0.0.1:") and messages[1].endswith(" connected")
    assert messages[2].startswith("OpenIGTLink client 127.0.0.1:") and " dropped: it disconnected (" in messages[2]
    assert messages[-1] == f"OpenIGTLink output: {sink.published} frames published, 1 clients served"
    summary = run.extras["igtl_out"]
    assert summary == {"address": "127.0.0.1", "port": port, "image_device": "NerveMask",
                       "text_device": "NerveMeasurements", "frames_published": sink.published, "clients_served": 1,
                       "frames_sent": summary["frames_sent"], "frames_skipped_for_slow_clients":
                           summary["frames_skipped_for_slow_clients"]}
    assert summary["frames_sent"] >= 1 and summary["frames_sent"] + summary["frames_skipped_for_slow_clients"] <= \
        sink.published


def test_served_to_the_network_only_when_asked_and_then_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    sink = IgtlOutSink(port=0, bind="0.0.0.0")
    with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
        sink.open(run_info())
        sink.close()
    records = [r for r in caplog.records if r.name == "realtime.sinks.igtl_out"]
    assert records[0].getMessage().startswith(f"OpenIGTLink output on 0.0.0.0:{sink.port} (the network: anyone who "
                                              "can reach it gets the masks): IMAGE")
    assert (records[1].levelno, records[1].getMessage()) == (
        logging.WARNING, "--igtl-bind 0.0.0.0: the masks and measurements of this run are served to the network: "
        "anyone who can reach it gets the masks")
    for loopback in ("::1", "localhost"):
        caplog.clear()
        quiet = IgtlOutSink(port=0, bind=loopback)
        with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
            quiet.open(run_info())
            quiet.close()
        assert "(this machine only)" in caplog.text and not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_a_frame_without_an_image_is_served_at_its_masks_size_or_empty() -> None:
    sink = IgtlOutSink(port=0)
    r = record(3)
    r.image = None
    sink._wake_w = socket.socketpair()[1]  # written to, never read: the loop's side alone
    try:
        sink.write(r)
        assert sink._latest[2] == (48, 64) and sink._latest[0] == 1 and sink.published == 1
        r.mask = None
        sink.write(r)
        assert sink._latest[2] == (0, 0) and sink._latest[0] == 2 and "write" in r.timings_ms
        assert sink.published == 2
        no_mask = record(4)
        no_mask.image, no_mask.mask = np.zeros((30, 70), np.uint8), None  # not measured: all 0 at the image's size
        sink.write(no_mask)
        assert sink._latest[2] == (30, 70) and sink._latest[1] is None and sink.published == 3
    finally:
        sink._wake_w.close()


def test_a_failed_server_fails_the_next_write() -> None:
    sink = IgtlOutSink(port=0)
    sink._error = "the OpenIGTLink server failed: RuntimeError: boom"
    with pytest.raises(OSError) as err:
        sink.write(record(0))
    assert str(err.value) == "the OpenIGTLink server failed: RuntimeError: boom" and sink.published == 0


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_a_server_that_fails_says_why_and_the_next_write_fails(caplog: pytest.LogCaptureFixture, level: int) -> None:
    """The error logged once; with its traceback only when debugging (``-v``), not in a user's log."""
    sink = IgtlOutSink(port=0)

    def broken(latest):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    sink._pack = broken
    with caplog.at_level(level, logger="realtime.sinks.igtl_out"):
        sink.open(run_info())
        client = socket.create_connection(("127.0.0.1", sink.port))
        try:
            wait_for(lambda: sink.clients_served == 1, "the client to be accepted")
            sink.write(record(0))  # packed for the client: the server thread fails
            wait_for(lambda: sink._error is not None, "the server to fail")
            with pytest.raises(OSError) as err:
                sink.write(record(1))
        finally:
            client.close()
            sink.close()
    assert str(err.value) == "the OpenIGTLink server failed: RuntimeError: boom"
    errors = [r for r in caplog.records if r.name == "realtime.sinks.igtl_out" and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in errors] == [str(err.value)] and errors[0].levelno == logging.ERROR
    if level == logging.DEBUG:
        assert errors[0].exc_info[0] is RuntimeError and "boom" in caplog.text.split(str(err.value), 1)[1]
    else:
        assert not errors[0].exc_info and "Traceback" not in caplog.text


def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def _read_messages(sock: socket.socket, count: int) -> list:
    """``count`` whole messages read from a raw socket (two a frame; a guard of ``PATIENCE_S`` against a server
    that sends nothing)."""
    sock.settimeout(PATIENCE_S)
    size = pyigtl.MessageBase.IGTL_HEADER_SIZE
    messages = []
    while len(messages) < count:
        header = _read_exactly(sock, size)
        messages.append(header + _read_exactly(sock, pyigtl.MessageBase.parse_header(header)["body_size"]))
    return [m for chunk in messages for m in unpack_all(chunk)]


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    buffer = bytearray(n)
    view = memoryview(buffer)
    while view:
        got = sock.recv_into(view)
        assert got, "the server closed the connection"
        view = view[got:]
    return bytes(buffer)


def test_the_server_listens_on_this_machine_at_the_port_asked_for_on_a_daemon_thread() -> None:
    port = _free_port()
    sink = IgtlOutSink(port=port)
    sink.open(SimpleNamespace(tracker=None, source=None, extras={}, fps=24.0))  # no tracker: 1 x 1 spacing
    try:
        assert sink.port == port and sink._sock.getsockname() == ("127.0.0.1", port)  # not every interface
        assert sink.spacing == (1.0, 1.0) and sink.input_matrix is None
        assert sink._thread.name == "igtl-out" and sink._thread.daemon  # never keeps the process alive
    finally:
        sink.close()
    with pytest.raises(ConnectionRefusedError):  # closed: nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_client_early_gets_the_first_frame_a_late_one_the_next_and_the_run_end_closes_both(
        caplog: pytest.LogCaptureFixture) -> None:
    sink = IgtlOutSink(port=0)
    with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
        sink.open(run_info())
        early = socket.create_connection(("127.0.0.1", sink.port))
        try:
            wait_for(lambda: sink.clients_served == 1, "the early client to be accepted")
            sink.write(record(1))  # the first frame of the run
            first = _read_messages(early, 2)
            assert json.loads(first[1][1].string)["frame"] == 1
            late = socket.create_connection(("127.0.0.1", sink.port))
            wait_for(lambda: sink.clients_served == 2, "the late client to be accepted")
            sink.write(record(2))
            assert json.loads(_read_messages(late, 2)[1][1].string)["frame"] == 2  # not frame 1 again
            assert json.loads(_read_messages(early, 2)[1][1].string)["frame"] == 2
            sink.close()
            early.settimeout(PATIENCE_S)
            late.settimeout(PATIENCE_S)
            assert early.recv(1) == b"" and late.recv(1) == b""  # closed by the server when the run ended
        finally:
            early.close()
            sink.close()
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2 and all(m.endswith(" dropped: the run ended (2 frames sent, 0 skipped)")
                                     or m.endswith(" dropped: the run ended (1 frames sent, 0 skipped)")
                                     for m in dropped)
    assert sink.describe()["frames_sent"] == 3 and sink.describe()["frames_skipped_for_slow_clients"] == 0


def test_a_frame_larger_than_the_socket_buffers_arrives_whole() -> None:
    sink = IgtlOutSink(port=0)
    sink.open(run_info())
    client = small_buffer_client(sink, "the client to be accepted")
    try:
        big = record(3)
        big.image = np.zeros((4000, 4000), np.uint8)
        big.mask = np.zeros((4000, 4000), np.uint8)
        big.mask[100:200, 300:500] = 1  # 16 MB: more than the socket buffers, sent in parts as the client reads
        sink.write(big)
        (_, image), (_, text) = _read_messages(client, 2)
        assert image.image.shape == (1, 4000, 4000) and int(image.image.sum()) == 100 * 200
        assert json.loads(text.string)["frame"] == 3
    finally:
        client.close()
        sink.close()


def test_a_dropped_client_counts_the_frames_it_never_got(caplog: pytest.LogCaptureFixture) -> None:
    from realtime.sinks.igtl_out import _Client

    sink = IgtlOutSink(port=0)
    mine, theirs = socket.socketpair()
    client = _Client(mine, "10.0.0.2:5000", sent_seq=3, frames_sent=2, frames_skipped=2)
    sink._clients.append(client)
    sink._latest = (7, None, (1, 1), "{}", None)
    with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
        sink._drop(client, None, "it went away")
        sink._drop(client, None, "again")  # once only
    theirs.close()
    assert client.frames_skipped == 2 + 4 and sink._clients == [] and sink._done == [client]  # frames 4 to 7
    assert [r.getMessage() for r in caplog.records] == [
        "OpenIGTLink client 10.0.0.2:5000 dropped: it went away (2 frames sent, 6 skipped)"]
    with pytest.raises(OSError):
        mine.send(b"x")  # its socket closed
    early, other = socket.socketpair()
    before = _Client(early, "10.0.0.3:5000", sent_seq=0)
    fresh = IgtlOutSink(port=0)
    fresh._clients.append(before)
    fresh._drop(before, None, "it went away")  # before any frame: nothing skipped
    other.close()
    assert before.frames_skipped == 0


def test_a_client_connecting_after_frames_nobody_received_starts_with_the_next_one() -> None:
    sink = IgtlOutSink(port=0)
    sink.open(run_info())
    client = None
    try:
        sink.write(record(1))  # nobody connected: published, sent to no one
        client = socket.create_connection(("127.0.0.1", sink.port))
        wait_for(lambda: sink.clients_served == 1, "the client to be accepted")
        sink.write(record(2))
        assert json.loads(_read_messages(client, 2)[1][1].string)["frame"] == 2
    finally:
        if client is not None:
            client.close()
        sink.close()


# ---------------------------------------------------------------------------------------------
# found by mutation testing, first complete run of igtl_out.py (the server loop included)
# ---------------------------------------------------------------------------------------------
from realtime.sinks import igtl_out  # noqa: E402

BIG = 3000  # a 3000 x 3000 labelmap: 9 MB, more than a socket's buffers hold (at most 4 MB + 4 MB on Linux)


class FakeClock:
    """``time`` for the server thread: ``monotonic`` returns ``t`` (set by the test) and counts its reads. The loop
    reads the clock once a pass (the stall check), and ``_send`` once each time a client took bytes."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return self.t

    def passes(self, n: int = 2) -> None:
        """Wait until the server has read the clock ``n`` more times: with ``n`` = 2, a whole pass of the loop
        (its stall check included) has run with the clock as it is now."""
        start = self.reads
        wait_for(lambda: self.reads >= start + n, f"{n} passes of the server loop")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(igtl_out, "time", fake)
    return fake


def big_record(frame: int) -> object:
    r = record(frame)
    r.image = np.zeros((BIG, BIG), np.uint8)
    r.mask = np.zeros((BIG, BIG), np.uint8)
    r.mask[:10, :20] = 1
    return r


def stuck_with_a_big_frame(sink: IgtlOutSink, clock: FakeClock, frame: int = 1) -> socket.socket:
    """A client (4 kB receive buffer) that has not read a big frame: the server sent what the buffers hold and
    waits with the rest."""
    client = small_buffer_client(sink, "the client to be accepted")
    sink.write(big_record(frame))
    wait_for(lambda: sink._clients and sink._clients[0].pending is not None, "the frame to be given to the client")
    left = -1
    while left != len(sink._clients[0].pending):  # settled: nothing more fits
        left = len(sink._clients[0].pending)
        clock.passes()
    assert 0 < left < BIG * BIG
    return client


def connect_on_descriptor(sink: IgtlOutSink, fd: int) -> socket.socket:
    """A new client, accepted by the server on file descriptor ``fd`` (that of a client it dropped: every lower one
    is held while it connects, and the system gives the lowest free one). A server that closed a dropped client's
    socket without forgetting it in its selector fails to take the new one."""
    held = []
    while not held or held[-1].fileno() < fd:
        held.append(socket.socket())
    assert held[-1].fileno() == fd, "the dropped client's descriptor is still open"
    newcomer = socket.socket()
    held.pop().close()
    try:
        newcomer.connect(("127.0.0.1", sink.port))
        wait_for(lambda: sink.connected == 1, "the next client to be accepted")
    finally:
        for s in held:
            s.close()
    assert sink._clients[0].sock.fileno() == fd
    return newcomer


def test_a_client_that_takes_nothing_for_stall_s_is_dropped_also_while_no_frame_comes(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """The stall is measured by the server's clock alone: a run that publishes nothing more (paused, or a frozen
    source) still drops the client after ``stall_s`` (not before, and not at the next frame); the next client (on
    the dropped one's file descriptor, as the system reuses it) is served."""
    sink = IgtlOutSink(port=0)  # stall_s 5 s
    newcomer = None
    with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
        sink.open(run_info())
        client = stuck_with_a_big_frame(sink, clock)
        try:
            clock.t = 1005.0  # exactly 5 s without progress: kept
            clock.passes()
            assert sink.connected == 1
            fd = sink._clients[0].sock.fileno()
            clock.t = 1005.01  # more than 5 s: dropped by the loop's own pass
            wait_for(lambda: sink.connected == 0, "the stalled client to be dropped")
            newcomer = connect_on_descriptor(sink, fd)
            sink.write(record(2))
            assert json.loads(_read_messages(newcomer, 2)[1][1].string)["frame"] == 2
        finally:
            client.close()
            if newcomer is not None:
                newcomer.close()
            sink.close()
    dropped = [r.getMessage() for r in caplog.records if " dropped: " in r.getMessage()]
    assert dropped[0].endswith(" dropped: it took nothing for 5 s (0 frames sent, 0 skipped)")
    assert sink.describe()["frames_sent"] == 1


def test_a_slow_client_that_keeps_reading_is_kept_and_gets_the_frame_whole(clock: FakeClock) -> None:
    """The stall counts from the last bytes the client took, not from when the frame was given to it."""
    sink = IgtlOutSink(port=0, stall_s=5.0)
    sink.open(run_info())
    client = stuck_with_a_big_frame(sink, clock)
    try:
        left = len(sink._clients[0].pending)
        clock.t = 1004.0
        client.setblocking(True)
        got = b""
        while len(sink._clients[0].pending) == left:  # reads: the server sends more, at 1004
            got += client.recv(1 << 16)
            time.sleep(0.001)
        clock.passes()
        clock.t = 1008.0  # 8 s after the frame was given, 4 s after the last progress
        clock.passes()
        assert sink.connected == 1
        header = got[:pyigtl.MessageBase.IGTL_HEADER_SIZE]
        rest = pyigtl.MessageBase.IGTL_HEADER_SIZE + pyigtl.MessageBase.parse_header(header)["body_size"] - len(got)
        (_, image), = unpack_all(got + _read_exactly(client, rest))
        (_, text), = _read_messages(client, 1)
        assert image.image.shape == (1, BIG, BIG) and int(image.image.sum()) == 200
        assert json.loads(text.string)["frame"] == 1
        wait_for(lambda: sink.describe()["frames_sent"] == 1, "the frame to be counted as sent")
    finally:
        client.close()
        sink.close()


def test_frames_published_while_a_client_is_busy_are_skipped_counted_and_the_newest_follows(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    sink = IgtlOutSink(port=0)
    with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
        sink.open(run_info())
        client = stuck_with_a_big_frame(sink, clock, frame=1)
        try:
            sink.write(record(2))  # while frame 1 is still on its way
            sink.write(record(3))
            sink.write(big_record(4))
            (_, image), (_, text) = _read_messages(client, 2)
            assert json.loads(text.string)["frame"] == 1 and image.image.shape == (1, BIG, BIG)
            wait_for(lambda: sink._clients[0].sent_seq == 4, "frame 4 (the newest, big) to be given to the client")
            sink.write(record(5))  # while frame 4 is on its way
            sink.write(record(6))
            messages = _read_messages(client, 4)
            assert [json.loads(m.string)["frame"] for _, m in messages[1::2]] == [4, 6]  # never 2, 3 or 5, nor torn
            assert messages[0][1].image.shape == (1, BIG, BIG) and messages[2][1].image.shape == (1, 48, 64)
            wait_for(lambda: sink.describe()["frames_sent"] == 3, "frame 6 to be counted as sent")
            assert sink.describe()["frames_skipped_for_slow_clients"] == 3
        finally:
            sink.close()
            client.close()
    assert [r.getMessage() for r in caplog.records if " dropped: " in r.getMessage()][0].endswith(
        " dropped: the run ended (3 frames sent, 3 skipped)")


def test_each_frame_is_packed_once_for_all_clients_and_not_for_none_and_the_idle_server_sleeps(
        clock: FakeClock) -> None:
    sink = IgtlOutSink(port=0)
    packed = []
    pack = sink._pack
    sink._pack = lambda latest: packed.append(latest[0]) or pack(latest)
    sink.open(run_info())
    clients = []
    try:
        sink.write(record(1))
        sink.write(record(2))
        clock.passes()
        assert packed == []  # nobody to send them to
        clients = [socket.create_connection(("127.0.0.1", sink.port)) for _ in range(2)]
        wait_for(lambda: sink.clients_served == 2, "the clients to be accepted")
        sink.write(record(3))
        for client in clients:
            assert json.loads(_read_messages(client, 2)[1][1].string)["frame"] == 3
        wait_for(lambda: sink.describe()["frames_sent"] == 2, "frame 3 to be counted as sent to both")
        clock.passes()
        reads = clock.reads
        time.sleep(1.0)  # nothing to send: the loop waits in select (4 passes a second), it does not spin
        assert clock.reads - reads <= 8
        # frame 3 once for both clients, and not again while nothing new comes (frame 2 may have been packed when
        # the first client connected, before frame 3 was published: the clients start with the next frame anyway)
        assert packed in ([3], [2, 3])
    finally:
        for client in clients:
            client.close()
        sink.close()


def test_the_loop_never_blocks_on_its_own_sockets() -> None:
    """The listening socket, the wake-up pipe's two ends and each client's socket are non-blocking (a blocking
    accept or send would hold the server thread, a blocking wake-up write the run's loop), and clients get each
    message at once (no Nagle delay)."""
    sink = IgtlOutSink(port=0)
    sink.open(run_info())
    client = socket.create_connection(("127.0.0.1", sink.port))
    try:
        wait_for(lambda: sink.connected == 1, "the client to be accepted")
        assert not sink._sock.getblocking() and not sink._wake_r.getblocking() and not sink._wake_w.getblocking()
        accepted = sink._clients[0].sock
        assert not accepted.getblocking() and accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        client.close()
        sink.close()


def test_a_client_that_resets_its_connection_is_dropped_with_the_systems_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    sink = IgtlOutSink(port=0)
    with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
        sink.open(run_info())
        try:
            client = socket.create_connection(("127.0.0.1", sink.port))
            wait_for(lambda: sink.connected == 1, "the client to be accepted")
            client.send(b"status")  # what clients send is read and ignored: the client stays
            sink.write(record(1))
            assert json.loads(_read_messages(client, 2)[1][1].string)["frame"] == 1
            assert sink.connected == 1
            fd = sink._clients[0].sock.fileno()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # linger 0: close sends RST
            client.close()
            wait_for(lambda: sink.connected == 0, "the reset client to be dropped")
            newcomer = connect_on_descriptor(sink, fd)
            sink.write(record(2))  # the run goes on
            assert json.loads(_read_messages(newcomer, 2)[1][1].string)["frame"] == 2
            newcomer.close()
        finally:
            sink.close()
    dropped = [r.getMessage() for r in caplog.records if " dropped: " in r.getMessage()]
    assert dropped[0].endswith(" dropped: [Errno 104] Connection reset by peer (1 frames sent, 0 skipped)")


def test_close_before_open_does_nothing() -> None:
    sink = IgtlOutSink(port=0)
    sink.close()  # the pipeline closes every sink, also one whose open was never reached
    assert sink.describe()["frames_published"] == 0 and sink.connected == 0


@pytest.mark.parametrize(("errno_", "in_use"), [(48, True), (10048, True), (98, True), (49, False), (10049, False)])
def test_the_port_in_use_is_recognised_by_each_systems_code(monkeypatch: pytest.MonkeyPatch, errno_: int,
                                                            in_use: bool) -> None:
    """EADDRINUSE is 98 on Linux, 48 on macOS, 10048 (WSAEADDRINUSE) on Windows; the address-not-available codes
    next to them (49 on macOS, 10049 on Windows) are another error."""

    def bind(self, address):  # type: ignore[no-untyped-def]
        raise OSError(errno_, "the system's words")

    monkeypatch.setattr(socket.socket, "bind", bind)
    with pytest.raises(UserError) as err:
        bind_server("127.0.0.1", 18944)
    if in_use:
        assert str(err.value).startswith("--igtl-out 18944: the port is in use on 127.0.0.1 (")
    else:
        assert str(err.value).startswith("--igtl-out 18944 on 127.0.0.1: cannot listen: the system's words (")


def test_the_stall_counts_from_when_a_frame_is_given_also_to_a_socket_already_full(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """A client whose socket takes not one byte of its frame: dropped ``stall_s`` after the frame was given to it
    (not after it connected, not never)."""
    sink = IgtlOutSink(port=0)
    with caplog.at_level(logging.INFO, logger="realtime.sinks.igtl_out"):
        sink.open(run_info())
        client = small_buffer_client(sink, "the client to be accepted")
        try:
            accepted = sink._clients[0].sock
            try:
                while True:  # the client reads nothing: its socket's buffers fill up with bytes of no message
                    accepted.send(b"\0" * 65536)
            except BlockingIOError:
                pass
            clock.t = 2000.0
            sink.write(record(1))
            wait_for(lambda: sink._clients[0].sent_seq == 1, "the frame to be given to the client")
            clock.passes()
            assert sink._clients[0].pending is not None and sink._clients[0].frames_sent == 0
            clock.t = 2004.99
            clock.passes()
            assert sink.connected == 1
            clock.t = 2005.01
            wait_for(lambda: sink.connected == 0, "the stalled client to be dropped")
        finally:
            client.close()
            sink.close()
    dropped = [r.getMessage() for r in caplog.records if " dropped: " in r.getMessage()]
    assert dropped == [f"OpenIGTLink client {dropped[0].split()[2]} dropped: it took nothing for 5 s "
                       "(0 frames sent, 0 skipped)"]
