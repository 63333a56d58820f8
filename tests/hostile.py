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


def _jpeg_headers(data: bytes) -> dict[int, list[int]]:
    """marker -> offsets of the payloads (after the length field) of its segments, up to the
    first scan header included."""
    found: dict[int, list[int]] = {}
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2: pos + 4])[0]
        found.setdefault(marker, []).append(pos + 4)
        if marker == 0xDA:
            return found
        pos += 2 + length


def decoder_breaking_jpegs(data: bytes) -> dict[str, bytes]:
    """Damaged copies of a baseline YCbCr JPEG that pass the up-front structure check
    (scanner.catalog.jpegcheck: every segment has legal sizes) yet that libjpeg refuses outright,
    so only DALI's decoder finds them out and fails its whole batch: name -> bytes.

    Found by experiment with DALI's CPU decoder; each is a fatal libjpeg error, not a warning.
    """
    heads = _jpeg_headers(data)
    sof_marker = heads[0xC0][0] - 3  # the SOF0 marker's second byte
    sof, sos, dqt = heads[0xC0][0], heads[0xDA][0], heads[0xDB][0]
    # SOF0 payload: precision, height(2), width(2), ncomp, then (id, sampling, table) per component
    # SOS payload: ncomp, then (id, DC<<4|AC) per component, then Ss, Se, Ah<<4|Al
    assert data[sof + 5] == 3 and data[sos] == 3, "expects a baseline three-component JPEG"

    def patch(offset: int, value: bytes) -> bytes:
        b = bytearray(data)
        b[offset: offset + len(value)] = value
        return bytes(b)

    return {
        "scan_uses_undefined_dc_table": patch(sos + 2, b"\x20"),  # "Huffman table 0x02 was not defined"
        "scan_uses_undefined_ac_table": patch(sos + 2, b"\x03"),
        "scan_names_unknown_component": patch(sos + 1, b"\x09"),  # "Invalid component ID 9 in SOS"
        "scan_names_component_twice": patch(sos + 3, data[sos + 1: sos + 2]),
        "frame_ids_do_not_match_scan": patch(sof + 6, b"\x09"),
        "frame_ids_repeat": patch(sof + 9, data[sof + 6: sof + 7]),
        "frame_uses_undefined_quant_table": patch(sof + 8, b"\x02"),  # "Quantization table 0x02 ..."
        "quant_table_defined_under_another_id": patch(dqt, bytes([data[dqt] | 2])),
        "luma_sampling_too_large": patch(sof + 7, b"\x44"),  # "Sampling factors too large ..."
        "chroma_sampling_too_large": patch(sof + 10, b"\x44"),
        "progressive_frame_baseline_scan": patch(sof_marker, b"\xc2"),  # "Invalid progressive ... Ss=0 Se=63"
        "lossless_frame": patch(sof_marker, b"\xc3"),
        "hierarchical_frame": patch(sof_marker, b"\xc5"),  # "Unsupported JPEG process"
    }


def oversubscribed_huffman_jpeg() -> bytes:
    """GOOD_JPEG with its first Huffman table made impossible but well formed in size: the
    counts still add up to the symbols the segment holds and the length is unchanged, yet three
    codes have length 1 (only two 1-bit codes exist). libjpeg refuses such a table."""
    data = bytearray(GOOD_JPEG.read_bytes())
    dht = _jpeg_headers(bytes(data))[0xC4][0]  # payload: class/id, 16 counts, symbols
    length = struct.unpack(">H", data[dht - 2: dht])[0]
    n_symbols = sum(data[dht + 1: dht + 17])
    assert length == 2 + 17 + n_symbols and n_symbols > 3, "expects one table in the first DHT"
    counts = bytearray(16)
    counts[0], counts[1] = 3, n_symbols - 3
    data[dht + 1: dht + 17] = counts
    return bytes(data)
