"""Transfer benchmark (issue 4): our upload/download against OpenSSH's scp, to the same sshd.

An OpenSSH sshd (tests/openssh_server.py: temporary host key and config) runs on a loopback port
with ONE cipher allowed, so every client (asyncssh, scp, rsync's ssh) uses the same one. The
dataset is seeded random bytes of mixed sizes: 60 % in three big files, 38 % in 1-10 MB files, and
the rest in 4-64 KB files, spread over nested directories.

Each round times, in a rotating order:
- the baseline `scp -r` (OpenSSH, SFTP mode, same cipher);
- our upload() with method "sftp" (asyncssh, parallel requests, several files in flight), "scp",
  "rsync" (when present), and "auto";
and then the same downloads. Ours is timed without hashing (the report's seconds minus
checksum_seconds, which still includes the remote listing). The sha256 verification is reported
apart, and so are the end-to-end times. Each figure is the median of the rounds, and the ratio
compares it with the scp median from the same run.

    .venv/bin/python benchmarks/bench_transfer.py [--size-mb 1000] [--rounds 3]
        [--cipher aes128-gcm@openssh.com] [--tune]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import openssh_server
from gpushop.ssh import openssh, transfer

CIPHER = "aes128-gcm@openssh.com"
SEED = 20260523
TUNE_GRID: list[tuple[int, int, int]] = []


def make_dataset(root: Path, size_mb: int, seed: int = SEED) -> tuple[int, int]:
    """Mixed sizes, seeded random bytes: (files, bytes)."""
    rng = random.Random(seed)
    total = size_mb * 1_000_000
    sizes = [total * 2 // 10] * 3  # 3 x 20 %
    middle = total * 38 // 100
    while middle > 0:
        size = min(rng.randint(1_000_000, 10_000_000), max(middle, 1_000_000))
        sizes.append(size)
        middle -= size
    small = total - sum(sizes)
    while small > 0:
        size = rng.randint(4096, 65536)
        sizes.append(size)
        small -= size
    rng.shuffle(sizes)
    for i, size in enumerate(sizes):
        folder = root / f"part{i % 8}" / f"shard{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:05d}.bin").write_bytes(rng.randbytes(size))
    return len(sizes), sum(sizes)


def system_cipher(server: Any) -> str:
    """The cipher OpenSSH's own client negotiates with these options (from `ssh -v`)."""
    endpoint = server.endpoint()
    with openssh.known_hosts_file(endpoint) as known:
        argv = [*openssh.ssh_command(endpoint, known), "-v", openssh.HOST_ALIAS, "true"]
        err = subprocess.run(argv, capture_output=True, text=True, check=False).stderr
    found = re.search(r"client->server cipher: (\S+)", err)
    return found.group(1) if found else "?"


def scp_baseline(server: Any, cipher: str, source: str, dest: str) -> float:
    """OpenSSH's scp -r, as a user would run it (plus our key and host-key options)."""
    endpoint = server.endpoint()
    with openssh.known_hosts_file(endpoint) as known:
        options = openssh.ssh_options(endpoint, known)
        argv = ["scp", "-r", "-q", "-c", cipher, *options, source, dest]
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - started


def clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


