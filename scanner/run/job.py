"""One ``dfscan run``: catalog → engine → scan → parts → faces.parquet (+ metrics.parquet)."""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engines.files import versions, write_table
from scanner.catalog import load_catalog
from scanner.detect import detect as detection
from scanner.errors import DfscanError, RunInterrupted
from scanner.output.metrics import METRICS_SCHEMA, metrics_table
from scanner.output.parts import RunOutput
from scanner.run.engine import DEFAULT_ENGINE, budget_threads, open_engine
from scanner.run.scan import scan
from scanner.settings import RunSettings



@dataclass
class RunSummary:
    images: int
    faces: int
    faces_ok: int
    faces_failed: int
    seconds: float
    faces_path: Path
    metrics_path: Path | None
    metrics: dict | None
    resumed_faces: int = 0  # rows that earlier, interrupted runs had saved
    scanned_faces: int = 0  # rows this call scanned

    def line(self) -> str:
        rate = self.scanned_faces / self.seconds if self.seconds > 0 else float("nan")
        text = (f"scanned {self.faces} faces in {self.images} images in {self.seconds:.1f} s "
                f"({rate:.1f} faces/s): {self.faces_ok} ok, {self.faces_failed} with an error status "
                f"-> {self.faces_path}")
        if self.resumed_faces:
            text += f" ({self.resumed_faces} faces came from the interrupted run)"
        if self.metrics:
            m = self.metrics
            text += (f"; accuracy {m['accuracy']:.4f}, precision {m['precision']:.4f}, recall "
                     f"{m['recall']:.4f}, F1 {m['f1']:.4f}, ROC-AUC {m['roc_auc']:.4f}, EER {m['eer']:.4f}")
        return text


def resolve_device(device: str) -> str:
    """'auto' → 'gpu' where CUDA is visible, else 'cpu'; 'gpu' without a GPU is an error."""
    import torch

    has_gpu = torch.cuda.is_available()
    if device == "auto":
        return "gpu" if has_gpu else "cpu"
    if device == "gpu" and not has_gpu:
        raise DfscanError("--device gpu: no CUDA GPU is visible here; use --device cpu or auto")
    if device not in ("cpu", "gpu"):
        raise DfscanError(f"--device {device!r}: choose auto, cpu or gpu")
    return device


def run_meta(engine, engine_path, settings: RunSettings, images, catalog, choice=None) -> dict:
    """The settings and versions that go into the manifest and every Parquet file."""
    chosen = {} if choice is None else {"engine_file": str(choice.path), "precision": choice.precision,
                                        "engine_choice": choice.reason}
    return {"engine": str(Path(engine_path).resolve()), **chosen, "backend": engine.name, "arch": engine.config.arch,
            "input_size": list(engine.config.input_size), "crop_margin": engine.config.crop_margin,
            "threshold": settings.threshold, "device": settings.device, "batch_size": settings.batch_size,
            "max_pixels": settings.max_pixels, "images": str(Path(images).resolve()),
            "annotations": str(catalog.annotations.resolve()) if catalog.annotations else None,
            "versions": versions()}


@contextlib.contextmanager
def open_scanner(catalog, engine_path, settings: RunSettings, ray=None, log=print):
    """Yields ``(engine, engine_path, choice, scan_todo)``: this process's engine and ``scan``, or with
    ``ray`` (a ``scanner.run.distributed.RayOptions``) a pool of Ray workers, stopped on exit."""
    if ray is None:
        engine, engine_path, choice = open_engine(engine_path, settings, log)
        settings.num_threads = budget_threads(settings)[0]
        yield engine, engine_path, choice, functools.partial(scan, catalog, engine, settings)
        return
    from scanner.run.distributed import RayScanner

    with RayScanner(engine_path or DEFAULT_ENGINE, settings, ray, log) as pool:
        yield pool.engine, pool.engine_path, None, functools.partial(pool.scan, catalog)


