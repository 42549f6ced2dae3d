"""Moving files over SSH: a directory up to an instance, outputs back down.

Both directions are resumable and verified:

1. Both sides are listed, the remote one with a single `find` exec (which, for an upload, also
   creates the remote directories).
2. Files already at the destination are skipped: same size, then same sha256. Only files whose
   sizes match are hashed; the remote side with one exec over them, while the local side is
   hashed in threads.
3. The rest is sent with one of the methods below, and bytes are reported to a `Progress`
   callback.
4. Every transferred file is checked by sha256 (one remote exec again). A mismatching file is
   sent once more; a second mismatch is a `TransferError`. Downloads land in a staging directory
   inside the target and are moved into place only once verified, so a local file is never left
   half-written.

Methods. "auto" picks rsync when it can, else SFTP (see `choose_method`):

- "rsync": the system's rsync over the system's ssh, given the exact file list (`--files-from`).
  Pipelined, so it suits many small files even over a slow link. Needs rsync on both ends.
- "scp": the system's scp (SFTP mode) on a staging tree of links to the files to send. Fast for
  big files, but it sends one file at a time, so each small file costs round trips.
- "sftp": asyncssh's SFTP client on the caller's connection, with parallel block requests and
  several files in flight. It always works and needs nothing on either end.

rsync and scp run only when an `Endpoint` with a known host key is given. They use the same key
and the same host-key check as the asyncssh connection (see `gpushop.ssh.openssh`).

The remote hashing exec is `sha256sum`, unless there are more than 16 MB to hash and the
remote has python3. hashlib is used then, because coreutils' sha256sum does not use the CPU's SHA
instructions: it measured 4.8-6.2 s per GB, against 0.8 s for our hashlib script.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import re
import secrets
import shlex
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from gpushop.ssh import openssh
from gpushop.ssh.client import SshError
from gpushop.ssh.openssh import Endpoint

__all__ = [
    "METHODS",
    "Endpoint",
    "Progress",
    "TransferError",
    "TransferReport",
    "choose_method",
    "download",
    "upload",
]

Progress = Callable[[int, int], None]  # (bytes done, bytes total)

METHODS = ("auto", "sftp", "scp", "rsync")

# asyncssh SFTP tuning, measured with `benchmarks/bench_transfer.py --tune` against OpenSSH's
# sshd. A block size of -1 uses the server's own limit (255 KiB on OpenSSH). max_requests at -1
# then means 16 requests, so 4 MiB in flight per file. 64 KiB blocks were slower (107 MB/s), and
# 64 requests made no clear difference. With 4, 8 or 16 files in flight, loopback results stayed
# within the noise (125-190 MB/s). 8 files hide the per-file round trips (open, stat, close,
# setstat) that small files cost on a real link, for at most 32 MiB in flight.
SFTP_BLOCK_SIZE = -1
SFTP_MAX_REQUESTS = -1
SFTP_FILES_IN_FLIGHT = 8

LOCAL_HASH_THREADS = max(1, min(4, os.cpu_count() or 1))
LIST_TIMEOUT = 120.0
HASH_BYTES_PER_S = 20e6  # the slowest remote hashing we allow for, before a timeout
# Below this many bytes `sha256sum` (~190 MB/s, starts in a millisecond) beats starting python3
# (~1.1 GB/s per thread with OpenSSL's SHA, but tens of milliseconds to start).
PYTHON_HASH_BYTES = 16_000_000
PROGRESS_INTERVAL = 0.5  # scp downloads: the local staging directory is measured
# scp uploads: the remote sizes are asked with an exec, and each one costs the instance a shell
# start (polling every 0.5 s cost ~8 % of loopback throughput)
REMOTE_PROGRESS_INTERVAL = 2.0

STAGE_PREFIX = ".gpushop-stage-"  # remote scp download staging, inside the remote dir
PARTIAL_PREFIX = ".gpushop-partial-"  # local download staging, inside the local dir

_MISSING = 44  # the remote directory does not exist
_NOT_A_DIR = 45


class TransferError(SshError):
    """A transfer failed; the message says which files or which step."""


@dataclass
class TransferReport:
    files: int  # files transferred
    skipped: int  # files already at the destination (same size and sha256)
    bytes: int  # bytes transferred
    seconds: float  # the whole call
    checksum_seconds: float  # part of `seconds` spent hashing (skip check and verification)
    method: str  # "sftp" | "scp" | "rsync"
    deferred: int = 0  # download(strict=False): files that changed meanwhile, left for next sync
    deferred_paths: list[str] = field(default_factory=list, repr=False)

    @property
    def mb_per_s(self) -> float:
        """Transfer throughput, hashing excluded (MB = 10^6 bytes)."""
        moving = self.seconds - self.checksum_seconds
        return self.bytes / moving / 1e6 if moving > 0 and self.bytes else 0.0


# -- remote commands ------------------------------------------------------------------------------

_FIND = (
    f"find . -path './{STAGE_PREFIX}*' -prune"
    r" -o -type f -printf 'f\t%s\t%P\0' -o -type d -printf 'd\t0\t%P\0'"
)

# Same output as `sha256sum` (escaped names included), hashing in threads with OpenSSL's SHA.
# Python 3.6 compatible: it runs on whatever python3 the image has.
_HASH_PY = r"""
import hashlib, os, sys
from concurrent.futures import ThreadPoolExecutor
def digest(name):
    try:
        h = hashlib.sha256()
        with open(name, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
        return name, h.hexdigest().encode()
    except OSError as e:
        sys.stderr.write('sha256: %s\n' % e)
        return name, None
names = [n for n in sys.stdin.buffer.read().split(b'\0') if n]
out, bad = sys.stdout.buffer, 0
with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
    for name, d in pool.map(digest, names):
        if d is None:
            bad = 1
        elif b'\\' in name or b'\n' in name or b'\r' in name:
            esc = name.replace(b'\\', b'\\\\').replace(b'\n', b'\\n').replace(b'\r', b'\\r')
            out.write(b'\\' + d + b'  ' + esc + b'\n')
        else:
            out.write(d + b'  ' + name + b'\n')
sys.exit(bad)
"""


def _cd(remote: str) -> str:
    q = shlex.quote(remote)
    missing = f"{{ [ -e {q} ] && exit {_NOT_A_DIR}; exit {_MISSING}; }}"
    return f"{{ cd -- {q} 2>/dev/null || {missing}; }}"


def _list_command(remote: str, create: bool) -> str:
    parts = []
    if create:
        parts.append(f"mkdir -p -- {shlex.quote(remote)} || exit 1")
    parts.append(_cd(remote))
    if create:  # the directories of the upload, NUL-separated on stdin
        parts.append("xargs -0 -r mkdir -p -- || exit 1")
    parts.append(f"{_FIND}; s=$?")
    parts.append(r"command -v rsync >/dev/null 2>&1 && printf 'r\t0\trsync\0'")
    parts.append("exit $s")
    return "; ".join(parts)


def _hash_command(remote: str, size: int) -> str:
    if size < PYTHON_HASH_BYTES:
        return f"{_cd(remote)}; exec xargs -0 -r sha256sum --"
    return (
        f"{_cd(remote)}; if command -v python3 >/dev/null 2>&1;"
        f" then exec python3 -c {shlex.quote(_HASH_PY)};"
        " else exec xargs -0 -r sha256sum --; fi"
    )


def _remote_bytes(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


def _rel(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _nul_list(rels: Iterable[str]) -> bytes:
    return b"".join(_remote_bytes(r) + b"\0" for r in rels)


_UNESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_ESCAPES = {b"\\": b"\\", b"n": b"\n", b"r": b"\r"}


def parse_sums(output: bytes) -> dict[str, str]:
    """`sha256sum` output -> {name: hex digest}; escaped names (a leading backslash) decoded.

    >>> parse_sums(b"ab  x y\\n\\\\cd  a\\\\nb\\n")
    {'x y': 'ab', 'a\\nb': 'cd'}
    """
    sums: dict[str, str] = {}
    for line in output.split(b"\n"):
        if not line:
            continue
        escaped = line.startswith(b"\\")
        if escaped:
            line = line[1:]
        digest, sep, name = line.partition(b"  ")
        if not sep:
            digest, sep, name = line.partition(b" *")  # binary-mode marker
        if not sep:
            continue
        if escaped:
            name = _UNESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), name)
        sums[_rel(name)] = digest.decode("ascii", "replace").lower()
    return sums


async def _exec(
    conn: asyncssh.SSHClientConnection, command: str, stdin: bytes, timeout: float, what: str
) -> tuple[int, bytes, str]:
    try:
        # asyncssh sends EOF after `input` only when there is some: empty stdin is DEVNULL
        redirect = {"input": stdin} if stdin else {"stdin": asyncssh.DEVNULL}
        result = await asyncio.wait_for(
            conn.run(command, encoding=None, check=False, **redirect), timeout
        )
    except TimeoutError as exc:
        raise TransferError(f"{what}: no answer within {timeout:.0f} s") from exc
    except (asyncssh.Error, OSError) as exc:
        raise TransferError(f"{what} over SSH failed: {exc}") from exc
    out = result.stdout if isinstance(result.stdout, bytes) else b""
    err = result.stderr if isinstance(result.stderr, bytes) else b""
    code = result.exit_status if result.exit_status is not None else 255
    return code, out, err.decode(errors="replace").strip()


@dataclass
class _Tree:
    files: dict[str, int]  # relative POSIX path -> size
    dirs: list[str]
    rsync: bool = False  # the remote has rsync


async def _remote_tree(
    conn: asyncssh.SSHClientConnection, remote: str, create_dirs: Sequence[str] | None
) -> _Tree | None:
    """The remote directory's files and dirs; None when it does not exist. `create_dirs` (for
    an upload) creates it and those sub-directories first."""
    create = create_dirs is not None
    code, out, err = await _exec(
        conn,
        _list_command(remote, create),
        _nul_list(create_dirs or ()),
        LIST_TIMEOUT,
        f"listing {remote}",
    )
    if code == _MISSING:
        return None
    if code == _NOT_A_DIR:
        raise TransferError(f"{remote} exists on the instance but is not a directory")
    if code != 0:
        action = "creating" if create else "listing"
        raise TransferError(f"{action} {remote} on the instance failed: {err or f'exit {code}'}")
    tree = _Tree({}, [])
    for record in out.split(b"\0"):
        kind, _, rest = record.partition(b"\t")
        size, _, name = rest.partition(b"\t")
        if kind == b"f" and name:
            tree.files[_rel(name)] = int(size)
        elif kind == b"d" and name:
            tree.dirs.append(_rel(name))
        elif kind == b"r":
            tree.rsync = True
    return tree


async def _remote_hashes(
    conn: asyncssh.SSHClientConnection, remote: str, rels: Sequence[str], size: int
) -> dict[str, str]:
    """sha256 of remote files (relative to `remote`); files that cannot be read are absent."""
    if not rels:
        return {}
    timeout = LIST_TIMEOUT + size / HASH_BYTES_PER_S
    code, out, err = await _exec(
        conn, _hash_command(remote, size), _nul_list(rels), timeout, f"hashing files in {remote}"
    )
    if code in (_MISSING, _NOT_A_DIR):
        return {}
    if code not in (0, 1, 123):  # 1 / 123 (xargs): some files could not be read
        raise TransferError(f"hashing files in {remote} failed: {err or f'exit {code}'}")
    return parse_sums(out)


# -- local side -----------------------------------------------------------------------------------


def _local_tree(root: Path) -> _Tree:
    tree = _Tree({}, [])
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(PARTIAL_PREFIX))
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        if prefix:
            tree.dirs.append(rel_dir)
        for name in sorted(filenames):
            try:
                st = (base / name).stat()  # follows symlinks, as scp does
            except OSError:
                continue  # a dangling link
            if (st.st_mode & 0o170000) == 0o100000:
                tree.files[prefix + name] = st.st_size
    return tree


def _sha256_file(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


async def _local_hashes(root: Path, rels: Sequence[str]) -> dict[str, str]:
    if not rels:
        return {}
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(LOCAL_HASH_THREADS, thread_name_prefix="gpushop-sha256") as pool:
        digests = await asyncio.gather(
            *(loop.run_in_executor(pool, _sha256_file, root / rel) for rel in rels)
        )
    return {rel: d for rel, d in zip(rels, digests, strict=True) if d is not None}


async def _same(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    local_root: Path,
    rels: Sequence[str],
    size: int,
) -> tuple[set[str], set[str]]:
    """Hash `rels` on both sides at once: (identical, different-or-unreadable)."""
    remote_sums, local_sums = await asyncio.gather(
        _remote_hashes(conn, remote, rels, size), _local_hashes(local_root, rels)
    )
    same = {r for r in rels if r in local_sums and remote_sums.get(r) == local_sums[r]}
    return same, set(rels) - same


# -- progress -------------------------------------------------------------------------------------


class _Meter:
    """Bytes done against a total, reported to the caller's callback, never going backwards."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def add(self, n: int) -> None:
        if n > 0:
            self.done += n
            self._report()

    def at_least(self, done: int) -> None:
        self.add(done - self.done)

    def finish(self) -> None:
        """The transfer is complete: always reported, even when the last call said the same."""
        self.done = max(self.done, self.total)
        self._report()

    def grow(self, more: int) -> None:
        self.total += more
        self._report()