async def measure(
    server: Any, data: Path, work: Path, cipher: str, rounds: int, methods: list[str]
) -> dict[str, Any]:
    conn = await server.connect(encryption_algs=[cipher])
    results: dict[str, Any] = {
        "cipher_asyncssh": conn.get_extra_info("send_cipher"),
        "cipher_openssh": system_cipher(server),
        "up": {m: [] for m in ["scp -r", *methods]},
        "down": {m: [] for m in ["scp -r", *methods]},
    }
    remote = work / "remote"
    local = work / "back"
    ours = [m for m in methods]
    try:
        for r in range(rounds):
            order = ["scp -r", *ours]
            shift = r % len(order)
            order = order[shift:] + order[:shift]  # no method always first (cold) or last
            for name in order:
                clear(remote)
                if name == "scp -r":
                    seconds = await asyncio.to_thread(
                        scp_baseline, server, cipher, str(data), f"{openssh.HOST_ALIAS}:{remote}"
                    )
                    results["up"][name].append({"transfer_s": seconds, "total_s": seconds})
                    continue
                report = await transfer.upload(
                    conn, data, str(remote), endpoint=server.endpoint(), method=name
                )
                results["up"][name].append(_figures(report))
            # downloads, from one uploaded copy
            clear(remote)
            await transfer.upload(conn, data, str(remote), endpoint=server.endpoint())
            for name in order:
                clear(local)
                if name == "scp -r":
                    seconds = await asyncio.to_thread(
                        scp_baseline, server, cipher, f"{openssh.HOST_ALIAS}:{remote}", str(local)
                    )
                    results["down"][name].append({"transfer_s": seconds, "total_s": seconds})
                    continue
                report = await transfer.download(
                    conn, str(remote), local, endpoint=server.endpoint(), method=name
                )
                results["down"][name].append(_figures(report))
            clear(local)
        # a resumed upload where everything is already there: listing and hashing only
        resumed = await transfer.upload(conn, data, str(remote), endpoint=server.endpoint())
        results["resume"] = _figures(resumed)
        results["hash"] = await _remote_hashers(conn, remote)
    finally:
        clear(remote)
        clear(local)
        conn.close()
        await conn.wait_closed()
    return results


def _figures(report: transfer.TransferReport) -> dict[str, Any]:
    return {
        "transfer_s": report.seconds - report.checksum_seconds,
        "checksum_s": report.checksum_seconds,
        "total_s": report.seconds,
        "method": report.method,
        "files": report.files,
        "skipped": report.skipped,
        "bytes": report.bytes,
    }


async def _remote_hashers(conn: Any, remote: Path) -> dict[str, float]:
    """Remote hashing of the whole dataset: coreutils sha256sum against our python3 hasher."""
    rels = sorted((await asyncio.to_thread(transfer._local_tree, remote)).files)
    stdin = transfer._nul_list(rels)
    timings = {}
    for name, size in (("sha256sum", 0), ("python3 hashlib", transfer.PYTHON_HASH_BYTES)):
        command = transfer._hash_command(str(remote), size)
        started = time.perf_counter()
        code, _, err = await transfer._exec(conn, command, stdin, 600, name)
        assert code == 0, err
        timings[name] = time.perf_counter() - started
    started = time.perf_counter()
    await transfer._local_hashes(remote, rels)
    timings["local hashlib"] = time.perf_counter() - started
    return timings


async def tune(server: Any, data: Path, work: Path, cipher: str) -> list[tuple[str, float]]:
    """SFTP knobs: files in flight x requests per file (block size: the server's 255 KiB)."""
    conn = await server.connect(encryption_algs=[cipher])
    out = []
    try:
        for files, requests, block in TUNE_GRID or [
            (1, -1, -1),
            (4, -1, -1),
            (8, -1, -1),
            (4, 64, -1),
            (4, 64, 65536),
            (16, -1, -1),
        ]:
            transfer.SFTP_FILES_IN_FLIGHT = files
            transfer.SFTP_MAX_REQUESTS = requests
            transfer.SFTP_BLOCK_SIZE = block
            for direction in ("up", "down"):
                clear(work / "t")
                if direction == "up":
                    run: Callable[[], Awaitable[transfer.TransferReport]] = lambda: transfer.upload(  # noqa: E731
                        conn, data, str(work / "t"), method="sftp", verify=False
                    )
                else:
                    await transfer.upload(conn, data, str(work / "r"), verify=False)
                    run = lambda: transfer.download(  # noqa: E731
                        conn, str(work / "r"), work / "t", method="sftp", verify=False
                    )
                report = await run()
                label = f"{direction} files={files} requests={requests} block={block}"
                out.append((label, report.mb_per_s))
                print(f"   {label}: {report.mb_per_s:.0f} MB/s", flush=True)
    finally:
        clear(work / "t")
        clear(work / "r")
        conn.close()
    return out


