"""PID 1 of an emulated instance (stdlib only; run by path as `python -I -S sandbox_init.py`).

`sandbox.py` starts it as `unshare --user --map-root-user --mount --pid --fork --propagation
private --kill-child -- python -I -S sandbox_init.py CONFIG`, so it runs as PID 1 of a new PID
namespace, in new user and mount namespaces, with every capability of that user namespace
(which reach only what the sandbox owns: mounts from the host are locked as they were). It
builds the instance's view of the machine, says `ready <host pid>` on stdout and then reaps
children (and starts containers for the simulated docker, see `Init`), until the emulator's
lifeline pipe closes (the emulator ended, even by `kill -9`) or it is killed. Its death ends
every process of the PID namespace: that is how stop, destroy and the emulator's exit end the
instance. Commands never descend from it: the emulator enters them with nsenter, and setpriv
takes every capability away.

The view (`root` is the instance's root directory on the host, the container's filesystem):
- `/` is `root`, writable; the host's top-level directories are bound read-only (submounts
  too), but `/etc`, the host's with the instance's changes on top (overlayfs, the changes kept
  in `layers`), and `/root`, `/home`, `/tmp`, `/var` and `/run`, which are the instance's own
  (the host's are hidden), `/proc` (a new procfs for the PID namespace, `/proc/sys` and
  `/proc/sysrq-trigger` read-only), `/dev` (a tmpfs with null, zero, full, random, urandom,
  tty, a private devpts and shm) and `/workspace`, `/app` (the instance's).
- `/.emulator` is the emulator's control folder, read-only (its programs in `bin/`, faults),
  and `/.emulator/state` a writable folder for what the instance tells the emulator.
- `binds` are host paths shown read-only at the same path (the venv behind `python`, which may
  live under a hidden folder such as /tmp or /root); `hide` are host paths covered by an empty
  read-only tmpfs (the emulator's own folders, when they are not under a hidden folder).

Everything done to `root` before the pivot goes through descriptors opened without following
symlinks: the instance wrote that tree during its earlier runs, and a symlink it left (`/tmp ->
/etc`) must not make PID 1, which still sees the host, write or mount outside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import selectors
import signal
import socket
import stat
import sys

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2
CLONE_NEWNS = 0x20000
DOCKER = "/.emulator/bin/docker"  # the simulated docker (TensorDock VMs), read-only inside
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # syscall numbers: glibc has no wrapper
# statvfs f_flag bits -> mount flags that a remount must keep (locked in a user namespace)
KEPT_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
OWN = ("root", "home", "tmp", "var", "run", "proc", "dev", "workspace", "app", ".emulator")
SKIPPED = ("lost+found",)
WRITABLE = ("etc",)  # the host's, with the instance's changes on top (a VM edits /etc)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
VAR_DIRS = (("tmp", 0o1777), ("log", 0o755), ("lib", 0o755), ("cache", 0o755), ("spool", 0o755))
NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def remount_ro(target: str) -> None:
    """Read-only, keeping the flags a user namespace may not clear (nosuid, nodev...)."""
    kept = 0
    try:
        flag = os.statvfs(target).f_flag
    except OSError as exc:
        raise SetupError(f"statvfs {target}: {exc.strerror}") from None
    for st, ms in KEPT_FLAGS:
        if flag & st:
            kept |= ms
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def reopen(parent: int, name: str) -> int:
    """`parent/name` looked up again: after a mount on it, the old descriptor still names the
    directory underneath."""
    return os.open(name, NOFOLLOW_DIR, dir_fd=parent)


# -- the instance's tree, without following its symlinks ------------------------------------
def subdir(parent: int, name: str, mode: int = 0o755) -> int:
    """An O_NOFOLLOW descriptor of `parent/name`, made a real directory (whatever the instance
    left there that is not one is moved aside)."""
    try:
        return os.open(name, NOFOLLOW_DIR, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        os.rename(name, f"{name}.moved-by-emulator", src_dir_fd=parent, dst_dir_fd=parent)
    os.mkdir(name, mode, dir_fd=parent)
    fd = os.open(name, NOFOLLOW_DIR, dir_fd=parent)
    os.chmod(fd_path(fd), mode)  # umask
    return fd


def walk(root_fd: int, path: str) -> int:
    """Descriptor of the directory `path` (absolute, as inside) under root, made as needed."""
    fd = os.dup(root_fd)
    for part in [p for p in path.split("/") if p]:
        try:
            nxt = subdir(fd, part)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def empty_file(parent: int, name: str) -> int:
    """An O_PATH descriptor of a regular file `parent/name` (a bind target)."""
    with_flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(name, with_flags, 0o644, dir_fd=parent))
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        os.unlink(name, dir_fd=parent)
        os.close(os.open(name, with_flags, 0o644, dir_fd=parent))
    return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)


def symlink(parent: int, name: str, target: str) -> None:
    try:
        if os.readlink(name, dir_fd=parent) == target:
            return
    except OSError:
        pass
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError:
                os.rename(name, f"{name}.moved-by-emulator", src_dir_fd=parent, dst_dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)
    os.symlink(target, name, dir_fd=parent)


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or under `prefix` in this namespace, parents first."""
    found = []
    with open("/proc/self/mountinfo", "rb") as info:
        for line in info:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                found.append(point)
    return found


