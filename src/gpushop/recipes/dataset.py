"""Checking a local image-caption dataset before anything is rented.

ai-toolkit reads a flat folder of ``jpg`` / ``jpeg`` / ``png`` images, each with a same-named
``.txt`` caption (``cat.jpg`` + ``cat.txt``). A bad file there costs a rented GPU the time to
find out, so every problem is found here, locally, and reported in ONE error, one line each:

errors (``DatasetError``, exit 2, nothing is rented)
    the folder is missing, is not a folder, or holds no image; an image without its caption
    (a ``.TXT`` in the wrong case is named, since Linux will not find it); an empty (0-byte)
    image; an image that is not a PNG or JPEG inside (WebP, HEIC... renamed), or whose header is
    truncated or corrupt, or whose data stops before its end marker (a partial download).
warnings (``Dataset.warnings``: shown, not fatal)
    a caption without an image: ai-toolkit never reads it, so it is harmless (usually the
    leftover of a deleted image); an empty caption: that image trains on the trigger word alone;
    an image whose extension lies about its format (PIL reads it anyway).
notes (``Dataset.notes``)
    ignored entries: other file types, hidden files (``.DS_Store``, macOS ``._x.jpg``) and
    subfolders, which ai-toolkit does not read either. Only ``Dataset.files()`` is uploaded.

Images are parsed by hand (PNG ``IHDR``, JPEG ``SOFn`` markers): no Pillow, and only the header
and the end marker are checked, not every pixel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from gpushop.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CAPTION_EXT = ".txt"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"  # chunk type + its fixed CRC
_TAIL_BYTES = 64 * 1024  # PNG: where the IEND chunk is looked for
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


class DatasetError(UsageError):
    """The dataset cannot be trained on; ``problems`` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        count = len(problems)
        head = f"dataset {self.path}: {count} problem{'s' if count != 1 else ''}"
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{head} (nothing was rented; fix and run again):\n{lines}")


class ImageFormatError(ValueError):
    """An image's bytes are not a readable PNG or JPEG (the message says why)."""


@dataclass(frozen=True, slots=True)
class ImageFile:
    name: str  # file name inside the dataset folder
    format: str  # "png" or "jpeg", from the bytes
    width: int
    height: int
    size_bytes: int
    caption_name: str
    caption: str  # stripped text

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


@dataclass(frozen=True, slots=True)
class Dataset:
    path: Path
    images: tuple[ImageFile, ...]
    caption_bytes: int
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())  # names of entries not uploaded

    @property
    def image_bytes(self) -> int:
        return sum(i.size_bytes for i in self.images)

    @property
    def total_bytes(self) -> int:
        """Bytes uploaded: images and their captions."""
        return self.image_bytes + self.caption_bytes

    def __len__(self) -> int:
        return len(self.images)

    def files(self) -> list[str]:
        """The names to upload (images and captions), sorted; nothing else in the folder."""
        return sorted({n for i in self.images for n in (i.name, i.caption_name)})

    def summary(self) -> str:
        mb = self.total_bytes / 1e6
        return f"{len(self.images)} images with captions, {mb:.1f} MB"


# -- image headers --------------------------------------------------------------------------


def sniff_format(head: bytes) -> str | None:
    """The image format from the first bytes: "png", "jpeg", another known name, or None."""
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypavif"):
        return "heic/avif"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which must come first."""
    if not data.startswith(PNG_SIGNATURE):
        raise ImageFormatError("not a PNG (bad signature)")
    if len(data) < 33:
        raise ImageFormatError("truncated PNG header")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise ImageFormatError("corrupt PNG header (IHDR is not the first chunk)")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if width == 0 or height == 0:
        raise ImageFormatError(f"corrupt PNG header ({width}x{height} pixels)")
    if depth not in (1, 2, 4, 8, 16) or colour not in (0, 2, 3, 4, 6):
        raise ImageFormatError("corrupt PNG header (bad bit depth or colour type)")
    return width, height


def jpeg_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, offset where the entropy-coded data starts) from a JPEG's markers."""
    if not data.startswith(b"\xff\xd8"):
        raise ImageFormatError("not a JPEG (no start-of-image marker)")
    pos = 2
    size: tuple[int, int] | None = None
    n = len(data)
    while True:
        if pos < n and data[pos] != 0xFF:
            raise ImageFormatError("corrupt JPEG header (expected a marker)")
        # markers may be padded with any number of 0xFF bytes
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise ImageFormatError("truncated JPEG header")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            raise ImageFormatError("corrupt JPEG (end of image before any scan)")
        if marker in _STANDALONE_MARKERS:
            continue
        if pos + 2 > n:
            raise ImageFormatError("truncated JPEG header")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ImageFormatError("corrupt JPEG header (bad segment length)")
        if marker in _SOF_MARKERS:
            if pos + 7 > n:
                raise ImageFormatError("truncated JPEG header")
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            if width == 0 or height == 0:
                raise ImageFormatError(f"corrupt JPEG header ({width}x{height} pixels)")
            size = (width, height)
        if marker == 0xDA:  # start of scan: the image data follows its header
            if size is None:
                raise ImageFormatError("corrupt JPEG (scan before any frame header)")
            if pos + length > n:
                raise ImageFormatError("truncated JPEG header")
            return size[0], size[1], pos + length
        pos += length
        if pos > n:
            raise ImageFormatError("truncated JPEG header")


