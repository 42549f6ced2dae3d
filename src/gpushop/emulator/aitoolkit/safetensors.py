"""Valid safetensors files: an 8-byte little-endian header length, a JSON header (each tensor's
dtype, shape and data_offsets, plus `__metadata__` with string values), then the tensor bytes.
ai-toolkit keeps its resume point in the metadata: `training_info` = {"step": N, "epoch": E}."""

from __future__ import annotations

import json
import random
import struct
import sys
from array import array
from pathlib import Path
from typing import Any

Tensor = tuple[str, list[int], bytes]  # dtype, shape, little-endian data
MAX_HEADER = 100_000_000  # what the safetensors library accepts
_BAD_HEADER = "Error while deserializing header"


class SafetensorError(ValueError):
    """Raised like safetensors_rust.SafetensorError."""


def encode(values: list[float], dtype: str) -> bytes:
    if dtype == "F16":
        return struct.pack(f"<{len(values)}e", *values)
    f32 = array("f", values)
    if sys.byteorder != "little":
        f32.byteswap()
    if dtype == "F32":
        return f32.tobytes()
    words = array("I", f32.tobytes())  # bf16 = the high half of the float32 bits
    if sys.byteorder != "little":
        words.byteswap()
    halves = array("H", (w >> 16 for w in words))
    if sys.byteorder != "little":
        halves.byteswap()
    return halves.tobytes()


def write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes with spaces
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, data in tensors.values():
            f.write(data)


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header; SafetensorError for a truncated or corrupt file."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorError(f"{_BAD_HEADER}: HeaderTooSmall")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER:
            raise SafetensorError(f"{_BAD_HEADER}: HeaderTooLarge")
        raw = f.read(length)
        body = len(f.read())
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorError(f"{_BAD_HEADER}: InvalidHeaderDeserialization") from None
    if not isinstance(header, dict):
        raise SafetensorError(f"{_BAD_HEADER}: InvalidHeaderDeserialization")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if body < end:
        raise SafetensorError(f"{_BAD_HEADER}: MetadataIncompleteBuffer")
    return header


def lora_tensors(
    network_type: str, rank: int, dtype: str, width: int, seed: int
) -> dict[str, Tensor]:
    """A few LoRA-shaped tensors (names as diffusers' FLUX LoRAs), small random weights."""
    rng = random.Random(seed)
    blocks = (
        "transformer.single_transformer_blocks.0.attn.to_q",
        "transformer.transformer_blocks.0.attn.to_k",
    )
    out: dict[str, Tensor] = {}
    for block in blocks:
        if network_type == "lokr":
            factor = max(1, width // max(rank, 1))
            shapes = {"lokr_w1": [rank, rank], "lokr_w2": [factor, factor]}
        else:
            shapes = {"lora_A.weight": [rank, width], "lora_B.weight": [width, rank]}
        for suffix, shape in shapes.items():
            count = shape[0] * shape[1]
            values = [rng.uniform(-0.02, 0.02) for _ in range(count)]
            out[f"{block}.{suffix}"] = (dtype, shape, encode(values, dtype))
    return out
