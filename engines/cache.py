"""A cache of built engines, so the slow steps (export, INT8 calibration and gate, TensorRT build)
run once per checkpoint and machine.

Layout: ``<cache_dir>/<key>/engine<suffix>`` plus any companion files the builder writes beside
it (an OpenVINO ``.bin``, a TensorRT sidecar ``.json``), and ``record.json`` holding the key's
fields, the sha256 of every file, the build settings and figures (e.g. the INT8 gate) and the
build time. An entry is a folder rather than one file because some engines are several files,
and one folder rename publishes all of them at once: each entry is built in a temporary folder
inside the cache folder (same filesystem), every file fsync'ed, then renamed into place. A
rename onto an existing entry fails, so of two processes building together exactly one
publishes; a per-key ``flock`` makes the second one wait and reuse the first one's entry instead
of building too.

The key is the sha256 of: the checkpoint file's bytes, input size, precision, backend, the
backend library's version, the device, dfscan's version and any build settings. Reading checks
the record and every file's hash: a corrupt or foreign entry is rebuilt (with a warning), never
trusted. A cache folder that cannot be written falls back to building into a temporary folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

from engines.errors import DfscanError

FORMAT = "dfscan-engine-cache/1"
RECORD = "record.json"
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "trt": ".plan", "torch": ".pt"}
# The distribution whose version goes into the key (read without importing it: never import
# tensorrt just to name a cache entry).
LIBRARIES = {"onnx": ("onnxruntime",), "openvino": ("openvino",), "torch": ("torch",),
             "trt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dfscan/engines``, else ``~/.cache/dfscan/engines``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dfscan" / "engines"


def library_version(backend: str) -> str:
    for dist in LIBRARIES.get(backend, (backend,)):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_fields(checkpoint, backend: str, precision: str, device: str, input_size,
               settings: dict | None = None) -> dict:
    """Everything an entry depends on; its sha256 (``cache_key``) names the entry."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise DfscanError(f"{checkpoint}: checkpoint not found")
    try:
        dfscan_version = metadata.version("dfscan")
    except metadata.PackageNotFoundError:
        dfscan_version = "source"
    fields = {"checkpoint_sha256": file_sha256(checkpoint), "input_size": list(input_size),
              "precision": precision, "backend": backend, "library": library_version(backend),
              "device": device, "dfscan": dfscan_version, "settings": settings or {}}
    return json.loads(json.dumps(fields, default=str))  # as the record will read back (tuples → lists)


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def _verify(entry: Path, key: str, fields: dict) -> tuple[dict | None, str]:
    """``(record, "")`` for a sound entry, else ``(None, why not)``."""
    try:
        record = json.loads((entry / RECORD).read_text())
    except (OSError, ValueError) as exc:
        return None, f"unreadable {RECORD} ({type(exc).__name__})"
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None, f"{RECORD} is not a {FORMAT} record"
    if record.get("key") != key or record.get("fields") != fields:
        return None, "its record belongs to another key"
    files = record.get("files") or {}
    present = {p.name for p in entry.iterdir()} - {RECORD}
    if set(files) != present or record.get("engine") not in files:
        return None, f"files {sorted(present)} do not match the record's {sorted(files)}"
    for name, digest in files.items():
        if file_sha256(entry / name) != digest:
            return None, f"{name} does not match its recorded sha256"
    return record, ""


def lookup(checkpoint, backend: str, precision: str, device: str, *, input_size,
           settings: dict | None = None, cache_dir=None, warn: Callable[[str], None] = print):
    """``(engine path, record)`` of a sound cached entry, or None (a corrupt one is reported)."""
    fields = key_fields(checkpoint, backend, precision, device, input_size, settings)
    key = cache_key(fields)
    return _sound(Path(cache_dir or default_cache_dir()) / key, key, fields, warn)


def get_or_build(checkpoint, backend: str, precision: str, device: str, build_fn, *, input_size,
                 settings: dict | None = None, cache_dir=None, warn: Callable[[str], None] = print,
                 lock: bool = True):
    """The cached engine for this key, built with ``build_fn`` when missing or corrupt.

    ``build_fn(target: Path) -> dict | None`` writes the engine to ``target`` (companion files
    go beside it, in the otherwise empty folder) and may return figures for the record (build
    settings, gate results). Returns ``(engine path, record)``; ``record["cache"]`` is "hit",
    "built" or "temporary" (the cache folder was not writable: built into a temporary folder,
    not kept, with one line to ``warn``). ``lock=False`` skips the per-key flock (concurrent
    builders then all build; still exactly one publishes). Errors from ``build_fn`` propagate.
    """
    fields = key_fields(checkpoint, backend, precision, device, input_size, settings)
    key = cache_key(fields)
    root = Path(cache_dir or default_cache_dir())
    entry = root / key
    found = _sound(entry, key, fields, warn)
    if found:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    except OSError as exc:
        warn(f"{root}: engine cache not writable ({exc.strerror or exc}); building into a "
             f"temporary folder that later runs will not reuse; set XDG_CACHE_HOME to a writable folder")
        work = Path(tempfile.mkdtemp(prefix="dfscan-engine-"))
        record = _build(work, key, fields, backend, build_fn)
        return work / record["engine"], {**record, "cache": "temporary"}
    try:
        with _locked(root / f".{key}.lock", lock):
            found = _sound(entry, key, fields, None)  # another process may have built it meanwhile
            if found:
                return found
            record = _build(work, key, fields, backend, build_fn)
            for _ in range(3):
                try:
                    os.rename(work, entry)  # atomic; fails while a (non-empty) entry is there
                    break
                except OSError:
                    # A concurrent builder published first (use its entry), or the entry is the
                    # corrupt one reported above (move it aside and try again).
                    found = _sound(entry, key, fields, None)
                    if found:
                        return found
                    _discard(entry, root)
            else:
                raise DfscanError(f"{entry}: could not publish the engine cache entry; "
                                  f"delete {root} and run again")
            _fsync_dir(root)
            return entry / record["engine"], {**record, "cache": "built"}
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _sound(entry: Path, key: str, fields: dict, warn):
    if not entry.exists():
        return None
    record, why = _verify(entry, key, fields)
    if record is None:
        if warn is not None:
            warn(f"{entry}: cached engine is corrupt or foreign ({why}); rebuilding it")
        return None
    return entry / record["engine"], {**record, "cache": "hit"}


def _build(work: Path, key: str, fields: dict, backend: str, build_fn) -> dict:
    engine = "engine" + SUFFIXES.get(backend, ".bin")
    started = time.perf_counter()
    figures = build_fn(work / engine) or {}
    seconds = time.perf_counter() - started
    if not (work / engine).is_file():
        raise DfscanError(f"{work / engine}: the {backend} build wrote no engine file")
    files = {}
    for path in sorted(work.iterdir()):
        _fsync_file(path)
        files[path.name] = file_sha256(path)
    record = {"format": FORMAT, "key": key, "fields": fields, "engine": engine, "files": files,
              "build": figures, "build_seconds": round(seconds, 3),
              "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with open(work / RECORD, "w") as f:
        json.dump(record, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(work)
    return record


def _discard(entry: Path, root: Path) -> None:
    trash = root / f".trash-{entry.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(entry, trash)
    except OSError:  # a concurrent process moved it already
        return
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _locked(path: Path, enabled: bool):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename alone keeps entries sound
        enabled = False
    if not enabled:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes, or the process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
