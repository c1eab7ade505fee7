"""Images as the API receives them: base64 text in, checked bytes out.

Pure Python, no decoder: the format is read from the magic bytes, the size from the header, and a
file that stops before its end marker is refused, so only whole JPEG/PNG/GIF/WebP/BMP images reach
the runner's decoder (llama.cpp's stb_image). Every problem is a BadRequest naming the image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from ollamalike import config
from ollamalike.errors import BadRequest

MARKER = re.compile(r"\[img-(\d+)\]")


@dataclass(frozen=True)
class Image:
    data: bytes
    format: str  # jpeg, png, gif, webp, bmp
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def decode_b64(text: str, where: str = "image") -> bytes:
    """The bytes of a base64 image (a `data:` URL prefix is tolerated, as Open WebUI may send one)."""
    if not isinstance(text, str):
        raise BadRequest(f"invalid {where}: expected base64 text")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"invalid {where}: not valid base64 data") from None


def _jpeg_size(d: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg = struct.unpack(">H", d[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > len(d):
                return None
            h, w = struct.unpack(">HH", d[i + 5:i + 9])
            return w, h
        i += 2 + seg
    return None


def _png_complete(d: bytes) -> bool:
    i = 8
    while i + 12 <= len(d):
        n = struct.unpack(">I", d[i:i + 4])[0]
        kind = d[i + 4:i + 8]
        if i + 12 + n > len(d):
            return False
        if binascii.crc32(d[i + 4:i + 8 + n]) != struct.unpack(">I", d[i + 8 + n:i + 12 + n])[0]:
            return False
        if kind == b"IEND":
            return True
        i += 12 + n
    return False


def _webp_size(d: bytes) -> tuple[int, int] | None:
    kind = d[12:16]
    if kind == b"VP8 " and len(d) >= 30:
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(d) >= 25:
        b = int.from_bytes(d[21:25], "little")
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(d) >= 30:
        return int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1
    return None


def inspect(data: bytes, where: str = "image") -> Image:
    """The checked image, or a BadRequest: not an image, truncated, or too large."""
    if not data:
        raise BadRequest(f"invalid {where}: the image is empty")
    size: tuple[int, int] | None = None
    if data[:3] == b"\xff\xd8\xff":
        fmt, size = "jpeg", _jpeg_size(data)
        # the end marker after the last scan (an EXIF thumbnail's own comes before it; bytes after
        # the end, as some cameras write, are fine)
        complete = data.rfind(b"\xff\xd9") > max(2, data.rfind(b"\xff\xda"))
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        fmt = "png"
        size = struct.unpack(">II", data[16:24]) if len(data) >= 24 and data[12:16] == b"IHDR" else None
        complete = _png_complete(data)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        fmt = "gif"
        size = struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None
        complete = data.rstrip(b"\0").endswith(b"\x3b")
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt, size = "webp", _webp_size(data)
        complete = len(data) >= 8 + struct.unpack("<I", data[4:8])[0]
    elif data[:2] == b"BM" and len(data) >= 26:
        fmt = "bmp"
        w, h = struct.unpack("<ii", data[18:26])
        size = (abs(w), abs(h))
        complete = len(data) >= struct.unpack("<I", data[2:6])[0]
    else:
        raise BadRequest(f"invalid {where}: not an image (JPEG, PNG, GIF, WebP or BMP data expected)")
    if not complete or size is None:
        raise BadRequest(f"invalid {where}: the {fmt.upper()} data is truncated or corrupt")
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise BadRequest(f"invalid {where}: the {fmt.upper()} image has no pixels")
    limit = config.max_image_pixels()
    if w * h > limit:
        raise BadRequest(f"{where} is too large: {w}x{h} is {w * h / 1e6:.1f} megapixels, the limit is "
                         f"{limit / 1e6:.1f} (OLLAMALIKE_MAX_IMAGE_PIXELS); scale it down first")
    return Image(data=data, format=fmt, width=w, height=h)


def check_count(n: int) -> None:
    limit = config.max_images()
    if n > limit:
        raise BadRequest(f"too many images: {n} in one request, the limit is {limit} (OLLAMALIKE_MAX_IMAGES)")
