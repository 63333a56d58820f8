"""Face detection: recall, false detections and speed of each detector, then deepfake metrics
on realorfake Test-Dev with detected boxes instead of the given ones.

Recall counts a reference box as found when a detection overlaps it with IoU >= 0.5 (each
detection matches at most one box, best score first). multiface's reference holds its 7 faces:
the two boxes that were not faces (ids 7 and 8, a hand holding a poker chip and a glass, which
the MTCNN that made the file found at score 0.9) were removed from the file on 2026-12-01, so a
detection on them now counts as a false detection.

Only calls the library. Run from the repository root (a few minutes on 2 CPU cores):

    python benchmarks/detect_recall.py [--detectors mtcnn,haar] [--sizes 640,960,1280]
        [--no-e2e] [--engine FILE] [--fit-haar] [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanner.detect.detect import DetectSettings, detect_catalog, to_coco, whole_image_catalog, write_coco  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = {  # name: (images folder, annotation file)
    "multiface": (DATA / "multiface" / "Images", DATA / "multiface" / "multiface_poly.json"),
    "test-dev": (DATA / "realorfake" / "Images" / "Test-Dev", DATA / "realorfake" / "Test-Dev_poly.json"),
    "train": (DATA / "realorfake" / "Images" / "Train", DATA / "realorfake" / "Train_poly.json"),
}
NOT_FACES: dict[str, set[int]] = {}  # reference annotation ids that are not faces: none left (see the docstring)


def iou(a, b) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match(dets, refs, threshold=0.5):
    """Greedy, best score first: ``{detection index: reference index}``."""
    pairs, used = {}, set()
    for d in np.argsort([-s for *_, s in dets], kind="stable") if len(dets) else []:
        best, best_iou = None, threshold
        for r, ref in enumerate(refs):
            v = iou(dets[d][:4], ref)
            if r not in used and v >= best_iou:
                best, best_iou = r, v
        if best is not None:
            pairs[int(d)], _ = best, used.add(best)
    return pairs


def reference(set_name):
    images_dir, ann = SETS[set_name]
    coco = json.loads(ann.read_text())
    by_name = {Path(i["file_name"]).name: i["id"] for i in coco["images"]}
    refs = {}
    for a in coco["annotations"]:
        refs.setdefault(a["image_id"], []).append(a)
    return images_dir, by_name, refs


def evaluate(set_name, settings: DetectSettings):
    """Recall, false detections per image and images/s for one detector on one set."""
    images_dir, by_name, refs = reference(set_name)
    catalog = whole_image_catalog(images_dir)
    warm = catalog.subset(list(catalog.images)[:1])
    list(detect_catalog(warm, settings))  # weights, DALI pipeline, first-call allocations
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    detections = list(detect_catalog(catalog, settings))
    seconds = time.perf_counter() - start
    found = true_found = n_true = n_ref = false = 0
    per_image = {}
    for det in detections:
        name = Path(catalog.images[det.image_id].file).name
        ref = refs.get(by_name[name], [])
        bad = NOT_FACES.get(set_name, set())
        boxes = [r["bbox"] for r in ref]
        pairs = match(det.boxes.tolist(), boxes)
        matched = {ref[r]["id"] for r in pairs.values()}
        n_ref += len(ref)
        n_true += sum(1 for r in ref if r["id"] not in bad)
        found += len(matched)
        true_found += len(matched - bad)
        false += len(det.boxes) - len(pairs)
        per_image[name] = {"detections": len(det.boxes), "matched": sorted(matched),
                           "scores": [round(s, 3) for s in det.boxes[:, 4].tolist()]}
    return {"set": set_name, "detector": settings.detector, "det_size": settings.max_side,
            "images": len(detections), "ref_boxes": n_ref, "recall_all_refs": found / n_ref,
            "true_faces": n_true, "recall_true_faces": true_found / n_true,
            "false_per_image": false / len(detections), "seconds": seconds,
            "images_per_s": len(detections) / seconds, "load_avg_1min_before": load_before,
            "load_avg_1min_after": os.getloadavg()[0], "per_image": per_image if set_name == "multiface" else None,
            "_detections": detections, "_catalog": catalog}


def fit_haar(settings_size: int):
    """Median box mapping Haar → reference convention on realorfake Train (not a reported set)."""
    import scanner.detect.detectors.haar as haar

    saved, haar.BOX_TO_REFERENCE = haar.BOX_TO_REFERENCE, (1.0, 1.0, 0.0)
    try:
        res = evaluate("train", DetectSettings(detector="haar", max_side=settings_size))
    finally:
        haar.BOX_TO_REFERENCE = saved
    _, by_name, refs = reference("train")
    sx, sy, dy = [], [], []
    for det in res["_detections"]:
        ref = refs[by_name[Path(res["_catalog"].images[det.image_id].file).name]]
        for d, r in match(det.boxes.tolist(), [a["bbox"] for a in ref], threshold=0.3).items():
            x, y, w, h = det.boxes[d, :4]
            rx, ry, rw, rh = ref[r]["bbox"]
            sx.append(rw / w), sy.append(rh / h), dy.append(((ry + rh / 2) - (y + h / 2)) / h)
    return tuple(round(float(np.median(v)), 3) for v in (sx, sy, dy)), len(sx)


def end_to_end(settings: DetectSettings, engine_path: Path, tmp: Path, detections, catalog):
    """Scan Test-Dev with the given boxes and with detected ones; metrics on matched faces."""
    import pyarrow.parquet as pq

    from scanner.run.job import run_job
    from scanner.output.metrics import binary_metrics
    from scanner.settings import RunSettings

    images_dir, ann = SETS["test-dev"]
    quiet = dict(progress=False, log=lambda m: None)
    given = run_job(images_dir, tmp / "given", engine_path, ann, RunSettings(batch_size=32, device="cpu"), **quiet)
    det_file = write_coco(tmp / "detected_poly.json", to_coco(catalog, detections, settings, tmp))
    start = time.perf_counter()
    run_job(images_dir, tmp / "detected", engine_path, det_file, RunSettings(batch_size=32, device="cpu"), **quiet)
    scan_s = time.perf_counter() - start
    _, by_name, refs = reference("test-dev")
    rows = pq.read_table(tmp / "detected" / "faces.parquet").to_pylist()
    labels, scores, unmatched, by_image = [], [], 0, {}
    for r in rows:
        by_image.setdefault(Path(r["file"]).name, []).append(r)
    missed = 0
    for name, image_rows in by_image.items():
        ref = refs[by_name[name]]
        ok = [r for r in image_rows if r["status"] == "ok"]
        pairs = match([(r["x"], r["y"], r["w"], r["h"], r["det_score"]) for r in ok], [a["bbox"] for a in ref])
        unmatched += len(ok) - len(pairs)
        missed += len(ref) - len(pairs)
        for d, k in pairs.items():
            labels.append(ref[k]["category_id"])
            scores.append(ok[d]["score_fake"])
    det_m = binary_metrics(labels, scores)
    given_m = pq.read_table(given.metrics_path).slice(0, 1).to_pylist()[0]
    return {"engine": str(engine_path), "given_boxes": given_m, "detected_boxes": det_m,
            "detected_faces_scored": len(labels), "missed_faces": missed, "false_detections_scored": unmatched,
            "statuses": sorted({r["status"] for r in rows}), "scan_seconds": scan_s}


def pick_engine(arg, tmp: Path):
    from scanner.run.job import DEFAULT_ENGINE

    if arg:
        return Path(arg), "given"
    if DEFAULT_ENGINE.is_file():
        return DEFAULT_ENGINE, "trained (engines/default)"
    from engines.export import export_onnx, model_from_source

    model, config = model_from_source(arch="mobilenetv2", seed=0)
    return export_onnx(model, config, tmp / "mobilenetv2-untrained.onnx"), "UNTRAINED (seed 0): metrics are chance"


def environment() -> dict:
    from importlib import metadata

    info = {"cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                        "?") if Path("/proc/cpuinfo").exists() else "?",
            "cores": os.cpu_count(), "load_avg": os.getloadavg(), "versions": {}}
    for dist in ("torch", "torchvision", "nvidia-dali-cuda120", "opencv-python-headless", "facenet-pytorch",
                 "onnxruntime", "numpy"):
        try:
            info["versions"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detectors", default="mtcnn,haar")
    p.add_argument("--sizes", default="640,960,1280", help="--det-size values swept on multiface")
    p.add_argument("--engine", default=None)
    p.add_argument("--no-e2e", action="store_true")
    p.add_argument("--fit-haar", action="store_true", help="print the Haar box mapping fitted on Train")
    p.add_argument("--out", default=None, help="default: benchmarks/results/detect-<date>/")
    args = p.parse_args()
    if args.fit_haar:
        print("BOX_TO_REFERENCE = %s (from %d matched Train faces)" % fit_haar(1280))
        return
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"detect-{dt.date.today().isoformat()}")
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    rows, e2e = [], None
    default = DetectSettings()
    for name in args.detectors.split(","):
        for size in map(int, args.sizes.split(",")):
            rows.append(evaluate("multiface", DetectSettings(detector=name, max_side=size)))
        td = evaluate("test-dev", DetectSettings(detector=name, max_side=default.max_side))
        rows.append(td)
        if name == default.detector and not args.no_e2e:
            with tempfile.TemporaryDirectory() as tmp:
                engine, kind = pick_engine(args.engine, Path(tmp))
                e2e = end_to_end(DetectSettings(detector=name), engine, Path(tmp), td["_detections"], td["_catalog"])
                e2e["engine_kind"] = kind
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (out / "detect.json").write_text(json.dumps({"environment": env, "detection": clean, "end_to_end": e2e},
                                                indent=1, default=str))
    lines = [f"# Face detection — {dt.date.today().isoformat()}", "",
             f"{env['cpu']}, {env['cores']} cores, load average at start {env['load_avg'][0]:.1f} "
             f"(shared machine); versions {env['versions']}", "",
             "| detector | set | det-size | images | recall (all refs) | recall (true faces) | "
             "false det./image | images/s | load |", "|---|---|---|---|---|---|---|---|---|"]
    for r in clean:
        lines.append(f"| {r['detector']} | {r['set']} | {r['det_size']} | {r['images']} | "
                     f"{r['recall_all_refs']:.3f} ({r['ref_boxes']}) | {r['recall_true_faces']:.3f} ({r['true_faces']}) | "
                     f"{r['false_per_image']:.3f} | {r['images_per_s']:.2f} | {r['load_avg_1min_before']:.1f} |")
    if e2e:
        g, d = e2e["given_boxes"], e2e["detected_boxes"]
        lines += ["", f"End to end on Test-Dev, engine {Path(e2e['engine']).name} ({e2e['engine_kind']}):", "",
                  "| boxes | faces | accuracy | precision | recall | F1 | ROC-AUC | EER |", "|---|---|---|---|---|---|---|---|"]
        for label, m in (("given", g), ("detected", d)):
            lines.append(f"| {label} | {m['n']} | {m['accuracy']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} | "
                         f"{m['f1']:.4f} | {m['roc_auc']:.4f} | {m['eer']:.4f} |")
        lines.append(f"\nmissed faces {e2e['missed_faces']}, false detections scored {e2e['false_detections_scored']}, "
                     f"statuses {e2e['statuses']}")
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
