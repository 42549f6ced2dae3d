"""Directory transfers against OpenSSH's sshd on loopback (fixture `openssh_server`): every
method, resume, verification, syncs of files still being written, and host-key checks. The
"remote" directory is on this machine, so the tests look at it directly."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gpushop.ssh import transfer
from gpushop.ssh.transfer import TransferError, download, parse_sums, upload

METHODS = ["sftp", "scp", "rsync"]

# Nested directories, empty files, an empty directory, unicode, spaces, shell and glob
# metacharacters, a backslash and a newline in names.
TREE: dict[str, bytes] = {
    "top.txt": b"hello\n",
    "empty.bin": b"",
    "a/b/c/deep.dat": os.urandom(300_000),
    "a/b/sibling.dat": os.urandom(70_000),
    "a/x.txt": b"x" * 1000,
    "données/été 2024/naïve café.txt": "unicode ✓\n".encode(),
    "with space/it's [1] *$HOME*.txt": b"quoted\n",
    "odd/back\\slash": b"backslash\n",
    "odd/new\nline": b"newline\n",
    "odd/-dash": b"dash\n",
    "empty-files/zero": b"",
}
EMPTY_DIRS = ["void", "a/hollow"]


def make_tree(root: Path, tree: dict[str, bytes] = TREE, dirs: list[str] = EMPTY_DIRS) -> None:
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)


def snapshot(root: Path) -> tuple[dict[str, bytes], set[str]]:
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for d in dirnames:
            dirs.add((base / d).relative_to(root).as_posix())
        for f in filenames:
            files[(base / f).relative_to(root).as_posix()] = (base / f).read_bytes()
    return files, dirs


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    def check(self, total: int) -> None:
        assert self.calls, "progress never reported"
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones), "progress went backwards"
        assert self.calls[-1] == (total, total)


@pytest.fixture
async def conn(openssh_server: Any) -> AsyncIterator[asyncssh.SSHClientConnection]:
    connection = await openssh_server.connect()
    yield connection
    connection.close()
    await connection.wait_closed()


@pytest.fixture
def endpoint(openssh_server: Any) -> transfer.Endpoint:
    return openssh_server.endpoint()  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", METHODS)
async def test_round_trip(
    conn: asyncssh.SSHClientConnection,
    endpoint: transfer.Endpoint,
    tmp_path: Path,
    method: str,
) -> None:
    src, remote, back = tmp_path / "src", tmp_path / "remote dir", tmp_path / "back"
    make_tree(src)
    total = sum(len(d) for d in TREE.values())

    up_progress = Recorder()
    report = await upload(
        conn, src, str(remote), endpoint=endpoint, method=method, progress=up_progress
    )
    assert (report.method, report.files, report.skipped, report.bytes) == (
        method,
        len(TREE),
        0,
        total,
    )
    assert report.checksum_seconds > 0 and report.seconds >= report.checksum_seconds
    up_progress.check(total)
    assert snapshot(remote) == snapshot(src)

    down_progress = Recorder()
    report = await download(
        conn, str(remote), back, endpoint=endpoint, method=method, progress=down_progress
    )
    assert (report.method, report.files, report.skipped, report.bytes) == (
        method,
        len(TREE),
        0,
        total,
    )
    down_progress.check(total)
    assert snapshot(back) == snapshot(src)  # no staging directory left behind either
    assert not [p for p in remote.iterdir() if p.name.startswith(".gpushop")]


@pytest.mark.parametrize("method", METHODS)
async def test_resume_skips_what_is_there_and_resends_changes(
    conn: asyncssh.SSHClientConnection,
    endpoint: transfer.Endpoint,
    tmp_path: Path,
    method: str,
) -> None:
    src, remote = tmp_path / "src", tmp_path / "remote"
    make_tree(src)
    await upload(conn, src, str(remote), endpoint=endpoint, method=method)

    again = await upload(conn, src, str(remote), endpoint=endpoint, method=method)
    assert (again.files, again.skipped, again.bytes) == (0, len(TREE), 0)

    (src / "a/x.txt").write_bytes(b"y" * 1000)  # same size, other content
    (src / "top.txt").write_bytes(b"longer now\n")
    (src / "new/file.txt").parent.mkdir()
    (src / "new/file.txt").write_bytes(b"new\n")
    changed = await upload(conn, src, str(remote), endpoint=endpoint, method=method)
    assert (changed.files, changed.skipped) == (3, len(TREE) - 2)
    assert changed.bytes == 1000 + len(b"longer now\n") + len(b"new\n")
    assert snapshot(remote) == snapshot(src)

    # downloads resume the same way; a local file that differs is replaced
    back = tmp_path / "back"
    await download(conn, str(remote), back, endpoint=endpoint, method=method)
    (back / "a/b/sibling.dat").write_bytes(os.urandom(70_000))
    resumed = await download(conn, str(remote), back, endpoint=endpoint, method=method)
    assert (resumed.files, resumed.skipped) == (1, len(TREE))
    assert snapshot(back) == snapshot(src)


async def test_single_file_upload(
    conn: asyncssh.SSHClientConnection, tmp_path: Path, endpoint: transfer.Endpoint
) -> None:
    one = tmp_path / "model.safetensors"
    one.write_bytes(os.urandom(5000))
    remote = tmp_path / "remote"
    report = await upload(conn, one, str(remote), endpoint=endpoint)
    assert report.files == 1
    assert (remote / "model.safetensors").read_bytes() == one.read_bytes()


@pytest.mark.parametrize("method", METHODS)
async def test_upload_verification_catches_a_corrupted_remote_file(
    conn: asyncssh.SSHClientConnection,
    endpoint: transfer.Endpoint,
    tmp_path: Path,
    method: str,
) -> None:
    src, remote = tmp_path / "src", tmp_path / "remote"
    make_tree(src)
    victim = remote / "a/b/c/deep.dat"
    corruptions: list[int] = []

    def corrupt_once(done: int, total: int) -> None:
        # the transfer has finished, verification has not started: damage the remote copy
        if done == total and total and victim.exists() and not corruptions:
            data = bytearray(victim.read_bytes())
            data[1234] ^= 0xFF
            victim.write_bytes(bytes(data))
            corruptions.append(done)

    report = await upload(
        conn, src, str(remote), endpoint=endpoint, method=method, progress=corrupt_once
    )
    assert corruptions
    assert report.files == len(TREE)
    assert report.bytes == sum(len(d) for d in TREE.values()) + len(TREE["a/b/c/deep.dat"])
    assert victim.read_bytes() == TREE["a/b/c/deep.dat"]  # sent again, verified

    # damage that survives the second attempt is an error, never a silent success
    (src / "a/x.txt").write_bytes(b"z" * 1000)

    def corrupt_always(done: int, total: int) -> None:
        if done == total and total:
            (remote / "a/x.txt").write_bytes(b"!" * 1000)

    with pytest.raises(TransferError, match=r"still differ.*a/x\.txt"):
        await upload(
            conn, src, str(remote), endpoint=endpoint, method=method, progress=corrupt_always
        )


async def test_a_same_size_corrupted_remote_file_is_not_skipped(
    conn: asyncssh.SSHClientConnection, tmp_path: Path
) -> None:
    src, remote = tmp_path / "src", tmp_path / "remote"
    make_tree(src)
    await upload(conn, src, str(remote))
    data = bytearray((remote / "a/b/sibling.dat").read_bytes())
    data[0] ^= 1
    (remote / "a/b/sibling.dat").write_bytes(bytes(data))
    report = await upload(conn, src, str(remote))
    assert (report.files, report.skipped) == (1, len(TREE) - 1)
    assert snapshot(remote) == snapshot(src)


@pytest.mark.parametrize("method", METHODS)
async def test_download_verification_catches_a_damaged_copy(
    conn: asyncssh.SSHClientConnection,
    endpoint: transfer.Endpoint,
    tmp_path: Path,
    method: str,
) -> None:
    remote, back = tmp_path / "remote", tmp_path / "back"
    make_tree(remote)
    damaged: list[Path] = []

    def damage_staged_copy(done: int, total: int) -> None:
        if done == total and total and not damaged:
            for staged in back.glob(".gpushop-partial-*/*/a/x.txt"):
                staged.write_bytes(b"?" * 1000)
                damaged.append(staged)

    report = await download(
        conn, str(remote), back, endpoint=endpoint, method=method, progress=damage_staged_copy
    )
    assert damaged and report.files == len(TREE)
    assert snapshot(back) == snapshot(remote)


class Grower:
    """Appends to a file every millisecond until stopped, like a training log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with self.path.open("ab", buffering=0) as fh:
            while not self.stop.is_set():
                fh.write(b"step %d loss 0.123\n" % time.monotonic_ns())
                time.sleep(0.001)

    def __enter__(self) -> Grower:
        self.thread.start()
        time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("method", METHODS)
