"""One mount namespace per sandbox, in which `<sandbox>/workspace` is at /workspace and
`<sandbox>/app` at /app, so commands and SFTP (chrooted to the sandbox) agree on those paths.

Why: on Vast.ai the SSH login, SFTP and every command share the container's filesystem, so
`sftp put x /workspace/x` followed by `cat /workspace/x` works; images such as ostris/aitoolkit
live under /app. SFTP here is chrooted to the sandbox, but commands run on the host; binding the
two directories in a private namespace makes both absolute paths mean the same files, while HOME
stays the sandbox and the rest of the host (Python under /root/.pyenv, /usr...) stays visible.

How: a short-lived holder (`unshare --mount --propagation private`, plus `--user
--map-root-user` when not root) makes the binds; we keep its namespace open as file descriptors
and the holder exits. Each command then starts as `nsenter --mount=/proc/self/fd/N --wd=<sandbox>
-- CMD` with the descriptor passed down: one extra exec, about a millisecond. Nothing is mounted
on the host; /workspace and /app are only created there (empty) as mount points when missing.
Without namespaces (no root and no user namespaces, or a missing tool) one warning is logged and
commands run on the host filesystem as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gpushop.emulator")

MOUNTS = (("workspace", "/workspace"), ("app", "/app"))  # sandbox subdir -> container path
_SCRIPT = 'mount --bind "$1" /workspace && mount --bind "$2" /app && echo ready && read _'
_TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Tools:
    unshare: str
    nsenter: str
    user: bool  # an unprivileged user namespace owns the mount namespace


_probed: list[Tools | None] = []  # [result] once probed: one probe (and warning) per process


def tools() -> Tools | None:
    """The namespace tools when they work here (probed once, with a real bind), else None
    after logging one warning."""
    if not _probed:
        found, reason = _probe()
        if found is None:
            log.warning(
                "emulator: no mount namespaces (%s): commands see the host's /workspace and "
                "/app, not the sandbox's; use paths relative to the login directory or "
                "$WORKSPACE",
                reason,
            )
        _probed.append(found)
    return _probed[0]


def _probe() -> tuple[Tools | None, str]:
    unshare = shutil.which("unshare", path=_TOOL_PATH)
    nsenter = shutil.which("nsenter", path=_TOOL_PATH)
    if unshare is None or nsenter is None:
        return None, "unshare/nsenter not installed"
    root = os.geteuid() == 0
    for _, point in MOUNTS:
        if not os.path.isdir(point):
            if not root:
                return None, f"{point} is missing and only root can create it"
            try:
                os.makedirs(point, exist_ok=True)
            except OSError as exc:
                return None, f"cannot create {point}: {exc}"
    reason = "not root and no user namespaces"
    for user in (False, True) if root else (True,):
        candidate = Tools(unshare, nsenter, user)
        with tempfile.TemporaryDirectory(prefix="vast-emulator-ns-") as tmp:
            trial = MountNamespace(candidate, Path(tmp))
            try:
                if trial.start() and _works(trial, Path(tmp)):
                    return candidate, ""
                reason = trial.error or reason
            finally:
                trial.close()
    return None, reason


def _works(ns: MountNamespace, root: Path) -> bool:
    (root / "workspace" / "probe").write_text("ok")
    argv, fds = ns.wrap(["/bin/cat", "/workspace/probe"], root)
    result = subprocess.run(argv, pass_fds=fds, capture_output=True, timeout=10, check=False)
    return result.returncode == 0 and result.stdout == b"ok"


class MountNamespace:
    """The namespace of one sandbox, held open as descriptors (no process keeps it)."""

    def __init__(self, tools: Tools, root: Path) -> None:
        self.tools = tools
        self.root = root
        self.fds: dict[str, int] = {}  # "mnt" (and "user") -> open namespace descriptor
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return "mnt" in self.fds

    def start(self) -> bool:
        """Make the binds (once); False, with `error` set, when it cannot."""
        if self.ready:
            return True
        for sub, _ in MOUNTS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        flags = ["--user", "--map-root-user"] if self.tools.user else []
        argv = [self.tools.unshare, *flags, "--mount", "--propagation", "private", "--"]
        argv += ["/bin/sh", "-c", _SCRIPT, "sh", *(str(self.root / sub) for sub, _ in MOUNTS)]
        try:
            holder = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": _TOOL_PATH, "LC_ALL": "C"},
                start_new_session=True,
            )
        except OSError as exc:
            self.error = str(exc)
            return False
        assert holder.stdin is not None and holder.stdout is not None
        try:
            if holder.stdout.readline().strip() == b"ready":
                kinds = ("user", "mnt") if self.tools.user else ("mnt",)
                for kind in kinds:
                    self.fds[kind] = os.open(f"/proc/{holder.pid}/ns/{kind}", os.O_RDONLY)
        except OSError as exc:
            self.error = str(exc)
        finally:  # communicate closes its stdin: `read` ends, the holder exits, the fds stay
            try:
                _, err = holder.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                holder.kill()
                _, err = holder.communicate()
        if not self.ready:
            self.close()
            self.error = self.error or err.decode(errors="replace").strip() or "bind failed"
            return False
        return True

    def wrap(self, argv: list[str], cwd: Path) -> tuple[list[str], tuple[int, ...]]:
        """(argv entering the namespace, descriptors the child must inherit)."""
        if not self.ready:
            return argv, ()
        prefix = [self.tools.nsenter]
        if "user" in self.fds:  # keep our uid: setgroups is denied in a mapped namespace
            prefix += [f"--user=/proc/self/fd/{self.fds['user']}", "--preserve-credentials"]
        prefix += [f"--mount=/proc/self/fd/{self.fds['mnt']}", f"--wd={cwd}", "--"]
        return [*prefix, *argv], tuple(self.fds.values())

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
