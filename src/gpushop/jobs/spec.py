"""What a job is, as stored: plain JSON, no secrets.

Environment values that look like credentials (a name such as ``HF_TOKEN``, or a value such as
``hf_...`` or a URL with a password) are stored by NAME only and read from the local environment
each time the job is launched, so a resumed job can launch again but the store never holds the
value.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from gpushop.config import looks_like_credential, names_a_secret
from gpushop.errors import UsageError

JOB_ROOT = "/workspace/.gpushop/jobs"
DEFAULT_WORKDIR = "/workspace"
DEFAULT_SYNC_EVERY_S = 600.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Transfer:
    """``local`` <-> ``remote`` (an absolute path on the instance)."""

    local: str
    remote: str


@dataclass
class JobSpec:
    command: str
    uploads: list[Transfer] = field(default_factory=list)
    downloads: list[Transfer] = field(default_factory=list)
    workdir: str = DEFAULT_WORKDIR
    env: dict[str, str] = field(default_factory=dict)  # plain values, stored
    env_from_local: list[str] = field(default_factory=list)  # names; values read at launch
    timeout_s: float | None = None
    sync_every_s: float | None = DEFAULT_SYNC_EVERY_S
    resume_on_loss: int = 0  # how many times a lost rental is replaced and the job resumed
    offer: dict[str, Any] = field(default_factory=dict)  # the offer flags (jobs/offer_flags)
    image: str | None = None
    template_hash: str | None = None
    max_duration_s: float = 4 * 3600.0
    recipe: dict[str, Any] = field(default_factory=dict)  # recipe-specific facts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        data = dict(data)
        data["uploads"] = [Transfer(**t) for t in data.get("uploads", [])]
        data["downloads"] = [Transfer(**t) for t in data.get("downloads", [])]
        return cls(**data)

    def remote_dir(self, job_id: str) -> str:
        return f"{JOB_ROOT}/{job_id}"


def parse_upload(text: str, default_root: str = DEFAULT_WORKDIR) -> Transfer:
    """``DIR[:REMOTE]``: REMOTE defaults to ``<workdir>/<basename of DIR>``."""
    local, _, remote = text.partition(":")
    if not local:
        raise UsageError(f"--upload {text!r}: use DIR[:REMOTE]")
    if not os.path.exists(local):
        raise UsageError(f"--upload {local}: no such file or directory")
    name = os.path.basename(os.path.normpath(local))
    remote = remote or f"{default_root}/{name}"
    return Transfer(local=os.path.abspath(local), remote=_absolute(remote, default_root, text))


def parse_download(text: str, default_root: str = DEFAULT_WORKDIR) -> Transfer:
    """``REMOTE[:LOCAL]``: LOCAL defaults to ``./<basename of REMOTE>``."""
    remote, _, local = text.partition(":")
    if not remote:
        raise UsageError(f"--download {text!r}: use REMOTE[:LOCAL]")
    remote = _absolute(remote, default_root, text)
    local = local or os.path.basename(remote.rstrip("/")) or "download"
    return Transfer(local=os.path.abspath(local), remote=remote)


def _absolute(path: str, root: str, original: str) -> str:
    if ".." in path.split("/"):
        raise UsageError(f"{original!r}: '..' is not allowed in remote paths")
    return path if path.startswith("/") else f"{root.rstrip('/')}/{path}"


def parse_env(items: list[str]) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """``--env K=V`` / ``--env K`` -> (stored values, names read locally, secret values given
    on the command line, which are used for this launch and never stored)."""
    plain: dict[str, str] = {}
    names: list[str] = []
    secret: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not _ENV_NAME.fullmatch(key):
            raise UsageError(f"--env {item!r}: use KEY=VALUE or KEY (taken from your environment)")
        if not sep:
            if key not in os.environ:
                raise UsageError(f"--env {key}: not set in your environment")
            names.append(key)
        elif names_a_secret(key) or looks_like_credential(value):
            # by its name (HF_TOKEN) or by its value (hf_..., a URL with a password): either
            # way it goes over SSH at launch and is stored by name only
            secret[key] = value
            names.append(key)
        else:
            plain[key] = value
    return plain, names, secret


def launch_env(
    spec: JobSpec, given: dict[str, str] | None = None, *, local_env: bool = True
) -> dict[str, str]:
    """The environment of one launch: stored values, then secrets from ``given`` or (unless
    ``local_env`` is False: the service never lends its own) the local environment. A missing
    secret is a usage error naming it (never its value)."""
    env = dict(spec.env)
    for name in spec.env_from_local:
        value = (given or {}).get(name, os.environ.get(name) if local_env else None)
        if value is None:
            raise UsageError(f"{name} must be set in your environment to launch this job")
        env[name] = value
    return env