def image_info(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of a whole PNG or JPEG file; ``ImageFormatError`` says what is
    wrong otherwise, including data that stops before the image's end marker."""
    kind = sniff_format(data[:16])
    if kind == "png":
        width, height = png_size(data)
        if _PNG_IEND not in data[-_TAIL_BYTES:]:
            raise ImageFormatError("truncated PNG (no IEND chunk at the end)")
        return "png", width, height
    if kind == "jpeg":
        width, height, scan = jpeg_size(data)
        # 0xFF is byte-stuffed inside scan data, so FF D9 after the scan is the end marker
        # (data appended after it, as in motion photos, is fine)
        if data.find(b"\xff\xd9", scan) < 0:
            raise ImageFormatError("truncated JPEG (no end-of-image marker)")
        return "jpeg", width, height
    if kind is not None:
        raise ImageFormatError(f"not a PNG or JPEG (looks like {kind.upper()})")
    if len(data) < 8:
        raise ImageFormatError(f"not a PNG or JPEG (only {len(data)} bytes)")
    raise ImageFormatError("not a PNG or JPEG (unknown content)")


# -- the folder -----------------------------------------------------------------------------


def _read_caption(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImageFormatError("caption is not UTF-8 text") from None


def validate_dataset(path: Path | str) -> Dataset:
    """The dataset at ``path`` with every image's size and caption, or a ``DatasetError``
    listing every problem found (see the module docstring for what is an error)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetError(root, ["the folder does not exist"])
    if not root.is_dir():
        raise DatasetError(root, ["not a folder (give the folder holding the images)"])

    problems: list[str] = []
    warnings: list[str] = []
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    names = {p.name for p in entries}
    hidden: list[str] = []
    folders: list[str] = []
    other: list[str] = []
    image_paths: list[Path] = []
    caption_paths: dict[str, Path] = {}
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            hidden.append(name)
        elif entry.is_dir():
            folders.append(name + "/")
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            image_paths.append(entry)
        elif entry.suffix == CAPTION_EXT:
            caption_paths[entry.stem] = entry
        else:  # ".TXT" too: Linux will not find it; the image's error names it
            other.append(name)

    images: list[ImageFile] = []
    used_captions: set[str] = set()
    caption_bytes = 0
    for image in image_paths:
        name = image.name
        caption_name = image.stem + CAPTION_EXT
        image_ok = True
        try:
            size = image.stat().st_size
            data = image.read_bytes() if size else b""
        except OSError as exc:
            problems.append(f"{name}: cannot be read ({exc.strerror or exc})")
            continue
        fmt, width, height = "", 0, 0
        if size == 0:
            problems.append(f"{name}: empty file (0 bytes)")
            image_ok = False
        else:
            try:
                fmt, width, height = image_info(data)
            except ImageFormatError as exc:
                problems.append(f"{name}: unreadable image: {exc}")
                image_ok = False
        caption = caption_paths.get(image.stem)
        text = ""
        if caption is None:
            wrong_case = sorted(
                n for n in names if n != caption_name and n.lower() == caption_name.lower()
            )
            hint = f" (found {wrong_case[0]}: rename it to {caption_name})" if wrong_case else ""
            problems.append(f"{name}: no caption (expected {caption_name}){hint}")
            continue
        used_captions.add(image.stem)
        try:
            text = _read_caption(caption).strip()
        except (OSError, ImageFormatError) as exc:
            message = exc.strerror if isinstance(exc, OSError) else str(exc)
            problems.append(f"{caption.name}: unreadable caption ({message})")
            continue
        if not image_ok:
            continue
        caption_bytes += caption.stat().st_size
        if not text:
            warnings.append(f"{caption.name}: empty caption (trains on the trigger word alone)")
        expected = "png" if image.suffix.lower() == ".png" else "jpeg"
        if fmt != expected:
            warnings.append(f"{name}: a {fmt.upper()} file with a {image.suffix} extension")
        images.append(ImageFile(name, fmt, width, height, size, caption.name, text))

    for stem, caption in sorted(caption_paths.items()):
        if stem not in used_captions:
            warnings.append(f"{caption.name}: caption without an image (ignored)")

    if not image_paths:
        listed = ", ".join(IMAGE_EXTENSIONS)
        problems.insert(0, f"no images ({listed.replace('.', '')}) in the folder")
    if problems:
        raise DatasetError(root, problems)

    notes: list[str] = []
    if other:
        notes.append(f"ignored {len(other)} other file(s): {_short_list(other)}")
    if hidden:
        notes.append(f"ignored {len(hidden)} hidden file(s): {_short_list(hidden)}")
    if folders:
        notes.append(f"ignored {len(folders)} subfolder(s) (not read): {_short_list(folders)}")
    return Dataset(
        path=root,
        images=tuple(images),
        caption_bytes=caption_bytes,
        warnings=tuple(warnings),
        notes=tuple(notes),
        ignored=tuple(other + hidden + folders),
    )


def _short_list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
