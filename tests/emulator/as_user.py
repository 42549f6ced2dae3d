"""Run a command as another (unprivileged) user who can still reach this checkout's Python.

    unshare --mount --propagation private -- python as_user.py USER PATH... -- COMMAND...

Run as root, in a private mount namespace (nothing here changes the host): every folder on the
way to each PATH that others may not enter (/root, a 0700 temporary folder...) is covered by a
tmpfs that they may enter, on which only the next folder of the way is bound back, with its own
permissions. Then it drops to USER (no supplementary groups) and execs COMMAND.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

KEEP = Path("/mnt/.as-user")  # a tmpfs of this namespace: the folders covered, kept reachable


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def expose(paths: list[Path]) -> None:
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/mnt")
    KEEP.mkdir()
    covered: set[Path] = set()
    ancestors = sorted(
        {a for p in paths for a in p.parents if a != Path("/")}, key=lambda a: len(a.parts)
    )
    for folder in sorted(ancestors, key=lambda a: len(a.parts)):  # outer folders first
        if folder in covered or os.stat(folder).st_mode & 0o001:
            continue
        children = sorted({p.parts[len(folder.parts)] for p in paths if folder in p.parents})
        saved = []
        for name in children:
            keep = KEEP / str(len(os.listdir(KEEP)))
            keep.mkdir()
            mount("--bind", str(folder / name), str(keep))
            saved.append((name, keep))
        mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", str(folder))
        for name, keep in saved:
            (folder / name).mkdir()
            mount("--bind", str(keep), str(folder / name))
        covered.add(folder)


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    user, paths, command = args[0], [Path(p).resolve() for p in args[1:split]], args[split + 1 :]
    expose(paths)
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
