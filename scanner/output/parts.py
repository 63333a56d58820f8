"""A run's output folder, written so that a killed job loses at most its last unflushed rows.

Layout of ``--out``::

    manifest.json        settings of the run, the parts written so far, and whether it is complete
    parts/part-NNNNN.parquet   rows as they are scanned, each part published by an atomic rename
    faces.parquet        all rows in catalog order, assembled from the parts at the end
    metrics.parquet      when labels exist

``--resume`` reads the parts, skips every image whose faces are all there, and scans the rest;
the final assembly keeps one row per face, so a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engines.files import with_metadata, write_atomic
from scanner.errors import DfscanError
from scanner.output.schema import FACES_SCHEMA

MANIFEST = "manifest.json"
PARTS = "parts"
OUR_FILES = (MANIFEST, PARTS, "faces.parquet", "metrics.parquet", "detections_poly.json", "report.html",
             "summary.json", "videos.parquet", "video_metrics.parquet")
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
        done: set[int] = set()
        for part in sorted((self.dir / PARTS).glob("part-*.parquet")):
            done.update(pq.read_table(part, columns=["face_id"]).column("face_id").to_pylist())
        return done

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

    def finish(self, face_order: dict[int, int]) -> Path:
        """Assemble the parts into ``faces.parquet`` in catalog order, one row per face."""
        self.flush()
        parts = sorted((self.dir / PARTS).glob("part-*.parquet"))
        table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else FACES_SCHEMA.empty_table()
        ids = table.column("face_id").to_pylist()
        first: dict[int, int] = {}
        for row, f in enumerate(ids):
            first.setdefault(f, row)
        rows = sorted(first.values(), key=lambda r: face_order.get(ids[r], len(face_order)))
        table = table.take(pa.array(rows, type=pa.int64())).cast(self.schema)
        out = write_atomic(self.dir / "faces.parquet", lambda fh: pq.write_table(table, fh))
        self.manifest.update(complete=True, faces=table.num_rows, parts=[])
        self._save_manifest()
        shutil.rmtree(self.dir / PARTS, ignore_errors=True)
        return out
