"""A simulated `docker` for the TensorDock emulator's VMs (copied into each VM's sandbox as
`bin/docker`; stdlib only, nothing from gpushop: it runs from its copy).

TensorDock rents VMs from OS images; a recipe made for container clouds pulls and runs its image
with docker there. This command does what such a recipe needs, in the VM's sandbox:

- `docker pull IMAGE`: takes the image's download time (its size over the VM's bandwidth, divided
  by the emulator's speed), prints docker's progress lines, records the image.
- `docker run [--rm] [-d] [--gpus all] [-v SRC:DST[:ro]]... [--mount type=bind,...]
  [-e K=V | -e K]... [--env-file F] [-w DIR] [--name N] [--entrypoint E] IMAGE [CMD...]`: pulls
  a missing image, then runs CMD (or the image's default) as a "container": its own mount
  namespace where the image's files are at /app (ostris/aitoolkit: /app/ai-toolkit, the simulated
  ai-toolkit), a fresh /root, and the volumes; its own environment (PATH, HOME=/root, the `-e`
  variables); nvidia-smi only with `--gpus`. Options docker accepts but that change nothing here
  (-p, --shm-size, --ipc, -i, -t, ...) are accepted and ignored. The exit status is CMD's.
- `docker images`, `docker ps [-a]`, `docker logs [-f] C`, `docker stop|kill C`, `docker rm [-f]
  C`, `docker --version`.

As with the real docker, a container outlives the `docker` command that started it (kill it with
`docker stop`/`docker kill`, or stop the VM). A container gets its own mount namespace from the
VM's init (sandbox_init.py), as dockerd would make it: the VM's processes have no capability to
make one. Where there is no init socket, containers run in the VM's namespace: the image's /app
files go to the VM's /app and volumes must name the same path on both sides.

Paths (inside the VM): the emulator's config and the images' files at `/.emulator/docker/`
(read-only), docker's own state (images, containers, volumes) under `/.emulator/state/docker/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VERSION = "Docker version 27.5.1, build 9f9e405"
LAYERS = 9
BOOL_FLAGS = {
    "--rm",
    "-d",
    "--detach",
    "-i",
    "--interactive",
    "-t",
    "--tty",
    "--privileged",
    "--init",
    "-P",
    "--publish-all",
    "--read-only",
}
VALUE_FLAGS = {
    "-v",
    "--volume",
    "-e",
    "--env",
    "--env-file",
    "-w",
    "--workdir",
    "--name",
    "--entrypoint",
    "--mount",
    "--gpus",
    "-p",
    "--publish",
    "--shm-size",
    "--ipc",
    "--network",
    "--net",
    "-u",
    "--user",
    "--restart",
    "--runtime",
    "-h",
    "--hostname",
    "-l",
    "--label",
    "--ulimit",
    "--cpus",
    "-m",
    "--memory",
    "--device",
    "--cap-add",
    "--cap-drop",
    "--security-opt",
    "--add-host",
    "--log-driver",
    "--log-opt",
    "--pull",
    "--platform",
    "--stop-timeout",
}
SHORT_BOOLS = set("dit")
SAFE_ROOTS = ("/workspace", "/app", "/root")  # mount points a container may create
STOP_TIMEOUT_S = 10.0


class DockerError(Exception):
    def __init__(self, message: str, code: int = 125) -> None:
        super().__init__(message)
        self.code = code


# -- the VM's docker state (under /.emulator/state/docker/) -----------------------------------
CONTROL_BIN = Path("/.emulator/bin")  # the VM's python, nvidia-smi...


def home() -> Path:
    return Path(os.environ.get("EMULATOR_DOCKER_HOME", "/.emulator/state/docker"))


def config() -> dict[str, Any]:
    path = Path(os.environ.get("EMULATOR_DOCKER_CONFIG", "/.emulator/docker/config.json"))
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    return data


def reference(image: str) -> tuple[str, str]:
    """`ostris/aitoolkit` -> ("ostris/aitoolkit", "latest"); the registry prefix dropped."""
    name, at, digest = image.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = "latest"
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    if at:
        tag = "@" + digest
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(prefix)
    return name.removeprefix("library/"), tag


def full_name(repo: str, tag: str) -> str:
    return f"{repo}{tag}" if tag.startswith("@") else f"{repo}:{tag}"


def image_facts(repo: str, tag: str) -> dict[str, Any]:
    """Size (GB), files, workdir, CUDA need and default command of an image."""
    cfg = config()
    sizes: dict[str, float] = cfg.get("sizes", {})
    best, gb = "", float(cfg.get("unknown_gb", 5.0))
    for known, size in sizes.items():
        if (repo == known or repo.startswith(known + "/")) and len(known) > len(best):
            best, gb = known, float(size)
    if "devel" in tag:
        gb *= float(cfg.get("devel_factor", 1.5))
    facts: dict[str, Any] = {
        "gb": gb,
        "app": None,
        "workdir": "/",
        "cuda": None,
        "cmd": ["/bin/sh"],
    }
    facts.update(cfg.get("images", {}).get(repo, {}))
    return facts


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Images:
    """images.json: {"repo:tag": {"id", "gb", "pulled"}} under a lock."""

    def __init__(self) -> None:
        home().mkdir(parents=True, exist_ok=True)
        self.path = home() / "images.json"
        self._lock = open(home() / "images.lock", "a")  # noqa: SIM115 - held for our life

    def __enter__(self) -> Images:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)

    def load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        return data

    def save(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


def pull(image: str, out: Any) -> None:
    """Download `image` (simulated time) unless present; docker's lines on `out`."""
    repo, tag = reference(image)
    name = full_name(repo, tag)
    cfg = config()
    speed = float(cfg.get("speed", 1.0)) or 1.0
    mbps = float(cfg.get("mbps", 1000.0)) or 1000.0
    facts = image_facts(repo, tag)
    with Images() as images:
        known = images.load()
        label = tag.removeprefix("@")
        print(f"{label}: Pulling from {repo}", file=out, flush=True)
        digest = "sha256:" + _digest("digest:" + name)
        if name in known:
            print(f"Digest: {digest}", file=out)
            print(f"Status: Image is up to date for {name}", file=out)
            print(f"docker.io/{name}", file=out, flush=True)
            return
        layers = [_digest(f"{name}:{k}")[:12] for k in range(LAYERS)]
        for layer in layers:
            print(f"{layer}: Pulling fs layer", file=out)
        out.flush()
        total = facts["gb"] * 8000.0 / mbps / speed
        for layer in layers:
            time.sleep(total / LAYERS)
            print(f"{layer}: Pull complete", file=out, flush=True)
        app = None
        if facts.get("layer"):  # the image's files, into docker's storage
            app = home() / "images" / _digest("image:" + name)[:16] / "app"
            shutil.rmtree(app, ignore_errors=True)
            shutil.copytree(facts["layer"], app, symlinks=True)
        known[name] = {
            "app": str(app) if app else None,
            "id": "sha256:" + _digest("image:" + name),
            "gb": round(facts["gb"], 2),
            "pulled": time.time(),
        }
        images.save(known)
    print(f"Digest: {digest}", file=out)
    print(f"Status: Downloaded newer image for {name}", file=out)
    print(f"docker.io/{name}", file=out, flush=True)


