"""common.errors: user errors as one line and exit 2, OS errors with their path, Ctrl-C as 130; the same
classes under train.errors and engines.errors."""

from __future__ import annotations

import pytest

from common.errors import EXIT_INTERRUPTED, EXIT_USAGE, CheckpointError, DataError, UserError, run_cli


def _raises(exc: BaseException):  # type: ignore[no-untyped-def]
    def main(argv):  # type: ignore[no-untyped-def]
        raise exc

    return main


def test_exit_codes_and_messages(capsys: pytest.CaptureFixture) -> None:
    assert run_cli("mn-x", lambda argv: 0) == 0
    assert run_cli("mn-x", _raises(DataError("folder X has no Images/"))) == EXIT_USAGE
    assert capsys.readouterr().err == "mn-x: error: folder X has no Images/\n"
    assert run_cli("mn-x", _raises(FileNotFoundError(2, "No such file or directory", "/no/such"))) == EXIT_USAGE
    assert "/no/such" in capsys.readouterr().err
    assert run_cli("mn-x", _raises(KeyboardInterrupt())) == EXIT_INTERRUPTED


def test_one_set_of_classes() -> None:
    import engines.errors
    import train.errors

    assert train.errors.UserError is UserError and train.errors.CheckpointError is CheckpointError
    assert issubclass(engines.errors.EngineError, UserError)


def test_output_errors_exit_5_and_bugs_one_line_exit_1(capsys: pytest.CaptureFixture) -> None:
    from common.errors import EXIT_FAILURE, EXIT_OUTPUT_FAILED, OutputError

    assert run_cli("mn-x", _raises(OutputError("cannot write CSV o/m.csv: No space left on device"))) == 5
    assert EXIT_OUTPUT_FAILED == 5 and "o/m.csv" in capsys.readouterr().err
    assert run_cli("mn-x", _raises(ValueError("Could not determine output format"))) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ValueError: Could not determine output format" in err and "Traceback" not in err


def test_a_ctrl_c_wrapped_by_class_creation_is_an_interrupt(capsys: pytest.CaptureFixture) -> None:
    """Python 3.11 wraps a Ctrl-C that lands while a dataclass is being created in a RuntimeError ("Error
    calling __set_name__ ..."): it exits 130 as an interrupt, not 1 as a bug (seen once in CI, mn-presence)."""
    from common.errors import error_outcome, interrupted

    def main(argv):  # type: ignore[no-untyped-def]
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ctrl_c:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance 'excluded' in 'Split'") from ctrl_c

    assert run_cli("mn-x", main) == 130
    assert capsys.readouterr().err == "mn-x: interrupted\n"
    try:
        main(None)
    except RuntimeError as exc:
        assert interrupted(exc) and error_outcome(exc) == (130, "interrupted")
    assert not interrupted(RuntimeError("a bug")) and error_outcome(RuntimeError("a bug"))[0] == 1


@pytest.mark.parametrize("caught_by, code", [("run_cli", 130), ("command", 0)])
def test_a_handled_ctrl_c_inside_exec_keeps_the_exit_code(tmp_path, caught_by: str, code: int) -> None:
    """A Ctrl-C that lands while ``exec`` runs a string (a dataclass being defined on a lazy import) and is
    handled, by run_cli (130) or by the command itself (mn-live finalising its files, 0), still gives the code
    returned: CPython would otherwise end a ``python -m`` process with SIGINT (return code -2)."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "ctrl_c_in_exec.py").write_text(f'''
import os, signal, sys
from common.errors import run_cli

# Python's own Ctrl-C handler, also when this test runs in the background (where SIGINT starts ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)

def main(argv):
    try:
        exec("os.kill(os.getpid(), signal.SIGINT)\\nimport time\\nt = time.monotonic()\\n"
             "while time.monotonic() - t < 5: pass", globals())
    except KeyboardInterrupt:
        if {caught_by!r} == "run_cli":
            raise
    return 0

sys.exit(run_cli("mn-x", main))
''')
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "ctrl_c_in_exec"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    assert done.returncode == code, done.stderr


def test_the_command_gets_argv_and_its_own_exit_code() -> None:
    seen = []

    def main(argv):  # type: ignore[no-untyped-def]
        seen.append(argv)
        return 3

    assert run_cli("mn-x", main, ["--frames", "2"]) == 3 and seen == [["--frames", "2"]]
    assert run_cli("mn-x", lambda argv: None) == 0


def test_ctrl_c_is_one_line_on_stderr(capsys: pytest.CaptureFixture) -> None:
    assert run_cli("mn-x", _raises(KeyboardInterrupt())) == EXIT_INTERRUPTED
    assert capsys.readouterr() == ("", "mn-x: interrupted\n")


def test_a_bug_is_one_line_and_its_traceback_is_logged_at_debug(capsys: pytest.CaptureFixture,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.DEBUG, logger="common.errors"):
        assert run_cli("mn-x", _raises(ValueError("boom"))) == 1
    assert capsys.readouterr().err == ("mn-x: error: unexpected ValueError: boom (please report this with the command "
                                       "line; -v shows where it happened)\n")
    [record] = [r for r in caplog.records if r.name == "common.errors"]
    assert record.levelno == logging.DEBUG and record.getMessage() == "mn-x failed"
    assert record.exc_info is not None and record.exc_info[0] is ValueError


def test_os_errors_give_their_reason_and_path_as_is() -> None:
    from common.errors import error_outcome

    assert error_outcome(FileNotFoundError(2, "No such file or directory", "/no/such")) == (
        EXIT_USAGE, "No such file or directory: /no/such")
    # no path, no errno: the message itself, whatever it ends with
    assert error_outcome(OSError("device busy: X")) == (EXIT_USAGE, "device busy: X")
    assert error_outcome(OSError("trailing colon:")) == (EXIT_USAGE, "trailing colon:")
    assert error_outcome(PermissionError(13, "Permission denied")) == (EXIT_USAGE, "Permission denied")


def test_interrupted_follows_cause_and_context_and_stops_at_a_cycle() -> None:
    from common.errors import interrupted

    by_cause, by_context = RuntimeError("cause"), RuntimeError("context")
    by_cause.__cause__ = KeyboardInterrupt()
    by_context.__context__ = KeyboardInterrupt()
    assert interrupted(by_cause) and interrupted(by_context)
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a  # a cycle without a Ctrl-C: terminates, not an interrupt
    assert not interrupted(a)


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``mn-live --list-models | head -1``: the writes to a standard output whose reader has gone end the
    command with 141 (128 + SIGPIPE, as a shell reports for Unix tools) and nothing on stderr, while a broken
    pipe elsewhere (a stream server's socket) is still an error."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "writer.py"
    script.write_text(
        "import sys, time\n"
        "from common.errors import run_cli\n"
        "def main(argv):\n"
        "    print('first line', flush=True)\n"
        "    time.sleep(0.5)  # the reader has read one line and gone by now\n"
        "    for i in range(100000):\n"
        "        print('line', i)\n"
        "    return 0\n"
        "sys.exit(run_cli('writer', main, []))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.readline() == b"first line\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 141 and err == ""
    # standard output is fine: a broken pipe is the command's own failure, one line, exit 2
    assert run_cli("x", _raises(BrokenPipeError(32, "Broken pipe"))) == EXIT_USAGE
