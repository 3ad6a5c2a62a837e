"""An output folder belongs to one run: a lock file, no silent overwrite, every output path checked first.

``claim_folder(folder, outputs, overwrite=...)`` is called by mn-live and mn-segment before the engine
loads and before the first frame:

* **One run at a time.** ``FOLDER/.mn-seg.lock`` is held with ``fcntl.flock`` for the whole run and
  holds the run's PID, host, start time and command. A second run into the same folder is refused
  (exit 2) with the other run's PID. The kernel releases the lock when a process dies however it
  dies, so the lock file of a killed run (SIGKILL, power loss) is stale: the next run takes it over
  with a warning naming the dead PID.
* **No silent overwrite.** When any of the run's output files already exists (an earlier run's
  results), the run is refused unless ``overwrite``; with it, those files are removed first (so
  the folder never mixes two runs: an old overlay.mp4 next to a new CSV).
* **Every output path checked before the first frame** (:func:`check_output_path`): the video's
  and plot's extensions, a path that is a folder, a parent folder that cannot be created or written
  (a probe file is created and removed there), so a bad ``--record`` or ``--plot`` fails at once with
  exit 2 instead of after the run.

Light: the standard library only (``mn-live --help`` imports it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

from common.errors import UserError

try:  # POSIX; elsewhere the lock degrades to "a live PID in the lock file"
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".mn-seg.lock"

#: Extensions the overlay video may have: containers PyAV writes H.264 into and keeps playable after a
#: crash (fragmented MP4 / MOV, Matroska).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
#: Extensions of the plot (matplotlib picks the format from it).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


class FolderInUse(UserError):
    """Another live run holds the output folder's lock."""


class RunFolder:
    """The lock of one run on ``folder`` (:func:`claim_folder` makes it; :meth:`release` or ``with``)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self.lock_path = folder / LOCK_NAME
        self._fd: int | None = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.lock_path):
                self.lock_path.unlink()
        except OSError as exc:  # the folder vanished or became read-only: the lock goes with the process
            log.debug("could not remove %s: %s", self.lock_path, exc)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_folder(folder: str | os.PathLike, outputs: Iterable[str | os.PathLike | None] = (), *,
                 overwrite: bool = False, command: str | None = None) -> RunFolder:
    """Create ``folder``, lock it for this run, and make sure none of ``outputs`` holds an earlier run's
    results (removed first when ``overwrite``). Returns the held :class:`RunFolder`.

    Raises:
        FolderInUse: another run holds the folder (its PID is named).
        UserError: the folder cannot be created or written, or results exist and ``overwrite`` is off.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    held = RunFolder(folder, _lock(folder, command))
    try:
        existing = [Path(p) for p in outputs if p is not None and _holds_results(Path(p))]
        if existing:
            names = ", ".join(str(p) for p in existing)
            if not overwrite:
                raise UserError(f"{folder} already holds results of an earlier run ({names}): pass --overwrite to "
                                "replace them, or choose another --out")
            for path in existing:
                _remove(path)
            log.warning("--overwrite: removed the earlier results %s", names)
    except BaseException:
        held.release()
        raise
    return held


def check_output_path(path: str | os.PathLike, flag: str, suffixes: Iterable[str] | None = None) -> Path:
    """Check that ``path`` (given by ``flag``) can be written before the run starts: its extension when
    ``suffixes`` are given, not a folder, its parent folder created and writable (a probe file is made
    and removed there). Returns the path.

    Raises:
        UserError: naming the flag, the path and how to fix it.
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in tuple(suffixes):
        raise UserError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)} (the format is taken "
                        "from the extension)")
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder: give a file name")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mn-seg-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in {parent}: {exc.strerror or exc} (choose a writable "
                        "folder)") from None
    return path


def check_outputs(paths: Mapping[str, str | os.PathLike | None], flags: Mapping[str, str]) -> None:
    """:func:`check_output_path` for each output kind (``csv``, ``video``, ``summary``, ``plot``) that is set;
    ``flags`` names the flag of each kind for the messages."""
    suffixes = {"video": VIDEO_SUFFIXES, "plot": PLOT_SUFFIXES}
    for kind, path in paths.items():
        if path is not None and kind in flags:
            check_output_path(path, flags[kind], suffixes.get(kind))


# ------------------------------------------------------------------------------------------ the lock
def _lock(folder: Path, command: str | None) -> int:
    """Open, lock and fill ``folder/.mn-seg.lock``; returns its descriptor."""
    path = folder / LOCK_NAME
    for _ in range(5):  # the holder may remove the file between our open and our lock: open it again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {path}: {exc.strerror or exc} (is {folder} "
                            "writable?)") from None
        previous = _read(fd)
        if not _try_lock(fd, previous):
            if not previous.get("pid"):  # the holder has just locked it and is writing its PID
                time.sleep(0.2)
                previous = _read(fd)
            os.close(fd)
            pid = previous.get("pid") or "unknown"
            started = f", started {previous['started']}" if previous.get("started") else ""
            raise FolderInUse(f"the output folder {folder} is in use by another run (PID {pid}{started}): wait for "
                              "it to end, or choose another --out")
        if not _same_file(fd, path):
            os.close(fd)
            continue
        if previous.get("pid"):
            log.warning("taking over the stale lock of %s: the run that held it (PID %s%s) is gone", folder,
                        previous["pid"], f", started {previous['started']}" if previous.get("started") else "")
        text = (f"pid: {os.getpid()}\nhost: {socket.gethostname()}\n"
                f"started: {dt.datetime.now().isoformat(timespec='seconds')}\n"
                f"command: {command or ' '.join(sys.argv)}\n")
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        return fd
    raise UserError(f"could not lock the output folder {folder} (its lock file keeps changing): is another "
                    "run starting there?")


def _try_lock(fd: int, previous: dict[str, str]) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    pid = previous.get("pid")  # pragma: no cover - no flock: a lock file naming a live process holds
    return not (pid and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)))


def _alive(pid: int) -> bool:  # pragma: no cover - the no-flock fallback
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(fd: int) -> dict[str, str]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ results
def _holds_results(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as exc:
        raise UserError(f"--overwrite: cannot remove {path}: {exc.strerror or exc}") from None
