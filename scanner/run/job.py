"""One ``dfscan run``: catalog → engine → scan → parts → faces.parquet (+ metrics.parquet), then the
folder's video files (``scanner.run.videos``) → videos.parquet (+ video_metrics.parquet)."""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engines.files import versions, write_table
from scanner.catalog import load_catalog
from scanner.catalog.videos import ID_SPAN, find_videos, read_labels
from scanner.detect import detect as detection
from scanner.errors import DfscanError, RunInterrupted
from scanner.output.metrics import METRICS_SCHEMA, metrics_table
from scanner.output.parts import RunOutput
from scanner.output.videos import video_metrics_table, videos_table
from scanner.pipeline.video_decoders import resolve_video_decoder
from scanner.run.engine import DEFAULT_ENGINE, budget_threads, open_engine
from scanner.run.scan import scan
from scanner.run.videos import VideoSettings, local_clips, saved_videos, scan_videos
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
    videos_path: Path | None = None
    videos: list | None = None  # videos.parquet rows
    video_metrics: dict | None = None

    def line(self) -> str:
        rate = self.scanned_faces / self.seconds if self.seconds > 0 else float("nan")
        text = (f"scanned {self.faces} faces in {self.images} images in {self.seconds:.1f} s "
                f"({rate:.1f} faces/s): {self.faces_ok} ok, {self.faces_failed} with an error status "
                f"-> {self.faces_path}")
        if self.resumed_faces:
            text += f" ({self.resumed_faces} faces came from the interrupted run)"
        if self.videos:
            ok = sum(1 for v in self.videos if v["status"] == "ok")
            text += f"; {len(self.videos)} videos ({ok} ok) -> {self.videos_path}"
        if self.video_metrics:
            m = self.video_metrics
            text += (f"; per video: accuracy {m['accuracy']:.4f}, ROC-AUC {m['roc_auc']:.4f} over {m['n']} clips")
        if self.metrics:
            m = self.metrics
            text += (f"; accuracy {m['accuracy']:.4f}, precision {m['precision']:.4f}, recall "
                     f"{m['recall']:.4f}, F1 {m['f1']:.4f}, ROC-AUC {m['roc_auc']:.4f}, EER {m['eer']:.4f}")
        return text


