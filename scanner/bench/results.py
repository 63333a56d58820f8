"""bench.parquet (one row per resolution × pipeline), bench.png and a Markdown table of both."""
from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engines.files import read_settings, write_table

PIPELINES = ("dfscan", "baseline", "decode_only")

# Stage seconds: what each stage column holds for each pipeline (also stored in the metadata).
STAGES = {
    "read_s": "dfscan: reading + header check of each file (producer pass without engine); "
              "baseline: file reads, CPU-seconds summed over DataLoader workers",
    "decode_s": "baseline: PIL decode, worker CPU-seconds (once per face); decode_only: DALI decode",
    "crop_s": "baseline: PIL crop + resize + normalise, worker CPU-seconds",
    "dali_s": "dfscan: the DALI graph (decode once per image + crop/resize + normalise), "
              "producer pass without engine",
    "infer_s": "engine time (device synchronised): ONNX Runtime/TensorRT/torch for dfscan, "
               "eager torch for baseline",
    "write_s": "writing the rows as dfscan run does (scanner.output.RunOutput: parts, then faces.parquet)",
    "wait_s": "total_s - infer_s - write_s: the consumer waiting for crops and building rows",
}

# The dfscan row's ceilings (also stored in the metadata).
LIMITS = {
    "batch_size": "faces per batch used at this resolution: the requested one, lowered to stay within "
                  "scanner.settings.BATCH_PIXELS input pixels per batch",
    "engine_faces_per_s": "the engine alone on ready tensors, warm: the median of 5 short windows of batches",
    "decode_faces_per_s": "decode_only images/s x faces per image of the images it decoded",
    "limit_faces_per_s": "CPU: 1 / (1/decode_faces_per_s + 1/engine_faces_per_s), the two stages share "
                         "the cores; GPU: min of the two, they overlap",
    "efficiency": "faces_per_s / limit_faces_per_s",
    "producer_faces_per_s": "dfscan's producer alone: faces / (read_s + dali_s), i.e. reading, decoding "
                            "and the crop-and-resize graph with no engine behind it",
    "pipeline_limit_faces_per_s": "as limit_faces_per_s with producer_faces_per_s for the decode rate: "
                                  "the ceiling that counts the crops as well",
    "pipeline_efficiency": "faces_per_s / pipeline_limit_faces_per_s: how well the scan overlaps its two "
                           "stages, whatever they cost",
    "res_peak_rss_mb": "peak RSS of the whole process tree (self + PSS of descendants) over the whole "
                       "resolution: export, warm-up and every pass",
}

BENCH_SCHEMA = pa.schema([
    ("dataset", pa.string()), ("res", pa.int32()), ("pipeline", pa.string()),
    ("engine", pa.string()), ("backend", pa.string()), ("device", pa.string()),
    ("batch_size", pa.int32()), ("images", pa.int64()), ("faces", pa.int64()),
    ("total_s", pa.float64()), ("images_per_s", pa.float64()), ("faces_per_s", pa.float64()),
    ("mean_batch_ms", pa.float64()), ("p95_batch_ms", pa.float64()),
    ("read_s", pa.float64()), ("decode_s", pa.float64()), ("crop_s", pa.float64()),
    ("dali_s", pa.float64()), ("infer_s", pa.float64()), ("write_s", pa.float64()),
    ("wait_s", pa.float64()), ("peak_rss_mb", pa.float64()), ("peak_gpu_mem_mb", pa.float64()),
    ("accuracy", pa.float64()), ("roc_auc", pa.float64()), ("score_mae_vs_dfscan", pa.float64()),
    ("speedup_vs_baseline", pa.float64()), ("precision", pa.string()),
    ("engine_faces_per_s", pa.float64()), ("decode_faces_per_s", pa.float64()),
    ("limit_faces_per_s", pa.float64()), ("efficiency", pa.float64()),
    ("producer_faces_per_s", pa.float64()), ("pipeline_limit_faces_per_s", pa.float64()),
    ("pipeline_efficiency", pa.float64()),
    ("res_peak_rss_mb", pa.float64()), ("other_cpu_cores", pa.float64()),
    ("load_avg_1m", pa.float64()), ("cpu_model", pa.string()), ("cpu_cores", pa.int32()),
    ("gpu_name", pa.string()),
])


def bench_table(rows: list[dict]) -> pa.Table:
    full = [{name: r.get(name) for name in BENCH_SCHEMA.names} for r in rows]
    return pa.Table.from_pylist(full, schema=BENCH_SCHEMA)


def write_bench(out_dir, rows_or_table, meta: dict) -> Path:
    table = rows_or_table if isinstance(rows_or_table, pa.Table) else bench_table(rows_or_table)
    return write_table(Path(out_dir) / "bench.parquet", table.cast(BENCH_SCHEMA),
                       {**meta, "stages": STAGES, "limits": LIMITS})