async def test_sync_while_a_file_grows(
    conn: asyncssh.SSHClientConnection,
    endpoint: transfer.Endpoint,
    tmp_path: Path,
    method: str,
) -> None:
    remote, back = tmp_path / "remote", tmp_path / "back"
    make_tree(remote, {"ckpt/step1.pt": os.urandom(100_000), "log.txt": b"start\n"}, [])
    first = await download(conn, str(remote), back, endpoint=endpoint, method=method)
    assert first.files == 2 and (back / "log.txt").read_bytes() == b"start\n"

    (remote / "ckpt/step2.pt").write_bytes(os.urandom(50_000))
    with Grower(remote / "log.txt"):
        sync = await download(
            conn, str(remote), back, endpoint=endpoint, method=method, strict=False
        )
        assert (sync.files, sync.skipped, sync.deferred) == (1, 1, 1)
        assert sync.deferred_paths == ["log.txt"]
        assert (back / "ckpt/step2.pt").read_bytes() == (remote / "ckpt/step2.pt").read_bytes()
        assert (back / "log.txt").read_bytes() == b"start\n"  # the last good copy stays
        with pytest.raises(TransferError, match=r"changed or vanished.*log\.txt"):
            await download(conn, str(remote), back, endpoint=endpoint, method=method)
    final = await download(conn, str(remote), back, endpoint=endpoint, method=method)
    assert final.files == 1
    assert snapshot(back) == snapshot(remote)
    assert not list(back.glob(".gpushop-partial-*"))