def cuda_driver_present() -> bool:
    """Whether the CUDA driver library can be loaded: where it cannot, torch sees no GPU either."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def resolve_device(device: str) -> str:
    """'auto' → 'gpu' where CUDA is visible, else 'cpu'; 'gpu' without a GPU is an error."""
    if device == "cpu" or (device == "auto" and not cuda_driver_present()):  # (no torch to say so: 3 s)
        return "cpu"
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
            "threshold": settings.threshold, "threshold_origin": settings.threshold_origin,
            "device": settings.device, "batch_size": settings.batch_size,
            "max_pixels": settings.max_pixels, "images": str(Path(images).resolve()),
            "annotations": str(catalog.annotations.resolve()) if catalog.annotations else None,
            "versions": versions()}


def early_decoder(catalog, engine_path, settings: RunSettings):
    """The decoding child for a checkpoint's run, started before the engine is chosen and opened
    (``scanner.pipeline.isolation.early_decoder``), with the config in the checkpoint's header;
    None for other engine files or an unreadable header (the scan then starts its own, and the
    engine's own checks report what is wrong)."""
    path = Path(engine_path or DEFAULT_ENGINE)
    if path.suffix.lower() not in (".pt", ".pth") or not path.is_file():
        return None
    try:
        from engines.checkpoint import read_header
        from engines.config import ModelConfig

        config = ModelConfig.from_dict(read_header(path)["config"])
    except Exception:  # noqa: BLE001 - only a head start is lost
        return None
    from scanner.pipeline.isolation import early_decoder as start

    return start(catalog, config, settings.fitted(config.input_size))


@contextlib.contextmanager
def open_scanner(catalog, engine_path, settings: RunSettings, ray=None, log=print):
    """Yields ``(engine, engine_path, choice, scan_todo, clips)``: this process's engine, ``scan``
    and ``local_clips`` (``isolated_clips`` on the CPU with ``isolate_decoder``), or with ``ray``
    (a ``scanner.run.distributed.RayOptions``) a pool of Ray workers, stopped on exit.
    ``clips(detect, videos)`` gives ``scan_videos`` its ``clip_scans``."""
    if ray is None:
        settings.num_threads = budget_threads(settings)[0]
        isolate = settings.decodes_in_child
        decoder = early_decoder(catalog, engine_path, settings) if isolate and catalog.faces else None
        try:
            engine, engine_path, choice = open_engine(engine_path, settings, log)

            def clips(detect, videos):
                if isolate:
                    from scanner.run.clip_isolation import isolated_clips

                    return isolated_clips(choice, engine.config, settings, detect, videos, log)
                return local_clips(engine, settings, detect, videos, log)

            scan_todo = functools.partial(scan, catalog, engine, settings, decoder=decoder)
            yield engine, engine_path, choice, scan_todo, clips
        finally:
            if decoder is not None:  # the scan closed it, or never ran (nothing left to scan)
                decoder.close()
        return
    from scanner.run.distributed import RayScanner

    with RayScanner(engine_path or DEFAULT_ENGINE, settings, ray, log) as pool:
        yield (pool.engine, Path(engine_path or DEFAULT_ENGINE), pool.choice, functools.partial(pool.scan, catalog),
               pool.clips)


def run_job(images, out_dir, engine_path=None, annotations=None, settings: RunSettings | None = None,
            overwrite: bool = False, resume: bool = False, allow_outside: bool = False,
            part_rows: int = 4096, progress: bool = True, log=print, ray=None, detect=None,
            videos: VideoSettings | None = None) -> RunSummary:
    """Scan ``images`` into ``out_dir``, here or with ``ray`` (RayOptions) on a Ray cluster.
    Raises DfscanError when the run cannot be done and RunInterrupted (after saving what was
    scanned) on Ctrl-C. ``detect`` (``scanner.detect.DetectSettings``) finds the faces where
    there are no annotations; None (the library default) keeps one whole-image face per image.
    Video files below ``images`` are sampled and scanned as ``videos`` (VideoSettings) says."""
    settings = settings or RunSettings()
    videos = videos or VideoSettings()
    if ray is None:  # Ray workers find their own device
        settings.device = resolve_device(settings.device)
        if settings.decodes_in_child:
            from scanner.pipeline.isolation import start_forkserver

            start_forkserver()  # its DALI import overlaps the catalog and the engine
    catalog = load_catalog(images, annotations, allow_outside=allow_outside)
    log(catalog.summary())
    clips = video_catalog(images, catalog, videos, log)
    detecting, save_detections = detection.applies(catalog, detect), None
    if detecting:  # a plain folder: find the faces, then scan them as annotated ones
        # detection runs here, in this process, even when Ray scans
        detect.device = resolve_device("auto" if ray is not None else settings.device)
        detect.max_pixels = settings.max_pixels
        catalog, save_detections = detection.catalog_for_run(catalog, images, out_dir, detect, resume=resume,
                                                             overwrite=overwrite, progress=progress, log=log)
        log(catalog.summary())
    with open_scanner(catalog, engine_path, settings, ray, log) as (engine, engine_path, choice, scan_todo,
                                                                   clip_scans):
        # resolved once the engine is open (its config carries the trained threshold); scan_todo
        # holds this same settings object
        settings.threshold, settings.threshold_origin = settings.threshold_for(engine.config)
        log(f"threshold {settings.threshold:.4g} ({settings.threshold_origin})")
        settings = settings.fitted(engine.config.input_size, log)  # scan() fits alike; this line tells the user
        meta = run_meta(engine, engine_path, settings, images, catalog, choice)
        meta.update(detect.meta() if detecting else {})
        # the decoder 'auto' means on this run's device goes into the manifest, and --resume keeps it
        videos = replace(videos, decoder=resolve_video_decoder(videos.decoder, settings.device))
        meta.update(videos.meta() if clips else {})
        # decoding in a supervised child process (scanner.pipeline.isolation, and
        # scanner.run.clip_isolation for clips): CPU runs here only
        meta["isolate_decoder"] = ray is None and settings.decodes_in_child
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
        scanned, video_rows = 0, None
        try:
            for table in scan_todo(image_ids=todo, on_faces=bar.update):
                output.add(table)
                scanned += table.num_rows
            bar.close()
            if clips and not output.complete:
                if detect is not None:
                    detect.device = settings.device
                video_rows, video_faces = scan_videos(clips, videos, output, clip_scans(detect, videos),
                                                      progress, log)
                scanned += video_faces
        except KeyboardInterrupt:
            output.record_session(len(todo), scanned, True, time.perf_counter() - start)
            output.flush()
            bar.close()
            done = np.unique(output.done_face_array())
            saved = int(np.count_nonzero(done < ID_SPAN))  # video faces' ids start at ID_SPAN
            clips_saved = f" and {len(saved_videos(clips, output))} of {len(clips)} videos" if clips else ""
            raise RunInterrupted(f"interrupted: {saved} of {len(catalog.faces)} image faces{clips_saved} are saved "
                                 f"in {output.dir}; run the same command with --resume to finish") from None
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
    labelled = catalog.has_labels or any(c.label is not None for c in clips)
    table = metrics_table(faces, settings.threshold, settings.threshold_origin) if labelled else None
    if table is not None:
        metrics_path = write_table(output.dir / "metrics.parquet", table.cast(METRICS_SCHEMA), meta)
        first = table.slice(0, 1).to_pylist()[0]
    summary = RunSummary(len(catalog.images), faces.num_rows, ok, faces.num_rows - ok, seconds,
                         faces_path, metrics_path, first, resumed_faces=resumed, scanned_faces=scanned)
    if video_rows is not None:
        summary.videos_path, summary.videos, summary.video_metrics = write_videos(
            output.dir, video_rows, settings.threshold, meta, settings.threshold_origin)
    return summary


def video_catalog(images, catalog, videos: VideoSettings, log=print) -> list:
    """The run's video files (with their --labels), or [] when sampling is off."""
    if videos.frames_per_video == 0 and not videos.fps:
        return []
    labels = read_labels(videos.labels, images) if videos.labels else None
    clips = find_videos(images, labels)
    if videos.only is not None:  # indexes (and so ids) stay those of the whole folder
        clips = [c for c in clips if c.file in videos.only]
    if clips and max(catalog.faces, default=0) >= ID_SPAN:
        raise DfscanError(f"{catalog.annotations}: face ids reach 2**32, where video faces' ids start; "
                          "renumber the annotations or scan the videos in a separate run")
    if labels:
        unknown = len(set(labels) - {c.file for c in clips})
        log(f"{len(clips)} video files, {sum(c.label is not None for c in clips)} labelled"
            + (f"; {unknown} rows of {videos.labels} name no video here (ignored)" if unknown else ""))
    elif clips:
        log(f"{len(clips)} video files")
    return clips


def write_videos(out_dir, rows: list[dict], threshold: float, meta: dict, origin: str = "default"):
    """``videos.parquet`` (+ ``video_metrics.parquet`` when clips carry labels)."""
    table = videos_table(rows)
    path = write_table(Path(out_dir) / "videos.parquet", table, meta)
    metrics = video_metrics_table(table, threshold, origin)
    first = None
    if metrics is not None:
        write_table(Path(out_dir) / "video_metrics.parquet", metrics, meta)
        first = metrics.to_pylist()[0]
    return path, rows, first
