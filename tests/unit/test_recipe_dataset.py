"""The local dataset check that runs before anything is rented: real files in tmp_path, PNG and
JPEG bytes written by hand."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from gpushop.errors import UsageError
from gpushop.recipes.dataset import DatasetError, image_info, validate_dataset


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int = 4, height: int = 3) -> bytes:
    """A complete RGB PNG: signature, IHDR, IDAT (zlib rows), IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(
    width: int = 640,
    height: int = 480,
    *,
    sof: int = 0xC0,
    end: bool = True,
    thumbnail: bool = False,
    dht_first: bool = False,
) -> bytes:
    """A baseline (or ``sof``) JPEG's marker structure: SOI, APP0 JFIF, [APP1 with an embedded
    thumbnail], DQT, [DHT], SOFn, DHT, SOS, scan data with a stuffed 0xFF, [EOI]."""
    app0 = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    app1 = _segment(0xE1, b"Exif\x00\x00" + b"\xff\xd8\xff\xdb" + b"\x00" * 10 + b"\xff\xd9")
    dqt = _segment(0xDB, b"\x00" + bytes(range(1, 65)))
    # a DHT whose bytes would read as a 65535 x 65535 frame if taken for a SOF
    dht = _segment(0xC4, b"\x00\xff\xff\xff\xff" + b"\x01" * 12 + b"\x00" * 12)
    frame = _segment(
        sof,
        b"\x08" + struct.pack(">HH", height, width) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01",
    )
    sos = _segment(0xDA, b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00")
    scan = b"\x12\x34\xff\x00\x56" * 40
    parts = [b"\xff\xd8", app0]
    if thumbnail:
        parts.append(app1)
    parts.append(dqt)
    if dht_first:
        parts.append(dht)
    parts += [frame, dht, sos, scan]
    if end:
        parts.append(b"\xff\xd9")
    return b"".join(parts)


def make(folder: Path, files: dict[str, bytes | str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    return folder


def problems_of(path: Path) -> list[str]:
    with pytest.raises(DatasetError) as info:
        validate_dataset(path)
    return info.value.problems


# -- a good dataset ---------------------------------------------------------------------------


def test_a_good_dataset_reports_each_image_with_its_size_and_caption(tmp_path: Path) -> None:
    folder = make(
        tmp_path / "ds",
        {
            "a.png": png(1024, 768),
            "a.txt": "a photo of p3r5on\n",
            "b.jpg": jpeg(640, 480),
            "b.txt": "p3r5on at the beach",
            "c.JPEG": jpeg(2000, 3000, sof=0xC2),  # progressive, upper-case extension
            "c.txt": "p3r5on, portrait",
        },
    )
    ds = validate_dataset(folder)
    by_name = {i.name: i for i in ds.images}
    assert set(by_name) == {"a.png", "b.jpg", "c.JPEG"}
    assert (by_name["a.png"].format, by_name["a.png"].width, by_name["a.png"].height) == (
        "png",
        1024,
        768,
    )
    assert (by_name["b.jpg"].width, by_name["b.jpg"].height) == (640, 480)
    assert (by_name["c.JPEG"].width, by_name["c.JPEG"].height) == (2000, 3000)
    assert by_name["a.png"].caption == "a photo of p3r5on"
    on_disk = sum(p.stat().st_size for p in folder.iterdir())
    assert ds.total_bytes == on_disk
    assert ds.files() == ["a.png", "a.txt", "b.jpg", "b.txt", "c.JPEG", "c.txt"]
    assert ds.warnings == () and ds.notes == ()
    assert len(ds) == 3 and "3 images" in ds.summary()


def test_a_huffman_table_is_never_read_as_the_frame_size() -> None:
    assert image_info(jpeg(320, 200, dht_first=True)) == ("jpeg", 320, 200)
    assert image_info(jpeg(320, 200)) == ("jpeg", 320, 200)  # DHT after the frame


def test_data_after_the_end_marker_is_fine_as_in_motion_photos() -> None:
    assert image_info(jpeg(800, 600) + b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)[0] == "jpeg"


# -- one error listing every problem ------------------------------------------------------------


def test_every_problem_is_listed_in_one_error_one_line_each(tmp_path: Path) -> None:
    folder = make(
        tmp_path / "ds",
        {
            "ok.png": png(),
            "ok.txt": "fine",
            "nocap.jpg": jpeg(),
            "empty.png": b"",
            "empty.txt": "x",
            "cut_header.png": png()[:20],
            "cut_header.txt": "x",
            "cut_scan.jpg": jpeg(thumbnail=True, end=False),  # the thumbnail's EOI must not count
            "cut_scan.txt": "x",
            "cut_tail.png": png()[:-12],
            "cut_tail.txt": "x",
            "webp.jpg": b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40,
            "webp.txt": "x",
            "text.png": "this is not an image at all",
            "text.txt": "x",
            "upper.png": png(),
            "upper.TXT": "caption with the wrong extension case",
        },
    )
    with pytest.raises(DatasetError) as info:
        validate_dataset(folder)
    err = info.value
    assert isinstance(err, UsageError) and err.exit_code == 2  # the CLI exits 2
    lines = {p.split(":", 1)[0]: p for p in err.problems}
    assert set(lines) == {
        "nocap.jpg",
        "empty.png",
        "cut_header.png",
        "cut_scan.jpg",
        "cut_tail.png",
        "webp.jpg",
        "text.png",
        "upper.png",
    }
    assert "no caption (expected nocap.txt)" in lines["nocap.jpg"]
    assert "empty file (0 bytes)" in lines["empty.png"]
    assert "truncated PNG header" in lines["cut_header.png"]
    assert "truncated JPEG (no end-of-image marker)" in lines["cut_scan.jpg"]
    assert "truncated PNG (no IEND" in lines["cut_tail.png"]
    assert "looks like WEBP" in lines["webp.jpg"]
    assert "not a PNG or JPEG" in lines["text.png"]
    assert "found upper.TXT: rename it to upper.txt" in lines["upper.png"]
    message = str(err)
    assert message.startswith(f"dataset {folder}: 8 problems (nothing was rented")
    assert len(message.splitlines()) == 1 + 8  # the head, then one line per problem
    assert "ok.png" not in message


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "no images (jpg, jpeg, png) in the folder"),
        ({"a.webp": b"RIFF", "notes.md": "# hi"}, "no images (jpg, jpeg, png) in the folder"),
        ({"only.txt": "a caption"}, "no images (jpg, jpeg, png) in the folder"),
    ],
)
def test_a_folder_without_images_is_an_error(
    tmp_path: Path, files: dict[str, bytes | str], expected: str
) -> None:
    assert problems_of(make(tmp_path / "ds", files)) == [expected]