def read_bench(path) -> tuple[pa.Table, dict]:
    return pq.read_table(path), read_settings(path)


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def plot_bench(table: pa.Table, path) -> Path:
    """faces/s (log) and accuracy against resolution, one line per dataset × pipeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.to_pylist()
    datasets = sorted({r["dataset"] for r in rows})
    styles = {"dfscan": ("tab:blue", "-"), "baseline": ("tab:orange", "-"), "decode_only": ("tab:gray", ":")}
    markers = "osD^v<>"
    fig, (ax_speed, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.8))
    for d_i, dataset in enumerate(datasets):
        for pipeline in PIPELINES:
            pts = sorted((r["res"], r) for r in rows if r["dataset"] == dataset and r["pipeline"] == pipeline)
            if not pts:
                continue
            color, ls = styles[pipeline]
            mk = markers[d_i % len(markers)]
            xs = [p[0] for p in pts]
            if pipeline == "decode_only":  # images/s × faces per image: the decode ceiling in faces/s
                ys = [r["images_per_s"] * r["faces"] / max(1, r["images"]) if r["faces"] else r["images_per_s"]
                      for _, r in pts]
                label = f"{dataset}: DALI decode-only ceiling"
            else:
                ys = [r["faces_per_s"] for _, r in pts]
                label = f"{dataset}: {pipeline}"
            ax_speed.plot(xs, ys, ls, color=color, marker=mk, label=label)
            limits = [(x, r["limit_faces_per_s"]) for x, r in pts if _ok(r.get("limit_faces_per_s"))]
            if limits:
                ax_speed.plot(*zip(*limits), "--", color=color, marker=mk, alpha=0.6,
                              label=f"{dataset}: dfscan limit (decode + engine alone)")
            if pipeline != "decode_only":
                acc = [(x, r["accuracy"]) for x, r in pts if _ok(r["accuracy"])]
                auc = [(x, r["roc_auc"]) for x, r in pts if _ok(r["roc_auc"])]
                if acc:
                    ax_acc.plot(*zip(*acc), "-", color=color, marker=mk, label=f"{dataset}: {pipeline} accuracy")
                if auc:
                    ax_acc.plot(*zip(*auc), "--", color=color, marker=mk, alpha=0.6,
                                label=f"{dataset}: {pipeline} ROC-AUC")
    first = rows[0] if rows else {}
    for ax in (ax_speed, ax_acc):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("input resolution (px)")
        ax.grid(True, which="both", alpha=0.3)
        res = sorted({r["res"] for r in rows})
        if res:  # 224 and 256 sit close on a log axis: slanted labels stay apart
            ax.set_xticks(res, [str(x) for x in res], rotation=45)
            ax.minorticks_off()
    ax_speed.set_yscale("log")
    ax_speed.set_ylabel("faces / s")
    ax_speed.set_title(f"throughput on {first.get('device', '?')} ({first.get('cpu_model') or ''}, "
                       f"{first.get('cpu_cores') or '?'} cores)", fontsize=9)
    ax_acc.set_ylabel("accuracy / ROC-AUC")
    ax_acc.set_ylim(0, 1.02)
    ax_acc.set_title(f"{first.get('engine', '')}", fontsize=9)
    for ax in (ax_speed, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _f(v, digits=1) -> str:
    return f"{v:.{digits}f}" if _ok(v) else "–"


def markdown_table(table: pa.Table) -> str:
    """One line per dataset × resolution: both pipelines side by side, their ratio, the stages."""
    rows = table.to_pylist()
    by = {(r["dataset"], r["res"], r["pipeline"]): r for r in rows}
    head = ("| dataset | res | batch | images | faces | dfscan faces/s | engine-only faces/s | "
            "decode-only img/s | limit faces/s | efficiency | producer faces/s | pipeline limit / efficiency | "
            "baseline faces/s | dfscan/baseline | "
            "peak RSS MB (resolution) | dfscan acc / AUC | baseline acc / AUC | dfscan read / dali / infer / "
            "write s | baseline read / decode / crop (worker s) / infer s | dfscan p95 batch ms | "
            "peak RSS MB dfscan / baseline | other cores busy |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def stages(r, keys, digits=2):
        return " / ".join(_f(r.get(k), digits) for k in keys)

    for dataset, res in sorted({(r["dataset"], r["res"]) for r in rows}):
        d, b, c = (by.get((dataset, res, p), {}) for p in PIPELINES)
        lines.append(
            f"| {dataset} | {res} | {d.get('batch_size', '–')} | {d.get('images', b.get('images', '–'))} "
            f"| {d.get('faces', b.get('faces', '–'))} "
            f"| {_f(d.get('faces_per_s'))} | {_f(d.get('engine_faces_per_s'))} | {_f(c.get('images_per_s'))} "
            f"| {_f(d.get('limit_faces_per_s'))} | {_f(d.get('efficiency'), 2)} "
            f"| {_f(d.get('producer_faces_per_s'))} "
            f"| {_f(d.get('pipeline_limit_faces_per_s'))} / {_f(d.get('pipeline_efficiency'), 2)} "
            f"| {_f(b.get('faces_per_s'))} | {_f(d.get('speedup_vs_baseline'), 2)} "
            f"| {_f(d.get('res_peak_rss_mb'), 0)} | {stages(d, ('accuracy', 'roc_auc'), 3)} "
            f"| {stages(b, ('accuracy', 'roc_auc'), 3)} | {stages(d, ('read_s', 'dali_s', 'infer_s', 'write_s'))} "
            f"| {stages(b, ('read_s', 'decode_s', 'crop_s', 'infer_s'))} | {_f(d.get('p95_batch_ms'))} "
            f"| {_f(d.get('peak_rss_mb'), 0)} / {_f(b.get('peak_rss_mb'), 0)} "
            f"| {_f(d.get('other_cpu_cores'), 2)} / {_f(b.get('other_cpu_cores'), 2)} |")
    return "\n".join(lines)
