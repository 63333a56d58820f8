"""The standard CPU sweep: dfscan against PIL + eager torch, written to benchmarks/results/.

1. realorfake Test-Dev (110 labelled faces, one per 512x512 image) at 32..1024 (powers of two plus
   the model's native size); --batch-size 64, lowered by the pixel budget above 224 px
   (scanner.settings.batch_for: 49 at 256, 12 at 512, 3 at 1024) so memory stays bounded.
2. a synthetic multi-face set (default 300 mixed-size JPEGs, 1-8 faces each) at the native size.

Writes ``benchmarks/results/<machine>-<date>/``: bench.parquet (all rows), bench.png, RESULTS.md.
Only calls the library. Run from the repository root:

    python benchmarks/run_cpu_sweep.py [--synthetic-images 300] [--max-faces N] [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanner.bench.engines import resolve_source  # noqa: E402
from scanner.bench.probe import cpu_model, extra_versions, machine_info  # noqa: E402
from scanner.bench.results import markdown_table, plot_bench, write_bench  # noqa: E402
from scanner.bench.bench import BenchSettings, run_bench  # noqa: E402
from scanner.run.job import DEFAULT_ENGINE  # noqa: E402
from scanner.bench.synthetic import default_face_source, make_synthetic_set  # noqa: E402
from engines.files import read_settings, versions  # noqa: E402

REALORFAKE = ROOT.parent / "shared" / "data" / "realorfake"


def machine_slug() -> str:
    import os

    name = re.sub(r"\(r\)|\(tm\)|cpu|processor|\d+-core|@.*", "", cpu_model().lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "cpu"
    return f"{name}-{os.cpu_count()}c"


def _runs(args, source, tmp: Path):
    """(label, images dir, settings, extra meta) for each part of the sweep."""
    common = dict(device="cpu", backend="onnx", baseline=True, max_faces=args.max_faces)
    if REALORFAKE.is_dir():
        images = REALORFAKE / "Images" / "Test-Dev"
        yield "realorfake/Test-Dev", images, BenchSettings(resolutions=args.res, batch_size=64, **common), {}
    else:
        print(f"skipping realorfake: {REALORFAKE} is absent", file=sys.stderr)
    n, lo, hi = args.synthetic_images, 1, 8
    print(f"making {n} synthetic images in {tmp}", file=sys.stderr)
    synth = make_synthetic_set(tmp / "synthetic", n, args.seed, (lo, hi), workers=2)
    yield (f"synthetic-{n}-f{lo}..{hi}-s{args.seed}", synth,
           BenchSettings(resolutions="native", batch_size=64, **common),
           {"synthetic": {"images": n, "faces_per_image": [lo, hi], "seed": args.seed,
                          "face_source": str(default_face_source())}})


def results_md(table: pa.Table, meta: dict, started: str) -> str:
    m, rows = meta["machine"], table.to_pylist()
    others = [r["other_cpu_cores"] for r in rows if r["other_cpu_cores"] is not None]
    load = [r["load_avg_1m"] for r in rows if r["load_avg_1m"] is not None]
    lines = [f"# dfscan bench: CPU sweep, {started}", "",
             f"- Machine: {m['cpu_model']}, {m['cpu_cores']} cores ({m['cpu_cores_usable']} usable), "
             f"{m['host_memory_gb']} GB RAM, {m['platform']}, Python {m['python']}",
             f"- Versions: {json.dumps({**meta['versions'], **meta['extra_versions']})}",
             f"- Model: {meta['model']}" + ("" if meta["trained"] else
                                            " — no trained checkpoint was installed, so accuracy is chance level "
                                            "and only the throughput numbers mean anything"),
             "- Engines: dfscan = DALI (CPU) decode + crop in one graph, ONNX Runtime (CPU EP), Parquet out; "
             "baseline = PIL per face (each face re-opens its image), torch DataLoader "
             f"({meta['settings']['baseline_workers'] or 'min(4, cores)'} workers), eager torch fp32, "
             "inference_mode. Same files, weights, resolution, crop convention (face_roi, margin "
             f"{meta['crop_margin']}, bilinear + antialias, same mean/std).",
             f"- Load from other processes during the measurements: {statistics.mean(others):.2f} cores busy on "
             f"average (min {min(others):.2f}, max {max(others):.2f}) of {m['cpu_cores']}; 1-min load average "
             f"{min(load):.1f}–{max(load):.1f}. "
             + ("Other jobs were running: CPU timings are disturbed; re-run on a quiet machine."
                if statistics.mean(others) > 0.2 else "The machine was quiet."), "",
             markdown_table(table), "",
             "Columns: faces/s over the whole timed scan (warm engine, pipeline built inside the timed "
             "scan as `dfscan run` does); dfscan stages from a producer-only pass (read, DALI) and the "
             "real scan (infer, write) — producer and engine overlap, so they need not add up to the "
             "total; baseline read/decode/crop are CPU-seconds summed over the DataLoader workers. "
             "Decode-only: DALI decode of the same images, file reads outside the clock. "
             "Stage definitions are in bench.parquet's metadata (`stages`).", ""]
    native = meta["native_res"]
    for dataset in sorted({r["dataset"] for r in rows}):
        at = {r["pipeline"]: r for r in rows if r["dataset"] == dataset and r["res"] == native}
        d, b = at.get("dfscan"), at.get("baseline")
        if not d or not b or not d["speedup_vs_baseline"]:
            continue
        ok = "met" if d["speedup_vs_baseline"] >= 5 else "NOT met"
        lines.append(f"- Target (dfscan faces/s >= 5x baseline at {native} px) on {dataset}: "
                     f"{d['speedup_vs_baseline']:.2f}x — {ok}. Where the time goes at {native} px: dfscan "
                     f"{d['total_s']:.1f} s = inference {d['infer_s']:.1f} s ({d['infer_s'] / d['total_s']:.0%}) "
                     f"+ waiting for crops/building rows {d['wait_s']:.1f} s + writing {d['write_s']:.2f} s; "
                     f"its DALI graph alone takes {d['dali_s']:.1f} s and file reads {d['read_s']:.2f} s "
                     f"(overlapped with inference). Baseline {b['total_s']:.1f} s = eager inference "
                     f"{b['infer_s']:.1f} s ({b['infer_s'] / b['total_s']:.0%}) + waiting for the loader "
                     f"{b['wait_s']:.1f} s; its workers spent {b['read_s'] + b['decode_s'] + b['crop_s']:.1f} "
                     f"CPU-s reading, decoding ({b['decode_s']:.1f} s, once per face) and cropping.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", default="32..1024", help="realorfake resolutions")
    p.add_argument("--synthetic-images", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-faces", type=int, default=None, help="quick runs: cap faces per dataset")
    p.add_argument("--out", default=None, help="default: benchmarks/results/<machine>-<date>")
    args = p.parse_args(argv)
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{machine_slug()}-{dt.date.today()}")
    source = resolve_source(None, None, DEFAULT_ENGINE)
    tables, runs = [], []
    with tempfile.TemporaryDirectory(prefix="dfscan-sweep-") as tmp:
        for i, (label, images, settings, extra) in enumerate(_runs(args, source, Path(tmp))):
            part = Path(tmp) / f"part{i}"
            tables.append(run_bench(images, part, source, settings, label, extra_meta=extra,
                                    log=lambda m: print(m, file=sys.stderr)))
            runs.append(read_settings(part / "bench.parquet"))
    table = pa.concat_tables(tables)
    first = runs[0]
    meta = {"command": "benchmarks/run_cpu_sweep.py", "started": started, "model": first["model"],
            "trained": first["trained"], "arch": first["arch"], "native_res": first["native_res"],
            "crop_margin": first["crop_margin"], "settings": first["settings"],
            "machine": machine_info("cpu"), "versions": versions(), "extra_versions": extra_versions(),
            "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    write_bench(out, table, meta)
    plot_bench(table, out / "bench.png")
    (out / "RESULTS.md").write_text(results_md(table, meta, started))
    print(f"wrote {out}/bench.parquet, bench.png, RESULTS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