def _unescape(raw: bytes) -> str:
    text = raw.decode("utf-8", "surrogateescape")
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def bind_ro(source: str, target_fd: int, *, recursive: bool) -> None:
    target = fd_path(target_fd)
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    # the new mount sits on the descriptor's directory: find it by its real path
    real = os.readlink(target)
    for point in mounts_under(real) if recursive else [real]:
        remount_ro(point)


def overlay(lower: str, target_fd: int, layers: str) -> bool:
    """The host's folder with the instance's own changes on top (in `layers`, never in the
    host's); False where overlayfs cannot be had (then it stays read-only)."""
    name = os.path.basename(lower)
    upper, work = f"{layers}/{name}/upper", f"{layers}/{name}/work"
    if any(c in p for p in (lower, upper, work) for c in ",:\\"):  # option separators
        return False
    try:
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        options = f"lowerdir={lower},upperdir={upper},workdir={work},userxattr"
        mount("overlay", fd_path(target_fd), "overlay", MS_NOSUID, options)
    except (SetupError, OSError):
        return False
    return True


# -- the view --------------------------------------------------------------------------------
def build(config: dict[str, object]) -> None:
    root = str(config["root"])
    control = str(config["control"])
    mount(root, root, None, MS_BIND)  # a mount point, for pivot_root
    root_fd = os.open(root, NOFOLLOW_DIR)

    for entry in sorted(os.scandir("/"), key=lambda e: e.name):
        name = entry.name
        if name in OWN or name in SKIPPED:
            continue
        if entry.is_symlink():
            symlink(root_fd, name, os.readlink(entry.path))
        elif entry.is_dir(follow_symlinks=False):
            fd = subdir(root_fd, name)
            try:
                if not (name in WRITABLE and overlay(entry.path, fd, str(config["layers"]))):
                    bind_ro(entry.path, fd, recursive=True)
            finally:
                os.close(fd)

    for name, mode in (("root", 0o700), ("home", 0o755), ("tmp", 0o1777)):
        os.close(subdir(root_fd, name, mode))
    for path in config.get("dirs", []):  # type: ignore[attr-defined]
        os.close(walk(root_fd, str(path)))
    for name in ("workspace", "app"):
        os.close(subdir(root_fd, name))
    var = subdir(root_fd, "var")
    for name, mode in VAR_DIRS:
        os.close(subdir(var, name, mode))
    symlink(var, "run", "/run")
    symlink(var, "lock", "/run/lock")
    os.close(var)
    os.close(empty_file(root_fd, ".dockerenv"))  # how a script tells it runs in a container

    run = subdir(root_fd, "run")
    mount("tmpfs", fd_path(run), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    os.close(run)
    run = reopen(root_fd, "run")
    os.mkdir("lock", 0o755, dir_fd=run)
    os.close(run)

    _dev(root_fd)
    _proc(root_fd)

    emulator = subdir(root_fd, ".emulator")
    bind_ro(control, emulator, recursive=False)
    os.close(emulator)
    emulator = reopen(root_fd, ".emulator")
    state = os.open("state", NOFOLLOW_DIR, dir_fd=emulator)  # made by the emulator
    mount(str(config["state"]), fd_path(state), None, MS_BIND)
    os.close(state)
    os.close(emulator)

    for path in config.get("binds", []):  # type: ignore[attr-defined]
        fd = walk(root_fd, str(path))
        try:
            bind_ro(str(path), fd, recursive=True)
        finally:
            os.close(fd)
    for path in config.get("hide", []):  # type: ignore[attr-defined]
        try:
            fd = os.open(root + str(path), NOFOLLOW_DIR)
        except OSError:
            continue  # not visible inside anyway
        mount("tmpfs", fd_path(fd), "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k")
        os.close(fd)

    os.fchdir(root_fd)
    os.close(root_fd)
    _check(_libc.syscall(PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir(str(config.get("home", "/root")))


def _dev(root_fd: int) -> None:
    dev = subdir(root_fd, "dev")
    mount("tmpfs", fd_path(dev), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    os.close(dev)
    dev = reopen(root_fd, "dev")
    for name in DEVICES:
        fd = empty_file(dev, name)
        mount(f"/dev/{name}", fd_path(fd), None, MS_BIND)
        os.close(fd)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ):
        os.symlink(target, name, dir_fd=dev)
    pts = subdir(dev, "pts")
    mount("devpts", fd_path(pts), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666")
    os.close(pts)
    shm = subdir(dev, "shm", 0o1777)  # a new directory: no mount under it yet
    mount("tmpfs", fd_path(shm), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    os.close(shm)
    os.close(dev)


def _proc(root_fd: int) -> None:
    proc = subdir(root_fd, "proc")
    target = fd_path(proc)
    mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    real = os.readlink(target)
    os.close(proc)
    # what root could otherwise change on the host (sysctls, the SysRq trigger)
    for sub in ("sys", "sysrq-trigger", "irq", "bus"):
        path = f"{real}/{sub}"
        if os.path.exists(path):
            mount(path, path, None, MS_BIND)
            remount_ro(path)


# -- after the view --------------------------------------------------------------------------
# -- PID 1's work: reaping, and containers for the simulated docker -------------------------
class Init:
    """Reaps every orphan; starts containers for the simulated `docker` (tensordock/
    docker_shim.py) on its socket: a process in a new mount namespace, with this init's
    capabilities (those of the sandbox's user namespace), that runs the docker program from the
    read-only control folder, which makes the container's mounts and drops every capability
    before it runs anything of the container. Requests name a plan file, nothing else."""

    def __init__(self, lifeline: int, containers: str | None) -> None:
        self.lifeline = lifeline
        self.pending: dict[int, socket.socket] = {}  # container pid -> its client
        self.selector = selectors.DefaultSelector()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
        self.selector.register(lifeline, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.server: socket.socket | None = None
        if containers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(containers)
            self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.server.bind(containers)
            os.chmod(containers, 0o600)
            self.server.listen(16)
            self.selector.register(self.server, selectors.EVENT_READ)

    def run(self) -> None:
        self.reap()
        while True:
            for key, _ in self.selector.select():
                if key.fileobj == self.lifeline:
                    try:
                        if not os.read(self.lifeline, 512):
                            return  # the emulator is gone
                    except OSError:
                        return
                elif key.fileobj == self.wake_r:
                    with contextlib.suppress(OSError):
                        while os.read(self.wake_r, 512):
                            pass
                    self.reap()
                elif self.server is not None and key.fileobj == self.server:
                    self.accept()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            client = self.pending.pop(pid, None)
            if client is not None:
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    client.sendall(f"exit {code}\n".encode())
                client.close()

    def accept(self) -> None:
        assert self.server is not None
        try:
            client, _ = self.server.accept()
        except OSError:
            return
        client.settimeout(5)
        fds: list[int] = []
        try:
            data, fds, _, _ = socket.recv_fds(client, 65536, 3)
            plan = json.loads(data)["plan"]
            if not isinstance(plan, str) or len(fds) != 3:
                raise ValueError("want {plan} and 3 descriptors")
            pid = os.fork()
            if pid == 0:  # the container's first process
                try:
                    os.setsid()
                    _check(_libc.unshare(CLONE_NEWNS), "unshare")
                    mount(None, "/", None, MS_REC | MS_PRIVATE)
                    for target, fd in enumerate(fds):
                        os.dup2(fd, target)
                    os.closerange(3, 65536)
                    env = {"PATH": "/.emulator/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
                    os.execve(DOCKER, [DOCKER, "__exec", plan], env)
                finally:
                    os._exit(127)
            self.pending[pid] = client
            client.sendall(f"pid {pid}\n".encode())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            with contextlib.suppress(OSError):
                client.sendall(f"error {exc}\n".encode())
            client.close()
        finally:
            for fd in fds:
                os.close(fd)


def main() -> int:
    config = json.loads(sys.argv[1])
    lifeline = int(config["lifeline"])
    # before the new procfs: the host's /proc/self names this process by its host pid
    host_pid = int(os.readlink("/proc/self"))
    try:
        build(config)
        init = Init(lifeline, config.get("containers"))
    except (SetupError, OSError) as exc:
        print(f"error {exc}", flush=True)
        return 1
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, ignored when sent from inside
    print(f"ready {host_pid}", flush=True)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    init.run()
    return 0  # PID 1 ends, and the kernel ends the rest


if __name__ == "__main__":
    sys.exit(main())
