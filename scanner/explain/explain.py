"""``dfscan explain``: Grad-CAM / saliency maps for chosen faces of a finished scan.

The faces are cropped again exactly as the scan cropped them: the catalog is rebuilt from the
images and annotations recorded in ``faces.parquet``'s metadata, cut down to the chosen faces,
and fed through ``scanner.pipeline.cropper.iter_crops`` with the checkpoint's config. The maps need
gradients, so they are computed on the torch checkpoint (``engines.cam``); an ONNX or TensorRT
engine is traced back to the ``.pt`` of the same name beside it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.catalog import Catalog, load_catalog
from scanner.catalog.videos import video_of_face
from scanner.errors import DfscanError
from scanner.explain.plots import Explained, crop_to_rgb, save_compare_grid, save_contact_sheet, save_face_png
from scanner.status import OK

SELECTIONS = ("top-fake", "misclassified", "ids:1,5,9")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
INDEX_SCHEMA = pa.schema([
    ("face_id", pa.int64()),
    ("file", pa.string()),
    ("label", pa.int8()),
    ("score_fake", pa.float32()),  # of the checkpoint whose map this is, on the re-made crop
    ("scan_score_fake", pa.float32()),  # as faces.parquet has it
    ("png", pa.string()),
    ("method", pa.string()),
    ("engine", pa.string()),  # the checkpoint
])


def select_faces(faces: pa.Table, select: str, limit: int) -> list[dict]:
    """The rows of ``faces`` to explain, in the order they will be shown.

    ``top-fake``: highest score_fake first. ``misclassified``: labelled faces whose prediction
    is wrong, the most confident mistakes first. ``ids:1,5,9``: those faces in that order (all
    of them; ``limit`` applies to the other two). Raises DfscanError for an unknown selection,
    an unknown id, or ``misclassified`` on a scan without labels.
    """
    if limit < 1:
        raise DfscanError("--limit must be at least 1")
    rows = faces.to_pylist()
    if select.startswith("ids:"):
        by_id = {r["face_id"]: r for r in rows}
        try:
            ids = [int(v) for v in select[4:].split(",") if v.strip()]
        except ValueError:
            raise DfscanError(f"--select {select!r}: ids must be whole numbers, e.g. ids:1,5,9") from None
        if not ids:
            raise DfscanError(f"--select {select!r}: no face ids given, e.g. ids:1,5,9")
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DfscanError(f"--select {select!r}: face_id {', '.join(map(str, missing[:5]))} "
                              "not in the scan")
        return [by_id[i] for i in dict.fromkeys(ids)]
    scored = [r for r in rows if r["status"] == OK and r["score_fake"] is not None]
    if select == "top-fake":
        return sorted(scored, key=lambda r: -r["score_fake"])[:limit]
    if select == "misclassified":
        if not any(r["label"] is not None for r in rows):
            raise DfscanError("--select misclassified: this scan has no labels (it was run without "
                              "annotations giving category_id); use top-fake or ids:…")
        wrong = [r for r in scored if r["label"] is not None and r["pred"] != r["label"]]
        return sorted(wrong, key=lambda r: -abs(r["score_fake"] - r["label"]))[:limit]
    raise DfscanError(f"--select {select!r}: choose one of {', '.join(SELECTIONS)}")


def torch_checkpoint(engine) -> Path:
    """The torch checkpoint behind ``engine``: itself for .pt/.pth, else ``<stem>.pt`` beside it.

    Raises DfscanError when the file is missing or no checkpoint sits beside an ONNX/TensorRT engine.
    """
    engine = Path(engine)
    if not engine.is_file():
        raise DfscanError(f"{engine}: engine file not found")
    if engine.suffix.lower() in CHECKPOINT_SUFFIXES:
        return engine
    for suffix in CHECKPOINT_SUFFIXES:
        if engine.with_suffix(suffix).is_file():
            return engine.with_suffix(suffix)
    raise DfscanError(f"{engine}: {engine.suffix} engines have no gradients and no "
                      f"{engine.with_suffix('.pt').name} lies beside it; pass the torch checkpoint "
                      "it was exported from (--engine MODEL.pt)")


def scan_catalog(faces_path, meta: dict, rows: list[dict], images=None, annotations=None) -> Catalog:
    """The scan's catalog cut down to the faces in ``rows`` (their images keep only those faces).

    Raises DfscanError when the scanned folder is gone or no longer holds these faces.
    """
    images = images or meta.get("images")
    annotations = annotations or meta.get("annotations")
    if not images or not Path(images).is_dir():
        raise DfscanError(f"{faces_path}: the scanned folder {images} is not here; pass --images "
                          "(and --annotations) to say where it is now")
    if annotations and not Path(annotations).is_file():
        raise DfscanError(f"{faces_path}: the scan's annotations {annotations} are not here; pass "
                          "--annotations to say where they are now")
    catalog = load_catalog(images, annotations)
    keep: dict[int, list[int]] = {}
    for r in rows:
        face = catalog.faces.get(r["face_id"])
        image = catalog.images.get(face.image_id) if face else None
        if image is None or image.file != r["file"]:
            raise DfscanError(f"{faces_path}: face {r['face_id']} ({r['file']}) is not in {images} "
                              f"with {annotations or 'no annotations'} as it was scanned; pass the "
                              "--images / --annotations of the scan")
        keep.setdefault(face.image_id, []).append(face.face_id)
    subset = {i: dataclasses.replace(img, face_ids=[f for f in img.face_ids if f in keep[i]])
              for i, img in catalog.images.items() if i in keep}
    faces = {f: catalog.faces[f] for ids in keep.values() for f in ids}
    return Catalog(subset, faces, catalog.annotations, has_labels=catalog.has_labels)


def _tags(paths: list[Path]) -> list[str]:
    tags: list[str] = []
    for p in paths:
        tag, n = p.stem, 2
        while tag in tags:
            tag, n = f"{p.stem}-{n}", n + 1
        tags.append(tag)
    return tags


def explain_model(catalog: Catalog | None, checkpoint: Path, tag: str, methods, settings, labels: dict,
                  on_face=lambda n: None, log=print, scan_meta: dict | None = None, video_rows=(),
                  video_folder=None) -> dict[int, list[Explained]]:
    """Crop ``catalog``'s faces (and ``video_rows``' faces, from their clips in ``video_folder``)
    for ``checkpoint`` and map them with each of ``methods``.

    Returns ``{face_id: [Explained per method]}``; faces that cannot be cropped now are logged
    and left out. With ``scan_meta`` (the scan's settings), a crop convention other than the
    scan's is logged: the maps are then of other crops than the ones the scan scored.
    """
    import torch

    from engines.cam import compute_maps
    from engines.checkpoint import load_checkpoint
    from scanner.pipeline.cropper import iter_crops

    model, config, _ = load_checkpoint(checkpoint)
    model.to("cuda" if settings.device == "gpu" else "cpu")
    if scan_meta and (list(config.input_size) != list(scan_meta.get("input_size", config.input_size))
                      or config.crop_margin != scan_meta.get("crop_margin", config.crop_margin)):
        log(f"{checkpoint}: crops {config.input_size[0]}x{config.input_size[1]}, margin {config.crop_margin}; "
            f"the scan used {scan_meta.get('input_size')}, margin {scan_meta.get('crop_margin')}: "
            "these maps are of other crops than the ones it scored")
    out: dict[int, list[Explained]] = {}
    settings = settings.fitted(config.input_size, log)  # memory bounded at any input size
    files = {r["face_id"]: r["file"] for r in video_rows}

    def explain(face_ids, crops):
        host = crops.cpu().numpy() if isinstance(crops, torch.Tensor) else crops
        rgb = [crop_to_rgb(c, config.mean, config.std) for c in host]
        for method in methods:
            maps, scores = compute_maps(model, crops, method, arch=config.arch)
            for k, f in enumerate(face_ids):
                file = files[f] if f in files else catalog.images[catalog.faces[f].image_id].file
                out.setdefault(f, []).append(Explained(f, file, labels.get(f), rgb[k], maps[k],
                                                       float(scores[k]), tag, method))
        on_face(len(face_ids))

    for batch in iter_crops(catalog, config, settings) if catalog is not None else ():
        for face_ids, crops in batch.pieces:
            explain(face_ids, crops)
        for r in batch.planned.failed + batch.failed:
            log(f"face {r.face_id}: not explained by {tag}: {r.status}: {r.error}")
            on_face(1)
    if video_rows:
        from scanner.explain.videos import video_crops

        for face_ids, crops in video_crops(video_rows, video_folder, config, settings, log):
            explain(face_ids, crops)
    return out


@dataclass
class ExplainSummary:
    faces: int
    index_path: Path
    sheet_path: Path | None
    compare_path: Path | None

    def line(self) -> str:
        text = f"explained {self.faces} faces -> {self.index_path}"
        for p in (self.sheet_path, self.compare_path):
            if p is not None:
                text += f", {p}"
        return text


def write_outputs(out_dir: Path, rows: list[dict], results: list[dict[int, list[Explained]]],
                  checkpoints: list[Path], title: str, meta: dict) -> ExplainSummary:
    """Per-face PNGs, the contact sheet (first model and method), the comparison grid (several
    models or methods) and ``explain.parquet``, one row per face, model and method."""
    from engines.files import write_table

    out_dir.mkdir(parents=True, exist_ok=True)
    index = {name: [] for name in INDEX_SCHEMA.names}
    scan_scores = {r["face_id"]: r["score_fake"] for r in rows}
    for ckpt, done in zip(checkpoints, results):
        for r in rows:
            for item in done.get(r["face_id"], []):
                (out_dir / item.model).mkdir(exist_ok=True)
                png = save_face_png(item, out_dir / item.model / f"face_{item.face_id}_{item.method}.png")
                row = {"face_id": item.face_id, "file": item.file, "label": item.label,
                       "score_fake": item.score_fake, "scan_score_fake": scan_scores[item.face_id],
                       "png": str(png), "method": item.method, "engine": str(ckpt)}
                for name, value in row.items():
                    index[name].append(value)
    sheet = grid_path = None
    first = [results[0][r["face_id"]][0] for r in rows if results and r["face_id"] in results[0]]
    if first:
        sheet = save_contact_sheet(first, out_dir / "contact_sheet.png",
                                   f"{first[0].model} · {first[0].method} · {title}")
    grid = [[item for done in results for item in done[r["face_id"]]] for r in rows
            if results and all(r["face_id"] in done for done in results)]
    if grid and len(grid[0]) > 1:
        grid_path = save_compare_grid(grid, out_dir / "compare.png", title)
    index_path = write_table(out_dir / "explain.parquet", pa.table(index, schema=INDEX_SCHEMA), meta)
    return ExplainSummary(len(first), index_path, sheet, grid_path)


def run_explain(faces_path, engine=None, select: str = "top-fake", limit: int = 32,
                methods=("gradcam",), compare=(), out_dir=None, batch_size: int = 16,
                device: str = "auto", images=None, annotations=None, progress: bool = True,
                log=print) -> ExplainSummary:
    """Explain the selected faces of ``faces_path``; writes PNGs and ``explain.parquet``.

    ``engine`` defaults to the scan's own engine. Raises DfscanError on unusable input.
    """
    from engines.cam import METHODS
    from engines.files import read_settings, versions
    from scanner.run.job import resolve_device
    from scanner.settings import RunSettings

    faces_path = Path(faces_path)
    if not faces_path.is_file():
        raise DfscanError(f"{faces_path}: faces.parquet not found")
    meta = read_settings(faces_path)
    if "engine" not in meta:
        raise DfscanError(f"{faces_path}: no dfscan run settings in its metadata; pass the "
                          "faces.parquet that 'dfscan run' wrote")
    methods = list(dict.fromkeys([methods] if isinstance(methods, str) else methods)) or ["gradcam"]
    for method in methods:
        if method not in METHODS:
            raise DfscanError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if batch_size < 1:
        raise DfscanError("--batch-size must be at least 1")
    checkpoints = [torch_checkpoint(e) for e in [engine or meta["engine"], *compare]]
    rows = select_faces(pq.read_table(faces_path), select, limit)
    settings = RunSettings(batch_size=batch_size, device=resolve_device(device))
    results: list[dict[int, list[Explained]]] = []
    if rows:
        # video faces are cropped again from their clips (scanner.explain.videos), the rest as scanned
        video_rows = [r for r in rows if video_of_face(r["face_id"]) is not None]
        image_rows = [r for r in rows if video_of_face(r["face_id"]) is None]
        catalog = scan_catalog(faces_path, meta, image_rows, images, annotations) if image_rows else None
        folder = images or meta.get("images")
        if video_rows and not (folder and Path(folder).is_dir()):
            raise DfscanError(f"{faces_path}: the scanned folder {folder} is not here; pass --images to say "
                              "where its videos are now")
        labels = {r["face_id"]: r["label"] for r in rows}
        from tqdm import tqdm

        with tqdm(total=len(rows) * len(checkpoints), unit="face", desc=f"explain ({', '.join(methods)})",
                  disable=not progress, dynamic_ncols=True) as bar:
            for n, (ckpt, tag) in enumerate(zip(checkpoints, _tags(checkpoints))):
                results.append(explain_model(catalog, ckpt, tag, methods, settings, labels, bar.update,
                                             log, meta if n == 0 else None, video_rows, folder))
        if not any(results):
            raise DfscanError(f"{faces_path}: none of the {len(rows)} chosen faces could be cropped again "
                              f"from {images or meta.get('images')} (reasons above); pass --images / "
                              "--annotations where the scanned files are now")
    else:
        log(f"no faces match --select {select}; nothing to explain")
    info = {"faces": str(faces_path.resolve()), "select": select, "limit": limit, "methods": methods,
            "engines": [str(c.resolve()) for c in checkpoints], "versions": {**versions(), **_gradcam_version()}}
    out_dir = Path(out_dir) if out_dir else faces_path.parent / "explain"
    return write_outputs(out_dir, rows, results, checkpoints, f"evidence for Fake · {select}", info)


def _gradcam_version() -> dict:
    from importlib import metadata

    try:
        return {"grad-cam": metadata.version("grad-cam")}
    except metadata.PackageNotFoundError:
        return {}


