"""cloud-init's first boot, run INSIDE a TensorDock VM's sandbox (stdlib only; the emulator
copies it into the VM's `/.emulator/bin/` and runs it once, at first boot).

It reads the create call's `cloud_init` from `/.emulator/cloud-init.json`, then does what
cloud-init's config and final stages do with it: `write_files` (paths as the VM sees them),
`runcmd` as one script (as cloud-init's scripts_user does), output to
/var/log/cloud-init-output.log, and /var/lib/cloud/instance/boot-finished. Packages are not
installed (the host's tools are on PATH). The outcome goes to
`/.emulator/state/cloud-init-result.json`, where `cloud-init status` and the emulator read it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

SPEC = Path("/.emulator/cloud-init.json")
RESULT = Path("/.emulator/state/cloud-init-result.json")
LOG = Path("/var/log/cloud-init-output.log")
BOOT_FINISHED = Path("/var/lib/cloud/instance/boot-finished")
RUNCMD = Path("/var/lib/cloud/instance/scripts/runcmd")


def stamp() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())


def write_files(spec: dict[str, object], log: list[str]) -> list[str]:
    errors: list[str] = []
    entries = spec.get("write_files") or []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        path = str(entry.get("path", ""))
        if not path.startswith("/"):
            path = "/" + path
        content = str(entry.get("content", ""))
        data = content.encode()
        if entry.get("encoding") in ("b64", "base64"):
            data = base64.b64decode(content)
        try:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            with contextlib.suppress(ValueError, OSError):
                target.chmod(int(str(entry.get("permissions", "0644")), 8))
        except OSError as exc:
            errors.append(f"write_files: {path}: {exc.strerror}")
    for flag in ("package_update", "package_upgrade"):
        if spec.get(flag):
            log.append(f"emulator: {flag} skipped (nothing is installed here)")
    packages = spec.get("packages")
    if isinstance(packages, list) and packages:
        names = " ".join(str(p) for p in packages)
        log.append(f"emulator: packages not installed (the host's tools are on PATH): {names}")
    return errors


def runcmd(spec: dict[str, object]) -> list[str]:
    commands = spec.get("runcmd") or []
    if not isinstance(commands, list) or not commands:
        return []
    lines = [c if isinstance(c, str) else shlex.join(str(x) for x in c) for c in commands]
    RUNCMD.parent.mkdir(parents=True, exist_ok=True)
    RUNCMD.write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")
    with LOG.open("ab") as out:
        code = subprocess.call(["/bin/sh", str(RUNCMD)], stdin=subprocess.DEVNULL, stdout=out,
                               stderr=out)  # fmt: skip
    return [f"runcmd exited with status {code}"] if code != 0 else []


def main() -> int:
    try:
        spec = json.loads(SPEC.read_text())
    except (OSError, ValueError):
        spec = {}
    LOG.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"Cloud-init v. 24.4.1 running 'modules:config' at {stamp()}."]
    errors = write_files(spec if isinstance(spec, dict) else {}, lines)
    with LOG.open("a") as out:
        out.write("\n".join(lines) + "\n")
    errors += runcmd(spec if isinstance(spec, dict) else {})
    with LOG.open("a") as out:
        out.write(
            f"Cloud-init v. 24.4.1 finished at {stamp()}. Datasource DataSourceNoCloud.  "
            "Up 12.00 seconds\n"
        )
    BOOT_FINISHED.parent.mkdir(parents=True, exist_ok=True)
    BOOT_FINISHED.write_text(f"{time.time()}\n")
    result = {"status": "error" if errors else "done", "errors": errors}
    tmp = RESULT.with_name(RESULT.name + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, RESULT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
