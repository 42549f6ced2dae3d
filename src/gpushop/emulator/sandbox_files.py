"""What the emulator writes for an instance's sandbox, and where things are inside.

The control folder (`C.<id>.emulator/` on the host, `/.emulator` inside, read-only there) holds
the programs of `bin/` (the emulator's python, a `sleep` that honours the speed, nvidia-smi,
and on TensorDock VMs docker, sudo, cloud-init) and the faults the emulator arms; `state/`
(`/.emulator/state`, writable) is where the instance's programs leave word for the emulator.
Every file is written atomically (a command running it never sees half of one), and only into
the control folder, or into the root folder before the instance ever ran (the image's files):
what an instance wrote is never followed from the host.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from pathlib import Path

from gpushop.emulator import image_files
from gpushop.emulator.isolation import TOOL_PATH

CONTROL = "/.emulator"  # inside: the control folder (read-only)
STATE = "/.emulator/state"  # inside: what the instance tells the emulator (writable)
BIN = "/.emulator/bin"
CONTAINERS_SOCKET = "/.emulator/state/containers.sock"  # PID 1 makes containers (docker_shim)
INSIDE_PATH = f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALLED = ".installed"  # in the control folder: the image's files are in place

SLEEP = r"""#!/bin/sh
# Simulated by the gpushop emulator: time runs EMULATOR_SPEED times faster here (as for the
# simulated trainer). A sleep never gets shorter than 50 ms (or itself): polling loops stay loops.
f=${EMULATOR_SPEED:-1}
case "$f" in 1|1.0) exec @SLEEP@ "$@" ;; esac
t=$(@AWK@ -v f="$f" 'BEGIN {
  s = 0
  for (i = 1; i < ARGC; i++) {
    a = ARGV[i]; m = 1; u = substr(a, length(a))
    if (u == "s" || u == "m" || u == "h" || u == "d") {
      a = substr(a, 1, length(a) - 1)
      m = (u == "m") ? 60 : (u == "h") ? 3600 : (u == "d") ? 86400 : 1
    }
    if (a !~ /^[0-9]*\.?[0-9]+$/) exit 1
    s += a * m
  }
  if (ARGC < 2) exit 1
  r = s / f; lo = (s < 0.05) ? s : 0.05
  if (r < lo) r = lo
  printf "%.3f", r
}' "$@") || exec @SLEEP@ "$@"
exec @SLEEP@ "$t"
"""


def lay_out(root: Path, control: Path, image: str) -> None:
    """The control folder's programs; the image's files in the root folder, once."""
    bin_dir = control / "bin"
    for folder in (root, bin_dir, control / "state"):
        folder.mkdir(parents=True, exist_ok=True)
    write_script(bin_dir / "sleep", sleep_script())
    for name in ("python", "python3"):  # the emulator's own interpreter, whatever the image
        write_script(bin_dir / name, f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    if not (control / INSTALLED).exists():
        (root / "app").mkdir(exist_ok=True)
        image_files.install(image, root / "app")
        (control / INSTALLED).touch()


def sleep_script() -> str:
    sleep = shutil.which("sleep", path=TOOL_PATH) or "/bin/sleep"
    awk = shutil.which("awk", path=TOOL_PATH) or "awk"
    return SLEEP.replace("@SLEEP@", sleep).replace("@AWK@", awk)


def write_script(path: Path, text: str) -> None:
    """Atomically, and only when it changed: a command running it never sees half a file."""
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)


def remove_tree(folder: Path) -> None:
    """rmtree (fd-based: never follows a symlink), also through the mode-000 folders overlayfs
    leaves in its work folder."""

    def unlock(_func: object, path: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700, follow_symlinks=False)

    shutil.rmtree(folder, onerror=unlock)
    shutil.rmtree(folder, ignore_errors=True)
