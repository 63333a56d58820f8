"""``dfscan run --ray``: the catalog in shards of whole images, scanned by Ray actors.

Each actor owns one DALI pipeline and one engine, built once on its GPU (or the CPU), and scans
one shard at a time. Rows come back to the driver, which alone writes them through RunOutput: the
output folder, ``--resume`` and every reader are those of a single-machine run.

Video files go one clip per task (a clip is scanned whole on one worker, by the same
``scanner.run.videos.VideoScanner`` as without Ray); the driver saves each clip as it comes back,
so ``--resume`` redoes exactly the clips without a summary, as without Ray.

A shard's rows count only when the shard returns whole, so a worker that dies loses nothing and
writes nothing twice: Ray restarts it and re-runs the shard (``max_restarts``,
``max_task_retries``). A shard that kills its worker every time is split in halves until the
culprit image is alone; its faces get the status ``worker_crashed`` and the job goes on. A clip
that kills its worker on every retry gets one ``worker_crashed`` row alike.
Only this module imports Ray, and only ``--ray`` imports this module.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections import deque
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Iterator

import pyarrow as pa

from scanner.errors import DfscanError
from scanner.output.schema import FACES_SCHEMA, rows_to_table
from scanner.status import WORKER_CRASHED

try:
    import ray
except ImportError:  # the optional extra
    raise DfscanError("--ray needs Ray here and on every worker: pip install 'dfscan[ray]'") from None


@dataclass
class RayOptions:
    address: str | None = None  # 'auto', 'HOST:PORT' or 'local'; None: $RAY_ADDRESS, else 'local'
    workers: int | None = None  # None: one per GPU of the cluster (per CPU where it has none)
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0 (CPU workers)
    shard_images: int = 256
    retries: int = 2  # re-runs of a shard on a restarted worker before it is split


@ray.remote(concurrency_groups={"control": 1})
class ShardScanner:
    """One Ray worker: its engine and DALI pipeline are built on first use and kept."""

    def __init__(self, engine_path: str, settings, backend: str | None = None):
        self.engine_path, self.settings, self.backend = engine_path, settings, backend
        self.engine = self.cropper = None
        self.clips = None  # (its settings, the VideoScanner) of the last clip

    def _open(self):
        if self.engine is None:
            from scanner.pipeline.cropper import Cropper

            if self.settings.device == "gpu":  # the GPU's own fastest engine, built on this node
                from engines.autoselect import choose_engine

                self.engine = choose_engine(self.engine_path, "cuda", self.settings.backend,
                                            self.settings.precision, cache_dir=self.settings.cache_dir).load()
            else:  # the driver chose and built the CPU engine; one core per worker
                from engines.backends import load_engine

                self.engine = load_engine(self.engine_path, "cpu", self.backend, threads=1)
            self.cropper = Cropper(self.engine.config, self.settings)
        return self.engine

    def describe(self):
        engine = self._open()
        return engine.name, engine.config

    @ray.method(concurrency_group="control")  # answers while a shard is being scanned
    def pid(self) -> int:
        return os.getpid()

    def scan_video(self, video, detect, vs, threshold: float):
        """One clip whole: ``(faces table, videos.parquet row)`` with the clip's wall time."""
        import time

        from scanner.run.videos import VideoScanner

        key = (repr(detect), repr(vs), threshold)
        if self.clips is None or self.clips[0] != key:
            if self.clips is not None:
                self.clips[1].close()
            settings = replace(self.settings, threshold=threshold)
            self.clips = key, VideoScanner(self._open(), settings, detect, vs)
        start = time.perf_counter()
        table, row = self.clips[1].scan(video)
        row["seconds"] = round(time.perf_counter() - start, 3)
        return table, row

    def scan(self, catalog) -> pa.Table:
        from scanner.run.scan import scan

        tables = list(scan(catalog, self._open(), self.settings, cropper=self.cropper))
        return pa.concat_tables(tables) if tables else FACES_SCHEMA.empty_table()


