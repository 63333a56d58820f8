"""A structural check of JPEG files before DALI sees them.

DALI 2.4's CPU decoder was seen to crash the whole process (a segfault while the failed pipeline
is torn down) after some corrupt JPEGs made a batch fail. So a JPEG must be structurally sound
before it is fed: segment lengths that add up, a sane frame header, Huffman and quantisation
tables of legal sizes, scans that name existing components, and no illegal marker inside the
entropy-coded data. Bit errors that keep the structure intact decode to noise and are scored.
"""
from __future__ import annotations

import numpy as np

SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE = set(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM: no length field
ECS_ALLOWED_AFTER_FF = np.zeros(256, dtype=bool)
ECS_ALLOWED_AFTER_FF[[0x00, 0xFF, *range(0xD0, 0xD8)]] = True


class JpegStructureError(ValueError):
    pass


def _u16(data: bytes, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _check_sof(seg: bytes) -> int:
    if len(seg) < 6:
        raise JpegStructureError("frame header too short")
    precision, height, width, ncomp = seg[0], _u16(seg, 1), _u16(seg, 3), seg[5]
    if precision not in (8, 12, 16) or width == 0 or ncomp not in (1, 3, 4) or len(seg) != 6 + 3 * ncomp:
        raise JpegStructureError(f"bad frame header ({width}x{height}, {ncomp} components, {precision} bit)")
    for c in range(ncomp):
        sampling, table = seg[7 + 3 * c], seg[8 + 3 * c]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4) or table > 3:
            raise JpegStructureError("bad component sampling or table in the frame header")
    return ncomp


def _check_dht(seg: bytes):
    pos = 0
    while pos < len(seg):
        if pos + 17 > len(seg) or seg[pos] >> 4 > 1 or seg[pos] & 15 > 3:
            raise JpegStructureError("bad Huffman table header")
        counts = seg[pos + 1: pos + 17]
        count = sum(counts)
        if count > 256 or pos + 17 + count > len(seg):
            raise JpegStructureError("Huffman table sizes do not add up")
        code = 0  # canonical codes of each length must fit in that many bits (libjpeg's check)
        for length, n in enumerate(counts, start=1):
            code += n
            if code > 1 << length:
                raise JpegStructureError("Huffman table has more codes than bits")
            code <<= 1
        if seg[pos] >> 4 == 0 and max(seg[pos + 17: pos + 17 + count], default=0) > 15:
            raise JpegStructureError("DC Huffman table holds an impossible symbol")
        pos += 17 + count


def _check_dqt(seg: bytes):
    pos = 0
    while pos < len(seg):
        size = 65 if seg[pos] >> 4 == 0 else 129
        if seg[pos] >> 4 > 1 or seg[pos] & 15 > 3 or pos + size > len(seg):
            raise JpegStructureError("bad quantisation table")
        pos += size


def _skip_entropy_data(arr: np.ndarray, start: int) -> int:
    """Position of the first real marker after the entropy-coded data starting at ``start``."""
    ff = np.flatnonzero(arr[start:-1] == 0xFF) + start
    bad = ff[~ECS_ALLOWED_AFTER_FF[arr[ff + 1]]]
    if len(bad) == 0:
        raise JpegStructureError("the scan runs to the end of the file: the file is truncated")
    return int(bad[0])


def check_jpeg(data: bytes) -> None:
    """Raise JpegStructureError where the JPEG's structure is broken."""
    if data[:2] != b"\xff\xd8":
        raise JpegStructureError("no start-of-image marker")
    arr = np.frombuffer(data, dtype=np.uint8)
    pos, ncomp, scans = 2, 0, 0
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            raise JpegStructureError(f"expected a marker at byte {pos}")
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker == 0xD9:
            if not scans:
                raise JpegStructureError("end of image before any scan")
            return
        if marker in STANDALONE:
            pos += 2
            continue
        if pos + 4 > len(data):
            raise JpegStructureError("segment header cut off")
        length = _u16(data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise JpegStructureError(f"segment 0x{marker:02X} at byte {pos} runs past the end of the file")
        seg = data[pos + 4: end]
        if marker in SOF_MARKERS:
            ncomp = _check_sof(seg)
        elif marker == 0xC4:
            _check_dht(seg)
        elif marker == 0xDB:
            _check_dqt(seg)
        elif marker == 0xDA:
            if not ncomp or not seg or not 1 <= seg[0] <= ncomp or len(seg) != 4 + 2 * seg[0]:
                raise JpegStructureError("scan header does not fit the frame")
            scans += 1
            end = _skip_entropy_data(arr, end)
        elif marker < 0xC0:
            raise JpegStructureError(f"illegal marker 0x{marker:02X} at byte {pos}")
        pos = end
    raise JpegStructureError("no end-of-image marker: the file is truncated")
