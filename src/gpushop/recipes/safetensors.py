"""Checking a ``.safetensors`` file without the ``safetensors`` package (to verify a LoRA that
was just downloaded: a cut-off or garbled transfer must not pass for a result).

The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (may be padded with
spaces), then the tensor data. The JSON maps tensor names to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the data, after the header) and may hold a
``__metadata__`` object of string to string. Like the reference implementation, ``read_header``
requires every tensor's byte length to match its dtype and shape, the tensors to tile the data
exactly (no gaps, no overlaps), and the data to end exactly at the end of the file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushop.errors import GpushopError

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit

# dtype -> bits per element
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "I64": 64,
    "U64": 64,
    "F64": 64,
}


class SafetensorsError(GpushopError):
    """The file is not a valid safetensors file (truncated, corrupt, or something else)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets in the data section
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class SafetensorsInfo:
    path: str
    file_size: int
    header_size: int  # N, the JSON's length
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]

    @property
    def data_size(self) -> int:
        return self.file_size - 8 - self.header_size

    @property
    def parameter_count(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    def lora_ranks(self) -> set[int]:
        """The ranks of the LoRA down/A matrices (shape [rank, in]): ``{16}`` for a rank-16 LoRA,
        empty when the file holds no LoRA weights."""
        ranks = set()
        for t in self.tensors.values():
            name = t.name.lower()
            if (".lora_a." in name or ".lora_down." in name) and len(t.shape) >= 2:
                ranks.add(t.shape[0])
        return ranks


def _fail(path: str, why: str) -> SafetensorsError:
    return SafetensorsError(f"{path}: not a valid safetensors file: {why}")


def parse_header(head: bytes, file_size: int, path: str = "<bytes>") -> SafetensorsInfo:
    """Validate a header given its first bytes (at least 8 + N) and the whole file's size."""
    if file_size < 8 or len(head) < 8:
        raise _fail(path, f"only {file_size} bytes")
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2:
        raise _fail(path, "empty header")
    if n > MAX_HEADER_BYTES:
        raise _fail(path, f"header length {n} is too large")
    if 8 + n > file_size:
        raise _fail(path, f"header of {n} bytes runs past the end of the {file_size}-byte file")
    if len(head) < 8 + n:
        raise _fail(path, "header is truncated")
    raw = head[8 : 8 + n]
    if raw[:1] != b"{":
        raise _fail(path, "header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    metadata = _metadata(header.pop("__metadata__", None), path)
    data_size = file_size - 8 - n
    tensors = {name: _tensor(name, entry, path) for name, entry in header.items()}
    pos = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != pos:
            why = "overlaps another" if t.begin < pos else f"leaves a gap at byte {pos}"
            raise _fail(path, f"tensor {t.name!r} {why}")
        pos = t.end
    if pos != data_size:
        if pos > data_size:
            raise _fail(path, f"truncated: the tensors need {pos} bytes of data, {data_size} left")
        raise _fail(path, f"{data_size - pos} bytes after the last tensor")
    return SafetensorsInfo(path, file_size, n, tensors, metadata)


def _metadata(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(path, "__metadata__ must map strings to strings")
    return dict(value)


def _tensor(name: str, entry: Any, path: str) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _fail(path, f"tensor {name!r} is not an object")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise _fail(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _fail(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _fail(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    bits = math.prod(shape) * DTYPE_BITS[str(dtype)]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise _fail(
            path,
            f"tensor {name!r}: {dtype} {shape} needs {bits / 8:g} bytes, "
            f"data_offsets give {offsets[1] - offsets[0]}",
        )
    return TensorInfo(name, str(dtype), tuple(shape), offsets[0], offsets[1])


def read_header(path: Path | str) -> SafetensorsInfo:
    """The validated header of the file at ``path`` (reads the header only, not the data)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            first = f.read(8)
            if len(first) == 8:
                (n,) = struct.unpack("<Q", first)
                if 2 <= n <= MAX_HEADER_BYTES and 8 + n <= size:
                    first += f.read(n)
    except OSError as exc:
        raise SafetensorsError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    return parse_header(first, size, str(p))


def verify_lora(path: Path | str, rank: int | None = None) -> SafetensorsInfo:
    """``read_header`` plus: the file holds tensors, and LoRA weights of ``rank`` when given."""
    info = read_header(path)
    if not info.tensors:
        raise SafetensorsError(f"{info.path}: holds no tensors")
    if rank is not None:
        ranks = info.lora_ranks()
        if ranks and ranks != {rank}:
            found = ", ".join(str(r) for r in sorted(ranks))
            raise SafetensorsError(f"{info.path}: LoRA rank {found}, expected {rank}")
    return info
