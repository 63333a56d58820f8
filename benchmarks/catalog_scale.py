"""What a run costs per face before any image is decoded: catalog, batching, statuses, output.

Writes a COCO file of N faces (``--faces-per-image`` per image) whose image files do not exist,
so every face gets ``missing_file`` and nothing is decoded or inferred, then runs a real
``dfscan run`` on it in a fresh interpreter and records its wall time, µs per face and the peak
resident memory of the whole process tree (the run and its decoding child), sampled from /proc
every 50 ms, with the tree's CPU seconds (the honest figure on a shared machine). Only calls the CLI; run from the repository root:

    python benchmarks/catalog_scale.py 200000 2000000 [--engine FILE] [--keep DIR]
    python benchmarks/catalog_scale.py 200000 --profile cprofile|tracemalloc

``--profile`` runs the job in this interpreter instead (no peak RSS) and prints where the time
(cProfile, top 25 by cumulative time) or the memory (tracemalloc, top 25 lines at the peak) goes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAGE = os.sysconf("SC_PAGE_SIZE")


def write_missing_coco(path: Path, n_faces: int, per_image: int) -> int:
    """A COCO file of ``n_faces`` faces on ``ceil(n / per_image)`` images that do not exist;
    labels alternate so that the run's metrics path is exercised. Returns the image count."""
    n_images = -(-n_faces // per_image)
    with open(path, "w") as fh:
        fh.write('{"images": [')
        fh.write(",".join(f'{{"id": {i}, "file_name": "Images/gone/{i:08d}.jpg", "width": 512, "height": 512}}'
                          for i in range(1, n_images + 1)))
        fh.write('], "annotations": [')
        fh.write(",".join(f'{{"id": {f}, "image_id": {(f - 1) // per_image + 1}, "bbox": [10.5, 20, 100, 120], '
                          f'"category_id": {f % 2}, "iscrowd": 0, "area": 12000}}'
                          for f in range(1, n_faces + 1)))
        fh.write('], "categories": [{"id": 0, "name": "Real"}, {"id": 1, "name": "Fake"}]}')
    return n_images


TICK = os.sysconf("SC_CLK_TCK")


def tree_rss(pid: int, cpu: dict[int, float]) -> int:
    """Resident bytes of ``pid`` and all its descendants (each process counted once); records
    each one's CPU seconds so far (user + system) in ``cpu``."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, pages = int(fields[1]), int(fields[21])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * PAGE
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        if p in ticks:
            cpu[p] = ticks[p] / TICK
        todo.extend(children.get(p, []))
    return total


def measure(cmd: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, cpu = 0, {}
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid, cpu))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{out[-3000:]}")
    # CPU time, not only wall time: on a shared machine the wall clock measures the neighbours
    # (the last 50 ms of each process are not seen)
    return {"wall_s": wall, "cpu_s": sum(cpu.values()), "peak_rss_bytes": peak, "last_lines": out.strip().splitlines()[-2:]}


def run_cmd(images, ann, out, engine) -> list[str]:
    cmd = [sys.executable, "-m", "scanner.cli", "run", str(images), "--annotations", str(ann), "--out", str(out),
           "--device", "cpu", "--quiet", "--no-report"]
    return cmd + (["--engine", str(engine)] if engine else [])


def profile(n_faces, args, root: Path):
    from scanner.cli import main

    ann = root / "scale_poly.json"
    write_missing_coco(ann, n_faces, args.faces_per_image)
    argv = run_cmd(root, ann, root / "out", args.engine)[3:]
    if args.profile == "cprofile":
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        try:
            main(argv, standalone_mode=False)
        finally:
            prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    else:
        import tracemalloc

        tracemalloc.start(5)
        main(argv, standalone_mode=False)
        current, peak = tracemalloc.get_traced_memory()
        print(f"tracemalloc: current {current / 1e6:.0f} MB, peak {peak / 1e6:.0f} MB")
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:25]:
            print(stat)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("faces", type=int, nargs="+")
    ap.add_argument("--faces-per-image", type=int, default=1)
    ap.add_argument("--engine", default=None, help="engine file (default: the bundled model)")
    ap.add_argument("--profile", choices=["cprofile", "tracemalloc"], default=None)
    ap.add_argument("--keep", type=Path, default=None, help="folder for the COCO files and outputs (kept)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.profile:
            return profile(args.faces[0], args, root)
        print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "python": platform.python_version()}))
        for n in args.faces:
            ann = root / f"scale{n}_poly.json"
            n_images = write_missing_coco(ann, n, args.faces_per_image)
            load_before = os.getloadavg()
            res = measure(run_cmd(root, ann, root / f"out{n}", args.engine))
            import pyarrow.parquet as pq

            rows = pq.ParquetFile(root / f"out{n}" / "faces.parquet").metadata.num_rows
            assert rows == n, f"{rows} rows for {n} faces"
            print(json.dumps({"faces": n, "images": n_images, "json_mb": round(ann.stat().st_size / 1e6, 1),
                              "wall_s": round(res["wall_s"], 2), "us_per_face": round(res["wall_s"] / n * 1e6, 2),
                              "cpu_s": round(res["cpu_s"], 2), "cpu_us_per_face": round(res["cpu_s"] / n * 1e6, 2),
                              "peak_rss_gb": round(res["peak_rss_bytes"] / 1e9, 3), "rows": rows,
                              "load_before": load_before, "load_after": os.getloadavg()}), flush=True)
            ann.unlink()


if __name__ == "__main__":
    main()