# -- run -----------------------------------------------------------------------------------------
def parse_run(args: list[str]) -> tuple[dict[str, Any], str, list[str]]:
    """(options, image, command) of `docker run` (docker stops parsing at the image)."""
    opts: dict[str, Any] = {"volumes": [], "mounts": [], "env": [], "env_files": []}
    flags: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, inline = arg.partition("=")
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 and not eq:
            if set(arg[1:]) <= SHORT_BOOLS:  # -it, -dit
                flags.update("-" + c for c in arg[1:])
                i += 1
                continue
            name, inline, eq = arg[:2], arg[2:], "="  # -eK=V, -v/a:/b
        if name in BOOL_FLAGS and not eq:
            flags.add(name)
            i += 1
            continue
        if name not in VALUE_FLAGS:
            raise DockerError(f"unknown flag: {name}\nSee 'docker run --help'.")
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(args):
                raise DockerError(f"flag needs an argument: {name}\nSee 'docker run --help'.")
            value = args[i + 1]
            i += 2
        key = {
            "-v": "volumes",
            "--volume": "volumes",
            "--mount": "mounts",
            "-e": "env",
            "--env": "env",
            "--env-file": "env_files",
        }.get(name)
        if key is not None:
            opts[key].append(value)
        else:
            opts[{"-w": "--workdir", "-h": "--hostname", "-u": "--user"}.get(name, name)] = value
    if i >= len(args):
        raise DockerError("\"docker run\" requires at least 1 argument.\nSee 'docker run --help'.")
    opts["flags"] = flags
    return opts, args[i], args[i + 1 :]