async def _poll(
    measure: Callable[[], Awaitable[int]], meter: _Meter, base: int, interval: float
) -> None:
    """Coarse progress for tools that report none: measure what arrived every interval."""
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(TransferError, OSError):
            meter.at_least(base + await measure())


@contextlib.asynccontextmanager
async def _polling(
    measure: Callable[[], Awaitable[int]], meter: _Meter, interval: float = PROGRESS_INTERVAL
) -> AsyncIterator[None]:
    task = asyncio.ensure_future(_poll(measure, meter, meter.done, interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- methods --------------------------------------------------------------------------------------


def choose_method(method: str, endpoint: Endpoint | None, remote_rsync: bool) -> str:
    """The method to use: "auto" -> rsync when both ends have it and the endpoint's host key
    is known, else SFTP. An explicit method that cannot run is a TransferError."""
    _check_method(method)
    tools_ok = endpoint is not None and endpoint.host_key is not None
    ssh_ok = openssh.which("ssh") is not None
    if method == "auto":
        if tools_ok and ssh_ok and remote_rsync and openssh.which("rsync"):
            return "rsync"
        return "sftp"
    if method in ("scp", "rsync"):
        if endpoint is None or endpoint.host_key is None:
            raise TransferError(f"{method} needs the instance's endpoint and its recorded host key")
        if not ssh_ok or openssh.which(method) is None:
            raise TransferError(f"{method} is not installed on this machine")
        if method == "rsync" and not remote_rsync:
            raise TransferError("rsync is not installed on the instance")
        if method == "scp" and not openssh.scp_has_sftp_mode():
            raise TransferError("the local scp is too old (OpenSSH >= 8.7 needed for scp -s)")
    return method


def _sftp_path(remote: str, rel: str) -> bytes:
    return _remote_bytes(posixpath.join(remote, rel))


def _sftp_progress(meter: _Meter) -> Callable[[bytes, bytes, int, int], None]:
    seen: dict[bytes, int] = {}

    def handler(src: bytes, dst: bytes, copied: int, total: int) -> None:
        before = seen.get(dst, 0)
        seen[dst] = copied
        meter.add(copied - before)

    return handler


async def _sftp_each(
    conn: asyncssh.SSHClientConnection,
    rels: Sequence[str],
    copy: Callable[[asyncssh.SFTPClient, str], Awaitable[None]],
    what: str,
) -> None:
    gate = asyncio.Semaphore(SFTP_FILES_IN_FLIGHT)
    try:
        async with conn.start_sftp_client() as sftp:

            async def one(rel: str) -> None:
                async with gate:
                    await copy(sftp, rel)

            async with asyncio.TaskGroup() as group:
                for rel in rels:
                    group.create_task(one(rel))
    except* (asyncssh.Error, OSError) as group_exc:
        first = group_exc.exceptions[0]
        name = getattr(first, "srcpath", None) or getattr(first, "filename", None) or ""
        if isinstance(name, bytes):
            name = _rel(name)
        detail = f" ({name})" if name else ""
        raise TransferError(f"{what} over SFTP failed{detail}: {first}") from first


async def _sftp_upload(
    conn: asyncssh.SSHClientConnection,
    root: Path,
    remote: str,
    rels: Sequence[str],
    meter: _Meter,
) -> None:
    handler = _sftp_progress(meter)

    async def copy(sftp: asyncssh.SFTPClient, rel: str) -> None:
        await sftp.put(
            root / rel,
            _sftp_path(remote, rel),
            preserve=True,
            block_size=SFTP_BLOCK_SIZE,
            max_requests=SFTP_MAX_REQUESTS,
            progress_handler=handler,
        )

    await _sftp_each(conn, rels, copy, "upload")


async def _sftp_download(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    payload: Path,
    rels: Sequence[str],
    meter: _Meter,
) -> None:
    handler = _sftp_progress(meter)

    async def copy(sftp: asyncssh.SFTPClient, rel: str) -> None:
        target = payload / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            await _sftp_fetch(sftp, _sftp_path(remote, rel), target, handler)
        except asyncssh.SFTPNoSuchFile:
            target.unlink(missing_ok=True)  # vanished since the listing: seen as missing

    await _sftp_each(conn, rels, copy, "download")


async def _sftp_fetch(
    sftp: asyncssh.SFTPClient,
    path: bytes,
    target: Path,
    progress: Callable[[bytes, bytes, int, int], None],
) -> None:
    """``sftp.get(path, target, preserve=True)``, except that the local file is closed whatever
    happens: asyncssh's copier (2.24) leaves it open for the garbage collector when closing the
    remote file fails or is cancelled (a Ctrl-C, a vanished host, a sibling copy that failed).
    Blocks are read in parallel, as the copier does, and written where they belong."""
    attrs = await sftp.stat(path)
    size = attrs.size or 0
    done = 0
    async with sftp.open(
        path, "rb", block_size=SFTP_BLOCK_SIZE, max_requests=SFTP_MAX_REQUESTS
    ) as src:
        with target.open("wb") as dst:
            async for offset, data in await src.read_parallel(size, 0):
                os.pwrite(dst.fileno(), data, offset)
                done += len(data)
                progress(path, bytes(target), done, size)
    if done != size:
        failure = asyncssh.SFTPFailure("Unexpected EOF during file copy")
        failure.srcpath = path  # type: ignore[attr-defined]  # named in the TransferError
        raise failure
    if attrs.permissions is not None:
        os.chmod(target, stat.S_IMODE(attrs.permissions))
    if attrs.atime is not None and attrs.mtime is not None:
        os.utime(target, (attrs.atime, attrs.mtime))


def _tool_failure(tool: str, code: int, err: str) -> TransferError:
    lines = [line for line in err.splitlines() if line.strip()]
    detail = lines[-1] if lines else f"exit status {code}"
    if "Host key verification failed" in err or "REMOTE HOST IDENTIFICATION" in err:
        detail = "the instance's host key does not match the one recorded on first use"
    return TransferError(f"{tool} failed: {detail}")


_PROGRESS2 = re.compile(rb"^\s*([\d,.]+)\s+\d+%")


def _rsync_progress(meter: _Meter) -> Callable[[bytes], None]:
    """`--info=progress2` prints the bytes moved so far, lines ending in \\r."""
    start = meter.done
    pending = b""

    def feed(chunk: bytes) -> None:
        nonlocal pending
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for line in lines:
            match = _PROGRESS2.match(line)
            if match:
                meter.at_least(start + int(re.sub(rb"\D", b"", match.group(1)) or b"0"))

    return feed


def _rsync_argv(endpoint: Endpoint, known_hosts: Path, source: str, dest: str) -> list[str]:
    rsync = openssh.which("rsync") or "rsync"
    return [
        rsync,
        "--protect-args",  # remote paths are not interpreted by the remote shell
        "--copy-links",
        "--perms",
        "--times",
        "--ignore-times",  # we decided what to send: never skip by size and mtime
        "--whole-file",
        "--from0",
        "--files-from=-",
        "--info=progress2",
        "-e",
        shlex.join(openssh.ssh_command(endpoint, known_hosts)),
        "--",
        source,
        dest,
    ]


async def _rsync(
    endpoint: Endpoint, source: str, dest: str, rels: Sequence[str], meter: _Meter, *, lax: bool
) -> None:
    with openssh.known_hosts_file(endpoint) as known_hosts:
        code, err = await openssh.run_tool(
            _rsync_argv(endpoint, known_hosts, source, dest),
            stdin=_nul_list(rels),
            on_stdout=_rsync_progress(meter),
        )
    # 24: some source files vanished; 23: some could not be read. A sync tolerates both: the
    # verification that follows sees which files are missing.
    if code != 0 and not (code == 24 or (lax and code == 23)):
        raise _tool_failure("rsync", code, err)


def _remote_spec(path: str) -> str:
    return f"{openssh.HOST_ALIAS}:{path}"


_GLOB = re.compile(r"([\\*?\[\]{}])")


def _scp_source(path: str) -> str:
    """scp (SFTP mode) glob-expands remote sources: escape the metacharacters."""
    return _GLOB.sub(r"\\\1", path)


def _scp_argv(endpoint: Endpoint, known_hosts: Path, sources: list[str], dest: str) -> list[str]:
    scp = openssh.which("scp") or "scp"
    options = openssh.ssh_options(endpoint, known_hosts)
    # no -q: it would silence ssh's own errors ("Host key verification failed"); without a tty
    # scp prints no progress meter anyway
    return [scp, "-s", "-r", "-p", *options, "--", *sources, dest]


async def _scp(endpoint: Endpoint, sources: list[str], dest: str) -> None:
    with openssh.known_hosts_file(endpoint) as known_hosts:
        code, err = await openssh.run_tool(_scp_argv(endpoint, known_hosts, sources, dest))
    if code != 0:
        raise _tool_failure("scp", code, err)


async def _scp_upload(
    conn: asyncssh.SSHClientConnection,
    endpoint: Endpoint,
    root: Path,
    remote: str,
    rels: Sequence[str],
    meter: _Meter,
) -> None:
    """scp copies trees, not lists: it is given a staging tree of symlinks (which it follows) to
    just the files to send, named like the remote directory and copied into its parent, so it
    merges into what is already there."""
    with tempfile.TemporaryDirectory(prefix="gpushop-scp-") as tmp:
        name = posixpath.basename(remote.rstrip("/"))
        stage = Path(tmp) / (name or "root")
        stage.mkdir()
        for rel in rels:
            link = stage / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((root / rel).resolve())
        if name:
            sources, dest = [str(stage)], posixpath.dirname(remote.rstrip("/")) or "/"
        else:  # the remote is "/": its entries one by one
            sources, dest = [str(p) for p in sorted(stage.iterdir())], "/"

        async def arrived() -> int:
            command = f"{_cd(remote)}; xargs -0 -r stat -c %s -- 2>/dev/null; exit 0"
            _, out, _ = await _exec(conn, command, _nul_list(rels), 30, "progress")
            return sum(int(x) for x in out.split() if x.isdigit())

        async with _polling(arrived, meter, REMOTE_PROGRESS_INTERVAL):
            await _scp(endpoint, sources, _remote_spec(dest))


# Portable staging: one `ln` per file (a copy where links fail, e.g. across a mount point).
_STAGE_SH = (
    'for f do case $f in */*) mkdir -p -- "$0/${f%/*}";; esac;'
    ' ln -- "$f" "$0/$f" 2>/dev/null || cp -p -- "$f" "$0/$f" 2>/dev/null; done; exit 0'
)


def _stage_command(remote: str, stage: str) -> str:
    """Hard-link the files named on stdin into `stage`: GNU cp in one go (640 files: 20 ms);
    if it is not GNU cp or some link failed, the portable loop (1.3 s) completes the job."""
    loop = shlex.quote(_STAGE_SH)
    return (
        f"{_cd(remote)}; mkdir -- {stage} && cat > {stage}.list || exit 1;"
        f" if cp --version 2>/dev/null | grep -q GNU"
        f" && xargs -0 -r cp -l --parents -t {stage} -- < {stage}.list 2>/dev/null; then :;"
        f" else xargs -0 -r sh -c {loop} {stage} < {stage}.list; fi; rm -f -- {stage}.list"
    )


async def _scp_download(
    conn: asyncssh.SSHClientConnection,
    endpoint: Endpoint,
    remote: str,
    payload: Path,
    rels: Sequence[str],
    meter: _Meter,
) -> None:
    """The files to fetch are hard-linked (copied where links fail) into a staging directory
    inside the remote one, which scp then copies whole; the staging directory is removed after."""
    stage = STAGE_PREFIX + secrets.token_hex(6)
    command = _stage_command(remote, stage)
    code, _, err = await _exec(conn, command, _nul_list(rels), LIST_TIMEOUT, "staging for scp")
    try:
        if code != 0:
            raise TransferError(f"cannot stage files for scp in {remote}: {err or code}")

        async def arrived() -> int:
            return await asyncio.to_thread(_tree_size, payload)

        async with _polling(arrived, meter):
            source = _remote_spec(_scp_source(posixpath.join(remote, stage)))
            await _scp(endpoint, [source], str(payload))
    finally:
        cleanup = f"{_cd(remote)}; rm -rf -- {stage} {stage}.list"
        with contextlib.suppress(TransferError):
            await _exec(conn, cleanup, b"", LIST_TIMEOUT, "removing the scp staging directory")


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


# -- the two directions ---------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise TransferError(f"unknown transfer method {method!r} (one of {', '.join(METHODS)})")


def _place(payload: Path, local: Path, rels: Sequence[str]) -> None:
    """Move verified files from the staging payload into place (same filesystem: atomic)."""
    for rel in rels:
        target = local / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(payload / rel, target)
        except OSError as exc:
            raise TransferError(f"cannot write {target}: {exc}") from exc


def _absolute_local(local: Path) -> Path:
    """rsync and scp read a local "a:b" as host "a"; "/x/a:b" they take as a path."""
    return Path(os.path.abspath(local))


def _absolute(remote: str) -> str:
    if not remote.startswith("/"):
        raise TransferError(f"remote paths must be absolute: {remote!r}")
    return posixpath.normpath(remote)


def _names(rels: Iterable[str], limit: int = 5) -> str:
    ordered = sorted(rels)
    shown = ", ".join(ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


class _Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.checksum = 0.0

    @contextlib.contextmanager
    def hashing(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.checksum += time.perf_counter() - t0

    def report(
        self, files: int, skipped: int, nbytes: int, method: str, deferred: Sequence[str] = ()
    ) -> TransferReport:
        return TransferReport(
            files=files,
            skipped=skipped,
            bytes=nbytes,
            seconds=time.perf_counter() - self.started,
            checksum_seconds=self.checksum,
            method=method,
            deferred=len(deferred),
            deferred_paths=sorted(deferred),
        )


async def upload(
    conn: asyncssh.SSHClientConnection,
    local: Path,
    remote: str,
    *,
    endpoint: Endpoint | None = None,
    progress: Progress | None = None,
    method: str = "auto",
    verify: bool = True,
) -> TransferReport:
    """Upload a local directory (or one file) into the remote directory `remote` (absolute;
    created): `local/a/b.txt` -> `remote/a/b.txt`, empty directories included.

    Remote files with the same size and sha256 are skipped. Each transferred file is then
    verified by sha256; a mismatch is sent once more, then raises TransferError."""
    clock = _Clock()
    remote = _absolute(remote)
    _check_method(method)
    local = _absolute_local(local)
    if local.is_dir():
        root = local
        tree = await asyncio.to_thread(_local_tree, root)
    elif local.is_file():
        root = local.parent
        tree = _Tree({local.name: local.stat().st_size}, [])
    else:
        raise TransferError(f"{local} does not exist")
    there = await _remote_tree(conn, remote, tree.dirs)
    assert there is not None  # created
    chosen = choose_method(method, endpoint, there.rsync)

    candidates = [rel for rel, size in tree.files.items() if there.files.get(rel) == size]
    skip: set[str] = set()
    if candidates:
        with clock.hashing():
            size = sum(tree.files[r] for r in candidates)
            skip, _ = await _same(conn, remote, root, candidates, size)
    send = [rel for rel in tree.files if rel not in skip]
    meter = _Meter(progress, sum(tree.files[r] for r in send))

    async def push(rels: Sequence[str]) -> None:
        if not rels:
            return
        if chosen == "sftp":
            await _sftp_upload(conn, root, remote, rels, meter)
        elif chosen == "rsync":
            assert endpoint is not None
            await _rsync(endpoint, f"{root}/", _remote_spec(f"{remote}/"), rels, meter, lax=False)
        else:
            assert endpoint is not None
            await _scp_upload(conn, endpoint, root, remote, rels, meter)
        meter.finish()

    await push(send)
    sent = sum(tree.files[r] for r in send)
    if verify and send:
        with clock.hashing():
            _, bad = await _same(conn, remote, root, send, sent)
        if bad:
            again = sorted(bad)
            more = sum(tree.files[r] for r in again)
            meter.grow(more)
            await push(again)
            sent += more
            with clock.hashing():
                _, bad = await _same(conn, remote, root, again, more)
            if bad:
                raise TransferError(
                    f"{len(bad)} file(s) still differ on the instance after sending them twice"
                    f" ({chosen}): {_names(bad)}"
                )
    return clock.report(len(send), len(skip), sent, chosen)


async def download(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    local: Path,
    *,
    endpoint: Endpoint | None = None,
    progress: Progress | None = None,
    method: str = "auto",
    verify: bool = True,
    strict: bool = True,
) -> TransferReport:
    """Download the remote directory `remote` into `local` (created), same skip and verify
    rules as `upload`. Files are fetched into a staging directory inside `local` and moved into
    place once verified.

    strict=False is for periodic syncs while a job still writes: a file that changes or vanishes
    during its download is left for the next sync (counted in `deferred`) instead of raising,
    and a missing remote directory gives an empty report instead of a TransferError."""
    clock = _Clock()
    remote = _absolute(remote)
    _check_method(method)
    local = _absolute_local(local)
    there = await _remote_tree(conn, remote, None)
    if there is None:
        if strict:
            raise TransferError(f"{remote} does not exist on the instance")
        return clock.report(0, 0, 0, "sftp" if method == "auto" else method)
    chosen = choose_method(method, endpoint, there.rsync)
    if local.exists() and not local.is_dir():
        raise TransferError(f"{local} exists and is not a directory")
    try:
        local.mkdir(parents=True, exist_ok=True)
        for rel in there.dirs:
            (local / rel).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TransferError(f"cannot create {local}: {exc}") from exc
    mine = await asyncio.to_thread(_local_tree, local)

    candidates = [rel for rel, size in there.files.items() if mine.files.get(rel) == size]
    skip: set[str] = set()
    if candidates:
        with clock.hashing():
            size = sum(there.files[r] for r in candidates)
            skip, _ = await _same(conn, remote, local, candidates, size)
    fetch = [rel for rel in there.files if rel not in skip]
    meter = _Meter(progress, sum(there.files[r] for r in fetch))
    stage = local / (PARTIAL_PREFIX + secrets.token_hex(6))

    async def pull(rels: Sequence[str], payload: Path) -> None:
        if chosen != "scp":  # scp creates the payload directory itself
            await asyncio.to_thread(payload.mkdir)
        if chosen == "sftp":
            await _sftp_download(conn, remote, payload, rels, meter)
        elif chosen == "rsync":
            assert endpoint is not None
            source = _remote_spec(f"{remote}/")
            await _rsync(endpoint, source, f"{payload}/", rels, meter, lax=not strict)
        else:
            assert endpoint is not None
            await _scp_download(conn, endpoint, remote, payload, rels, meter)
        meter.finish()

    async def attempt(rels: Sequence[str], payload: Path) -> tuple[list[str], set[str], int]:
        """Fetch into `payload`, verify, move the good files into place: (placed, bad, bytes)."""
        await pull(rels, payload)
        present = [r for r in rels if (payload / r).is_file()]
        moved = sum((payload / r).stat().st_size for r in present)
        bad = set(rels) - set(present)
        good = set(present)
        if verify and present:
            with clock.hashing():
                good, wrong = await _same(conn, remote, payload, present, moved)
            bad |= wrong
        placed = [rel for rel in present if rel in good]
        await asyncio.to_thread(_place, payload, local, placed)
        return placed, bad, moved

    try:
        stage.mkdir()
        placed, bad, moved = await attempt(fetch, stage / "1") if fetch else ([], set(), 0)
        if bad and strict:
            again = sorted(bad)
            meter.grow(sum(there.files[r] for r in again))
            more, bad, extra = await attempt(again, stage / "2")
            placed += more
            moved += extra
            if bad:
                raise TransferError(
                    f"{len(bad)} file(s) changed or vanished on the instance during their"
                    f" download, twice ({chosen}): {_names(bad)}"
                )
    except OSError as exc:
        raise TransferError(f"download into {local} failed: {exc}") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return clock.report(len(placed), len(skip), moved, chosen, deferred=sorted(bad))
