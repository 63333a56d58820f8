"""One ``dfscan run``: catalog → engine → scan → faces.parquet (+ metrics.parquet)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from engines.errors import DfscanError

from .catalog import load_catalog
from .metrics import METRICS_SCHEMA, metrics_table
from .runner import RunSettings, scan
from .schema import FACES_SCHEMA
from .writers import ParquetStream, versions, write_table

DEFAULT_ENGINE = Path(__file__).resolve().parent.parent / "engines" / "default" / "mobilenetv2.pt"


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

    def line(self) -> str:
        rate = self.faces / self.seconds if self.seconds > 0 else float("nan")
        text = (f"scanned {self.faces} faces in {self.images} images in {self.seconds:.1f} s "
                f"({rate:.1f} faces/s): {self.faces_ok} ok, {self.faces_failed} with an error status "
                f"-> {self.faces_path}")
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


def open_engine(engine_path, device: str):
    from engines.backends import load_engine

    if engine_path is None:
        if not DEFAULT_ENGINE.is_file():
            raise DfscanError("no --engine given and no default model is installed; pass --engine FILE "
                              "(.plan, .onnx or .pt; 'dfscan export --arch mobilenetv2' makes an untrained one)")
        engine_path = DEFAULT_ENGINE
    return load_engine(engine_path, device="cuda" if device == "gpu" else "cpu"), Path(engine_path)


def run_job(images, out_dir, engine_path=None, annotations=None, settings: RunSettings | None = None,
            overwrite: bool = False, progress: bool = True, log=print) -> RunSummary:
    settings = settings or RunSettings()
    settings.device = resolve_device(settings.device)
    out_dir = Path(out_dir)
    faces_path = out_dir / "faces.parquet"
    if faces_path.exists() and not overwrite:
        raise DfscanError(f"{faces_path} exists; pass --overwrite to replace it or choose another --out")
    catalog = load_catalog(images, annotations)
    log(catalog.summary())
    engine, engine_path = open_engine(engine_path, settings.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"engine": str(engine_path), "backend": engine.name, "arch": engine.config.arch,
            "input_size": list(engine.config.input_size), "crop_margin": engine.config.crop_margin,
            "threshold": settings.threshold, "device": settings.device,
            "batch_size": settings.batch_size, "images": str(images),
            "annotations": str(catalog.annotations) if catalog.annotations else None,
            "versions": versions()}
    stream = ParquetStream(faces_path, FACES_SCHEMA, meta)
    start = time.perf_counter()
    try:
        from tqdm import tqdm

        with tqdm(total=len(catalog.faces), unit="face", disable=not progress, desc="scan",
                  dynamic_ncols=True) as bar:
            for table in scan(catalog, engine, settings, on_faces=bar.update):
                stream.write(table)
    except BaseException:
        stream.abort()
        raise
    stream.close()
    seconds = time.perf_counter() - start
    faces = pq.read_table(faces_path)
    ok = sum(1 for s in faces.column("status").to_pylist() if s == "ok")
    metrics_path, first = None, None
    table = metrics_table(faces, settings.threshold) if catalog.has_labels else None
    if table is not None:
        metrics_path = write_table(out_dir / "metrics.parquet", table.cast(METRICS_SCHEMA), meta)
        first = table.slice(0, 1).to_pylist()[0]
    return RunSummary(len(catalog.images), faces.num_rows, ok, faces.num_rows - ok, seconds,
                      faces_path, metrics_path, first)

