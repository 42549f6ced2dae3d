"""Verifying a downloaded LoRA by its safetensors header, without the safetensors package."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from gpushop.recipes.safetensors import SafetensorsError, read_header, verify_lora

BYTES = {"F16": 2, "BF16": 2, "F32": 4, "I64": 8, "U8": 1}


def build(
    tensors: dict[str, tuple[str, list[int]]],
    metadata: dict[str, Any] | None = None,
    *,
    pad: int = 0,
) -> tuple[bytes, dict[str, Any]]:
    """A well-formed file: tensors laid out back to back in the given order."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    pos = 0
    for name, (dtype, shape) in tensors.items():
        size = BYTES[dtype]
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    return encode(header, pos, pad=pad), header


def encode(header: dict[str, Any], data_size: int, *, pad: int = 0) -> bytes:
    raw = json.dumps(header).encode() + b" " * pad
    return (
        struct.pack("<Q", len(raw))
        + raw
        + bytes(range(256)) * (data_size // 256)
        + bytes(data_size % 256)
    )


def lora(rank: int = 16) -> dict[str, tuple[str, list[int]]]:
    return {
        "transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight": ("F16", [rank, 64]),
        "transformer.single_transformer_blocks.0.attn.to_k.lora_B.weight": ("F16", [64, rank]),
        "transformer.transformer_blocks.0.ff.net.0.proj.lora_A.weight": ("F16", [rank, 32]),
        "transformer.transformer_blocks.0.ff.net.0.proj.lora_B.weight": ("F16", [128, rank]),
    }


def write(tmp_path: Path, data: bytes, name: str = "me.safetensors") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_valid_lora_reads_with_its_tensors_metadata_and_rank(tmp_path: Path) -> None:
    data, _ = build(lora(16), {"format": "pt", "name": "me", "version": "1.0"}, pad=6)
    info = verify_lora(write(tmp_path, data), rank=16)
    assert info.file_size == len(data)
    assert len(info.tensors) == 4
    assert info.metadata == {"format": "pt", "name": "me", "version": "1.0"}
    assert info.lora_ranks() == {16}
    a = info.tensors["transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight"]
    assert (a.dtype, a.shape, a.nbytes) == ("F16", (16, 64), 16 * 64 * 2)
    assert info.parameter_count == 16 * 64 + 64 * 16 + 16 * 32 + 128 * 16
    assert info.data_size == sum(t.nbytes for t in info.tensors.values())


def test_a_cut_off_download_is_refused(tmp_path: Path) -> None:
    data, _ = build(lora())
    with pytest.raises(SafetensorsError, match="truncated: the tensors need"):
        read_header(write(tmp_path, data[:-100]))
    with pytest.raises(SafetensorsError, match="runs past the end"):
        read_header(write(tmp_path, data[:40]))
    with pytest.raises(SafetensorsError, match="only 5 bytes"):
        read_header(write(tmp_path, data[:5]))


def test_trailing_bytes_are_refused(tmp_path: Path) -> None:
    data, _ = build(lora())
    with pytest.raises(SafetensorsError, match="10 bytes after the last tensor"):
        read_header(write(tmp_path, data + bytes(10)))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda h, k: h[k].update(dtype="F99"), "unknown dtype 'F99'"),
        (lambda h, k: h[k].update(shape=[16, -1]), "invalid shape"),
        (lambda h, k: h[k].update(data_offsets=[0]), "invalid data_offsets"),
        (lambda h, k: h[k].update(data_offsets=[10, 5]), "invalid data_offsets"),
        (lambda h, k: h[k].update(shape=[16, 65]), "needs 2080 bytes, data_offsets give 2048"),
        (lambda h, k: h[k].update(dtype="F32"), "F32 .* needs 4096 bytes"),
        (lambda h, k: h.update({"__metadata__": {"steps": 2000}}), "__metadata__ must map"),
        (lambda h, k: h.update({"x": "not an object"}), "'x' is not an object"),
    ],
)
def test_inconsistent_headers_are_refused(tmp_path: Path, change: Any, why: str) -> None:
    _, header = build(lora())
    data_size = max(e["data_offsets"][1] for e in header.values() if "data_offsets" in e)
    first = next(iter(header))
    change(header, first)
    with pytest.raises(SafetensorsError, match=why):
        read_header(write(tmp_path, encode(header, data_size)))


def test_gaps_and_overlaps_between_tensors_are_refused(tmp_path: Path) -> None:
    gap = {
        "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
        "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]},
    }
    with pytest.raises(SafetensorsError, match="'b' leaves a gap at byte 4"):
        read_header(write(tmp_path, encode(gap, 12)))
    overlap = {
        "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
        "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
    }
    with pytest.raises(SafetensorsError, match="overlaps another"):
        read_header(write(tmp_path, encode(overlap, 6)))


def test_not_json_or_not_a_safetensors_file_at_all(tmp_path: Path) -> None:
    with pytest.raises(SafetensorsError, match="not valid JSON"):
        read_header(write(tmp_path, struct.pack("<Q", 6) + b"{nope}"))
    with pytest.raises(SafetensorsError, match="not a JSON object"):
        read_header(write(tmp_path, struct.pack("<Q", 2) + b"[]"))
    html = b"<html><body>502 Bad Gateway</body></html>" + b" " * 40
    with pytest.raises(SafetensorsError, match=r"too large|runs past the end"):
        read_header(write(tmp_path, html))
    with pytest.raises(SafetensorsError, match="cannot be read"):
        read_header(tmp_path / "missing.safetensors")


def test_verify_lora_checks_the_rank_and_that_there_is_something_in_it(tmp_path: Path) -> None:
    data, _ = build(lora(8))
    with pytest.raises(SafetensorsError, match="LoRA rank 8, expected 16"):
        verify_lora(write(tmp_path, data), rank=16)
    empty, _ = build({})
    with pytest.raises(SafetensorsError, match="holds no tensors"):
        verify_lora(write(tmp_path, empty, "empty.safetensors"))


def test_the_error_is_a_failed_operation_not_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SafetensorsError) as info:
        read_header(write(tmp_path, b"\x00" * 3))
    assert info.value.exit_code == 1
    assert str(info.value).startswith(f"{tmp_path / 'me.safetensors'}: not a valid safetensors")
