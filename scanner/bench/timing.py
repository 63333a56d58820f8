"""Timing the dfscan pipeline: the real ``scan()``, its producer alone, and DALI decode alone.

Inside one DALI graph decode and crop+resize cannot be told apart per batch, so the stages are
measured in three passes over the same files:

* ``time_scan``: the product path as ``dfscan run`` takes it (producer thread overlapping the
  engine, rows written as parts, then faces.parquet); gives throughput, batch latency,
  inference and write time.
* ``time_producer``: reading + probing files and the DALI graph with no engine behind them; gives
  ``read_s`` and ``dali_s`` (decode + crop + resize + normalise).
* ``time_decode_only``: a decode-only DALI graph on the same images; its images/s is the ceiling
  any crop pipeline on this device can reach.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from scanner.output.metrics import metrics_table
from scanner.output.parts import RunOutput
from scanner.pipeline.batching import plan_batches
from scanner.pipeline.cropper import Cropper
from scanner.run.scan import scan
from scanner.settings import RunSettings


def synchronize(device: str):
    """Wait for the GPU before a clock is read (DALI and the engines use their own streams)."""
    if device == "gpu":
        import torch

        torch.cuda.synchronize()


class TimedEngine:
    """The engine as it is, with the seconds spent in ``infer`` (device synchronised) counted."""

    def __init__(self, engine, device: str):
        self.engine, self.device_kind, self.seconds = engine, device, 0.0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def infer(self, batch):
        t = time.perf_counter()
        out = self.engine.infer(batch)
        synchronize(self.device_kind)
        self.seconds += time.perf_counter() - t
        return out


@dataclass
class ScanTiming:
    total_s: float
    infer_s: float
    write_s: float
    batch_s: list[float]
    faces: object  # pyarrow Table: faces.parquet as dfscan wrote it
    metrics: dict | None = None
    stages: dict = field(default_factory=dict)


def warm_up(engine, catalog, settings: RunSettings, scratch, n_images: int = 4):
    """First-call costs out of the way: engine allocations at the batch size, and a small scan
    (DALI libraries, the first Parquet write) into the folder ``scratch``."""
    h, w = engine.config.input_size
    engine.infer(np.zeros((settings.batch_size, 3, h, w), dtype=np.float32))
    output = RunOutput(scratch, {}, overwrite=True)
    for table in scan(catalog, engine, settings, image_ids=list(catalog.images)[:n_images]):
        output.add(table)
    output.finish({f: n for n, f in enumerate(catalog.faces)})
    synchronize(settings.device)


def time_engine_only(engine, batch_size: int, device: str, windows: int = 5, min_batches: int = 2,
                     min_s: float = 0.3, max_batches: int = 10) -> dict:
    """The engine alone on ready tensors: faces/s of ``batch_size``-face batches, engine warm.

    One untimed batch, then ``windows`` timed windows of at least ``min_batches`` batches and
    ``min_s`` seconds (at most ``max_batches``), and the median window's rate: on the 2-core test
    machine one window of the same engine ranged 92-139 faces/s from run to run, which made
    ``efficiency`` swing more than the gap it is meant to show. A slow resolution costs seconds.
    Returns ``{'engine_faces_per_s', 'engine_batches'}``.
    """
    h, w = engine.config.input_size
    x = np.random.default_rng(0).standard_normal((batch_size, 3, h, w), dtype=np.float32)
    if device == "gpu":
        import torch

        x = torch.from_numpy(x).cuda()
    engine.infer(x)
    synchronize(device)
    rates, total = [], 0
    for _ in range(windows):
        n, start = 0, time.perf_counter()
        while n < max_batches and (n < min_batches or time.perf_counter() - start < min_s):
            engine.infer(x)
            synchronize(device)
            n += 1
        rates.append(n * batch_size / (time.perf_counter() - start))
        total += n
    return {"engine_faces_per_s": float(np.median(rates)), "engine_batches": total}


def time_scan(catalog, engine, settings: RunSettings, out_dir, meta: dict) -> ScanTiming:
    """One full ``scan()`` into the folder ``out_dir``, written as ``dfscan run`` writes it
    (``scanner.output.RunOutput``: parts, then faces.parquet in catalog order).

    As in ``dfscan run`` with a checkpoint (``scanner.run.job.early_decoder``), the decoding child
    is started, and builds its DALI pipeline, before the scan's clock starts: a run overlaps that
    start with opening its engine, which the bench has done before this call."""
    import pyarrow.parquet as pq

    from scanner.pipeline.isolation import early_decoder

    decoder = None
    if settings.decodes_in_child and catalog.faces:
        decoder = early_decoder(catalog, engine.config, settings)
        decoder.wait_ready()
    timed = TimedEngine(engine, settings.device)
    output = RunOutput(out_dir, meta, overwrite=True)
    batch_s, write_s = [], 0.0
    start = last = time.perf_counter()
    try:
        for table in scan(catalog, timed, settings, decoder=decoder):
            t = time.perf_counter()
            output.add(table)
            write_s += time.perf_counter() - t
            now = time.perf_counter()
            batch_s.append(now - last)  # as the consumer sees it: waiting for crops included
            last = now
    finally:
        if decoder is not None:  # the scan closed it, or never reached it
            decoder.close()
    t = time.perf_counter()
    path = output.finish({f: n for n, f in enumerate(catalog.faces)})
    synchronize(settings.device)
    end = time.perf_counter()
    write_s += end - t
    total = end - start
    faces = pq.read_table(path)
    threshold, origin = settings.threshold_for(engine.config)
    metrics = metrics_table(faces, threshold, origin) if catalog.has_labels else None
    first = metrics.slice(0, 1).to_pylist()[0] if metrics is not None else None
    return ScanTiming(total, timed.seconds, write_s, batch_s, faces, first)


def time_producer(catalog, config, settings: RunSettings) -> dict:
    """Seconds in reading + probing files (``read_s``) and in the DALI graph (``dali_s``)."""
    cropper = Cropper(config, settings)
    batches = plan_batches(catalog, settings.batch_size, config.crop_margin, settings.max_pixels)
    read_s = dali_s = 0.0
    warmed = False
    while True:
        t = time.perf_counter()
        planned = next(batches, None)
        read_s += time.perf_counter() - t
        if planned is None:
            break
        if not planned.jobs:
            continue
        if not warmed:  # pipeline build and first-run allocations are not a per-batch cost
            cropper.crop(planned.jobs)
            warmed = True
        t = time.perf_counter()
        cropper.crop(planned.jobs)
        synchronize(settings.device)
        dali_s += time.perf_counter() - t
    cropper.discard()
    return {"read_s": read_s, "dali_s": dali_s}


def time_decode_only(catalog, config, settings: RunSettings, image_ids=None) -> dict:
    """DALI decode of each image once, batch by batch; file reading is outside the clock.

    Returns ``{'images', 'decode_s', 'batch_s'}``. Only images the scan could decode are used.
    """
    from scanner.pipeline.graphs import build_decode_pipeline

    pipe = build_decode_pipeline(settings.batch_size, settings.device, settings.num_threads)
    try:
        return _decode_all(pipe, catalog, config, settings, image_ids)
    finally:  # its buffers go now, not whenever the collector gets to them (peak memory of what follows)
        pipe._shutdown()


def _decode_all(pipe, catalog, config, settings: RunSettings, image_ids) -> dict:
    keep = set(catalog.images if image_ids is None else image_ids)
    seen, pending, batch_s = set(), [], []

    def run(encoded):
        pipe.feed_input("encoded", encoded)
        t = time.perf_counter()
        pipe.run()
        synchronize(settings.device)
        batch_s.append(time.perf_counter() - t)

    for planned in plan_batches(catalog, settings.batch_size, config.crop_margin, settings.max_pixels):
        for job in planned.jobs:
            if job.image_id in keep and job.image_id not in seen:
                seen.add(job.image_id)
                pending.append(job.encoded)
            if len(pending) == settings.batch_size:
                if not batch_s:
                    run(pending)  # warm-up: first-run allocations
                    batch_s.clear()
                run(pending)
                pending = []
    if pending:
        if not batch_s:
            run(pending)
            batch_s.clear()
        run(pending)
    return {"images": len(seen), "decode_s": float(sum(batch_s)), "batch_s": batch_s}