def run(size_mb: int = 1000, rounds: int = 3, cipher: str = CIPHER) -> dict[str, Any]:
    if not openssh_server.available():
        return {"skipped": f"{openssh_server.SSHD} missing (apt-get install openssh-server)"}
    base = Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < 3.5 * size_mb * 1e6:
        return {"skipped": f"{free / 1e9:.1f} GB free in {base}, need {3.5 * size_mb / 1e3} GB"}
    methods = ["sftp", "scp", "rsync", "auto"]
    if openssh.which("rsync") is None:
        methods.remove("rsync")
    with tempfile.TemporaryDirectory(prefix="gpushop-bench-transfer-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        files, nbytes = make_dataset(work / "data", size_mb)
        made = time.perf_counter() - started
        server = openssh_server.start(work / "sshd", Ciphers=cipher)
        try:
            results = asyncio.run(measure(server, work / "data", work, cipher, rounds, methods))
        finally:
            server.stop()
    results.update(files=files, bytes=nbytes, dataset_s=made, rounds=rounds, cipher=cipher)
    return results


def _median(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def report(r: dict[str, Any]) -> None:
    print("== transfer: upload / download over SSH against OpenSSH's sshd on loopback")
    if "skipped" in r:
        print(f"   skipped: {r['skipped']}")
        return
    cpu = os.cpu_count()
    print(
        f"   dataset {r['bytes'] / 1e6:,.0f} MB in {r['files']} files (3 x 20 %, 1-10 MB, "
        f"4-64 KB); {cpu} CPUs; median of {r['rounds']} rounds"
    )
    print(
        f"   cipher forced on the server: {r['cipher']} (negotiated: asyncssh "
        f"{r['cipher_asyncssh']}, OpenSSH {r['cipher_openssh']})"
    )
    auto = "?"
    for direction in ("up", "down"):
        rows = r[direction]
        base = _median(rows["scp -r"], "transfer_s")
        print(f"   {'upload' if direction == 'up' else 'download'}:")
        for name, samples in rows.items():
            t = _median(samples, "transfer_s")
            mbps = r["bytes"] / t / 1e6
            if name == "auto":
                auto = samples[0]["method"]
                name = f"auto={auto}"
            line = f"     {name:10s} {mbps:6.0f} MB/s  ({base / t:4.2f}x scp)"
            if not name.startswith("scp -r"):
                check = _median(samples, "checksum_s")
                total = _median(samples, "total_s")
                line += f"   + sha256 verify {check:4.1f} s = {total:5.1f} s end to end"
            else:
                line += f"   {base:5.1f} s, no verification"
            print(line)
    resume = r["resume"]
    print(
        f"   resumed upload, everything already there: {resume['total_s']:.1f} s "
        f"({resume['skipped']} files skipped; hashing {resume['checksum_s']:.1f} s)"
    )
    h = r["hash"]
    print(
        f"   hashing all of it: remote sha256sum {h['sha256sum']:.1f} s, remote python3 hashlib "
        f"{h['python3 hashlib']:.1f} s, local hashlib {h['local hashlib']:.1f} s"
    )
    print(f'   "auto" chose {auto}')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cipher", default=CIPHER)
    parser.add_argument("--tune", action="store_true", help="try SFTP knobs instead")
    args = parser.parse_args(argv)
    if args.tune:
        with tempfile.TemporaryDirectory(prefix="gpushop-bench-transfer-") as tmp:
            work = Path(tmp)
            make_dataset(work / "data", args.size_mb)
            with openssh_server.running(work / "sshd", Ciphers=args.cipher) as server:
                asyncio.run(tune(server, work / "data", work, args.cipher))
        return
    report(run(args.size_mb, args.rounds, args.cipher))


if __name__ == "__main__":
    main()