def run_job(images, out_dir, engine_path=None, annotations=None, settings: RunSettings | None = None,
            overwrite: bool = False, resume: bool = False, allow_outside: bool = False,
            part_rows: int = 4096, progress: bool = True, log=print, ray=None, detect=None) -> RunSummary:
    """Scan ``images`` into ``out_dir``, here or with ``ray`` (RayOptions) on a Ray cluster.
    Raises DfscanError when the run cannot be done and RunInterrupted (after saving what was
    scanned) on Ctrl-C. ``detect`` (``scanner.detect.DetectSettings``) finds the faces where
    there are no annotations; None (the library default) keeps one whole-image face per image."""
    settings = settings or RunSettings()
    if ray is None:  # Ray workers find their own device
        settings.device = resolve_device(settings.device)
    catalog = load_catalog(images, annotations, allow_outside=allow_outside)
    log(catalog.summary())
    detecting, save_detections = detection.applies(catalog, detect), None
    if detecting:  # a plain folder: find the faces, then scan them as annotated ones
        # detection runs here, in this process, even when Ray scans
        detect.device = resolve_device("auto" if ray is not None else settings.device)
        detect.max_pixels = settings.max_pixels
        catalog, save_detections = detection.catalog_for_run(catalog, images, out_dir, detect, resume=resume,
                                                             overwrite=overwrite, progress=progress, log=log)
        log(catalog.summary())
    with open_scanner(catalog, engine_path, settings, ray, log) as (engine, engine_path, choice, scan_todo):
        settings = settings.fitted(engine.config.input_size, log)  # scan() fits alike; this line tells the user
        meta = run_meta(engine, engine_path, settings, images, catalog, choice)
        meta.update(detect.meta() if detecting else {})
        # decoding in a supervised child process (scanner.pipeline.isolation): CPU runs here only
        meta["isolate_decoder"] = ray is None and settings.isolate_decoder and settings.device == "cpu"
        output = RunOutput(out_dir, meta, resume=resume, overwrite=overwrite, part_rows=part_rows)
        if save_detections is not None:
            save_detections()
        start = time.perf_counter()
        done = np.zeros(0, dtype=np.int64) if output.complete else output.done_face_array()
        todo, resumed = catalog.pending_images(done)
        del done
        if resume and output.complete:
            log(f"{output.dir} already holds a complete run; nothing to scan")
            todo = []
        elif resumed:
            log(f"resuming: {resumed} faces already saved, {len(todo)} images left")
        from tqdm import tqdm

        bar = tqdm(total=len(catalog.faces), initial=resumed, unit="face", disable=not progress,
                   desc="scan", dynamic_ncols=True)
        scanned = 0
        try:
            for table in scan_todo(image_ids=todo, on_faces=bar.update):
                output.add(table)
                scanned += table.num_rows
        except KeyboardInterrupt:
            output.record_session(len(todo), scanned, True, time.perf_counter() - start)
            output.flush()
            bar.close()
            saved = len(np.unique(output.done_face_array()))
            raise RunInterrupted(f"interrupted: {saved} of {len(catalog.faces)} faces are saved in {output.dir}; "
                                 "run the same command with --resume to finish") from None
        bar.close()
    faces_path = output.dir / "faces.parquet"
    if not output.complete:
        output.record_session(len(todo), scanned, False, time.perf_counter() - start)
        faces_path = output.finish(catalog.face_cols.ids)
    seconds = time.perf_counter() - start
    # only the columns the counts and metrics need: no Python object per face
    faces = pq.read_table(faces_path, columns=["label", "score_fake", "status", "corruption"])
    ok = pc.sum(pc.equal(faces.column("status"), "ok")).as_py() or 0
    metrics_path, first = None, None
    table = metrics_table(faces, settings.threshold) if catalog.has_labels else None
    if table is not None:
        metrics_path = write_table(output.dir / "metrics.parquet", table.cast(METRICS_SCHEMA), meta)
        first = table.slice(0, 1).to_pylist()[0]
    return RunSummary(len(catalog.images), faces.num_rows, ok, faces.num_rows - ok, seconds,
                      faces_path, metrics_path, first, resumed_faces=resumed, scanned_faces=scanned)
