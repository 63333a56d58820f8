"""Parquet writers: rows stream into row groups; the file appears under its name only when complete."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"dfscan"


def versions() -> dict:
    """Versions of everything that shapes a result, for the files' metadata."""
    from importlib import metadata

    out = {}
    for dist in ("dfscan", "nvidia-dali-cuda120", "nvidia-dali-cuda130", "torch", "onnxruntime",
                 "onnxruntime-gpu", "timm", "tensorrt", "tensorrt-cu12"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def with_metadata(schema: pa.Schema, settings: dict) -> pa.Schema:
    return schema.with_metadata({METADATA_KEY: json.dumps(settings, default=str).encode()})


def read_settings(path) -> dict:
    """The run settings stored in a dfscan Parquet file's key-value metadata."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(METADATA_KEY, b"{}"))


class ParquetStream:
    """Write tables one by one as row groups of ``path``; ``close()`` publishes the file."""

    def __init__(self, path, schema: pa.Schema, settings: dict):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.schema = with_metadata(schema, settings)
        self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.rows = 0

    def write(self, table: pa.Table):
        if table.num_rows:
            self.writer.write_table(table.cast(self.schema))
            self.rows += table.num_rows

    def close(self) -> Path:
        self.writer.close()
        self.tmp.replace(self.path)
        return self.path

    def abort(self):
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def write_table(path, table: pa.Table, settings: dict) -> Path:
    stream = ParquetStream(path, table.schema, settings)
    stream.write(table)
    return stream.close()
