"""Live OpenIGTLink output (``--igtl-out PORT``): each processed frame's nerve mask and measurements, served to
3D Slicer (OpenIGTLinkIF) or any OpenIGTLink client while the run goes on.

Per processed frame, two messages (pyigtl packs them; this module only moves bytes, as the
OpenIGTLink source :mod:`realtime.sources.igtl` does):

* an IMAGE message, device ``--igtl-device`` (default :data:`DEFAULT_IMAGE_DEVICE`): the mask as a
  labelmap, uint8, 1 inside the nerve and 0 elsewhere (all 0 when the nerve was not measured), at the
  input frame's size (after ``--roi``); its IJK-to-RAS matrix carries the run's pixel spacing (i along
  the image columns, j along the rows, origin 0; uncalibrated: 1 x 1), or a source's own
  ``frame_matrix`` (the IJK-to-RAS of its frames' columns, rows and slice) when it has one (the
  OpenIGTLink source: its first image's matrix, moved to the ``--roi`` crop's corner).
* a STRING message, device ``--igtl-text-device`` (default :data:`DEFAULT_TEXT_DEVICE`): JSON with the
  frame number, time, status, area (mm² and px), flattening ratio, circularity, centroid (px and mm),
  confidence and whether the run is calibrated (``null`` for what is not known).

Both carry the frame's capture time (UTC) as their timestamp.

The server listens on ``127.0.0.1`` (this machine only) unless ``--igtl-bind ADDR`` names another
interface: patient images leave the machine only when the user asks. Any number of clients may be
connected; one that connects late gets the next frame. The loop never waits for a client: it leaves
the newest frame in a slot and returns; one server thread (a ``selectors`` loop over non-blocking
sockets) packs the newest frame once for everyone and sends it to each client that has finished the
previous one, so a slow client gets fewer frames (whole messages, never a torn one; the skipped
frames are counted), and a client that stops reading for :data:`STALL_S` seconds or goes away is
dropped (logged) while the run goes on. What the clients send is read and ignored.
"""

from __future__ import annotations

import json
import logging
import math
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import UserError
from realtime.record import FrameRecord, timed
from realtime.sinks.base import RunInfo, Sink

log = logging.getLogger(__name__)

DEFAULT_IMAGE_DEVICE = "NerveMask"
DEFAULT_TEXT_DEVICE = "NerveMeasurements"
DEFAULT_BIND = "127.0.0.1"
STALL_S = 5.0
"""A client whose socket has taken nothing for this long while a frame waits for it is dropped."""
_POLL_S = 0.25
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_device_name(name: str, flag: str) -> str:
    """An OpenIGTLink device name: 1 to 20 bytes of ASCII (the header's field)."""
    try:
        size = len(name.encode("ascii"))
    except UnicodeEncodeError:
        raise UserError(f"{flag} {name!r}: an OpenIGTLink device name is ASCII") from None
    if not 0 < size <= 20:
        raise UserError(f"{flag} {name!r}: an OpenIGTLink device name has 1 to 20 characters")
    return name


def bind_server(bind: str, port: int) -> socket.socket:
    """A listening TCP socket on ``bind:port``; a clear error when the port is taken or the address is not
    an interface of this machine."""
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"--igtl-bind {bind}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(8)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE (Linux, macOS, Windows)
            raise UserError(f"--igtl-out {port}: the port is in use on {bind} (another mn-live, Slicer or PlusServer "
                            "listening there?): choose another port") from None
        raise UserError(f"--igtl-out {port} on {bind}: cannot listen: {exc.strerror or exc} (ports below 1024 need "
                        "privileges; --igtl-bind must be an address of this machine)") from None
    return sock


def measurement_json(record: FrameRecord) -> str:
    """The STRING message's text: one frame's measurements as JSON (``null`` where unknown)."""
    m = record.measurement

    def num(value: Any) -> float | None:
        if value is None:
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    data = {"frame": int(record.frame), "t_s": num(record.t_s), "status": record.status,
            "calibrated": bool(record.calibrated)}
    for key in ("area_mm2", "area_px", "flattening_ratio", "circularity", "centroid_x_px", "centroid_y_px",
                "centroid_x_mm", "centroid_y_mm", "confidence"):
        data[key] = None if m is None else num(getattr(m, key, None))
    data["csa_change_pct"] = num(record.tracked.csa_change_pct)
    return json.dumps(data, separators=(",", ":"))


