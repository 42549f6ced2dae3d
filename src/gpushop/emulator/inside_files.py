"""Reading a file of an instance from the host, never following what the instance planted.

An instance's root filesystem is a host folder (`Sandbox.path`) that its processes control: any
component of a path there may be a symlink to a host file (`~/.ssh/authorized_keys ->
/etc/shadow`), a FIFO that would block a reader for ever, or a huge file. `read_inside` opens
every component relative to the previous one with O_NOFOLLOW (a symlink anywhere is refused, even
one that points back inside), takes a regular file only (opened non-blocking, so a FIFO is seen,
not waited on) and reads at most `limit` bytes. The instance cannot make device nodes (no
capabilities) nor hard-link a host file into its tree (its root is another mount: EXDEV).

`authorized_keys` is what the instance's sshd honours besides the account's and attached keys:
`~/.ssh/authorized_keys` and `~/.ssh/authorized_keys2` of its HOME, as OpenSSH's default
`AuthorizedKeysFile`, read at each login attempt.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_READ = 1 << 20  # bytes read at most from one file
KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")
AUTHORIZED_FILES = (".ssh/authorized_keys", ".ssh/authorized_keys2")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def read_inside(
    root: Path, inside: str, limit: int = MAX_READ, *, from_end: bool = False
) -> bytes | None:
    """The file at `inside` (absolute, as the instance sees it) under the instance's root folder
    `root`, at most `limit` bytes (its last ones with `from_end`); None when it is missing, is
    not a regular file, or a component of its path is a symlink."""
    parts = [part for part in inside.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return None
    try:
        fd = os.open(root, _DIR)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
        file_fd = os.open(parts[-1], _FILE, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        info = os.fstat(file_fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if from_end and info.st_size > limit:
            os.lseek(file_fd, info.st_size - limit, os.SEEK_SET)
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            data = os.read(file_fd, min(left, 65536))
            if not data:
                break
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(file_fd)


def authorized_keys(root: Path, home: str) -> list[str]:
    """Public keys ("type base64") of the instance's `~/.ssh/authorized_keys[2]`. Lines with
    options (`command="..."`, `from=...`, `restrict`) are skipped: the emulator's sshd could not
    honour them, and a key limited to one command must not get a shell."""
    found: list[str] = []
    for name in AUTHORIZED_FILES:
        data = read_inside(root, f"{home}/{name}")
        if data is None:
            continue
        for line in data.decode("utf-8", "replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0].startswith(KEY_PREFIXES):
                found.append(f"{words[0]} {words[1]}")
    return found
