"""Images from an OpenIGTLink server (``igtl://HOST[:PORT][/DEVICE_NAME]``), e.g. a PLUS server
(PlusServer) streaming a scanner or a frame grabber, or 3D Slicer's OpenIGTLinkIF.

The source is an OpenIGTLink *client*: it connects to ``HOST:PORT`` (default port
:data:`DEFAULT_PORT`, 18944) and reads the messages the server sends. The protocol is pyigtl's
(``pyigtl.MessageBase.parse_header``, ``ImageMessage.unpack``); this module only moves bytes and
turns an IMAGE message into a frame:

* IMAGE messages of uint8, uint16 or float (and the other scalar types OpenIGTLink allows), with 1
  (grey) or 3 / 4 (RGB / RGBA, delivered as BGR) components; 2-D, or a volume of a single slice.
  A volume of several slices, or an odd number of components, is refused with a clear error
  (exit code 2). uint8 and uint16 pass through; float pixels are mapped to uint8 (0-1 scaled by
  255, 0-255 as they are, any other range stretched per frame, logged once).
* The pixel spacing is the length of the IJK-to-RAS matrix's column of each image axis (mm, as
  OpenIGTLink and PLUS use): it becomes :attr:`Source.calibration`, which calibrates every mm column
  unless ``--mm-per-px`` / ``--depth-mm`` are given, and every output names it as the calibration's
  source. A unit matrix (1 x 1 mm per pixel) is what senders put when they do not know the
  spacing: it is logged and ignored (the run stays uncalibrated). A spacing that changes during
  the run (the depth was changed on the scanner) ends the run with an error, as a change of frame
  size does: its mm would silently change scale.
* The message's header timestamp is kept as ``Frame.t_source`` (the sender's clock; PLUS counts
  from its start or from 1970, by its configuration); ``Frame.pts`` is the time since the first
  image's timestamp.
* With ``/DEVICE_NAME`` only IMAGE messages of that device are taken; without it, the first device
  that sends an image is taken (and named in the log). Every other message is ignored and counted.

Like a capture device the source is live: a receiver thread keeps only the newest image
(:class:`~realtime.sources.common.LatestSlot`); images the consumer was too slow for are counted
and reported as ``Frame.dropped_before``. A server that goes away is reconnected to for up to
``reconnect_s`` seconds; if it does not come back the stream ends cleanly with ``source.failed``
set, and :meth:`Source.raise_if_failed` gives exit code 3. Nothing listening at the first connection
is an input error (exit code 2).
"""

from __future__ import annotations

import logging
import math
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from realtime.calibration import Calibration
from realtime.frame import Frame
from realtime.sources.common import ReceivingSource, SourceError, SourceOptions, register_source

log = logging.getLogger(__name__)

DEFAULT_PORT = 18944
"""The OpenIGTLink port (PlusServer's and Slicer's default)."""
RETRY_INTERVAL_S = 0.25
"""Pause between two attempts to reconnect to a server that went away."""
CONNECT_TIMEOUT_S = 3.0
"""How long one connection attempt may take."""
RECV_POLL_S = 0.2
"""Socket timeout of a read: how often the receiver thread looks at its stop flag."""
UNIT_SPACING_TOL = 1e-6

_SPEC_RE = re.compile(r"^/*(?P<host>\[[^\]]+\]|[^:/]+)(?::(?P<port>[^/]*))?(?:/(?P<device>.*))?$")
_AXES = ("i", "j", "k")  # the IJK-to-RAS matrix's columns 0, 1, 2


class _Closed(Exception):
    """The server closed the connection (or the socket broke)."""


@dataclass
class _Received:
    index: int
    t_capture: float
    t_wall: float
    timestamp: float
    image: np.ndarray
    spacing: tuple[float, float] | None  # (mm per column step, mm per row step); None: not given
    matrix: np.ndarray | None = None  # the plane's IJK-to-RAS: columns (i), rows (j), normal (k), origin


