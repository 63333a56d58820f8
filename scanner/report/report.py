"""``dfscan report``: a moderator's page and a scheduler's summary for a finished run folder.

Reads ``faces.parquet`` (with the run's settings and versions in its metadata),
``metrics.parquet`` when labels existed and ``manifest.json``, and writes beside them:

    report.html    one self-contained page (CSS inline, every picture a data: URI): settings,
                   counts by status, score histogram, ROC and precision–recall curves, the metrics
                   table, the top flagged faces as thumbnails and the errors grouped by status
    summary.json   the counts, metrics, threshold, engine and versions for schedulers

The thumbnails are the scan's own crops, made again with ``scanner.explain.scan_catalog`` and
``scanner.pipeline.cropper.iter_crops`` from the images and annotations recorded in the run; a
video face's from its clip's frame, decoded again (``scanner.explain.videos``).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engines.files import read_settings, write_atomic
from scanner.catalog.videos import video_of_face
from scanner.errors import DfscanError
from scanner.status import OK

REPORT_HTML, SUMMARY_JSON = "report.html", "summary.json"
SUMMARY_FORMAT = "dfscan-summary/1"
RUN_FORMAT = "dfscan-run/1"
ERROR_EXAMPLES = 5  # files listed per error status; the count covers all of them


@dataclass
class Run:
    """A finished run folder, read."""

    dir: Path
    faces: pa.Table
    metrics: pa.Table | None
    manifest: dict
    meta: dict  # the run settings from faces.parquet's metadata


@dataclass
class Thumb:
    face_id: int
    file: str
    label: int | None
    score_fake: float
    uri: str | None  # None: the face could not be cropped again


def load_run(run_dir) -> Run:
    """Read a finished run folder. Raises DfscanError (one line) for anything else: a missing
    folder, no or an unreadable manifest, an unfinished run, a faces.parquet dfscan did not write."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DfscanError(f"{run_dir}: no such folder; pass the --out folder of a finished 'dfscan run'")
    manifest_path, faces_path = run_dir / "manifest.json", run_dir / "faces.parquet"
    if not manifest_path.is_file():
        raise DfscanError(f"{run_dir}: no manifest.json, so not a dfscan run folder; pass the --out "
                          "folder of a finished 'dfscan run'")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DfscanError(f"{manifest_path}: unreadable ({exc.__class__.__name__}); "
                          "rerun the scan with --overwrite") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
        raise DfscanError(f"{manifest_path}: not a dfscan run manifest (format {RUN_FORMAT} expected)")
    if not manifest.get("complete") or not faces_path.is_file():
        raise DfscanError(f"{run_dir}: the run is not finished (no complete faces.parquet); finish it "
                          "with 'dfscan run ... --resume' first")
    metrics_path = run_dir / "metrics.parquet"
    try:
        meta = read_settings(faces_path)
        faces = pq.read_table(faces_path)
        metrics = pq.read_table(metrics_path) if metrics_path.is_file() else None
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise DfscanError(f"{run_dir}: unreadable Parquet ({str(exc).splitlines()[0][:200]}); "
                          "rerun the scan with --overwrite") from None
    if "engine" not in meta or "score_fake" not in faces.column_names:
        raise DfscanError(f"{faces_path}: no dfscan run settings in its metadata; pass a folder "
                          "that 'dfscan run' wrote")
    return Run(run_dir, faces, metrics, manifest, meta)


