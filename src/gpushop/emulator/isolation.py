"""Whether this machine can give every emulated instance a sandbox of its own, and with what.

A sandbox is a user, a PID and a mount namespace with a small init as PID 1 (sandbox_init.py),
entered by `nsenter` and stripped of every capability by `setpriv` for each command. The user
namespace maps root inside to the emulator's own uid (root to root when the emulator is root):
even the init's capabilities then reach only what the sandbox owns, and every mount it got from
the host is locked as it was (read-only stays read-only). `probe()` starts one for real, once
per process, and either returns the `Isolation` to use or None with the reason (`reason()`):
the emulator then serves without SSH endpoints rather than half-isolated.

Processes are limited per instance: a pids cgroup where the emulator may make one (root, with
the pids controller mounted), else RLIMIT_NPROC, which counts per user namespace (an
unprivileged emulator's instances each have their own) but not for root, whom the kernel
exempts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gpushop.emulator")

TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                "/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server")  # fmt: skip
# Top-level folders every instance has of its own: the host's are hidden (sandbox_init.OWN).
HIDDEN_ROOTS = ("/root", "/home", "/tmp", "/var", "/run")
CGROUP_V1 = Path("/sys/fs/cgroup/pids")
CGROUP_V2 = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Isolation:
    unshare: str
    nsenter: str
    setpriv: str
    user_ns: bool  # a user namespace owns the instance's namespaces (always, but for tests)
    cgroup: Path | None  # a pids cgroup of this process, under which each instance gets one
    sftp_server: str | None  # OpenSSH's, run inside; None: asyncssh's (sftp_stdio.py) inside
    binds: tuple[str, ...]  # host paths the sandbox's python needs, under hidden folders

    def close(self) -> None:
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()


_probed: list[tuple[Isolation | None, str]] = []


def probe() -> Isolation | None:
    """The isolation this process uses (probed once, with a real sandbox), or None."""
    if not _probed:
        try:
            _probed.append(_probe())
        except Exception as exc:  # an emulator without sandboxes still serves; never a crash
            _probed.append((None, f"the probe failed: {exc!r}"))
    return _probed[0][0]


def for_instances(sftp: str) -> Isolation:
    """The probed isolation, with the `sftp` choice of the emulator's config applied."""
    iso = probe()
    assert iso is not None  # ssh=True only where sandboxes can be had (app.py)
    return dataclasses.replace(iso, sftp_server=None) if sftp == "builtin" else iso


def reason() -> str:
    probe()
    return _probed[0][1]


def _probe() -> tuple[Isolation | None, str]:
    tools = {name: shutil.which(name, path=TOOL_PATH) for name in ("unshare", "nsenter", "setpriv")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        return None, f"{', '.join(missing)} not installed (util-linux)"
    candidate = Isolation(
        unshare=str(tools["unshare"]),
        nsenter=str(tools["nsenter"]),
        setpriv=str(tools["setpriv"]),
        user_ns=True,
        cgroup=_cgroup() if os.geteuid() == 0 else None,
        sftp_server=next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None),
        binds=python_binds(),
    )
    from gpushop.emulator.sandbox import SandboxError, try_sandbox

    with tempfile.TemporaryDirectory(prefix="emulator-probe-") as tmp:
        try:
            try_sandbox(candidate, Path(tmp))
        except (SandboxError, OSError) as exc:
            candidate.close()
            return None, str(exc)
    return candidate, ""


def python_binds() -> tuple[str, ...]:
    """What the emulator's interpreter (the sandbox's `python`) needs that a hidden folder
    would hide: the venv, the base installation, the emulator's own source tree."""
    wanted = {
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        sys.base_exec_prefix,
        str(Path(__file__).resolve().parents[2]),  # the folder holding the gpushop package
        os.path.dirname(os.path.realpath(sys.executable)),
    }
    paths = sorted(
        {os.path.realpath(p) for p in wanted if p and os.path.isdir(p)} | {p for p in wanted if p}
    )
    hidden = [p for p in paths if os.path.isdir(p) and _under(p, HIDDEN_ROOTS)]
    top = [p for p in hidden if not any(p != q and _under(p, (q,)) for q in hidden)]
    return tuple(top)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _cgroup() -> Path | None:
    """A pids cgroup for this emulator process (v1 pids hierarchy, or v2 with pids enabled)."""
    name = f"gpushop-emulator-{os.getpid()}-{secrets.token_hex(3)}"
    for base, v2 in ((CGROUP_V1, False), (CGROUP_V2, True)):
        if v2:
            try:
                enabled = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "pids" not in enabled:
                continue
        elif not (base / "pids.max").exists() and not (base / "cgroup.procs").exists():
            continue
        path = base / name
        try:
            path.mkdir()
        except OSError:
            continue
        if (path / "pids.max").exists():
            return path
        with contextlib.suppress(OSError):
            path.rmdir()
    return None


def under_hidden(path: str) -> bool:
    return _under(path, HIDDEN_ROOTS)