def parse_igtl_spec(arg: str) -> tuple[str, int, str | None]:
    """``//HOST[:PORT][/DEVICE]`` (the part after ``igtl:``) -> ``(host, port, device or None)``."""
    m = _SPEC_RE.match(arg.strip())
    if not m or not m.group("host"):
        raise SourceError(f"igtl:{arg}: expected igtl://HOST[:PORT][/DEVICE_NAME], e.g. igtl://127.0.0.1:18944/"
                          f"Image_Reference (the default port is {DEFAULT_PORT})")
    host = m.group("host").strip("[]")
    port_text = m.group("port")
    if port_text in (None, ""):
        port = DEFAULT_PORT
    else:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SourceError(f"igtl:{arg}: the port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    device = (m.group("device") or "").strip() or None
    if device is not None and len(device.encode()) > 20:
        raise SourceError(f"igtl:{arg}: an OpenIGTLink device name has at most 20 bytes, {device!r} has more")
    return host, port, device


def image_plane(image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The 2-D picture of a pyigtl ``ImageMessage.image`` (axes ``k, j, i[, components]``) and its
    spacing ``(mm per column, mm per row)`` from the IJK-to-RAS ``matrix``.

    The one image axis of size 1 is dropped (``k`` for a 2-D image or a single slice; ``i`` as
    pyigtl itself packs a 2-D array); the two others are rows and columns, in that order. The
    spacing of an axis is the length of its matrix column.

    Raises:
        SourceError: a volume of more than one slice, or a number of components other than 1, 3, 4.
    """
    comps = 1 if image.ndim == 3 else int(image.shape[3]) if image.ndim == 4 else -1
    if comps not in (1, 3, 4):
        shape = list(image.shape)
        raise SourceError(f"an IMAGE message with {comps if comps > 0 else shape} components (shape {shape}): "
                          "mn-seg reads grey (1 component), RGB (3) or RGBA (4) images; set the server to send "
                          "B-mode images")
    k, j, i = (int(n) for n in image.shape[:3])
    sizes = {"k": k, "j": j, "i": i}
    flat = next((a for a in ("k", "i", "j") if sizes[a] == 1), None)
    if flat is None:
        raise SourceError(f"an IMAGE message holds a 3-D volume of {i}x{j}x{k} voxels: mn-seg measures 2-D images "
                          "(one slice); send the B-mode image (PLUS: the Image_Reference or Image_Image channel)")
    axes = [a for a in ("k", "j", "i") if a != flat]  # the array's remaining axes, in order: rows, columns
    index = [slice(None)] * image.ndim
    index[("k", "j", "i").index(flat)] = 0
    plane = image[tuple(index)]
    m = np.asarray(matrix, dtype=np.float64)
    step = {a: float(np.linalg.norm(m[:3, _AXES.index(a)])) for a in ("i", "j", "k")}
    return plane, (step[axes[1]], step[axes[0]])


def plane_matrix(shape: tuple[int, ...], matrix: np.ndarray) -> np.ndarray:
    """The IJK-to-RAS matrix of :func:`image_plane`'s picture of an image of ``shape`` (``k, j, i[, c]``):
    column 0 steps along the picture's columns, column 1 along its rows, column 2 along the dropped axis,
    the origin unchanged (pyigtl's matrices are about voxel 0)."""
    k, j, i = (int(n) for n in shape[:3])
    sizes = {"k": k, "j": j, "i": i}
    flat = next(a for a in ("k", "i", "j") if sizes[a] == 1)
    rows, cols = [a for a in ("k", "j", "i") if a != flat]
    m = np.asarray(matrix, dtype=np.float64)
    out = np.eye(4)
    for dst, axis in enumerate((cols, rows, flat)):
        out[:3, dst] = m[:3, _AXES.index(axis)]
    out[:3, 3] = m[:3, 3]
    return out


def to_frame_image(plane: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An IMAGE message's plane -> what a frame holds (grey uint8 / uint16, or BGR), and a note when
    float or signed pixels had to be mapped (``None`` when they pass through)."""
    note = None
    if plane.ndim == 3:
        plane = plane[:, :, 2::-1] if plane.shape[2] >= 3 else plane  # RGB(A) -> BGR
    if plane.dtype == np.uint8 or plane.dtype == np.uint16:
        out = plane
    else:
        data = plane.astype(np.float64)
        finite = np.isfinite(data)
        if not finite.all():
            data = np.where(finite, data, 0.0)
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1.0 and plane.dtype.kind == "f":
            data, note = data * 255.0, f"{plane.dtype} pixels in 0-1: scaled by 255"
        elif lo >= 0 and hi <= 255:
            note = f"{plane.dtype} pixels in 0-255: taken as grey levels"
        else:
            data = (data - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
            note = f"{plane.dtype} pixels in {lo:g}-{hi:g}: stretched to 0-255 frame by frame"
        out = np.clip(np.rint(data), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), note


@register_source("igtl")
class IgtlSource(ReceivingSource[socket.socket]):
    """IMAGE messages from an OpenIGTLink server; see the module docstring.

    ``host``, ``port``: the server. ``device``: the device name to take images from (``None``: the
    first that sends one). ``retry_interval_s``: pause between reconnection attempts.
    ``stall_timeout_s``: how long the consumer waits for an image before it declares the server
    stalled (default ``reconnect_s + 10``).
    """

    claim_order = 5
    thread_name = "mn-igtl-receiver"
    reopened = "reconnected"

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec.lower().startswith("igtl://")

    @classmethod
    def from_spec(cls, arg: str, *, spec: str, options: SourceOptions, **kind_options: Any) -> "IgtlSource":
        host, port, device = parse_igtl_spec(arg)
        return cls(host, port, device, spec=spec, options=options, **kind_options)

    def __init__(self, host: str, port: int = DEFAULT_PORT, device: str | None = None, *, spec: str | None = None,
                 options: SourceOptions = SourceOptions(True), retry_interval_s: float = RETRY_INTERVAL_S,
                 stall_timeout_s: float | None = None) -> None:
        address = f"{host}:{port}"
        super().__init__(spec or f"igtl://{address}" + (f"/{device}" if device else ""), options,
                         name=f"OpenIGTLink server {address}" + (f" (device {device})" if device else ""))
        import pyigtl  # noqa: F401 - fails here, with the source named, if the dependency is missing

        self._init_receiving(options, retry_interval_s, stall_timeout_s)
        self.host, self.port, self.device = host, port, device
        if options.size is not None:
            log.warning("%s: a requested size applies to capture devices only; the server's images are used as "
                        "they come", self.name)
        self.messages_ignored = 0
        self.ignored_devices: set[str] = set()
        self.image_device: str | None = device
        self.image_format: dict[str, Any] | None = None
        self.spacing: tuple[float, float] | None = None
        self._spacing_seen = False
        self._plane_matrix: np.ndarray | None = None
        self.first_timestamp: float | None = None
        self._notes: set[str] = set()
        self._handle = self._open_handle(first=True)

    # -- the connection

    def _open_handle(self, first: bool) -> socket.socket | None:
        """Connect to the server; the first time a failure raises :class:`SourceError`, later it returns ``None``."""
        timeout = CONNECT_TIMEOUT_S if first else max(0.2, min(CONNECT_TIMEOUT_S, self.reconnect_s))
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except socket.gaierror as exc:
            if first:
                raise SourceError(f"cannot connect to the {self.name}: the host name {self.host!r} is not known "
                                  f"({exc.strerror}); give the server's address as igtl://HOST:PORT") from None
            return None
        except OSError as exc:
            if first:
                why = ("nothing listens there (connection refused)" if isinstance(exc, ConnectionRefusedError)
                       else "no answer" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc)))
                raise SourceError(
                    f"cannot connect to the {self.name}: {why}. Start the OpenIGTLink server first (PlusServer, or "
                    f"Slicer's OpenIGTLinkIF in server mode) and check its host and port (igtl://HOST:PORT, default "
                    f"port {DEFAULT_PORT})") from None
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(RECV_POLL_S)
        log.info("%s: connected", self.name)
        return sock

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        """``n`` bytes from ``sock``; raises :class:`_Closed` when the peer closes, returns early on stop."""
        chunks: list[bytes] = []
        got = 0
        while got < n:
            if self._stop.is_set():
                raise _Closed("stopped")
            try:
                chunk = sock.recv(min(n - got, 1 << 20))
            except socket.timeout:
                continue
            except OSError as exc:
                raise _Closed(exc.strerror or str(exc)) from None
            if not chunk:
                raise _Closed("the server closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    # -- the receiver thread

    def _receive(self) -> None:
        from pyigtl import MessageBase

        sock = self._handle
        index = 0
        try:
            while not self._stop.is_set() and sock is not None:
                try:
                    header = MessageBase.parse_header(self._recv_exact(sock, MessageBase.IGTL_HEADER_SIZE))
                    body = self._recv_exact(sock, int(header["body_size"]))
                except _Closed as exc:
                    if self._stop.is_set():
                        break
                    log.warning("%s: %s after %d images; reconnecting for up to %.1f s", self.name, exc, index,
                                self.reconnect_s)
                    sock = self._reconnect(sock)
                    continue
                except (UnicodeDecodeError, ValueError) as exc:  # a header that is not OpenIGTLink
                    self._slot.put(SourceError(f"{self.name} sent something that is not an OpenIGTLink message "
                                               f"({exc}); is this port an OpenIGTLink server?"))
                    break
                received = self._image(header, body, index)
                if isinstance(received, SourceError):
                    self._slot.put(received)
                    break
                if received is not None:
                    self._slot.put(received)
                    index += 1
        except Exception as exc:  # never let the thread die silently
            log.exception("%s: the receiver thread failed", self.name)
            self._slot.put(SourceError(f"{self.name}: receiving failed: {type(exc).__name__}: {exc}"))
        finally:
            self._slot.close()

    def _image(self, header: dict[str, Any], body: bytes, index: int) -> _Received | SourceError | None:
        """An IMAGE message of the device taken -> :class:`_Received`; ``None`` for a message to ignore;
        a :class:`SourceError` for an image the source cannot use."""
        from pyigtl import MessageBase

        device = header["device_name"]
        if header["message_type"] != "IMAGE" or (self.image_device is not None and device != self.image_device):
            self.messages_ignored += 1
            if device not in self.ignored_devices and device != self.image_device:
                self.ignored_devices.add(device)
                log.info("%s: ignoring %s messages of device %r%s", self.name, header["message_type"], device,
                         f" (taking images of {self.image_device!r})" if self.image_device else "")
            return None
        t_capture, t_wall = time.monotonic(), time.time()
        message = MessageBase.create_message("IMAGE")
        try:
            message.unpack(header, body)
            plane, spacing = image_plane(message.image, message.ijk_to_world_matrix)
        except SourceError as exc:
            return SourceError(f"{self.name}, device {device!r}: {exc}")
        except (KeyError, ValueError, NotImplementedError, IndexError) as exc:  # pyigtl refuses the content
            what = "a scalar type OpenIGTLink does not define" if isinstance(exc, KeyError) else str(exc)
            return SourceError(f"{self.name}, device {device!r}: an IMAGE message that cannot be read ({what}); "
                               "send 2-D grey or RGB images without sub-volumes")
        image, note = to_frame_image(plane)
        if note and note not in self._notes:
            self._notes.add(note)
            log.info("%s: %s", self.name, note)
        if self.image_device is None:
            self.image_device = device
            log.info("%s: taking the images of device %r (name one with igtl://%s:%d/DEVICE_NAME)", self.name,
                     device, self.host, self.port)
        if self.image_format is None:
            self.image_format = {"device": device, "dtype": str(message.image.dtype.newbyteorder("=")),
                                 "components": 1 if image.ndim == 2 else int(image.shape[2]),
                                 "coordinate_system": message.world_coordinate_system}
        if all(abs(s - 1.0) <= UNIT_SPACING_TOL for s in spacing) or not all(
                math.isfinite(s) and s > 0 for s in spacing):
            spacing_or_none = None
        else:
            spacing_or_none = spacing
        geometry = plane_matrix(message.image.shape, message.ijk_to_world_matrix)
        return _Received(index, t_capture, t_wall, float(message.timestamp), image, spacing_or_none, geometry)

    def _close_handle(self, handle: socket.socket) -> None:
        handle.close()

    def _lost_text(self, attempts: int) -> str:
        return (f"the server went away and could not be reconnected to within {self.reconnect_s:g} s "
                f"({attempts} attempts)")

    def _stall_text(self) -> str:
        return (f"no image for {self.stall_timeout_s:g} s: the server is connected but sends no IMAGE message"
                f"{' of device ' + repr(self.device) if self.device else ''}")

    # -- Source

    def _frames(self) -> Iterator[Frame]:
        for item, dropped in self._received():
            if isinstance(item, SourceError):
                raise item
            self._check_spacing(item)
            if self.first_timestamp is None:
                self.first_timestamp = item.timestamp
            yield Frame(item.index, item.t_capture, item.timestamp - self.first_timestamp, item.image, dropped,
                        t_wall=item.t_wall, t_source=item.timestamp)

    @property
    def frame_matrix(self) -> np.ndarray | None:
        """The IJK-to-RAS matrix of the frames (the first image's, moved to the ``--roi`` crop's corner), so an
        output that sends masks back (``--igtl-out``) places them on the sender's image; None before the first
        image or when the sender's spacing was ignored (a unit matrix)."""
        if self._plane_matrix is None or self.spacing is None:
            return None
        m = self._plane_matrix.copy()
        roi = self._guard.roi if getattr(self, "_guard", None) is not None else None
        if roi is not None:
            m[:3, 3] += roi[0] * m[:3, 0] + roi[1] * m[:3, 1]
        return m

    def _check_spacing(self, item: _Received) -> None:
        """Take the first image's spacing as the calibration; refuse a change of it later."""
        if not self._spacing_seen:
            self._spacing_seen = True
            self.spacing = item.spacing
            self._plane_matrix = item.matrix
            if item.spacing is None:
                log.warning("%s: the images' IJK-to-RAS matrix gives 1 x 1 mm per pixel, which is what a sender puts "
                            "when it does not know the spacing: ignored, the run stays uncalibrated unless "
                            "--mm-per-px or --depth-mm is given (PLUS: add the ImageToReference transform)", self.name)
            else:
                self.calibration = Calibration(
                    item.spacing[0], item.spacing[1],
                    f"OpenIGTLink IMAGE matrix of device {self.image_device or '?'} from {self.host}:{self.port}")
                log.info("%s: pixel spacing %s", self.name, self.calibration.text())
            return
        old, new = self.spacing, item.spacing
        if old is None and new is None:
            return
        if old is None or new is None or any(abs(a - b) > 1e-3 * max(a, b) for a, b in zip(old, new)):
            text = lambda s: "none" if s is None else f"{s[0]:.4f} x {s[1]:.4f} mm/px"  # noqa: E731
            raise SourceError(f"{self.name}: the pixel spacing changed from {text(old)} to {text(new)} at image "
                              f"{item.index} (was the depth changed on the scanner?); a run keeps one spacing, "
                              "start a new run for the new setting")

    def _describe_extra(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "device": self.image_device,
            "image_format": self.image_format,
            "spacing_mm": None if self.spacing is None else list(self.spacing),
            "first_timestamp": self.first_timestamp,
            "messages_ignored": self.messages_ignored,
            "ignored_devices": sorted(self.ignored_devices),
            "reconnect_s": self.reconnect_s,
            "reconnects": self.reconnects,
        }

