"""Parquet helpers: run settings and versions in the key-value metadata, atomic whole-file writes."""
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


def write_table(path, table: pa.Table, settings: dict) -> Path:
    """Write ``table`` with ``settings`` in its metadata; the file appears under its name only
    when complete (written beside it, then renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    pq.write_table(table.cast(with_metadata(table.schema, settings)), tmp)
    tmp.replace(path)
    return path
