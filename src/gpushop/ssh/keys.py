"""The key pair gpushop uses to reach instances.

``VASTAI_SSH_KEY_PATH`` names a private key (its ``.pub`` beside it). Without it, gpushop makes a
dedicated ed25519 pair once, under the user data dir, readable by the user only (0600). The private
key never leaves this machine: only the public key is registered with providers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from gpushop.errors import ConfigError

KEY_NAME = "gpushop_ed25519"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_key: str  # "ssh-ed25519 AAAA... comment"

    def load_private(self) -> asyncssh.SSHKey:
        try:
            return asyncssh.read_private_key(self.private_path)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ConfigError(f"cannot read the SSH key {self.private_path}: {exc}") from None


def load_or_create(configured: Path | None, data_dir: Path) -> KeyPair:
    if configured is not None:
        path = configured.expanduser()
        if not path.exists():
            raise ConfigError(f"VASTAI_SSH_KEY_PATH: {path} does not exist")
        pub = path.with_name(path.name + ".pub")
        if pub.exists():
            return KeyPair(path, pub.read_text().strip())
        try:
            key = asyncssh.read_private_key(path)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ConfigError(f"VASTAI_SSH_KEY_PATH: cannot read {path}: {exc}") from None
        return KeyPair(path, key.export_public_key().decode().strip())
    directory = data_dir / "ssh"
    path = directory / KEY_NAME
    pub = directory / (KEY_NAME + ".pub")
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="gpushop")
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key())
        os.replace(tmp, path)
        pub.write_text(key.export_public_key().decode())
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return KeyPair(path, pub.read_text().strip())
