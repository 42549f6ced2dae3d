"""Running the gpushop CLI in-process, as a user would from a shell, for the tests."""

from __future__ import annotations

import pytest

from gpushop.cli.app import main


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `gpushop ARGV...`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
