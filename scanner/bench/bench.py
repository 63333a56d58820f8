"""``dfscan bench``: throughput and accuracy against input resolution, dfscan beside the plain way.

For each resolution the model is exported at that input size, warmed up, then timed three ways
on the same files: the dfscan scan (DALI decode once + crop in one graph, engine, Parquet), a
DALI decode-only pass (the ceiling), and the baseline (PIL per face, DataLoader, eager torch;
see ``scanner.bench.baseline``). The engine is also timed alone on ready tensors, so the dfscan
row carries its limit: what decode and engine alone allow (``limit_faces_per_s``) and how much of
it the whole scan reaches (``efficiency``), and the same with the producer pass (decode and the
crop-and-resize graph, no engine) in place of decode alone (``pipeline_limit_faces_per_s``,
``pipeline_efficiency``): on a CPU the crops cost about what decoding does. Faces per batch follow
the pixel budget (``scanner.settings.batch_for``), so memory stays bounded at every resolution.
One row per resolution × pipeline goes to ``bench.parquet``, rewritten after each resolution.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from scanner.errors import DfscanError

RES_MIN, RES_MAX = 16, 4096


def parse_resolutions(text: str | None, native: int) -> list[int]:
    """Resolutions to sweep, ascending and without repeats.

    ``'a..b'``: every power of two from a to b, the ends themselves, and ``native`` where it lies
    between (``'32..1024'`` with native 224 → 32, 64, 128, 224, 256, 512, 1024). ``'64,128,224'``:
    those. ``None``, ``''`` or ``'native'``: ``[native]``. Raises DfscanError on anything else.
    """
    hint = "use a range like 32..1024 or a list like 64,128,224"
    if text is None or text.strip() in ("", "native"):
        return [native]

    def number(s: str) -> int:
        s = s.strip()
        if s == "native":
            return native
        if not s.isdigit():
            raise DfscanError(f"--res {text!r}: {s!r} is not a whole number of pixels; {hint}")
        v = int(s)
        if not RES_MIN <= v <= RES_MAX:
            raise DfscanError(f"--res {text!r}: {v} is outside {RES_MIN}..{RES_MAX} pixels")
        return v

    if ".." in text:
        parts = text.split("..")
        if len(parts) != 2:
            raise DfscanError(f"--res {text!r}: a range has two ends; {hint}")
        lo, hi = number(parts[0]), number(parts[1])
        if lo > hi:
            raise DfscanError(f"--res {text!r}: the range runs downwards; write {hi}..{lo}")
        values = {lo, hi} | {2 ** k for k in range(lo.bit_length() - 1, hi.bit_length()) if lo <= 2 ** k <= hi}
        if lo <= native <= hi:
            values.add(native)
        return sorted(values)
    return sorted({number(s) for s in text.split(",") if s.strip()} or {native})


def parse_faces_per_image(text: str) -> tuple[int, int]:
    """``'K'`` → (K, K); ``'a..b'`` → (a, b). Raises DfscanError."""
    try:
        lo, hi = (int(v) for v in text.split("..")) if ".." in text else (int(text),) * 2
    except ValueError:
        raise DfscanError(f"--faces-per-image {text!r}: write K or a range like 1..8") from None
    if not 1 <= lo <= hi <= 64:
        raise DfscanError(f"--faces-per-image {text!r}: need 1 <= a <= b <= 64")
    return lo, hi


@dataclass
class BenchSettings:
    resolutions: str | None = None
    batch_size: int = 64
    device: str = "auto"
    backend: str = "auto"  # auto: a TensorRT plan where TensorRT runs, else the faster CPU runtime here
    precision: str = "fp32"  # int8: CPU runtimes, calibrated on calib_data (default: the benched images);
    # bf16: OpenVINO in bf16 where the CPU runs it natively
    calib_data: str | None = None
    baseline: bool = True
    baseline_workers: int | None = None  # DataLoader workers; None: min(4, cores)
    max_faces: int | None = None
    threshold: float = 0.5
    num_threads: int | None = None  # DALI threads; None: all cores


def _limit(catalog, max_faces):
    """Images in catalog order while their faces add up to at most ``max_faces`` (at least one)."""
    if not max_faces:
        return catalog
    keep, n = [], 0
    for image_id, image in catalog.images.items():
        if keep and n + len(image.face_ids) > max_faces:
            break
        keep.append(image_id)
        n += len(image.face_ids)
    return catalog.subset(keep)


def _latency(batch_s) -> dict:
    import numpy as np

    ms = np.asarray(batch_s, dtype=np.float64) * 1000
    if not len(ms):
        return {"mean_batch_ms": math.nan, "p95_batch_ms": math.nan}
    return {"mean_batch_ms": float(ms.mean()), "p95_batch_ms": float(np.percentile(ms, 95))}


def _rates(images: int, faces: int, seconds: float) -> dict:
    ok = seconds > 0
    return {"images": images, "faces": faces, "total_s": seconds,
            "images_per_s": images / seconds if ok else math.nan,
            "faces_per_s": faces / seconds if ok else math.nan}


def _scores(faces_table) -> dict:
    d = faces_table.select(["face_id", "score_fake", "status", "label"]).to_pydict()
    return {f: (s, lab) for f, s, st, lab in zip(d["face_id"], d["score_fake"], d["status"], d["label"])
            if st == "ok" and s is not None}


def _accuracy(scores: dict, threshold: float) -> dict:
    from scanner.output.metrics import binary_metrics

    labelled = [(s, lab) for s, lab in scores.values() if lab is not None]
    if not labelled:
        return {"accuracy": math.nan, "roc_auc": math.nan}
    m = binary_metrics([lab for _, lab in labelled], [s for s, _ in labelled], threshold)
    return {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"]}


def release_memory(device: str):
    """Collect garbage and hand freed heap back to the OS, so peaks measured next start low."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    if device == "gpu":
        import torch

        torch.cuda.empty_cache()


