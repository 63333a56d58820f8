"""Decoding in a supervised child process (``RunSettings.isolate_decoder``): what it costs on a
clean run, and a 1,000-image run with poisoned files that kill the decoder.

Only calls the library; every run is a fresh interpreter (as each ``dfscan run`` is), started by
this script with ``--one``. Run from the repository root:

    python benchmarks/isolation.py overhead [--reps 3] [--images DIR] [--engine FILE]
    python benchmarks/isolation.py crash [--images 1000] [--poison 2]

``overhead`` interleaves isolated and in-process runs (A B A B ...) so that a noisy, shared
machine disturbs both alike, and reports the scan time each run reports (engine loaded, catalog
read; the child's start is inside it) and the whole command's wall time.
``crash`` scans N realorfake images under new names (symlinks) twice with the 64-px varying
test engine: once plain, once with ``DFSCAN_CRASH_ON`` set so that reading any ``poison-*`` file
kills the decoding process by SIGKILL, and checks the second run against the first.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "realorfake"
CRASH_TAG = "poison-"


def one(images, out, engine, annotations, isolate: bool, batch_size: int):
    """One run in this interpreter; prints its summary as JSON."""
    from scanner.run.job import run_job
    from scanner.settings import RunSettings

    settings = RunSettings(batch_size=batch_size, device="cpu", isolate_decoder=isolate)
    s = run_job(images, out, engine, annotations, settings, overwrite=True, progress=False, log=lambda m: None)
    print(json.dumps({"scan_s": s.seconds, "faces": s.faces, "ok": s.faces_ok}))


def fresh_run(args: list[str], env=None) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - t}


def spread(xs):
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def overhead(opts):
    out = Path(tempfile.mkdtemp(prefix="dfscan-iso-"))
    runs = {"isolated": [], "in-process": []}
    for rep in range(opts.reps):
        for mode in ("isolated", "in-process"):
            args = [str(opts.images), str(out / mode), opts.engine or "", "", str(mode == "isolated"), "64"]
            r = fresh_run(args)
            runs[mode].append(r)
            print(f"rep {rep} {mode:10s} scan {r['scan_s']:.2f} s, wall {r['wall_s']:.2f} s, "
                  f"{r['faces']} faces", flush=True)
    for key in ("scan_s", "wall_s"):
        a, b = ([r[key] for r in runs[m]] for m in ("isolated", "in-process"))
        cost = statistics.median(a) / statistics.median(b) - 1
        print(f"{key}: isolated {spread(a)}; in-process {spread(b)}; isolation costs {100 * cost:+.1f}% (medians)")
    pairs = [x["scan_s"] / y["scan_s"] - 1 for x, y in zip(runs["isolated"], runs["in-process"])]
    print("per interleaved pair (scan): " + ", ".join(f"{100 * p:+.1f}%" for p in pairs))


def write_set(root: Path, n: int, poisoned: set[int]) -> Path:
    """``n`` realorfake images as symlinks named ``img-*`` (``poison-*`` for those in ``poisoned``),
    each with its own face box; the annotations file is returned."""
    src = []
    for split in ("Train", "Val", "Test-Dev"):
        ann = json.loads((DATA / f"{split}_poly.json").read_text())
        boxes = {a["image_id"]: a for a in ann["annotations"]}
        src += [(DATA / im["file_name"], boxes[im["id"]]) for im in ann["images"] if im["id"] in boxes]
    (root / "img").mkdir(parents=True)
    images, anns = [], []
    for k in range(n):
        path, box = src[k % len(src)]
        name = f"{CRASH_TAG if k in poisoned else 'img-'}{k:05d}.jpg"
        (root / "img" / name).symlink_to(path)
        images.append({"id": k + 1, "file_name": name})
        anns.append({"id": k + 1, "image_id": k + 1, "bbox": box["bbox"], "category_id": box["category_id"]})
    path = root / "poly.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 0, "name": "Real"}, {"id": 1, "name": "Fake"}]}))
    return path


def crash(opts):
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "tests"))
    from _data import varying_engines

    root = Path(tempfile.mkdtemp(prefix="dfscan-crash-"))
    engine = varying_engines(root, (64, 64), seed=0, formats=("onnx",))["onnx"]
    poisoned = {int(opts.images * (k + 1) / (opts.poison + 1)) for k in range(opts.poison)}
    ann = write_set(root, opts.images, poisoned)
    args = [str(root / "img"), "", str(engine), str(ann), "True", "32"]
    plain = fresh_run([args[0], str(root / "plain"), *args[2:]])
    env = {**os.environ, "DFSCAN_CRASH_ON": CRASH_TAG}
    hit = fresh_run([args[0], str(root / "poisoned"), *args[2:]], env=env)
    a, b = (pq.read_table(root / d / "faces.parquet").to_pylist() for d in ("plain", "poisoned"))
    bad = {r["face_id"] for r in b if r["status"] != "ok"}
    culprits = {k + 1 for k in poisoned}
    same = all(abs(x["score_fake"] - y["score_fake"]) <= 1e-5 for x, y in zip(a, b) if y["status"] == "ok")
    print(f"{opts.images} images, poisoned {sorted(culprits)}; plain run: scan {plain['scan_s']:.1f} s "
          f"(wall {plain['wall_s']:.1f} s); poisoned run: scan {hit['scan_s']:.1f} s (wall {hit['wall_s']:.1f} s)")
    print(f"rows {len(b)} (plain {len(a)}); not ok: {sorted(bad)} "
          f"{sorted({r['status'] for r in b if r['status'] != 'ok'})}; culprits exactly: {bad == culprits}; "
          f"every other face has the plain run's score: {same}")
    print(next(r["error"] for r in b if r["status"] != "ok"))


def main():
    if sys.argv[1] == "--one":
        images, out, engine, ann, isolate, batch = sys.argv[2:8]
        return one(images, out, engine or None, ann or None, isolate == "True", int(batch))
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["overhead", "crash"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--images", default=None)
    p.add_argument("--engine", default=None)
    p.add_argument("--poison", type=int, default=2)
    opts = p.parse_args()
    if opts.what == "overhead":
        opts.images = opts.images or DATA / "Images" / "Train"
        overhead(opts)
    else:
        opts.images = int(opts.images or 1000)
        crash(opts)


if __name__ == "__main__":
    main()
