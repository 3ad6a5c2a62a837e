"""Errors meant for the person at the keyboard, and the CLI wrapper that shows them.

Library code raises :class:`UserError` (or a subclass) for anything caused by input:
a missing folder, a malformed checkpoint, a size the network cannot take. The
message must say what was wrong *and how to fix it*. Command-line entry points run
through :func:`run_cli`, which turns a ``UserError`` into one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import select
import sys
from typing import Callable, Sequence

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SOURCE_FAILED = 3
"""mn-live / mn-segment: the source failed mid-run (the frames before it are measured and kept)."""
EXIT_ENGINE_FAILED = 4
"""mn-live / mn-segment: the engine failed mid-run."""
EXIT_OUTPUT_FAILED = 5
"""mn-live / mn-segment: an output file could not be written mid-run (disk full, permission lost, the folder
removed); the run stops and what was written is finalised; the message names the file."""
EXIT_BATCH_INCOMPLETE = 6
"""mn-segment with several inputs: at least one input failed and the others were processed (each failure is
named as it happens, in the final table and in the batch summary)."""
EXIT_INTERRUPTED = 130
EXIT_OUTPUT_CLOSED = 141
"""The reader of the command's standard output went away (``mn-live --list-models | head -1``): 128 + SIGPIPE,
what a shell reports for a Unix tool stopped that way."""


class UserError(Exception):
    """Bad input: the message is shown as is, and the command exits with code 2."""

    exit_code = EXIT_USAGE


class OutputError(UserError):
    """An output that cannot be written (names the file); the command exits with code 5."""

    exit_code = EXIT_OUTPUT_FAILED


class DataError(UserError):
    """A dataset folder or file that cannot be used (names the files concerned)."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or not an mn-seg checkpoint."""


def error_outcome(exc: Exception) -> tuple[int, str]:
    """The exit code and one-line message of a command that raised ``exc``: a ``UserError``'s own code and
    message; an ``OSError`` (a path that cannot be read or written) 2 with its reason and path; anything
    else (a bug) 1, named as unexpected."""
    if interrupted(exc):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, UserError):
        return exc.exit_code, str(exc)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return EXIT_USAGE, f"{reason}: {exc.filename}" if exc.filename else reason
    return EXIT_FAILURE, f"unexpected {type(exc).__name__}: {exc}"


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, a Ctrl-C. CPython 3.11 wraps an exception raised while a class
    is being created (a dataclass's fields' ``__set_name__``, on a lazy import) in a ``RuntimeError`` whose
    cause is the original: a Ctrl-C landing there must still read as one, not as a bug."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and map errors to exit codes.

    ``UserError`` -> one line ``prog: error: message`` and its exit code (2); an ``OSError``
    (a folder that cannot be created, a file that cannot be written) -> the same with its path;
    ``KeyboardInterrupt`` -> 130 (the command itself is responsible for saving its state
    before re-raising); a write to a standard output whose reader is gone -> 141, quietly;
    anything else (a bug) -> one line naming it and exit code 1, the traceback only with ``-v``
    (logged at DEBUG).
    """
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        if not _stdout_closed():  # another pipe or socket (a stream server): a real error
            return _report(prog, exc)
        _discard_stdout()
        return EXIT_OUTPUT_CLOSED
    except Exception as exc:
        return _report(prog, exc)
    finally:
        _forget_handled_keyboard_interrupt()


def _report(prog: str, exc: Exception) -> int:
    """One line on stderr for ``exc``; its exit code."""
    code, message = error_outcome(exc)
    if code == EXIT_INTERRUPTED:
        print(f"{prog}: interrupted", file=sys.stderr)
        return code
    if code == EXIT_FAILURE:  # a bug: one line, not a traceback (the traceback is in the -v log)
        log.debug("%s failed", prog, exc_info=True)
        message += " (please report this with the command line; -v shows where it happened)"
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (``poll`` reports an error on its end)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real file behind sys.stdout (captured, closed)
        return False


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _forget_handled_keyboard_interrupt() -> None:
    """Make the process's exit code the one returned, even after a Ctrl-C that was handled.

    CPython marks a ``KeyboardInterrupt`` that leaves code run from a *string* (``exec``/``eval`` of source
    text, as ``dataclasses`` and ``collections.namedtuple`` do when a class is defined during a lazy import)
    as unhandled, and does not clear the mark when the exception is caught further up. A ``python -m``
    process then kills itself with SIGINT at exit (return code -2) instead of exiting with the code the
    command returned (130 after Ctrl-C; 0 when mn-live stopped and finalised its files). Running a string
    clears the mark: Python/pythonrun.c ``run_eval_code_obj`` resets it before each run.
    """
    exec("None")  # a constant string, run only for the side effect described above