def mask_matrix(spacing: tuple[float, float], input_matrix: np.ndarray | None = None) -> np.ndarray:
    """The IJK-to-RAS matrix of a mask: the input image's own when known, else the spacing (i = columns,
    j = rows) at origin 0."""
    if input_matrix is not None:
        return np.asarray(input_matrix, dtype=np.float64)
    m = np.eye(4)
    m[0, 0], m[1, 1] = spacing
    return m


@dataclass
class _Client:
    sock: socket.socket
    address: str
    sent_seq: int
    pending: memoryview | None = None
    last_progress: float = field(default_factory=time.monotonic)
    frames_sent: int = 0
    frames_skipped: int = 0


class IgtlOutSink(Sink):
    """Serves each record over OpenIGTLink on ``bind:port``; see the module docstring."""

    def __init__(self, port: int, bind: str = DEFAULT_BIND, device: str = DEFAULT_IMAGE_DEVICE,
                 text_device: str = DEFAULT_TEXT_DEVICE, stall_s: float = STALL_S) -> None:
        self.port = int(port)
        self.bind = bind
        self.device = check_device_name(device, "--igtl-device")
        self.text_device = check_device_name(text_device, "--igtl-text-device")
        self.stall_s = stall_s
        self.name = f"OpenIGTLink output {bind}:{port}"
        self.paths = {}
        self.spacing = (1.0, 1.0)
        self.input_matrix: np.ndarray | None = None
        self.published = 0
        self.clients_served = 0
        self._run: RunInfo | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: tuple[int, np.ndarray | None, tuple[int, int], str, float | None] | None = None
        self._seq = 0
        self._clients: list[_Client] = []
        self._done: list[_Client] = []
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._error: str | None = None

    # ------------------------------------------------------------------ the loop's side
    def open(self, run: RunInfo) -> None:
        self._run = run
        calibration = getattr(run.tracker, "calibration", None)
        if calibration is not None:
            self.spacing = (float(calibration.sx), float(calibration.sy))
        self.input_matrix = getattr(run.source, "frame_matrix", None)
        self._sock = bind_server(self.bind, self.port)
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])  # port 0: the one the system chose (tests)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._serve, name="igtl-out", daemon=True)
        self._thread.start()
        where = "this machine only" if self.bind in _LOOPBACK else "the network: anyone who can reach it gets the masks"
        log.info("OpenIGTLink output on %s:%d (%s): IMAGE %s, STRING %s", self.bind, self.port, where, self.device,
                 self.text_device)
        if self.bind not in _LOOPBACK:
            log.warning("--igtl-bind %s: the masks and measurements of this run are served to %s", self.bind, where)

    def write(self, record: FrameRecord) -> None:
        if self._error is not None:
            raise OSError(self._error)
        with timed(record.timings_ms, "write"):
            shape = (int(record.image.shape[0]), int(record.image.shape[1])) if record.image is not None else None
            if shape is None:
                shape = record.mask.shape if record.mask is not None else (0, 0)
            with self._lock:
                self._seq += 1
                self._latest = (self._seq, record.mask, shape, measurement_json(record), record.t_wall)
            self.published += 1
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):  # the wake-up pipe is full: the thread is awake anyway
                pass

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self._thread.join(5.0)
        self._thread = None
        for client in list(self._clients):
            self._drop(client, None, "the run ended")
        for s in (self._sock, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        if self._run is not None:
            self._run.extras["igtl_out"] = self.describe()
        log.info("OpenIGTLink output: %d frames published, %d clients served", self.published, self.clients_served)

    @property
    def connected(self) -> int:
        """Clients connected now."""
        return len(self._clients)

    def describe(self) -> dict[str, Any]:
        clients = self._done + self._clients
        return {"address": self.bind, "port": self.port, "image_device": self.device, "text_device": self.text_device,
                "frames_published": self.published, "clients_served": self.clients_served,
                "frames_sent": sum(c.frames_sent for c in clients),
                "frames_skipped_for_slow_clients": sum(c.frames_skipped for c in clients)}

    # ------------------------------------------------------------------ the server thread
    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        blob, blob_seq = b"", 0
        try:
            while not self._stop.is_set():
                for key, events in sel.select(_POLL_S):
                    if key.data == "listen":
                        self._accept(sel, blob_seq)
                    elif key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                    else:
                        self._service(sel, key.data, events)
                with self._lock:
                    latest = self._latest
                if latest is not None and latest[0] > blob_seq and self._clients:
                    blob, blob_seq = self._pack(latest), latest[0]
                now = time.monotonic()
                for client in list(self._clients):
                    if client.pending is None and client.sent_seq < blob_seq:
                        client.frames_skipped += max(0, blob_seq - client.sent_seq - 1)
                        client.pending, client.sent_seq = memoryview(blob), blob_seq
                        client.last_progress = now
                        self._send(sel, client)
                    elif client.pending is not None and now - client.last_progress > self.stall_s:
                        self._drop(client, sel, f"it took nothing for {self.stall_s:g} s")
        except Exception as exc:  # never silently: the next write() fails the output (exit code 5)
            self._error = f"the OpenIGTLink server failed: {type(exc).__name__}: {exc}"
            log.error("%s", self._error, exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, seq: int) -> None:
        try:
            sock, address = self._sock.accept()
        except (BlockingIOError, OSError):
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:  # a late client starts with the next frame
            current = self._latest[0] if self._latest is not None else 0
        client = _Client(sock, f"{address[0]}:{address[1]}", sent_seq=max(seq, current))
        self._clients.append(client)
        self.clients_served += 1
        sel.register(sock, selectors.EVENT_READ, client)
        log.info("OpenIGTLink client %s connected", client.address)

    def _service(self, sel: selectors.BaseSelector, client: _Client, events: int) -> None:
        if events & selectors.EVENT_READ:
            try:
                data = client.sock.recv(65536)  # what clients send (status, commands) is not used
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as exc:
                self._drop(client, sel, str(exc))
                return
            if data == b"":
                self._drop(client, sel, "it disconnected")
                return
        if events & selectors.EVENT_WRITE and client in self._clients:
            self._send(sel, client)

    def _send(self, sel: selectors.BaseSelector, client: _Client) -> None:
        try:
            while client.pending:
                n = client.sock.send(client.pending)
                client.pending = client.pending[n:]
                client.last_progress = time.monotonic()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._drop(client, sel, str(exc))
            return
        if client.pending is not None and not client.pending:
            client.pending = None
            client.frames_sent += 1
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.pending is not None else 0)
        sel.modify(client.sock, mask, client)

    def _drop(self, client: _Client, sel: selectors.BaseSelector | None, why: str) -> None:
        if client not in self._clients:
            return
        self._clients.remove(client)
        self._done.append(client)
        with self._lock:  # the frames published after the one it was given never reach it
            client.frames_skipped += max(0, (self._latest[0] if self._latest is not None else 0) - client.sent_seq)
        if sel is not None:
            try:
                sel.unregister(client.sock)
            except (KeyError, ValueError):
                pass
        client.sock.close()
        log.info("OpenIGTLink client %s dropped: %s (%d frames sent, %d skipped)", client.address, why,
                 client.frames_sent, client.frames_skipped)

    def _pack(self, latest: tuple[int, np.ndarray | None, tuple[int, int], str, float | None]) -> bytes:
        """The IMAGE and STRING messages of one frame, packed once for every client."""
        import pyigtl

        _, mask, shape, text, t_wall = latest
        labels = np.zeros(shape, np.uint8) if mask is None else (np.asarray(mask) > 0).astype(np.uint8)
        image = pyigtl.ImageMessage(labels[None], ijk_to_world_matrix=mask_matrix(self.spacing, self.input_matrix),
                                    world_coordinate_system="ras", timestamp=t_wall, device_name=self.device)
        string = pyigtl.StringMessage(text, timestamp=t_wall, device_name=self.text_device)
        return image.pack() + string.pack()