def test_a_missing_folder_and_a_file_are_errors(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope") == ["the folder does not exist"]
    file = tmp_path / "img.png"
    file.write_bytes(png())
    assert "not a folder" in problems_of(file)[0]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x89PNG\r\n\x1a\n" + _chunk(b"IDAT", b"x" * 13), "IHDR is not the first chunk"),
        (
            b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)),
            "0x5 pixels",
        ),
        (b"\xff\xd8\xff\xe0\x00", "truncated JPEG header"),
        (b"\xff\xd8" + _segment(0xDA, b"\x00" * 10) + b"\xff\xd9", "scan before any frame"),
        (b"\xff\xd8\xff\xe0\x00\x04ab\x12\x34" + b"\x00" * 20, "expected a marker"),
        (b"GIF89a" + b"\x00" * 20, "looks like GIF"),
        (b"\x00\x01", "only 2 bytes"),
    ],
)
def test_unreadable_headers_say_why(data: bytes, why: str) -> None:
    from gpushop.recipes.dataset import ImageFormatError

    with pytest.raises(ImageFormatError, match=why):
        image_info(data)


# -- warnings and notes: shown, not fatal -----------------------------------------------------


def test_orphan_and_empty_captions_and_a_lying_extension_are_warnings(tmp_path: Path) -> None:
    folder = make(
        tmp_path / "ds",
        {
            "a.png": png(),
            "a.txt": "  \n",
            "b.jpg": png(),  # a PNG named .jpg: PIL reads it anyway
            "b.txt": "b",
            "deleted.txt": "the image was removed",
        },
    )
    ds = validate_dataset(folder)
    assert len(ds) == 2
    text = "\n".join(ds.warnings)
    assert "a.txt: empty caption" in text
    assert "b.jpg: a PNG file with a .jpg extension" in text
    assert "deleted.txt: caption without an image (ignored)" in text
    assert "deleted.txt" not in ds.files()


def test_other_files_hidden_files_and_subfolders_are_ignored_and_not_uploaded(
    tmp_path: Path,
) -> None:
    folder = make(
        tmp_path / "ds",
        {
            "a.png": png(),
            "a.txt": "a",
            "README.md": "notes",
            "x.webp": b"RIFF",
            ".DS_Store": b"\x00",
            "._a.png": b"\x00\x05\x16\x07",  # macOS AppleDouble: not an image, never read
        },
    )
    make(folder / "more", {"c.png": png(), "c.txt": "c"})
    ds = validate_dataset(folder)
    assert ds.files() == ["a.png", "a.txt"]
    notes = "\n".join(ds.notes)
    assert "ignored 2 other file(s): README.md, x.webp" in notes
    assert "ignored 2 hidden file(s)" in notes
    assert "ignored 1 subfolder(s) (not read): more/" in notes
    assert set(ds.ignored) == {"README.md", "x.webp", ".DS_Store", "._a.png", "more/"}