def _connect(address: str | None, local_cpus: int) -> bool:
    """Join (or start) the cluster; True when this call started it and so must stop it."""
    if ray.is_initialized():  # a caller (a test, a notebook) already chose the cluster
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:  # Ray itself retries a dead address for minutes
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as exc:
            raise DfscanError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); "
                              "is the head node up ('ray start --head', 'ray status')?") from None
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        if address == "local":
            ray.init(address="local", num_cpus=local_cpus, include_dashboard=False)
        else:
            ray.init(address=address)
    except ConnectionError as exc:
        reason = str(exc).splitlines()[0]
        raise DfscanError(f"--ray-address {address}: cannot join a Ray cluster there ({reason}); "
                          "is one running ('ray status'), and does this machine have its token "
                          "(RAY_AUTH_MODE=token, RAY_AUTH_TOKEN)? Or use --ray-address local") from None
    if callable(on_term) and threading.current_thread() is threading.main_thread():
        # Ray's core installs a SIGTERM handler that aborts the driver; a scheduler's SIGTERM must
        # still save the buffered rows and explain --resume, as without --ray
        signal.signal(signal.SIGTERM, on_term)
    return True


def _get(ref):
    """``ray.get``, with a worker's DfscanError raised as itself (one line, not Ray's traceback)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, DfscanError):
            raise DfscanError(str(exc.cause)) from None
        raise


class RayScanner:
    """A pool of ShardScanner actors; ``scan`` yields one table per finished shard.

    Raises DfscanError when the cluster cannot be reached or cannot hold one worker.
    """

    def __init__(self, engine_path, settings, opts: RayOptions, log=print):
        self.opts = opts
        self.started = _connect(opts.address, max(os.cpu_count() or 1, opts.workers or 1))
        try:
            self._start_workers(engine_path, settings, log)
        except BaseException:
            self.close()
            raise

    def _start_workers(self, engine_path, settings, log):
        have = ray.cluster_resources()
        gpus = self.opts.gpus_per_worker
        if gpus is None:
            gpus = 1 if have.get("GPU", 0) >= 1 and settings.device != "cpu" else 0
        if settings.device == "gpu" and not gpus:
            raise DfscanError("--device gpu: the Ray cluster has no GPU, or --gpus-per-worker is 0")
        if settings.device == "cpu" and gpus:
            raise DfscanError(f"--device cpu contradicts --gpus-per-worker {gpus:g}")
        if gpus > have.get("GPU", 0):
            raise DfscanError(f"--gpus-per-worker {gpus:g}: the Ray cluster has {have.get('GPU', 0):g} GPUs; "
                              "use --gpus-per-worker 0 to scan on CPUs")
        settings.device = "gpu" if gpus else "cpu"
        self.threshold = settings.threshold
        self.settings = settings  # the driver resolves its threshold once the engine is open
        workers = self.opts.workers or max(1, int(have.get("GPU", 0) // gpus if gpus else have.get("CPU", 1)))
        self.engine_path = os.path.abspath(engine_path)  # the same path on every node (shared storage)
        self.choice, backend = None, None
        if not gpus:  # CPU workers: choose (build, gate, race) once here, not once per worker
            from scanner.run.engine import choose

            self.choice = choose(engine_path, replace(settings, engine_threads=1), log)
            log(f"engine: {self.choice.reason} ({self.choice.path})")
            backend = self.choice.backend
            self.engine_path = os.path.abspath(self.choice.path)  # the cache must be shared storage too
        tag = uuid.uuid4().hex[:8]  # names show in 'ray list actors'; unique per job
        self.actors = [ShardScanner.options(name=f"dfscan-{tag}-worker-{n}", num_cpus=1, num_gpus=gpus,
                                            max_restarts=-1, max_task_retries=self.opts.retries)
                       .remote(self.engine_path, settings, backend) for n in range(workers)]
        self.starting = {a.describe.remote(): a for a in self.actors}
        self.free: deque = deque()
        what = f"{workers} worker{'s' * (workers != 1)} on " + (f"GPU ({gpus:g} each)" if gpus else "CPU")
        log(f"Ray: {what}; the cluster has {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs; "
            "waiting for the first worker")
        first, _ = ray.wait(list(self.starting), num_returns=1)
        name, config = self._ready(first[0])
        self.engine = SimpleNamespace(name=name, config=config)  # what run_meta needs

    def _ready(self, ref):
        actor = self.starting.pop(ref)
        try:
            info = _get(ref)
        except ray.exceptions.RayActorError as exc:
            raise DfscanError(f"a Ray worker died while opening {self.engine_path}: "
                              f"{str(exc).splitlines()[0]}") from None
        self.free.append(actor)
        return info

    def _finished(self, todo: deque, submit):
        """Send the items of ``todo`` to free workers (``submit(actor, item)`` → a task's ref) and
        yield ``(item, result, None)``, or ``(item, None, exc)`` where the worker died, in the order
        they finish; the caller may put items back into ``todo`` meanwhile."""
        running: dict = {}  # ref -> (actor, item); one item per actor, so a crash names its item
        while todo or running:
            while todo and self.free:
                actor, item = self.free.popleft(), todo.popleft()
                running[submit(actor, item)] = (actor, item)
            (ref,), _ = ray.wait(list(running) + list(self.starting), num_returns=1)
            if ref in self.starting:
                self._ready(ref)
                continue
            actor, item = running.pop(ref)
            try:
                result = _get(ref)
            except ray.exceptions.RayActorError as exc:
                # The actor restarts. It gets new work only once it answers again: an item sent
                # to it mid-restart fails too, and would be taken for a culprit of its own.
                self.starting[actor.describe.options(max_task_retries=-1).remote()] = actor
                yield item, None, exc
                continue
            self.free.append(actor)
            yield item, result, None

    def scan(self, catalog, image_ids=None, on_faces=None) -> Iterator[pa.Table]:
        """Rows of ``image_ids`` (default all), one table per shard in the order shards finish."""
        ids = list(catalog.images if image_ids is None else image_ids)
        size = self.opts.shard_images
        todo = deque((ids[i:i + size], self.opts.retries) for i in range(0, len(ids), size))

        def submit(actor, item):
            shard, retries = item
            return actor.scan.options(max_task_retries=retries).remote(catalog.subset(shard))

        for (shard, _), table, exc in self._finished(todo, submit):
            if exc is not None:
                if len(shard) > 1:  # find the image that kills the worker; its neighbours get scanned
                    half = len(shard) // 2
                    for part in (shard[half:], shard[:half]):  # a lone image gets the full retries
                        todo.appendleft((part, 0 if len(part) > 1 else self.opts.retries))
                    continue
                table = self._crashed(catalog, shard[0], exc)
            if on_faces is not None:
                on_faces(table.num_rows)
            yield table

    def clips(self, detect, vs):
        """``clip_scans`` for ``scanner.run.videos.scan_videos``: one clip per free worker; yields
        ``(video, faces table, row)`` in the order clips finish."""
        threshold = self.settings.threshold_for(self.engine.config)[0]

        def clip_scans(videos):
            submit = lambda actor, video: actor.scan_video.remote(video, detect, vs, threshold)  # noqa: E731
            for video, result, exc in self._finished(deque(videos), submit):
                # Ray's retries are spent where the worker died: the clip is the culprit
                table, row = result if exc is None else self._crashed_clip(video, exc, threshold)
                yield video, table, row

        return clip_scans

    def _crashed_clip(self, video, exc, threshold):
        from scanner.output.videos import failed_clip

        why = (f"the Ray worker died each time it scanned this clip ({str(exc).splitlines()[0][:200]}); "
               "the rest of the job went on")
        return failed_clip(video, WORKER_CRASHED, why, threshold)

    def _crashed(self, catalog, image_id, exc) -> pa.Table:
        faces = catalog.images[image_id].face_ids
        why = (f"the Ray worker died each time it scanned this image ({str(exc).splitlines()[0][:200]}); "
               "the rest of the job went on")
        return rows_to_table(catalog, faces, {f: (None, WORKER_CRASHED, why) for f in faces}, {},
                             self.threshold)

    def close(self):
        if self.started:  # the actors belong to this driver's job: they end with it
            ray.shutdown()
            return
        for actor in getattr(self, "actors", []):
            ray.kill(actor, no_restart=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
