"""COCO records one at a time: a multi-GB annotation file is never held in memory as a whole.

``json.load`` of a COCO file needs several times the file's size (a dict and a list per
annotation); ijson's C parser yields the ``images`` and then the ``annotations`` records one by
one, in two passes over the file, so memory stays at one record plus what the catalog keeps of it.
A file the strict streaming parser refuses (JSON with a bare ``NaN``, as Python's json module
writes a NaN box) is read again with the json module, which accepts it and says what is wrong
with a file that is not JSON at all; only such files are held in memory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from scanner.errors import DfscanError

FIELDS = {"images": ("id", "file_name"), "annotations": ("id", "image_id", "bbox")}


class CocoSource:
    """The ``images`` and ``annotations`` records of a COCO file (or of a dict already in memory),
    each checked for its required fields. Raises DfscanError naming the file and the field."""

    def __init__(self, path: Path, dataset: dict | None = None):
        self.path, self.dataset = Path(path), dataset
        if dataset is None:
            if not self.path.is_file():
                raise DfscanError(f"{self.path}: annotation file not found")
            try:
                images_kind = self._top_level_kind("images")
            except Exception as exc:  # ijson.JSONError and the C backend's own errors
                if not _is_parse_error(exc):
                    raise
                self.dataset = self._json_load()
        if self.dataset is not None:
            images_kind = "start_array" if isinstance(self.dataset, dict) and isinstance(
                self.dataset.get("images"), list) else None
        if images_kind != "start_array":
            raise DfscanError(f"{self.path}: no 'images' list; expected COCO / OpenForensics annotations")

    def _json_load(self):
        try:
            with open(self.path, "rb") as fh:
                return json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DfscanError(f"{self.path}: not valid JSON ({exc}); fix or re-export the annotation "
                              "file") from None

    def _top_level_kind(self, key: str) -> str | None:
        """The first parser event of the top-level ``key``'s value ('start_array' for a list);
        stops reading there, so it costs little where ``images`` comes first."""
        import ijson

        with open(self.path, "rb") as fh:
            current = None
            for prefix, event, value in ijson.parse(fh):
                if prefix == "":
                    if event == "map_key":
                        current = value
                    elif event != "start_map":
                        return None  # the end of the top-level object, or not an object at all
                elif prefix == current == key:
                    return event
        return None

    def records(self, key: str) -> Iterator[dict]:
        """``images`` or ``annotations`` records in file order; a missing list is empty."""
        fields = FIELDS[key]
        needed = set(fields)
        for n, item in enumerate(self._items(key)):
            if not isinstance(item, dict) or not item.keys() >= needed:
                missing = [f for f in fields if not isinstance(item, dict) or f not in item]
                raise DfscanError(f"{self.path}: {key}[{n}] lacks field {missing[0]!r}")
            yield item

    def _items(self, key: str) -> Iterator:
        if self.dataset is not None:
            items = self.dataset.get(key, [])
            yield from items if isinstance(items, list) else []
            return
        import ijson

        done = 0
        with open(self.path, "rb") as fh:
            try:
                for item in ijson.items(fh, f"{key}.item", use_float=True):
                    yield item
                    done += 1
                return
            except Exception as exc:
                if not _is_parse_error(exc):
                    raise
        # the strict parser stopped part-way (a bare NaN): the json module reads the rest
        self.dataset = self._json_load()
        items = self.dataset.get(key, [])
        yield from items[done:] if isinstance(items, list) else []


def _is_parse_error(exc: Exception) -> bool:
    import ijson

    return isinstance(exc, (ijson.JSONError, UnicodeDecodeError)) or type(exc).__module__.startswith("ijson")
