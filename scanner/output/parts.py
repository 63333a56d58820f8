"""A run's output folder, written so that a killed job loses at most its last unflushed rows.

Layout of ``--out``::

    manifest.json        settings of the run, the parts written so far, and whether it is complete
    parts/part-NNNNN.parquet   rows as they are scanned, each part published by an atomic rename
    faces.parquet        all rows in catalog order, merged from the parts at the end
    metrics.parquet      when labels exist

``--resume`` reads the parts, skips every image whose faces are all there, and scans the rest;
the final assembly keeps one row per face, so a resumed run equals an uninterrupted one.
The assembly streams: it reads the parts' ``face_id`` columns (8 bytes a row), works out the
order, then writes ``faces.parquet`` one row group at a time from the parts that group needs,
so its memory does not grow with the run.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engines.files import with_metadata, write_atomic
from scanner.errors import DfscanError
from scanner.output.schema import FACES_SCHEMA

MANIFEST = "manifest.json"
PARTS = "parts"
OUR_FILES = (MANIFEST, PARTS, "faces.parquet", "metrics.parquet", "detections_poly.json", "report.html",
             "summary.json", "videos.parquet", "video_metrics.parquet")
GROUP_ROWS = 65536  # rows per row group of faces.parquet, and per step of the merge
CACHED_PARTS = 64  # parts kept read during the merge (a resumed run's parts interleave)
# settings that change the rows: a resume with different ones would mix two runs
MUST_MATCH = ("engine", "backend", "precision", "arch", "input_size", "crop_margin", "threshold", "images", "annotations",
              "detector", "det_margin", "det_max_side", "det_min_face", "det_min_score")


class RunOutput:
    """Owns ``out_dir``: checks how it may be (re)used, buffers rows, publishes parts."""

    def __init__(self, out_dir, meta: dict, resume: bool = False, overwrite: bool = False,
                 part_rows: int = 4096, part_seconds: float = 30.0):
        self.dir = Path(out_dir)
        self.meta = meta
        self.part_rows, self.part_seconds = part_rows, part_seconds
        self.schema = with_metadata(FACES_SCHEMA, meta)
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.last_flush = time.monotonic()
        self.manifest = self._open(resume, overwrite)

    # -- opening -------------------------------------------------------------------------------
    def _open(self, resume: bool, overwrite: bool) -> dict:
        manifest_path = self.dir / MANIFEST
        existing = self.dir.is_dir() and any(self.dir.iterdir())
        if existing and overwrite:
            for name in OUR_FILES:
                target = self.dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            existing = False  # the user's own files beside ours are left alone
        if existing and not resume:
            raise DfscanError(f"{self.dir} is not empty; pass --resume to finish an earlier run "
                              "there, or --overwrite to start again")
        if resume and manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise DfscanError(f"{manifest_path}: unreadable; pass --overwrite to start again") from None
            before = manifest.get("settings", {})
            changed = [k for k in MUST_MATCH if before.get(k) != self.meta.get(k)]
            if changed:
                raise DfscanError(f"{manifest_path}: the earlier run used other settings ({', '.join(changed)}: "
                                  f"{[before.get(k) for k in changed]}); rerun it as it was, or --overwrite")
            return manifest
        if resume and existing:
            raise DfscanError(f"{self.dir} holds no dfscan manifest to resume; choose an empty --out")
        (self.dir / PARTS).mkdir(parents=True, exist_ok=True)
        manifest = {"format": "dfscan-run/1", "settings": self.meta, "parts": [], "complete": False}
        write_atomic(manifest_path, json.dumps(manifest, indent=1, default=str))
        return manifest

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def done_face_ids(self) -> set[int]:
        """Faces already in published parts (parts are complete files or absent)."""
        return set(self.done_face_array().tolist())

    def done_face_array(self) -> np.ndarray:
        """``face_id`` of every row in the published parts, part after part (int64; a face
        scanned twice, before and after a kill, appears twice)."""
        return np.concatenate([np.zeros(0, dtype=np.int64)] + self._part_ids(self._parts()))

    def _parts(self) -> list[Path]:
        return sorted((self.dir / PARTS).glob("part-*.parquet"))

    @staticmethod
    def _part_ids(parts: list[Path]) -> list[np.ndarray]:
        return [pq.read_table(p, columns=["face_id"]).column("face_id").to_numpy().astype(np.int64) for p in parts]

    # -- writing -------------------------------------------------------------------------------
    def add(self, table: pa.Table):
        if table.num_rows:
            self.buffer.append(table)
            self.buffered += table.num_rows
        if self.buffered >= self.part_rows or time.monotonic() - self.last_flush >= self.part_seconds:
            self.flush()

    def flush(self):
        """Publish the buffered rows as the next part, then record it in the manifest."""
        self.last_flush = time.monotonic()
        if not self.buffered:
            return
        parts = self.dir / PARTS
        number = len(list(parts.glob("part-*.parquet")))
        path = parts / f"part-{number:05d}.parquet"
        table = pa.concat_tables(self.buffer).cast(self.schema)
        write_atomic(path, lambda fh: pq.write_table(table, fh))
        self.manifest["parts"].append({"file": f"{PARTS}/{path.name}", "rows": table.num_rows})
        self._save_manifest()
        self.buffer, self.buffered = [], 0

    def record_session(self, images: int, faces_scanned: int, interrupted: bool, seconds: float):
        """Record in the manifest what this call of ``dfscan run`` scanned: a resumed run's entry
        shows that it scanned only what the earlier ones had left."""
        self.manifest.setdefault("sessions", []).append(
            {"images_to_scan": images, "faces_scanned": faces_scanned, "interrupted": interrupted,
             "seconds": round(seconds, 3)})
        # the wall time of the whole job, interrupted sessions included (report.html, summary.json)
        self.manifest["duration_s"] = round(sum(s["seconds"] for s in self.manifest["sessions"]), 3)
        self._save_manifest()

    def _save_manifest(self):
        write_atomic(self.dir / MANIFEST, json.dumps(self.manifest, indent=1, default=str))

    def finish(self, face_order) -> Path:
        """Merge the parts into ``faces.parquet``: catalog order, one row per face (its first).

        ``face_order``: the catalog's face ids in catalog order (a sequence or int64 array), or
        ``{face_id: position}``. Faces it does not name (a run's video faces) follow by face id,
        so their order does not depend on which clip finished first (Ray).
        """
        self.flush()
        parts = self._parts()
        ids = self._part_ids(parts)
        sizes = np.array([len(a) for a in ids], dtype=np.int64)
        all_ids = np.concatenate([np.zeros(0, dtype=np.int64)] + ids)
        del ids
        _, first = np.unique(all_ids, return_index=True)  # a face's first row (a kill can repeat it)
        first.sort()
        position = _positions(face_order, all_ids[first])
        rows = first[np.lexsort((all_ids[first], position))]
        part_of = np.searchsorted(np.cumsum(sizes), rows, side="right")
        in_part = rows - (np.cumsum(sizes) - sizes)[part_of]
        del all_ids, first, position, rows
        cache: OrderedDict[int, pa.Table] = OrderedDict()

        def part(k: int) -> pa.Table:
            if k not in cache:
                cache[k] = pq.read_table(parts[k]).cast(self.schema)
                if len(cache) > CACHED_PARTS:
                    cache.popitem(last=False)
            cache.move_to_end(k)
            return cache[k]

        def write(fh):
            with pq.ParquetWriter(fh, self.schema) as writer:
                for start in range(0, len(part_of), GROUP_ROWS):
                    p, r = part_of[start:start + GROUP_ROWS], in_part[start:start + GROUP_ROWS]
                    # runs of consecutive rows from one part become one slice each
                    cut = np.flatnonzero((np.diff(p) != 0) | (np.diff(r) != 1)) + 1
                    pieces = [part(int(p[a])).slice(int(r[a]), int(b - a))
                              for a, b in zip(np.r_[0, cut], np.r_[cut, len(p)])]
                    writer.write_table(pa.concat_tables(pieces), row_group_size=GROUP_ROWS)
                if not len(part_of):
                    writer.write_table(self.schema.empty_table())

        out = write_atomic(self.dir / "faces.parquet", write)
        self.manifest.update(complete=True, faces=int(len(part_of)), parts=[])
        self._save_manifest()
        shutil.rmtree(self.dir / PARTS, ignore_errors=True)
        return out


def _positions(face_order, face_ids: np.ndarray) -> np.ndarray:
    """Catalog position of each of ``face_ids``; ``len(face_order)`` for faces it does not name."""
    if isinstance(face_order, dict):
        order = np.array(sorted(face_order, key=face_order.__getitem__), dtype=np.int64)
    else:
        order = np.asarray(face_order, dtype=np.int64)
    sorter = np.argsort(order, kind="stable")
    at = np.minimum(np.searchsorted(order, face_ids, sorter=sorter), max(len(order) - 1, 0))
    found = (order[sorter[at]] == face_ids) if len(order) else np.zeros(len(face_ids), dtype=bool)
    return np.where(found, sorter[at] if len(order) else 0, len(order))
