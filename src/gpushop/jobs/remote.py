"""The shell that runs on the instance, as strings (POSIX sh and coreutils only).

A job lives in its own folder: ``cmd.sh`` (the command), ``wrap.sh`` (runs it and records the
outcome), ``pid`` (of the wrapper, a session leader: ``kill -- -PID`` reaches the whole job),
``log`` (stdout and stderr), ``exit`` (the exit code, written last and atomically). The job is
started with ``setsid nohup``, so it outlives the SSH connection that started it; secrets reach
it through the launch command's stdin, never its command line or a file.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

TIMEOUT_EXIT = 124  # what coreutils' timeout returns
KILL_GRACE_S = 30


def wrapper(job_dir: str, timeout_s: float | None) -> str:
    d = shlex.quote(job_dir)
    run = f"sh {d}/cmd.sh"
    if timeout_s is not None:
        run = f"timeout --signal=TERM --kill-after={KILL_GRACE_S} {int(timeout_s)} {run}"
    return (
        f"echo $$ > {d}/pid\n"
        f"date +%s > {d}/started\n"
        f"{run} >> {d}/log 2>&1\n"
        "code=$?\n"
        f"echo $code > {d}/exit.tmp && mv {d}/exit.tmp {d}/exit\n"
    )


def prepare(workdir: str) -> str:
    """Make the work folder; on a VM whose login user may not write to / (TensorDock's
    "user"), through passwordless sudo."""
    w = shlex.quote(workdir)
    return (
        f"mkdir -p {w} 2>/dev/null || "
        f'{{ sudo -n mkdir -p {w} && sudo -n chown "$(id -u):$(id -g)" {w}; }}'
    )


def in_docker(image: str, workdir: str, env_names: list[str], command: str) -> str:
    """``command`` inside ``image`` on a VM: the work folder mounted at the same path, the GPUs
    passed through, the job's environment passed by name (values stay out of the command)."""
    envs = "".join(f" -e {name}" for name in env_names)
    w = shlex.quote(workdir)
    return (
        f"docker run --rm --gpus all -v /workspace:/workspace -w {w}{envs} "
        f"{shlex.quote(image)} sh -c {shlex.quote(command)}"
    )


def command_script(workdir: str, command: str) -> str:
    w = shlex.quote(workdir)
    return f"mkdir -p {w} && cd {w} || exit 97\n{command}\n"


def launch(job_dir: str) -> str:
    """Start the job unless it was started already (idempotent: a retried launch after a lost
    answer must not run it twice). Reads ``NAME=VALUE`` lines from stdin into the environment."""
    d = shlex.quote(job_dir)
    return (
        f'if [ -e {d}/pid ]; then echo "already"; exit 0; fi; '
        'while IFS= read -r line; do [ -n "$line" ] && export "$line"; done; '
        f"touch {d}/log; "
        f"setsid nohup sh {d}/wrap.sh </dev/null >/dev/null 2>&1 & "
        f"echo $! > {d}/pid.tmp && [ ! -e {d}/pid ] && mv {d}/pid.tmp {d}/pid; rm -f {d}/pid.tmp; "
        'echo "launched"'
    )


def _alive(d: str) -> str:
    """A shell function: the job's wrapper still runs. A zombie does not count: in a container
    whose PID 1 never reaps orphans, an ended job's pid stays "alive" to ``kill -0``."""
    return (
        f"p=$(cat {d}/pid 2>/dev/null); "
        'alive() { [ -n "$p" ] && [ ! -e ' + d + '/exit ] && [ -d "/proc/$p" ] && '
        '[ "$(sed \'s/.*) //\' "/proc/$p/stat" 2>/dev/null | cut -c1)" != Z ]; }; '
    )


def status(job_dir: str) -> str:
    d = shlex.quote(job_dir)
    return (
        _alive(d)
        + f"e=$(cat {d}/exit 2>/dev/null); s=$(stat -c %s {d}/log 2>/dev/null || echo 0); "
        'a=0; alive && a=1; echo "pid=$p alive=$a exit=$e size=$s"'
    )


def follow(job_dir: str, offset: int) -> str:
    """The log from byte ``offset`` on, following it until the job's wrapper ends; the caller
    checks the size afterwards and reads again if the last bytes came after the follower."""
    d = shlex.quote(job_dir)
    return (
        _alive(d) + "if alive; then "
        f"tail -c +{offset + 1} -F -s 0.2 {d}/log 2>/dev/null & t=$!; "
        "while alive; do sleep 0.2; done; sleep 0.5; kill $t 2>/dev/null; wait $t 2>/dev/null; "
        f"else tail -c +{offset + 1} {d}/log 2>/dev/null; fi; true"
    )


def kill(job_dir: str) -> str:
    """SIGTERM to the job's process group, then SIGKILL to what is left after up to 2 s: the
    wait ends as soon as the group is gone."""
    d = shlex.quote(job_dir)
    polls = 20  # x 0.1 s
    return (
        f"p=$(cat {d}/pid 2>/dev/null); "
        f'[ -n "$p" ] && kill -TERM -- -"$p" 2>/dev/null; i=0; '
        f'while [ -n "$p" ] && [ $i -lt {polls} ] && kill -0 -- -"$p" 2>/dev/null; '
        "do sleep 0.1; i=$((i+1)); done; "
        f'[ -n "$p" ] && kill -KILL -- -"$p" 2>/dev/null; true'
    )


@dataclass(frozen=True)
class Status:
    launched: bool
    alive: bool
    exit_code: int | None
    log_size: int

    @property
    def finished(self) -> bool:
        return self.exit_code is not None

    @property
    def vanished(self) -> bool:
        """Launched, not running, no exit code: killed with the machine (or never started)."""
        return self.launched and not self.alive and self.exit_code is None


_STATUS = re.compile(r"pid=(\d*) alive=([01]) exit=(-?\d*) size=(\d+)")


def parse_status(text: str) -> Status:
    match = _STATUS.search(text)
    if match is None:
        raise ValueError(f"unexpected job status output: {text[:200]!r}")
    pid, alive, code, size = match.groups()
    return Status(
        launched=bool(pid),
        alive=alive == "1",
        exit_code=int(code) if code else None,
        log_size=int(size),
    )
