"""A corpus of hostile inputs, made in code: each writer returns the file it made."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from _data import REALORFAKE, gradient_image

GOOD_JPEG = REALORFAKE / "Images" / "Val" / "00001.jpg"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16_rgb(img: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one)."""
    h, w, _ = img.shape
    deep = img.astype(np.uint16) * 257
    raw = b"".join(b"\x00" + deep[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def bomb_png(side: int = 60000) -> bytes:
    """A few hundred bytes declaring a side×side image: a decompression bomb."""
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b""))


def encode(img: np.ndarray, fmt: str, mode: str = "RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).convert(mode).save(buf, format=fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg(img: np.ndarray, orientation: int = 6) -> bytes:
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif, quality=92)
    return buf.getvalue()


def broken_huffman_jpeg() -> bytes:
    """Headers intact (passes the up-front checks), entropy tables absurd: the decoder fails."""
    data = bytearray(GOOD_JPEG.read_bytes())
    dht = data.index(b"\xff\xc4")
    data[dht + 5: dht + 21] = b"\xff" * 16
    return bytes(data)


def corrupt_deflate_png(img: np.ndarray) -> bytes:
    """A PNG whose header is fine but whose compressed pixels are not: only decoding finds out."""
    data = bytearray(encode(img, "PNG"))
    start = data.index(b"IDAT") + 4 + 40
    data[start:start + 64] = bytes(64)
    return bytes(data)


def file_cases(img: np.ndarray) -> dict[str, tuple[bytes | None, str]]:
    """name -> (bytes to write, expected status). ``None`` bytes: made specially by the caller."""
    good = GOOD_JPEG.read_bytes()
    rng = np.random.default_rng(7)
    return {
        "good.jpg": (good, "ok"),
        "zero.jpg": (b"", "empty_file"),
        "truncated.jpg": (good[: len(good) * 2 // 3], "truncated_file"),
        "random.jpg": (rng.integers(0, 256, 6000, dtype=np.uint8).tobytes(), "unsupported_format"),
        "png_named.jpg": (encode(img, "PNG"), "ok"),
        "webp_named.jpg": (encode(img, "WEBP"), "ok"),
        "bmp_named.jpg": (encode(img, "BMP"), "ok"),
        "gif_named.jpg": (encode(img, "GIF"), "unsupported_format"),
        "cmyk.jpg": (encode(img, "JPEG", "CMYK", quality=92), "ok"),
        "gray.jpg": (encode(img, "JPEG", "L", quality=92), "ok"),
        "deep16.png": (png16_rgb(img), "ok"),
        "palette.png": (encode(img, "PNG", "P"), "ok"),
        "rgba.png": (encode(img, "PNG", "RGBA"), "ok"),
        "exif_rotated.jpg": (exif_rotated_jpeg(img), "ok"),
        "bomb.png": (bomb_png(), "too_large"),
        "broken_tables.jpg": (broken_huffman_jpeg(), "corrupt_file"),
        "corrupt_deflate.png": (corrupt_deflate_png(img), "decode_error"),
        "loop.jpg": (None, "unreadable_file"),
        "missing.jpg": (None, "missing_file"),
    }


def write_file_cases(root: Path, img: np.ndarray) -> dict[str, str]:
    """Write the corpus into ``root``; returns name -> expected status."""
    expected = {}
    for name, (data, status) in file_cases(img).items():
        if data is not None:
            (root / name).write_bytes(data)
        expected[name] = status
    os.symlink(root / "loop.jpg", root / "loop.jpg")  # a link to itself: ELOOP on open
    return expected


def sample_image() -> np.ndarray:
    return gradient_image(240, 180, seed=11)