def limit_faces_per_s(decode_faces_per_s: float, engine_faces_per_s: float, device: str) -> float:
    """The fastest a scan can go given its two stages alone. On a CPU decode and engine share the
    cores, so their times per face add up; on a GPU they overlap, so the slower one bounds it."""
    d, e = decode_faces_per_s, engine_faces_per_s
    if not (d and e) or math.isnan(d) or math.isnan(e):
        return math.nan
    return min(d, e) if device == "gpu" else 1.0 / (1.0 / d + 1.0 / e)


def bench_resolution(catalog, source, res: int, s: BenchSettings, device: str, tmp: Path,
                     common: dict, meta: dict, step=lambda what: None, log=lambda m: None) -> tuple[list[dict], str]:
    """The rows (dfscan, decode_only[, baseline]) for one resolution, and a note (TensorRT)."""
    import numpy as np

    from scanner.bench.baseline import time_baseline
    from scanner.bench.engines import build_engine
    from scanner.bench.probe import ResourceProbe
    from scanner.bench.timing import time_decode_only, time_engine_only, time_producer, time_scan, warm_up
    from scanner.settings import RunSettings

    # faces per batch within the pixel budget, for every pipeline alike (memory bounded at any size)
    run = RunSettings(batch_size=s.batch_size, device=device, threshold=s.threshold,
                      num_threads=s.num_threads).fitted((res, res), log)
    calibration = None
    if s.precision == "int8":
        from scanner.run.training import face_batches

        calibration = face_batches(s.calib_data)
    engine, model, config, note = build_engine(source, res, s.backend, device, run.batch_size, tmp,
                                               s.precision, calibration)
    base = {**common, "res": res, "backend": engine.name, "batch_size": run.batch_size}
    step(f"{res}px dfscan")
    warm_up(engine, catalog, run, tmp / "warm-up")
    alone = time_engine_only(engine, run.batch_size, device)
    with ResourceProbe(device) as probe:
        scan = time_scan(catalog, engine, run, tmp / f"dfscan-{res}", meta)
    dfscan_scores = _scores(scan.faces)
    ok_images = {catalog.faces[f].image_id for f in dfscan_scores}
    dfscan = {**base, "pipeline": "dfscan", "precision": s.precision,
              **_rates(len(ok_images), len(dfscan_scores), scan.total_s),
              **_latency(scan.batch_s), "infer_s": scan.infer_s, "write_s": scan.write_s,
              "wait_s": scan.total_s - scan.infer_s - scan.write_s, **probe.fields(),
              "engine_faces_per_s": alone["engine_faces_per_s"], **time_producer(catalog, config, run)}
    if scan.metrics is not None:
        dfscan.update(accuracy=scan.metrics["accuracy"], roc_auc=scan.metrics["roc_auc"])
    del engine, scan  # the engine's arena would otherwise count in the next pipelines' peak memory
    release_memory(device)
    step(f"{res}px decode-only")
    with ResourceProbe(device) as probe:
        dec = time_decode_only(catalog, config, run, ok_images)
    n_faces = sum(len(catalog.images[i].face_ids) for i in ok_images)
    decode = {**base, "pipeline": "decode_only", "backend": None, "precision": None,
              **_rates(dec["images"], n_faces, dec["decode_s"]),
              "faces_per_s": None, "decode_s": dec["decode_s"], **_latency(dec["batch_s"]), **probe.fields()}
    # the decode ceiling in faces: images/s × faces per image of the images decoded
    dfscan["decode_faces_per_s"] = decode["images_per_s"] * n_faces / dec["images"] if dec["images"] else math.nan
    dfscan["limit_faces_per_s"] = limit_faces_per_s(dfscan["decode_faces_per_s"], dfscan["engine_faces_per_s"], device)
    dfscan["efficiency"] = dfscan["faces_per_s"] / dfscan["limit_faces_per_s"]
    # the same ceiling with the real producer (decode + crop-and-resize) in place of decode alone:
    # on a CPU the crops cost about as much as decoding at 224 px, and the decode-only limit leaves them out
    producer_s = dfscan["read_s"] + dfscan["dali_s"]
    dfscan["producer_faces_per_s"] = dfscan["faces"] / producer_s if producer_s > 0 else math.nan
    dfscan["pipeline_limit_faces_per_s"] = limit_faces_per_s(dfscan["producer_faces_per_s"],
                                                             dfscan["engine_faces_per_s"], device)
    dfscan["pipeline_efficiency"] = dfscan["faces_per_s"] / dfscan["pipeline_limit_faces_per_s"]
    rows = [dfscan, decode]
    if s.baseline:
        step(f"{res}px baseline")
        face_ids = [f for f in catalog.faces if f in dfscan_scores]
        with ResourceProbe(device) as probe:
            bl = time_baseline(catalog, face_ids, model, config, run.batch_size, device,
                               tmp / f"baseline-{res}", meta, s.threshold, s.baseline_workers)
        bl_scores = _scores(bl.faces)
        diffs = [abs(bl_scores[f][0] - dfscan_scores[f][0]) for f in bl_scores if f in dfscan_scores]
        baseline = {**base, "pipeline": "baseline", "backend": "torch-eager", "precision": "fp32",
                    **_rates(len({catalog.faces[f].image_id for f in bl_scores}), len(bl_scores), bl.total_s),
                    **_latency(bl.batch_s), **bl.worker_s, "infer_s": bl.infer_s, "write_s": bl.write_s,
                    "wait_s": bl.total_s - bl.infer_s - bl.write_s, **probe.fields(),
                    **_accuracy(bl_scores, s.threshold),
                    "score_mae_vs_dfscan": float(np.mean(diffs)) if diffs else math.nan}
        rows.append(baseline)
        del bl
        if baseline["faces_per_s"]:
            dfscan["speedup_vs_baseline"] = dfscan["faces_per_s"] / baseline["faces_per_s"]
    del model
    release_memory(device)
    return rows, note


