"""COCO records one at a time, in one pass: a multi-GB annotation file is never held in memory.

``json.load`` of a COCO file needs several times the file's size (a dict and a list per
annotation). Here the file is read in blocks and only the top level is walked by hand: each
record of ``images`` and ``annotations`` is parsed on its own by the json module's C scanner
(``JSONDecoder.raw_decode``), yielded, and dropped, so memory stays at one block plus what the
catalog keeps. One pass, in the file's order (``annotations`` may come before ``images``); other
top-level values (``categories``, ``info``) are parsed and dropped. The json module's grammar
applies throughout (it accepts a bare ``NaN``, as Python writes a NaN box). Measured on a
2,000,000-face file: about two thirds of ijson's time per record (benchmarks/catalog_scale.py).
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Iterator

from scanner.errors import DfscanError

FIELDS = {"images": ("id", "file_name"), "annotations": ("id", "image_id", "bbox")}
FIELD_SETS = {key: frozenset(fields) for key, fields in FIELDS.items()}
BLOCK = 1 << 22  # characters read at a time
CHUNK = 65536  # records handed on at a time
_WS = re.compile(r"[ \t\n\r]*")
_SEP = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_decode = json.JSONDecoder().raw_decode


class CocoReader:
    """Iterating yields ``(key, records)``: the records of ``images`` and ``annotations`` in lists of
    up to ``CHUNK``, each checked for its required fields, in file order; of a file or of a dict
    already in memory. Raises DfscanError naming the file and what is wrong."""

    def __init__(self, path: Path, dataset: dict | None = None):
        self.path, self.dataset = Path(path), dataset
        if dataset is None and not self.path.is_file():
            raise DfscanError(f"{self.path}: annotation file not found")

    def __iter__(self) -> Iterator[tuple[str, list[dict]]]:
        self.has_images = False
        if self.dataset is None:
            yield from _TopLevel(self.path, self).records()
        elif isinstance(self.dataset, dict):
            for key in FIELDS:
                items = self.dataset.get(key)
                if key == "images":
                    if not isinstance(items, list):
                        break
                    self.has_images = True
                items = items if isinstance(items, list) else []
                for start in range(0, len(items), CHUNK):
                    yield key, self.checked(key, start, items[start:start + CHUNK])
        if not self.has_images:
            raise DfscanError(f"{self.path}: no 'images' list; expected COCO / OpenForensics annotations")

    def checked(self, key: str, start: int, items: list) -> list[dict]:
        """``items`` (``key``'s records from index ``start``), once each has the required fields."""
        needed = FIELD_SETS[key]
        for n in [n for n, item in enumerate(items) if not (isinstance(item, dict) and item.keys() >= needed)][:1]:
            item = items[n]
            missing = [f for f in FIELDS[key] if not isinstance(item, dict) or f not in item]
            raise DfscanError(f"{self.path}: {key}[{start + n}] lacks field {missing[0]!r}")
        return items


class _Cut(Exception):
    """A value that reaches the end of the block may go on in the next one."""


class _TopLevel:
    """The file's top-level object, walked by hand over a sliding block of text."""

    def __init__(self, path: Path, reader: CocoReader):
        self.path, self.reader = path, reader
        self.buf, self.pos, self.base, self.eof = "", 0, 0, False

    def records(self) -> Iterator[tuple[str, list[dict]]]:
        with open(self.path, "rb") as self.fh:
            self.text = codecs.getincrementaldecoder("utf-8-sig")()
            first = self.skip_ws()
            if first == "[":
                return  # JSON, but not COCO: no 'images' list
            if first != "{":
                self.fail("expected '{'")
            self.pos += 1
            if self.skip_ws() == "}":
                self.pos += 1
            else:
                while True:
                    key = self.value()
                    if not isinstance(key, str) or self.skip_ws() != ":":
                        self.fail("expected a key and ':'")
                    self.pos += 1
                    if self.skip_ws() == "[" and key in FIELDS:
                        self.reader.has_images |= key == "images"
                        yield from self.array(key)
                    else:
                        self.value()
                        if key == "images":
                            return  # not a list: no 'images' list
                    sep = self.skip_ws()
                    self.pos += 1
                    if sep == "}":
                        break
                    if sep != ",":
                        self.fail("expected ',' or '}'")
                    self.skip_ws()
            if self.skip_ws() != "":
                self.fail("extra data after the top-level object")

    def array(self, key: str) -> Iterator[tuple[str, list[dict]]]:
        """The records of the list at ``pos``, ``CHUNK`` at a time."""
        chunk, start = [], 0
        for item in self.items():
            chunk.append(item)
            if len(chunk) == CHUNK:
                yield key, self.reader.checked(key, start, chunk)
                chunk, start = [], start + CHUNK
        if chunk:
            yield key, self.reader.checked(key, start, chunk)

    def items(self) -> Iterator:
        """The values of the list at ``pos``. The loop is the hot path of a multi-GB file: one
        C-parsed record and one regex match per record; block ends take the slow path."""
        self.pos += 1  # '['
        if self.skip_ws() == "]":
            self.pos += 1
            return
        decode, sep = _decode, _SEP.match
        while True:
            buf, pos = self.buf, self.pos
            try:
                item, end = decode(buf, pos)
                if end == len(buf) and not self.eof:
                    raise _Cut
            except (json.JSONDecodeError, _Cut):
                self.skip_ws()  # (whitespace may end the block)
                item = self.value()  # reads on, or says what is wrong
                buf, end = self.buf, self.pos
            yield item
            m = sep(buf, end)
            if m is None:  # the block ends here, or the file is broken
                self.pos = end
                m_sep = self.skip_ws()
                self.pos += 1
                if m_sep == "]":
                    return
                if m_sep != ",":
                    self.fail("expected ',' or ']'")
                self.skip_ws()
            elif m.group(1) == "]":
                self.pos = m.end()
                return
            else:
                self.pos = m.end()

    # -- the block of text -------------------------------------------------------------------------
    def more(self, at_least: int | None = None) -> bool:
        """Read on (at least ``at_least`` characters, default a block, or to the end); False at the
        end of the file."""
        at_least = at_least or BLOCK
        if self.pos > BLOCK:  # drop what has been parsed
            self.buf, self.base, self.pos = self.buf[self.pos:], self.base + self.pos, 0
        added = []
        while sum(map(len, added)) < at_least:
            data = self.fh.read(at_least)
            try:
                added.append(self.text.decode(data, final=not data))
            except UnicodeDecodeError as exc:
                self.fail(f"not UTF-8 text ({exc.reason})")
            if not data:
                self.eof = True
                break
        self.buf += "".join(added)
        return bool(added and any(added))

    def skip_ws(self) -> str:
        """Skip whitespace; the next character ('' at the end of the file)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or self.eof or not self.more():
                return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def value(self):
        """The JSON value at ``pos`` (which ``skip_ws`` has put on its first character)."""
        while True:
            try:
                value, end = _decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # a value cut by the end of the block fails at that end (a string: at its start)
                cut = exc.pos >= len(self.buf) - 64 or exc.msg.startswith("Unterminated string")
                if self.eof or not cut:
                    self.fail(f"{exc.msg} at character {self.base + exc.pos}")
                self.more(max(BLOCK, len(self.buf) - self.pos))  # doubles: a huge value costs linear time
                continue
            if end == len(self.buf) and not self.eof and self.more():
                continue  # a number may go on in the next block
            self.pos = end
            return value

    def fail(self, why: str):
        raise DfscanError(f"{self.path}: not valid JSON ({why}); fix or re-export the annotation file")
