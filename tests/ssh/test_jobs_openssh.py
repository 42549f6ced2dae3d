"""The job protocol against Debian's OpenSSH sshd (not only our emulator): a detached job
survives its connection, the log resumes at the right byte on a new connection, secrets arrive
through stdin, a retried launch does not start the job twice, and kill reaches the whole job."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

from gpushop.jobs.session import RemoteJob
from gpushop.ssh import transfer
from waiting import until_async


def _dir(server: Any) -> str:
    return str(Path(server.root) / "jobs" / uuid.uuid4().hex[:8])


async def _wait_finished(job: RemoteJob, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await job.status()
        if status.finished or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.1)


def test_a_detached_job_outlives_its_connection_and_its_log_resumes(
    openssh_server: Any, tmp_path: Path
) -> None:
    secret = "hf_" + "x" * 30
    digest = hashlib.sha256(secret.encode()).hexdigest()
    directory = _dir(openssh_server)
    workdir = str(Path(openssh_server.root) / "work")
    data = tmp_path / "in"
    data.mkdir()
    (data / "n.txt").write_text("7\n")

    async def go() -> None:
        conn = await openssh_server.connect()
        await transfer.upload(conn, data, f"{workdir}/in", endpoint=openssh_server.endpoint())
        job = RemoteJob(conn, directory)
        command = (
            f'test "$(printf %s "$HF_TOKEN" | sha256sum | cut -c1-64)" = {digest} '
            "&& echo token-ok; for i in $(seq 1 $(cat in/n.txt)); do echo line $i; sleep 0.3; done"
        )
        assert await job.launch(workdir, command, None, {"HF_TOKEN": secret})
        assert not await job.launch(workdir, command, None, {"HF_TOKEN": secret})  # not twice
        got: list[bytes] = []

        async def written() -> bool:  # a few lines, not all: the drop comes mid-job
            return b"line 2" in (Path(directory) / "log").read_bytes()

        await until_async(written, "the job to write its first lines")
        conn.close()  # an SSH drop: the job must go on
        await conn.wait_closed()
        conn = await openssh_server.connect()
        job = RemoteJob(conn, directory)
        offset = await job.follow(0, got.append)
        status = await _wait_finished(job)
        assert status.exit_code == 0
        first = b"".join(got)
        # a second follower from the middle sees exactly the rest
        rest: list[bytes] = []
        await job.follow(len(first) // 2, rest.append)
        assert first[len(first) // 2 :] == b"".join(rest)
        assert offset == len(first)
        lines = first.decode().splitlines()
        assert lines == ["token-ok", *[f"line {i}" for i in range(1, 8)]]
        conn.close()

    asyncio.run(go())
    # the secret is in no file the job left behind
    for path in Path(directory).iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_kill_stops_the_whole_job_and_a_timeout_gives_124(openssh_server: Any) -> None:
    async def go() -> None:
        conn = await openssh_server.connect()
        workdir = str(Path(openssh_server.root) / "work")
        job = RemoteJob(conn, _dir(openssh_server))
        await job.launch(workdir, "sleep 300 & sleep 300; wait", None, {})

        async def alive() -> bool:
            return (await job.status()).alive

        await until_async(alive, "the job to run")
        await job.kill()
        status = await job.status()
        assert not status.alive
        timed = RemoteJob(conn, _dir(openssh_server))
        await timed.launch(workdir, "sleep 300", 1, {})
        status = await _wait_finished(timed)
        assert status.exit_code == 124
        conn.close()

    asyncio.run(go())