def _finite(value):
    """JSON has no NaN: an undefined metric (one class only) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def status_counts(faces: pa.Table) -> dict[str, int]:
    """Faces per status, ``ok`` first, then the most frequent."""
    counts = {d["values"]: d["counts"] for d in pc.value_counts(faces.column("status")).to_pylist()}
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] != OK, -kv[1], str(kv[0]))))


def metrics_rows(run: Run) -> tuple[dict | None, list[dict]]:
    """The ``all`` row and the per-subset rows of metrics.parquet (NaN as None)."""
    if run.metrics is None:
        return None, []
    rows = [{k: _finite(v) for k, v in r.items()} for r in run.metrics.to_pylist()]
    first = next((r for r in rows if r["subset"] == "all"), None)
    return first, [r for r in rows if r["subset"] != "all"]


def duration_s(run: Run):
    """The run's wall time, where the run recorded one (``duration_s`` in manifest.json); runs
    written before it was recorded have none, and the summary says null rather than guess."""
    value = run.manifest.get("duration_s")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def summarize(run: Run, report_path: Path) -> dict:
    """The summary.json content; its counts are faces.parquet's."""
    faces = run.faces
    first, subsets = metrics_rows(run)
    pred = faces.column("pred")
    labelled = faces.column("label").null_count < faces.num_rows
    return {
        "format": SUMMARY_FORMAT,
        "run_dir": str(run.dir.resolve()),
        "report": str(report_path.resolve()),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "faces": faces.num_rows,
        "images": len(pc.unique(faces.column("image_id"))),
        "flagged": int(pc.sum(pc.equal(pred, 1)).as_py() or 0),
        "by_status": status_counts(faces),
        "labelled": bool(labelled),
        "metrics": None if first is None else {"all": first, "subsets": subsets},
        "threshold": run.meta.get("threshold"),
        "threshold_origin": run.meta.get("threshold_origin"),  # cli, model or default
        "engine": run.meta.get("engine"),
        "backend": run.meta.get("backend"),
        "arch": run.meta.get("arch"),
        "input_size": run.meta.get("input_size"),
        "duration_s": duration_s(run),
        "versions": run.meta.get("versions", {}),
    }


def top_flagged(faces: pa.Table, top: int) -> list[dict]:
    """The ``top`` flagged (pred Fake, status ok) rows, highest score_fake first."""
    if top <= 0:
        return []
    flagged = faces.filter(pc.and_(pc.equal(faces.column("pred"), 1), pc.equal(faces.column("status"), OK)))
    order = pc.sort_indices(flagged, sort_keys=[("score_fake", "descending"), ("face_id", "ascending")])
    return flagged.take(order[:top]).to_pylist()


def error_groups(faces: pa.Table, examples: int = ERROR_EXAMPLES) -> dict[str, dict]:
    """``{status: {"count": n, "examples": [(file, error), …]}}`` for every status but ok."""
    failed = faces.filter(pc.not_equal(faces.column("status"), OK)).select(["status", "file", "error"])
    groups: dict[str, dict] = {}
    for status, n in status_counts(failed).items():
        rows = failed.filter(pc.equal(failed.column("status"), status)).slice(0, examples).to_pylist()
        groups[status] = {"count": n, "examples": [(r["file"], r["error"]) for r in rows]}
    return groups


def _crop_config(meta: dict):
    """The scan's crop convention. mean/std only normalise and are undone again for the
    thumbnail, so the registry's are as good as the engine's; no engine file is opened (a
    report of a TensorRT run can be made on a machine without a GPU)."""
    from engines.config import ModelConfig
    from engines.models import get_model_config

    try:
        config = get_model_config(meta["arch"])
    except DfscanError:  # an architecture this install does not know: default normalisation
        config = ModelConfig(arch=str(meta.get("arch")))
    return dataclasses.replace(config, input_size=tuple(meta["input_size"]), crop_margin=meta["crop_margin"])


