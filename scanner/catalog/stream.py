"""COCO records in one pass: a multi-GB annotation file is never held in memory.

``json.load`` of a COCO file needs several times the file's size (a dict and a list per
annotation). Here the file is read in blocks of text and only its top level is walked by hand;
the records of ``images`` and ``annotations`` are parsed by the json module's C scanner, a run of
a few hundred kB of records per ``json.loads`` call where the text can be cut at a record's end
(``_TopLevel.run``), else one record at a time (``JSONDecoder.raw_decode``), handed on and
dropped. Memory stays at one block plus what the catalog keeps. One pass, in the file's order
(``annotations`` may come before ``images``); other top-level values (``categories``, ``info``)
are parsed and dropped. The json module's grammar applies throughout (it accepts a bare ``NaN``,
as Python writes a NaN box). Measured on a 2,000,000-face file (benchmarks/catalog_scale.py): the
catalog in 8.3 µs a face, where ijson's C backend took 12 µs for its two passes alone.
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Iterable, Iterator

from scanner.errors import DfscanError

FIELDS = {"images": ("id", "file_name"), "annotations": ("id", "image_id", "bbox")}
BLOCK = 1 << 22  # characters read at a time
_WS = re.compile(r"[ \t\n\r]*")
_SEP = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_decode = json.JSONDecoder().raw_decode
RUN = 1 << 18  # characters of records parsed by one call where the text allows
MAX_MISSES = 4  # runs that could not be cut before a list is read record by record


class CocoReader:
    """Iterating yields ``(key, records)`` for ``images`` and ``annotations`` in file order, of a file
    or of a dict already in memory: ``records`` iterates that list's records and must be used up
    before the next pair is asked for. The caller checks each record (``lacks`` says what is
    missing): a check inside the caller's own loop costs nothing per record. Raises DfscanError
    naming the file and what is wrong."""

    def __init__(self, path: Path, dataset: dict | None = None):
        self.path, self.dataset = Path(path), dataset
        if dataset is None and not self.path.is_file():
            raise DfscanError(f"{self.path}: annotation file not found")

    def __iter__(self) -> Iterator[tuple[str, Iterable]]:
        self.has_images = False
        if self.dataset is None:
            yield from _TopLevel(self.path, self).lists()
        elif isinstance(self.dataset, dict):
            for key in FIELDS:
                items = self.dataset.get(key)
                if key == "images":
                    if not isinstance(items, list):
                        break
                    self.has_images = True
                yield key, items if isinstance(items, list) else []
        if not self.has_images:
            raise DfscanError(f"{self.path}: no 'images' list; expected COCO / OpenForensics annotations")

    def lacks(self, key: str, n: int, item) -> DfscanError | None:
        """The error for ``key``'s record ``n`` when it lacks a required field, else None."""
        missing = [f for f in FIELDS[key] if not isinstance(item, dict) or f not in item]
        return DfscanError(f"{self.path}: {key}[{n}] lacks field {missing[0]!r}") if missing else None


class _TopLevel:
    """The file's top-level object, walked by hand over a sliding block of text."""

    def __init__(self, path: Path, reader: CocoReader):
        self.path, self.reader = path, reader
        self.buf, self.pos, self.base, self.eof = "", 0, 0, False

    def lists(self) -> Iterator[tuple[str, Iterable]]:
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
                        yield key, self.items()
                    else:
                        self.value()
                        if key == "images":
                            return  # not a list: no 'images' list
                    if self.past_separator("}"):
                        break
            if self.skip_ws() != "":
                self.fail("extra data after the top-level object")

    def items(self) -> Iterator:
        """The values of the list at ``pos``: the hot path of a multi-GB file. Many records are
        parsed by one C call (``run``); near a block's end, or where a run cannot be cut, one
        record at a time."""
        self.pos += 1  # '['
        if self.skip_ws() == "]":
            self.pos += 1
            return
        decode, sep, misses = _decode, _SEP.match, 0
        while True:
            buf, pos = self.buf, self.pos
            if misses < MAX_MISSES and pos + RUN < len(buf):
                run = self.run(buf, pos)
                if run is None:
                    misses += 1
                else:
                    yield from run[0]
                    self.pos = run[1]
                    continue
            try:  # (a record is an object: one cut by the block's end fails, it never parses short)
                item, end = decode(buf, pos)
            except json.JSONDecodeError:
                self.skip_ws()  # (whitespace may end the block)
                item = self.value()  # reads on, or says what is wrong
                buf, end = self.buf, self.pos
            yield item
            m = sep(buf, end)
            if m is None:  # the block ends here, or the file is broken
                self.pos = end
                if self.past_separator("]"):
                    return
            elif m.group(1) == "]":
                self.pos = m.end()
                return
            else:
                self.pos = m.end()

    def past_separator(self, close: str) -> bool:
        """Step past the ',' or ``close`` after a value (reading on); True at ``close``."""
        sep = self.skip_ws()
        self.pos += 1
        if sep == close:
            return True
        if sep != ",":
            self.fail(f"expected ',' or '{close}'")
        self.skip_ws()
        return False

    @staticmethod
    def run(buf: str, pos: int) -> tuple[list, int] | None:
        """``(records, position after the comma that follows them)`` for about ``RUN`` characters
        of records from ``pos``, parsed by one ``json.loads``, or None where no cut was found.

        The cut is a '}' followed by a comma. A cut that is not a record's end (a '}' inside a
        string, or closing an object nested in a record) leaves the piece with an open string or
        bracket, which the parser refuses: what it accepts is whole records, and only those."""
        end = pos + RUN
        for _ in range(8):
            end = buf.rfind("}", pos, end)
            if end < 0:
                return None
            m = _SEP.match(buf, end + 1)
            if m is not None and m.group(1) == ",":
                try:
                    return json.loads("[" + buf[pos:end + 1] + "]"), m.end()
                except json.JSONDecodeError:
                    return None
        return None

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