def _environment(opts: dict[str, Any], facts: dict[str, Any], gpus: bool) -> dict[str, str]:
    bin_dir = home() / ("bin-gpu" if gpus else "bin-cpu")
    env = {
        "PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",  # the container's own directory, in fact (exec_container)
        "LANG": "C.UTF-8",
    }
    for name in ("EMULATOR_SPEED", "EMULATOR_INET_DOWN", "TMPDIR"):
        if name in os.environ:
            env[name] = os.environ[name]
    if gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = "all"
    env.update(facts.get("env", {}))
    lines: list[str] = []
    for path in opts["env_files"]:
        try:
            lines += Path(path).read_text().splitlines()
        except OSError as exc:
            raise DockerError(f"open {path}: {exc.strerror}") from None
    lines += opts["env"]
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if eq:
            env[key] = value
        elif key in os.environ:  # -e NAME passes the VM's value on
            env[key] = os.environ[key]
    return env


def _volumes(opts: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, destination, read only) of every -v and --mount type=bind|volume."""
    out: list[tuple[str, str, bool]] = []
    for spec in opts["volumes"]:
        parts = spec.split(":")
        if len(parts) == 1:
            raise DockerError(
                f"invalid volume {spec}: anonymous volumes are not emulated; use SRC:DST"
            )
        src, dst = parts[0], parts[1]
        ro = len(parts) > 2 and "ro" in parts[2].split(",")
        out.append((src, dst, ro))
    for spec in opts["mounts"]:
        fields: dict[str, str] = {}
        for item in spec.split(","):
            key, eq, value = item.partition("=")
            fields[key] = value if eq else "true"
        src = fields.get("source", fields.get("src", ""))
        dst = fields.get("target", fields.get("destination", fields.get("dst", "")))
        if fields.get("type", "volume") not in ("bind", "volume") or not src or not dst:
            raise DockerError(f"invalid mount config: {spec}")
        out.append((src, dst, "readonly" in fields or fields.get("ro") == "true"))
    resolved = []
    for src, dst, ro in out:
        if not dst.startswith("/"):
            raise DockerError(f"invalid mount config: mount path must be absolute: {dst}")
        if not src.startswith(("/", ".", "~")):  # a named volume
            path = home() / "volumes" / src
            path.mkdir(parents=True, exist_ok=True)
            src = str(path)
        resolved.append((os.path.abspath(os.path.expanduser(src)), os.path.normpath(dst), ro))
    return resolved


def _gpu_facts() -> dict[str, Any] | None:
    """What the VM's nvidia-smi reports (None: a CPU-only VM)."""
    path = CONTROL_BIN / "nvidia-smi"
    try:
        for line in path.read_text().splitlines():
            if line.startswith("FACTS = "):
                facts: dict[str, Any] = json.loads(line.removeprefix("FACTS = "))
                return facts
    except (OSError, ValueError):
        return None
    return None


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (0,)


def _namespaces_work() -> bool:
    """Whether containers get their own mount namespace here: the VM's init makes them."""
    socket_path = config().get("containers")
    return bool(socket_path) and os.path.exists(str(socket_path))


def _container_bins() -> None:
    """bin-gpu (python + the VM's nvidia-smi) and bin-cpu (python only) for containers."""
    for name, with_gpu in (("bin-gpu", True), ("bin-cpu", False)):
        path = home() / name
        path.mkdir(parents=True, exist_ok=True)
        for tool in ("python", "python3"):
            src = CONTROL_BIN / tool
            if src.exists() and not (path / tool).exists():
                shutil.copyfile(src, path / tool)
                (path / tool).chmod(0o755)
        smi = path / "nvidia-smi"
        if with_gpu and not smi.exists():
            smi.symlink_to(CONTROL_BIN / "nvidia-smi")