async def test_missing_remote_directory(conn: asyncssh.SSHClientConnection, tmp_path: Path) -> None:
    missing = str(tmp_path / "not-yet")
    report = await download(conn, missing, tmp_path / "back", strict=False)
    assert (report.files, report.skipped, report.bytes) == (0, 0, 0)
    with pytest.raises(TransferError, match="does not exist"):
        await download(conn, missing, tmp_path / "back")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(TransferError, match="not a directory"):
        await download(conn, str(tmp_path / "a-file"), tmp_path / "back")
    with pytest.raises(TransferError, match="absolute"):
        await upload(conn, tmp_path, "relative/path")
    with pytest.raises(TransferError, match="unknown transfer method"):
        await upload(conn, tmp_path, "/tmp/x", method="ftp")


@pytest.mark.parametrize("method", ["scp", "rsync"])
async def test_system_tools_refuse_a_different_host_key(
    conn: asyncssh.SSHClientConnection, openssh_server: Any, tmp_path: Path, method: str
) -> None:
    src, remote = tmp_path / "src", tmp_path / "remote"
    make_tree(src, {"f.txt": b"secret\n"}, [])
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    wrong = openssh_server.endpoint(host_key=impostor.strip())
    with pytest.raises(TransferError, match="host key does not match"):
        await upload(conn, src, str(remote), endpoint=wrong, method=method)
    assert not (remote / "f.txt").exists()
    make_tree(remote, {"out.txt": b"result\n"}, [])
    with pytest.raises(TransferError, match="host key does not match"):
        await download(conn, str(remote), tmp_path / "back", endpoint=wrong, method=method)
    assert not (tmp_path / "back" / "out.txt").exists()

    unknown = openssh_server.endpoint(host_key=None)
    with pytest.raises(TransferError, match="recorded host key"):
        await upload(conn, src, str(remote), endpoint=unknown, method=method)
    # "auto" never runs the system tools without a known host key: it falls back to SFTP
    report = await upload(conn, src, str(remote), endpoint=unknown)
    assert report.method == "sftp" and (remote / "f.txt").read_bytes() == b"secret\n"