def thumbnails(run: Run, rows: list[dict], progress: bool = True, log=print, images=None,
               annotations=None) -> tuple[list[Thumb], str | None]:
    """Crop ``rows`` again as the scan did, from ``images`` / ``annotations`` where given (the
    scanned folder moved), else from where the run recorded them; video faces from their clip's
    frame, decoded again (``scanner.explain.videos``, as ``dfscan explain`` does). Returns the
    thumbnails in ``rows``' order and a note for the page when some or all could not be made."""
    from tqdm import tqdm

    from scanner.explain.plots import crop_to_rgb
    from scanner.settings import RunSettings

    if not rows:
        return [], None
    config = _crop_config(run.meta)
    # the CPU pipeline: a few dozen crops, and the report runs wherever the Parquet files are
    settings = RunSettings(batch_size=16, device="cpu")
    uris: dict[int, str] = {}
    problems = []

    def keep(face_ids, crops):
        from scanner.report.plots import thumbnail_uri

        for f, crop in zip(face_ids, np.asarray(crops)):
            uris[f] = thumbnail_uri(crop_to_rgb(crop, config.mean, config.std))
        bar.update(len(face_ids))

    video_rows = [r for r in rows if video_of_face(r["face_id"]) is not None]
    image_rows = [r for r in rows if video_of_face(r["face_id"]) is None]
    with tqdm(total=len(rows), unit="face", desc="report thumbnails", disable=not progress,
              dynamic_ncols=True) as bar:
        if image_rows:
            problems += _image_thumbs(run, image_rows, config, settings, keep, bar, log, images, annotations)
        if video_rows:
            from scanner.explain.videos import video_crops

            folder = images or run.meta.get("images")
            if folder and Path(folder).is_dir():
                for face_ids, crops in video_crops(video_rows, folder, config, settings, log):
                    keep(face_ids, crops)
            else:
                problems.append(f"the scanned folder {folder} is not here for the video faces; "
                                "pass --images where it is now")
                log(f"thumbnails left out: {problems[-1]}")
    missing = sum(1 for r in rows if r["face_id"] not in uris)
    note = "; ".join(problems) or None
    if missing and note is None:
        note = f"{missing} of {len(rows)} faces could not be cropped again (reasons in the log)"
    return [Thumb(r["face_id"], r["file"], r["label"], r["score_fake"], uris.get(r["face_id"])) for r in rows], note


def _image_thumbs(run, rows, config, settings, keep, bar, log, images, annotations) -> list[str]:
    """Image faces' crops into ``keep``; returns the problem that stopped them, if any."""
    from scanner.explain.explain import scan_catalog
    from scanner.pipeline.cropper import iter_crops

    try:
        catalog = scan_catalog(run.dir / "faces.parquet", run.meta, rows, images, annotations)
    except DfscanError as exc:
        log(f"thumbnails left out: {exc}")
        return [str(exc)]
    for batch in iter_crops(catalog, config, settings):
        for face_ids, crops in batch.pieces:
            keep(face_ids, crops)
        for r in batch.planned.failed + batch.failed:
            log(f"face {r.face_id}: no thumbnail: {r.status}: {r.error}")
            bar.update(1)
    return []


def plots(run: Run) -> dict[str, str]:
    """``{"histogram": uri, "roc": uri, "pr": uri}``, the curves only where both classes are labelled."""
    from scanner.report.plots import curves_uris, histogram_uri

    ok = run.faces.filter(pc.and_(pc.equal(run.faces.column("status"), OK),
                                  pc.is_valid(run.faces.column("score_fake"))))
    scores = ok.column("score_fake").to_numpy(zero_copy_only=False).astype(np.float64)
    label_col = ok.column("label")
    labelled = label_col.null_count < ok.num_rows
    labels = label_col.fill_null(-1).to_numpy().astype(np.int64) if labelled else None
    out = {"histogram": histogram_uri(scores, labels, float(run.meta.get("threshold", 0.5)))} if len(scores) else {}
    if labelled:
        known = labels >= 0
        curves = curves_uris(labels[known], scores[known],
                             [c for c, k in zip(ok.column("corruption").to_pylist(), known) if k])
        if curves:
            out["roc"], out["pr"] = curves
    return out


def write_report(run_dir, *, top: int = 32, log=print, progress: bool = True, images=None,
                 annotations=None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.json`` into the finished run folder ``run_dir``.

    ``top``: how many flagged faces to show as thumbnails (0: none); ``images`` /
    ``annotations``: where the scanned files are now, if they moved. Returns the two paths.
    Raises DfscanError when ``run_dir`` is not a finished dfscan run or ``top`` is negative.
    """
    from scanner.report.html import render_page

    if top < 0:
        raise DfscanError(f"--top {top}: must be 0 or more")
    run = load_run(run_dir)
    html_path, summary_path = run.dir / REPORT_HTML, run.dir / SUMMARY_JSON
    summary = summarize(run, html_path)
    thumbs, thumb_note = thumbnails(run, top_flagged(run.faces, top), progress, log, images, annotations)
    page = render_page(run, summary, plots(run), thumbs, thumb_note, error_groups(run.faces))
    write_atomic(html_path, page)
    write_atomic(summary_path, json.dumps(summary, indent=1, allow_nan=False) + "\n")
    return html_path, summary_path