def run(args: list[str]) -> int:
    opts, image, command = parse_run(args)
    flags: set[str] = opts["flags"]
    repo, tag = reference(image)
    name = full_name(repo, tag)
    if opts.get("--pull") == "always" or name not in Images().load():
        if opts.get("--pull") == "never":
            raise DockerError(f"Error response from daemon: No such image: {name}")
        if name not in Images().load():
            print(f"Unable to find image '{name}' locally", file=sys.stderr, flush=True)
        pull(image, sys.stderr)
    facts = image_facts(repo, tag)
    gpus = "--gpus" in opts
    gpu = _gpu_facts()
    if gpus and gpu is None:
        raise DockerError(
            'Error response from daemon: could not select device driver "" with capabilities: '
            "[[gpu]]"
        )
    need = facts.get("cuda")
    have = str(gpu.get("cuda_version", "0")) if gpu is not None else "0"
    if gpus and need and _version(have) < _version(str(need)):
        raise DockerError(
            "Error response from daemon: failed to create task for container: failed to "
            "create shim task: OCI runtime create failed: runc create failed: unable to "
            "start container process: error during container init: error running prestart "
            "hook #0: exit status 1, stdout: , stderr: Auto-detected mode as 'legacy'\n"
            f"nvidia-container-cli: requirement error: unsatisfied condition: "
            f"cuda>={facts['cuda']}, please update your driver to a newer version, or use an "
            "earlier cuda container: unknown"
        )
    _container_bins()
    cid = secrets.token_hex(32)
    cname = opts.get("--name") or f"emulated_{cid[:6]}"
    containers = home() / "containers"
    for other in containers.glob("*/meta.json") if containers.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(other.read_text()).get("name") == cname:
                raise DockerError(
                    f'Error response from daemon: Conflict. The container name "/{cname}" is '
                    "already in use"
                )
    cdir = containers / cid
    (cdir / "root").mkdir(parents=True)
    entry = [opts["--entrypoint"]] if opts.get("--entrypoint") else []
    argv = entry + command if (entry or command) else list(facts["cmd"])
    plan = {
        "id": cid,
        "name": cname,
        "image": name,
        "argv": argv,
        "env": _environment(opts, facts, gpus),
        "workdir": opts.get("--workdir") or facts["workdir"],
        "app": Images().load().get(name, {}).get("app"),
        "root": str(cdir / "root"),
        "volumes": _volumes(opts),
        "rm": "--rm" in flags,
        "detach": "-d" in flags or "--detach" in flags,
        "namespaces": _namespaces_work(),
    }
    (cdir / "plan.json").write_text(json.dumps(plan))
    _write_meta(cdir, {"state": "created", "created": time.time(), **_meta_of(plan)})
    me = [sys.executable, os.path.abspath(__file__)]
    if plan["detach"]:
        log = open(cdir / "container.log", "ab")  # noqa: SIM115 - handed to the child
        with log:
            subprocess.Popen(
                [*me, "__supervise", str(cdir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        # as dockerd, answer once the container has started (a `docker ps` right after lists it)
        deadline = time.monotonic() + 20
        while _read_meta(cdir).get("state") == "created" and time.monotonic() < deadline:
            time.sleep(0.01)
        print(cid, flush=True)
        return 0
    supervisor = subprocess.Popen([*me, "__supervise", str(cdir)], start_new_session=True)

    def forward(sig: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(supervisor.pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    return supervisor.wait()


def _meta_of(plan: dict[str, Any]) -> dict[str, Any]:
    return {"id": plan["id"], "name": plan["name"], "image": plan["image"], "argv": plan["argv"]}


def _write_meta(cdir: Path, meta: dict[str, Any]) -> None:
    tmp = cdir / "meta.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(cdir / "meta.json")


def _read_meta(cdir: Path) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = json.loads((cdir / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    return meta


def supervise(cdir: Path) -> int:
    """Run the container and record how it ended. The VM's init starts it (as dockerd would) in
    a new mount namespace, since making one takes capabilities the VM's processes lack; where
    there is no init socket, it runs in the VM's namespace."""
    plan = json.loads((cdir / "plan.json").read_text())
    container: list[int] = []

    def forward(sig: int, _frame: Any) -> None:  # a foreground `docker run` got a signal
        if container:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(container[0], sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    meta = _read_meta(cdir)
    socket_path = config().get("containers")
    if plan["namespaces"] and socket_path:
        code = _run_by_init(str(socket_path), cdir, meta, container)
    else:
        me = [sys.executable, os.path.abspath(__file__), "__exec", str(cdir / "plan.json")]
        child = subprocess.Popen(me, start_new_session=True)
        container.append(child.pid)
        _started(cdir, meta, child.pid)
        code = child.wait()
    if code < 0:
        code = 128 - code
    meta.update({"state": "exited", "exit_code": code, "finished": time.time()})
    _write_meta(cdir, meta)
    if plan["rm"]:
        shutil.rmtree(cdir, ignore_errors=True)
    return code


def _started(cdir: Path, meta: dict[str, Any], pid: int) -> None:
    meta.update({"state": "running", "pid": pid, "pgid": pid, "started": time.time()})
    _write_meta(cdir, meta)


def _run_by_init(path: str, cdir: Path, meta: dict[str, Any], container: list[int]) -> int:
    """Ask the VM's init for the container (our stdin, stdout and stderr are its); its exit
    code comes back on the same connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(path)
            request = json.dumps({"plan": str(cdir / "plan.json")}).encode()
            socket.send_fds(conn, [request], [0, 1, 2])
            stream = conn.makefile("r")
            first = stream.readline().split()
        except OSError as exc:
            print(f"docker: Error response from daemon: emulator: {exc}", file=sys.stderr)
            return 125
        if len(first) != 2 or first[0] != "pid":
            why = " ".join(first[1:]) or "no answer"
            print(f"docker: Error response from daemon: emulator: {why}", file=sys.stderr)
            return 125
        container.append(int(first[1]))
        _started(cdir, meta, int(first[1]))
        while True:
            try:
                last = stream.readline().split()
                break
            except InterruptedError:
                continue
    return int(last[1]) if len(last) == 2 and last[0] == "exit" else 137


def _mount(source_fd: int, dst: str, ro: bool) -> None:
    subprocess.run(
        ["mount", "--bind", f"/proc/self/fd/{source_fd}", dst],
        check=True,
        pass_fds=(source_fd,),
        capture_output=True,
    )
    if ro:
        subprocess.run(["mount", "-o", "remount,bind,ro", dst], check=True, capture_output=True)


def _mount_point(dst: str, allowed: tuple[str, ...]) -> None:
    if os.path.exists(dst):
        return
    if not any(dst == r or dst.startswith(r + "/") for r in allowed):
        raise DockerError(
            f"Error response from daemon: emulator: cannot create the mount point {dst} (only "
            "existing paths and paths under /workspace, /app or /root)"
        )
    os.makedirs(dst, exist_ok=True)


def _in_root(dst: str, root_dir: str) -> str:
    """A container path under /root lives in the container's home directory (the emulator's
    machine keeps its own tools under /root, so /root itself is never covered)."""
    if dst == "/root" or dst.startswith("/root/"):
        return root_dir + dst.removeprefix("/root")
    return dst


def exec_container(plan_path: Path) -> int:
    """Inside the container's namespace: mounts, then exec the command."""
    plan = json.loads(plan_path.read_text())
    root_dir = plan["root"]
    plan["env"]["HOME"] = root_dir
    volumes = [(src, _in_root(dst, root_dir), bool(ro)) for src, dst, ro in plan["volumes"]]
    volumes.sort(key=lambda v: v[1].rstrip("/").count("/"))  # parents first, as docker does
    allowed = ("/workspace", "/app", root_dir)
    try:
        if plan["namespaces"]:
            binds: list[tuple[str, str, bool]] = []
            if plan.get("app"):
                binds.append((plan["app"], "/app", False))
            fds = []
            for src, _, _ in binds + volumes:  # sources first: later binds may hide them
                if not os.path.exists(src):
                    if not any(src == r or src.startswith(r + "/") for r in allowed) and not (
                        src.startswith(str(home()))
                    ):
                        raise DockerError(
                            f"Error response from daemon: emulator: the host path {src} does not "
                            "exist"
                        )
                    os.makedirs(src, exist_ok=True)
                fds.append(os.open(src, os.O_PATH))
            for fd, (_, dst, ro) in zip(fds, binds + volumes, strict=True):
                _mount_point(dst, allowed)
                _mount(fd, dst, ro)
        else:
            if plan.get("app"):  # no namespace: the image's files land in the VM's /app
                for item in Path(plan["app"]).iterdir():
                    target = Path("/app") / item.name
                    if not target.exists():
                        shutil.copytree(item, target)
            for src, dst, _ in volumes:
                if os.path.realpath(src) != os.path.realpath(dst):
                    raise DockerError(
                        "Error response from daemon: emulator: without mount namespaces a volume "
                        f"must name the same path on both sides ({src}:{dst})"
                    )
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip() if exc.stderr else str(exc)
        print(f"docker: Error response from daemon: emulator: mount failed: {err}", file=sys.stderr)
        return 125
    except DockerError as exc:
        print(f"docker: {exc}", file=sys.stderr)
        return exc.code
    workdir = _in_root(plan["workdir"], root_dir)
    try:
        if workdir.startswith(
            (*SAFE_ROOTS, root_dir)
        ):  # docker creates a missing working directory
            os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
    except OSError:
        print(
            "docker: Error response from daemon: failed to create task for container: OCI runtime "
            f'create failed: chdir to cwd ("{workdir}") set in config.json failed: no such file '
            "or directory: unknown",
            file=sys.stderr,
        )
        return 126
    argv: list[str] = plan["argv"]
    env: dict[str, str] = plan["env"]
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env["PATH"])
    if program is None or not os.path.exists(program):
        print(
            "docker: Error response from daemon: failed to create task for container: failed to "
            "create shim task: OCI runtime create failed: runc create failed: unable to start "
            f'container process: exec: "{argv[0]}": executable file not found in $PATH: unknown.',
            file=sys.stderr,
        )
        return 127
    # the container gets no capability (the mounts above needed the VM's init's)
    setpriv = str(config().get("setpriv") or "setpriv")
    drop = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--"]
    os.execve(setpriv, [*drop, program, *argv[1:]], env)


# -- the other commands --------------------------------------------------------------------------
def _containers() -> list[tuple[Path, dict[str, Any]]]:
    base = home() / "containers"
    found = []
    for cdir in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime) if base.is_dir() else []:
        meta = _read_meta(cdir)
        if meta:
            if meta.get("state") == "running" and not _alive(int(meta.get("pid", 0))):
                meta["state"] = "exited"
                meta.setdefault("exit_code", 137)
            found.append((cdir, meta))
    return found


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _find(ref: str) -> tuple[Path, dict[str, Any]]:
    for cdir, meta in _containers():
        if meta.get("name") == ref or str(meta.get("id", "")).startswith(ref):
            return cdir, meta
    raise DockerError(f"Error response from daemon: No such container: {ref}", 1)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} seconds ago" if seconds >= 2 else "Less than a second ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} minutes ago"
    return f"{int(seconds // 3600)} hours ago"


def ps(args: list[str]) -> int:
    show_all = "-a" in args or "--all" in args
    quiet = "-q" in args or "--quiet" in args
    rows = []
    now = time.time()
    for _, meta in _containers():
        running = meta.get("state") == "running"
        if not running and not show_all:
            continue
        if quiet:
            print(str(meta["id"])[:12])
            continue
        status = (
            f"Up {_ago(now - meta.get('started', now)).removesuffix(' ago')}"
            if running
            else f"Exited ({meta.get('exit_code', 0)}) {_ago(now - meta.get('finished', now))}"
        )
        command = shlex.join(meta.get("argv", []))
        command = '"' + (command[:17] + "…" if len(command) > 20 else command) + '"'
        rows.append(
            [
                str(meta["id"])[:12],
                meta.get("image", ""),
                command,
                _ago(now - meta.get("created", now)),
                status,
                "",
                meta.get("name", ""),
            ]
        )
    if not quiet:
        _table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows)
    return 0


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        print("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def images(_args: list[str]) -> int:
    now = time.time()
    rows = []
    for name, info in Images().load().items():
        repo, _, tag = name.rpartition(":")
        rows.append(
            [
                repo,
                tag,
                info["id"].removeprefix("sha256:")[:12],
                _ago(now - info.get("pulled", now)),
                f"{info['gb']:.3g}GB",
            ]
        )
    _table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0


def stop(args: list[str], sig: int) -> int:
    refs = [a for a in args if not a.startswith("-")]
    if not refs:
        raise DockerError(f'"docker {"stop" if sig == signal.SIGTERM else "kill"}" requires at '
                          "least 1 argument.")  # fmt: skip
    speed = float(config().get("speed", 1.0)) or 1.0
    code = 0
    for ref in refs:
        try:
            cdir, meta = _find(ref)
        except DockerError as exc:
            print(exc, file=sys.stderr)
            code = 1
            continue
        pgid = int(meta.get("pgid", 0))
        if meta.get("state") == "running" and pgid > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            if sig == signal.SIGTERM:  # then SIGKILL after the grace, as docker does
                deadline = time.monotonic() + STOP_TIMEOUT_S / speed
                while _alive(int(meta.get("pid", 0))) and time.monotonic() < deadline:
                    time.sleep(0.02)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _read_meta(cdir).get("state") == "running" and time.monotonic() < deadline:
                time.sleep(0.02)
        print(ref)
    return code


def rm(args: list[str]) -> int:
    force = "-f" in args or "--force" in args
    code = 0
    for ref in [a for a in args if not a.startswith("-")]:
        try:
            cdir, meta = _find(ref)
        except DockerError as exc:
            print(exc, file=sys.stderr)
            code = 1
            continue
        if meta.get("state") == "running":
            if not force:
                print(
                    f'Error response from daemon: cannot remove container "/{meta["name"]}": '
                    "container is running: stop the container before removing or force remove",
                    file=sys.stderr,
                )
                code = 1
                continue
            stop([ref], signal.SIGKILL)
        shutil.rmtree(cdir, ignore_errors=True)
        print(ref)
    return code


def logs(args: list[str]) -> int:
    follow = "-f" in args or "--follow" in args
    refs = [a for a in args if not a.startswith("-")]
    if len(refs) != 1:
        raise DockerError('"docker logs" requires exactly 1 argument.')
    cdir, _ = _find(refs[0])
    path = cdir / "container.log"
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                continue
            if not follow or _read_meta(cdir).get("state") != "running":
                break
            time.sleep(0.05)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("Usage:  docker [OPTIONS] COMMAND\n\n(simulated by the gpushop emulator: pull, run, "
              "images, ps, logs, stop, kill, rm, version)")  # fmt: skip
        return 0
    command, args = argv[0], argv[1:]
    try:
        if command in ("-v", "--version"):
            print(VERSION)
            return 0
        if command == "version":
            print(f"Client:\n Version:           27.5.1\n\nServer:\n Engine:\n  Version:          "
                  f"27.5.1\n (simulated by the gpushop emulator; {VERSION})")  # fmt: skip
            return 0
        if command == "pull":
            refs = [a for a in args if not a.startswith("-")]
            if len(refs) != 1:
                raise DockerError('"docker pull" requires exactly 1 argument.', 1)
            pull(refs[0], sys.stdout)
            return 0
        if command == "run":
            return run(args)
        if command == "__supervise":
            return supervise(Path(args[0]))
        if command == "__exec":
            return exec_container(Path(args[0]))
        if command == "ps":
            return ps(args)
        if command == "images":
            return images(args)
        if command == "logs":
            return logs(args)
        if command == "stop":
            return stop(args, signal.SIGTERM)
        if command == "kill":
            return stop(args, signal.SIGKILL)
        if command == "rm":
            return rm(args)
    except DockerError as exc:
        print(f"docker: {exc}", file=sys.stderr)
        return exc.code
    print(
        f"docker: '{command}' is not a docker command (the gpushop emulator simulates pull, run, "
        "images, ps, logs, stop, kill, rm and version).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
