"""Running the gpushop CLI in-process, as a user would from a shell, for the tests."""

from __future__ import annotations

import sys

import pytest

from gpushop.cli.app import main


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `gpushop ARGV...`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# A shell starts a background job with SIGINT ignored, and a child inherits an ignored signal:
# Python then installs no KeyboardInterrupt handler, so Ctrl-C does nothing (rightly: that is
# what the shell asked). A test of what Ctrl-C does starts the CLI as a terminal's foreground
# job would have it, whatever started the tests.
_AS_IN_A_TERMINAL = (
    "import runpy, signal, sys; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'gpushop'; "
    "runpy.run_module('gpushop', run_name='__main__', alter_sys=True)"
)


def interruptible_cli(*argv: str) -> list[str]:
    """The command line of `gpushop ARGV...` in a new process that Ctrl-C (SIGINT) reaches."""
    return [sys.executable, "-c", _AS_IN_A_TERMINAL, *argv]
