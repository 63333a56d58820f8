"""The plain way dfscan is measured against: PIL per face, a torch DataLoader, eager torch.

As the seed scripts did it: every face opens and decodes its image again (an image with eight
faces is decoded eight times), crops and resizes it with PIL, and a DataLoader with worker
processes batches the crops for the model in eval mode under ``torch.inference_mode``. The crop
convention is dfscan's own (``face_roi`` with the config's ``crop_margin``, box resized without
keeping aspect, bilinear with antialiasing, the config's mean/std), so scores agree closely.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

import numpy as np

from scanner.output.parts import RunOutput
from scanner.output.schema import rows_to_table
from scanner.pipeline.geometry import face_roi
from scanner.run.scan import softmax_fake
from scanner.status import OK

PIL_RESAMPLE = {"linear": 2, "bilinear": 2, "cubic": 3, "bicubic": 3, "nearest": 0, "lanczos": 1}


class FaceCrops:
    """A map-style dataset of ``(face_id, path, bbox)``; items are (crop, face_id, stage seconds)."""

    def __init__(self, items, config):
        self.items = items
        self.height, self.width = config.input_size
        self.margin = config.crop_margin
        self.resample = PIL_RESAMPLE.get(config.interpolation, 2)
        self.mean = np.array(config.mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.array(config.std, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import torch
        from PIL import Image

        face_id, path, bbox = self.items[i]
        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            data = fh.read()
        t1 = time.perf_counter()
        with Image.open(io.BytesIO(data)) as im:
            image = im.convert("RGB")
        t2 = time.perf_counter()
        roi = face_roi(bbox, image.width, image.height, self.margin)
        # Pillow's resize filters with a support scaled to the reduction: antialiased, like DALI's
        face = image.resize((self.width, self.height), resample=self.resample, box=roi)
        x = (np.asarray(face, dtype=np.float32).transpose(2, 0, 1) / 255.0 - self.mean) / self.std
        t3 = time.perf_counter()
        return torch.from_numpy(x), face_id, torch.tensor([t1 - t0, t2 - t1, t3 - t2], dtype=torch.float64)


class _SwitchSampler:
    """Yields ``self.indices``; changed between epochs so persistent workers serve a warm-up first."""

    def __init__(self, indices):
        self.indices = list(indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


@dataclass
class BaselineTiming:
    total_s: float
    infer_s: float
    write_s: float
    worker_s: dict  # read/decode/crop CPU-seconds summed over the workers
    batch_s: list[float]
    faces: object  # pyarrow Table


def time_baseline(catalog, face_ids, model, config, batch_size: int, device: str, out_dir,
                  meta: dict, threshold: float = 0.5, workers: int | None = None) -> BaselineTiming:
    """Score ``face_ids`` of ``catalog`` the plain way; writes the same rows, the same way, as
    dfscan does (``scanner.output.RunOutput`` into the folder ``out_dir``)."""
    import torch
    from torch.utils.data import DataLoader

    items = [(f, catalog.images[catalog.faces[f].image_id].path, catalog.faces[f].bbox) for f in face_ids]
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    sampler = _SwitchSampler(range(min(batch_size, len(items))))
    loader = DataLoader(FaceCrops(items, config), batch_size=batch_size, sampler=sampler,
                        num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device == "gpu")
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    if device == "gpu":  # a copy: the caller's model stays on the CPU for the next export
        import copy

        model = copy.deepcopy(model)
    model = model.to(dev).eval()

    def infer(x):
        with torch.inference_mode():
            logits = model(x.to(dev, non_blocking=True)).float().cpu().numpy()
        if device == "gpu":
            torch.cuda.synchronize()
        return logits

    for x, _, _ in loader:  # warm-up: workers started, first-call allocations made
        infer(x)
    sampler.indices = list(range(len(items)))
    output = RunOutput(out_dir, meta, overwrite=True)
    order = {f: n for n, f in enumerate(catalog.faces)}
    batch_s = []
    infer_s = write_s = 0.0
    worker = torch.zeros(3, dtype=torch.float64)
    start = last = time.perf_counter()
    batches = iter(loader)
    while True:
        item = next(batches, None)
        if item is None:
            break
        x, ids, stage = item
        worker += stage.sum(0)
        t = time.perf_counter()
        scores = softmax_fake(infer(x))
        infer_s += time.perf_counter() - t
        results = {int(f): (float(s), OK, None) for f, s in zip(ids, scores)}
        table = rows_to_table(catalog, sorted(results, key=order.__getitem__), results, {}, threshold)
        t = time.perf_counter()
        output.add(table)
        write_s += time.perf_counter() - t
        now = time.perf_counter()
        batch_s.append(now - last)
        last = now
    t = time.perf_counter()
    path = output.finish(order)
    end = time.perf_counter()
    write_s += end - t
    total = end - start
    del batches, loader  # stops the persistent workers
    import pyarrow.parquet as pq

    faces = pq.read_table(path)
    stages = dict(zip(("read_s", "decode_s", "crop_s"), worker.tolist()))
    return BaselineTiming(total, infer_s, write_s, stages, batch_s, faces)
