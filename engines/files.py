"""Files every layer writes: one atomic writer, and Parquet with the settings and versions in
its key-value metadata. In ``engines``, the lowest layer, so the engines' own writers
(checkpoints, exports, plans) and the scanner's (parts, manifests, reports) share them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"dfscan"


def write_atomic(path, data: bytes | str | Callable) -> Path:
    """Write ``path`` whole or not at all: into a temporary file in the same folder, flushed and
    fsynced, then renamed over ``path`` (a killed job never leaves half a file under the name).

    ``data`` is bytes, text (UTF-8), or a function that writes to the open binary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share it
    try:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
    return write_atomic(path, lambda fh: pq.write_table(table.cast(with_metadata(table.schema, settings)), fh))