def run_bench(images_dir, out_dir, source, settings: BenchSettings, dataset: str, annotations=None,
              progress: bool = True, log=print, extra_meta: dict | None = None):
    """Sweep the resolutions over the images; writes OUT/bench.parquet + bench.png, returns the table."""
    from tqdm import tqdm

    from engines.files import versions
    from scanner.bench.probe import ResourceProbe, extra_versions, machine_info
    from scanner.bench.results import plot_bench, read_bench, write_bench
    from scanner.catalog import load_catalog
    from scanner.run.job import resolve_device

    device = resolve_device(settings.device)
    if settings.precision == "int8" and settings.calib_data is None:  # calibrate on the benched faces
        settings = replace(settings, calib_data=str(images_dir))
    full = load_catalog(images_dir, annotations)
    catalog = _limit(full, settings.max_faces)
    if not catalog.faces:
        raise DfscanError(f"{images_dir}: no faces to bench")
    native = source.native_config()
    resolutions = parse_resolutions(settings.resolutions, native.input_size[0])
    subset = f" (benched: the first {len(catalog.images)} images, {len(catalog.faces)} faces)" \
        if len(catalog.faces) < len(full.faces) else ""
    log(f"{dataset}: {full.summary()}{subset}; model {source.label}; resolutions {resolutions}; device {device}")
    if not source.trained:
        log("note: no trained checkpoint given or installed: an untrained model is benched, "
            "so its accuracy is chance level")
    for image in catalog.images.values():  # the page cache serves both pipelines alike
        if image.path is not None and image.path.is_file():
            image.path.read_bytes()
    machine = machine_info(device)
    meta = {"command": "bench", "dataset": dataset, "images": str(images_dir),
            "annotations": str(catalog.annotations) if catalog.annotations else None,
            "model": source.label, "trained": source.trained, "arch": native.arch,
            "native_res": native.input_size[0], "resolutions": resolutions,
            "crop_margin": native.crop_margin, "settings": vars(settings), "device": device,
            "machine": machine, "versions": versions(), "extra_versions": extra_versions(),
            **(extra_meta or {})}
    common = {"dataset": dataset, "engine": source.label, "device": device,
              "cpu_model": machine["cpu_model"], "cpu_cores": machine["cpu_cores"], "gpu_name": machine["gpu_name"]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, notes = [], set()
    steps = len(resolutions) * (3 if settings.baseline else 2)
    with tempfile.TemporaryDirectory(prefix="dfscan-bench-") as tmp, \
            tqdm(total=steps, desc="bench", unit="step", disable=not progress, dynamic_ncols=True) as bar:
        started = []

        def step(what):  # called as each stage starts; the bar counts finished stages
            if started:
                bar.update(1)
            started.append(what)
            bar.set_postfix_str(what)

        try:
            for res in resolutions:
                # the whole process tree over the whole resolution: export, warm-up and every pass
                with ResourceProbe(device, interval=0.1) as probe:
                    res_rows, note = bench_resolution(catalog, source, res, settings, device, Path(tmp),
                                                      common, meta, step, log)
                for r in res_rows:
                    r["res_peak_rss_mb"] = probe.peak_rss_mb
                if note:
                    notes.add(note)
                rows += res_rows
                meta["notes"] = sorted(notes)
                # before the next resolution starts, written beside and renamed: a crash (the OOM
                # killer included) leaves a whole bench.parquet with every finished resolution
                path = write_bench(out_dir, rows, meta)
                log(summary_line(res_rows))
                release_memory(device)
            bar.update(1)
        finally:
            if rows:  # the plot too shows what was measured when a later resolution failed
                plot_bench(read_bench(path)[0], out_dir / "bench.png")
    return read_bench(path)[0]


def summary_line(rows: list[dict]) -> str:
    by = {r["pipeline"]: r for r in rows}
    d, b, c = by.get("dfscan", {}), by.get("baseline"), by.get("decode_only", {})
    text = (f"{d.get('res')}px, batch {d.get('batch_size')}: dfscan {d.get('faces_per_s', math.nan):.1f} faces/s "
            f"(limit {d.get('limit_faces_per_s', math.nan):.1f}, efficiency {d.get('efficiency', math.nan):.2f}; "
            f"with the crops {d.get('pipeline_limit_faces_per_s', math.nan):.1f}, "
            f"{d.get('pipeline_efficiency', math.nan):.2f}; engine alone {d.get('engine_faces_per_s', math.nan):.1f}, "
            f"producer alone {d.get('producer_faces_per_s', math.nan):.1f})")
    if b:
        text += f", baseline {b['faces_per_s']:.1f} faces/s ({d.get('speedup_vs_baseline', math.nan):.2f}x)"
    text += (f", decode-only {c.get('images_per_s', math.nan):.1f} images/s; peak RSS "
             f"{d.get('res_peak_rss_mb', math.nan):.0f} MB")
    if d.get("accuracy") is not None:
        text += f"; accuracy dfscan {d['accuracy']:.4f}" + (f", baseline {b['accuracy']:.4f}" if b else "")
    return text