@pytest.mark.parametrize("method", ["scp", "rsync"])
async def test_relative_local_paths_with_a_colon(
    conn: asyncssh.SSHClientConnection,
    endpoint: transfer.Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    """scp and rsync read "run:1" as host "run": we hand them absolute paths."""
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "run:1", {"f.txt": b"colon\n"}, [])
    await upload(conn, Path("run:1"), str(tmp_path / "remote"), endpoint=endpoint, method=method)
    await download(conn, str(tmp_path / "remote"), Path("out:2"), endpoint=endpoint, method=method)
    assert (tmp_path / "out:2" / "f.txt").read_bytes() == b"colon\n"


async def test_auto_prefers_rsync_with_a_known_host_key(
    conn: asyncssh.SSHClientConnection, endpoint: transfer.Endpoint, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, {"f.txt": b"x"}, [])
    report = await upload(conn, src, str(tmp_path / "remote"), endpoint=endpoint)
    assert report.method == "rsync"
    report = await upload(conn, src, str(tmp_path / "remote2"))
    assert report.method == "sftp"


async def test_remote_hashing_matches_sha256sum(
    conn: asyncssh.SSHClientConnection, tmp_path: Path
) -> None:
    """sha256sum (small totals), the python3 hasher (big ones) and its sha256sum fallback give
    the same answers, escaped names included."""
    make_tree(tmp_path, TREE, [])
    names = list(TREE)
    expected = {rel: hashlib.sha256(data).hexdigest() for rel, data in TREE.items()}
    big = transfer.PYTHON_HASH_BYTES
    assert await transfer._remote_hashes(conn, str(tmp_path), names, 0) == expected
    assert await transfer._remote_hashes(conn, str(tmp_path), names, big) == expected
    hashers = {"sha256sum --": transfer._hash_command(str(tmp_path), 0)}
    hashers["python3"] = transfer._hash_command(str(tmp_path), big)
    hashers["fallback"] = hashers["python3"].replace("command -v python3", "false")
    for name, command in hashers.items():
        code, out, _ = await transfer._exec(conn, command, transfer._nul_list(names), 30, "hash")
        assert code == 0 and parse_sums(out) == expected, name
    assert "python3 -c" in hashers["python3"] and "python3" not in hashers["sha256sum --"]


async def test_portable_scp_staging(conn: asyncssh.SSHClientConnection, tmp_path: Path) -> None:
    """Without GNU cp, the scp download staging falls back to one `ln` per file."""
    make_tree(tmp_path / "d", TREE, [])
    names = list(TREE)
    command = transfer._stage_command(str(tmp_path / "d"), ".gpushop-stage-t")
    assert "cp --version" in command
    portable = command.replace("cp --version", "false")
    code, _, err = await transfer._exec(conn, portable, transfer._nul_list(names), 30, "stage")
    assert code == 0, err
    staged = tmp_path / "d" / ".gpushop-stage-t"
    assert snapshot(staged)[0] == TREE
    assert (staged / "a/x.txt").stat().st_ino == (tmp_path / "d/a/x.txt").stat().st_ino
    assert not (tmp_path / "d" / ".gpushop-stage-t.list").exists()


def test_parse_sums() -> None:
    out = b"ab  x y\n\\cd  a\\nb\\\\c\nef *bin\n"
    assert parse_sums(out) == {"x y": "ab", "a\nb\\c": "cd", "bin": "ef"}


@pytest.fixture
def many_small(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "many"
    make_tree(root, {f"d{i % 5}/f{i}.txt": b"%d" % i for i in range(200)}, [])
    yield root


@pytest.mark.parametrize("method", METHODS)
async def test_many_small_files(
    conn: asyncssh.SSHClientConnection,
    endpoint: transfer.Endpoint,
    many_small: Path,
    tmp_path: Path,
    method: str,
) -> None:
    remote = tmp_path / "remote"
    report = await asyncio.wait_for(
        upload(conn, many_small, str(remote), endpoint=endpoint, method=method), 30
    )
    assert report.files == 200
    assert snapshot(remote) == snapshot(many_small)
