"""Where a service job's files live, so that any replica can finish and serve it: under
GPUSHOP_ARTIFACTS_DIR (a folder every replica mounts at the same path; default: the data dir)
``jobs/<id>/inputs`` (the uploaded archive, unpacked), ``stage`` (a recipe's upload) and
``artifacts`` (what the job's downloads brought back).

Archives are unpacked safely: tar (plain or gzip) or zip, told apart by their bytes; no
absolute paths, no ``..``, no links or devices, and no more than the unpacked-size limit."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from gpushop.config import Settings, data_dir
from gpushop.errors import NotFound, UsageError

UNPACK_FACTOR = 8  # an archive may unpack to this many times the upload limit (not a bomb)
MAX_MEMBERS = 100_000
HASH_CHUNK = 1024 * 1024


class ArchiveError(UsageError):
    """The uploaded archive cannot be used (the message says why)."""


def root(cfg: Settings) -> Path:
    return Path(cfg.gpushop_artifacts_dir or data_dir()).expanduser()


def job_root(cfg: Settings, job_id: str) -> Path:
    return root(cfg) / "jobs" / job_id


def inputs_dir(cfg: Settings, job_id: str) -> Path:
    return job_root(cfg, job_id) / "inputs"


def outputs_dir(cfg: Settings, job_id: str) -> Path:
    return job_root(cfg, job_id) / "artifacts"


def incoming(cfg: Settings) -> Path:
    """A fresh folder for an upload not yet a job's (renamed to the job's folder once it is):
    on the same file system, so that the rename is instant."""
    path = root(cfg) / "incoming" / secrets.token_hex(8)
    path.mkdir(parents=True)
    return path


def dataset_in(unpacked: Path) -> Path:
    """The folder of images in an unpacked dataset archive: its root, or the one folder it
    holds (an archive of ``mydata/``)."""
    entries = [p for p in unpacked.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return unpacked


# -- unpacking -----------------------------------------------------------------------------------
def unpack(archive: Path, into: Path, max_bytes: int) -> int:
    """Unpack ``archive`` (tar, tar.gz or zip) into ``into``; the number of files."""
    into.mkdir(parents=True, exist_ok=True)
    with archive.open("rb") as f:
        head = f.read(4)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _unzip(archive, into, max_bytes)
    try:
        with tarfile.open(archive, "r:*") as tar:
            return _untar(tar, into, max_bytes)
    except tarfile.ReadError:
        raise ArchiveError("the upload is not a tar, tar.gz or zip archive") from None
    except (EOFError, OSError) as exc:
        raise ArchiveError(f"the archive is damaged: {exc}") from None


def _untar(tar: tarfile.TarFile, into: Path, max_bytes: int) -> int:
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        if len(members) >= MAX_MEMBERS:
            raise ArchiveError(f"the archive holds more than {MAX_MEMBERS} entries")
        if not (member.isfile() or member.isdir()):
            raise ArchiveError(f"{member.name}: only files and folders (no links or devices)")
        _check_name(member.name)
        total += member.size
        if total > max_bytes:
            raise ArchiveError(f"the archive unpacks to more than {max_bytes} bytes")
        members.append(member)
    try:
        tar.extractall(into, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise ArchiveError(str(exc)) from None
    return sum(1 for m in members if m.isfile())


def _unzip(archive: Path, into: Path, max_bytes: int) -> int:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ArchiveError(f"the archive holds more than {MAX_MEMBERS} entries")
            if sum(i.file_size for i in infos) > max_bytes:
                raise ArchiveError(f"the archive unpacks to more than {max_bytes} bytes")
            count = 0
            for info in infos:
                _check_name(info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ArchiveError(f"{info.filename}: only files and folders (no links)")
                target = into / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    _copy_capped(src, dst, info.file_size)
                count += 1
            return count
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"the archive is damaged: {exc}") from None


def _copy_capped(src: IO[bytes], dst: IO[bytes], declared: int) -> None:
    """A zip entry whose data is longer than its header says is refused (a crafted bomb)."""
    written = 0
    while chunk := src.read(HASH_CHUNK):
        written += len(chunk)
        if written > declared:
            raise ArchiveError("an archive entry is larger than its header says")
        dst.write(chunk)


def _check_name(name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or "\x00" in name:
        raise ArchiveError(f"{name}: paths in the archive must stay inside it")


# -- serving -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the job's artifacts folder, with /
    size: int
    sha256: str

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


class Digests:
    """sha256 of artifacts, computed once per (path, size, mtime): listing a job's LoRAs twice
    does not read gigabytes twice."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def of(self, path: Path) -> tuple[int, str]:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            found = self._known.get(key)
        if found is None:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(HASH_CHUNK):
                    digest.update(chunk)
            found = digest.hexdigest()
            with self._lock:
                self._known[key] = found
        return stat.st_size, found


def listing(folder: Path, digests: Digests) -> list[Artifact]:
    """Every regular file under ``folder`` (no links followed), sorted by path."""
    found: list[Artifact] = []
    if not folder.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file() or name.startswith(".gpushop"):
                continue
            size, sha = digests.of(path)
            found.append(Artifact(path.relative_to(folder).as_posix(), size, sha))
    return found


def resolve(folder: Path, relative: str) -> Path:
    """The artifact ``relative`` names, inside ``folder`` (NotFound otherwise, also for a path
    that tries to leave it)."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or "\x00" in relative:
        raise NotFound(f"no artifact {relative!r}")
    path = folder.joinpath(*parts)
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"no artifact {relative!r}") from None
    if not real.is_relative_to(folder.resolve()) or not real.is_file() or path.is_symlink():
        raise NotFound(f"no artifact {relative!r}")
    return real


def remove(cfg: Settings, job_id: str) -> None:
    shutil.rmtree(job_root(cfg, job_id), ignore_errors=True)
