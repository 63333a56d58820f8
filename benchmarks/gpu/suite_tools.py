"""Helpers for run_suite.sh on a lent GPU machine (they also run here, on a CPU, for a dry run).

    suite_tools.py env          [--json F]   versions (GPU, driver, CUDA, DALI, torch, ONNX Runtime...) and a
                                             DALI 'mixed' decode of one JPEG against the CPU decoder; exit 1 if broken
    suite_tools.py engine-rate  [--json F]   MobileNetV2 faces/s on the engine alone: dfscan's TorchEngine (fp16,
                                             logits to the host) and plain fp16 / channels_last / CUDA-graph forwards
    suite_tools.py parity       --data D     `dfscan run` with --device cpu and --device gpu on the same files and
                                             weights: per-face score differences
    suite_tools.py replicate    --src ROOT --split S --times N --dst ROOT2    S repeated N times, as split S-xN
    suite_tools.py synth        --n N --dst ROOT                              the synthetic multi-face set
    suite_tools.py summary      --out DIR                                     the table and the issue's targets

Each command given ``--json F`` merges its section into F (the suite's suite.json).
Repository root on PYTHONPATH (run_suite.sh sets it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_E2E_VS_DECODE = 0.8  # dfscan images/s over DALI decode-only images/s, end to end
TARGET_FP16_FACES_S = 20_000  # MobileNetV2 fp16 at 224 px
DISTS = ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-nvimgcodec-cu13", "nvidia-nvjpeg",
         "nvidia-libnvcomp-cu13", "torch", "torchvision", "triton", "onnxruntime", "onnxruntime-gpu", "onnx",
         "tensorrt", "timm", "numpy", "pyarrow", "pillow", "pycocotools", "optree", "libcst", "nvtx",
         "cuda-bindings", "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "pytest", "pytest-xdist")


def merge_json(path, section: str, value):
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[section] = value
    path.write_text(json.dumps(data, indent=1, default=str))


def _run(cmd, timeout=30) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return out.stdout if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ---------------------------------------------------------------- env

def gpu_info() -> dict:
    fields = ["name", "driver_version", "memory.total", "pstate", "clocks.sm", "clocks.max.sm",
              "clocks.mem", "power.limit", "temperature.gpu", "compute_mode", "mig.mode.current"]
    line = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"]).strip()
    info = dict(zip(fields, (v.strip() for v in line.splitlines()[0].split(",")))) if line else {}
    m = re.search(r"CUDA Version:\s*([\d.]+)", _run(["nvidia-smi"]))
    info["driver_cuda"] = m.group(1) if m else None
    return info


def versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def find_jpeg() -> Path | None:
    for folder in (ROOT / "scanner" / "samples" / "Images", Path("/root/dfscan-data/realorfake/Images/Val"),
                   ROOT.parent / "shared" / "data" / "realorfake" / "Images" / "Val"):
        hits = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
        if hits:
            return hits[0]
    return None


def dali_smoke(device: str) -> dict:
    """Decode one JPEG with DALI's 'mixed' (GPU) and 'cpu' decoders; compare the pixels."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    jpg = find_jpeg()
    if jpg is None:
        return {"ok": False, "error": "no JPEG found to decode"}
    data = np.frombuffer(jpg.read_bytes(), dtype=np.uint8)

    def decode(decoder):
        gpu = decoder == "mixed"

        @pipeline_def(batch_size=1, num_threads=2, device_id=0 if gpu else None,
                      prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def graph():
            enc = fn.external_source(name="enc", dtype=types.UINT8)
            return fn.decoders.image(enc, device=decoder, output_type=types.RGB)

        pipe = graph()
        pipe.build()
        pipe.feed_input("enc", [data])
        (out,) = pipe.run()
        return np.asarray((out.as_cpu() if gpu else out).at(0)).astype(np.int16)

    t = time.perf_counter()
    cpu = decode("cpu")
    result = {"file": str(jpg.relative_to(ROOT) if jpg.is_relative_to(ROOT) else jpg), "shape": list(cpu.shape)}
    if device == "gpu":
        gpu = decode("mixed")
        diff = np.abs(gpu - cpu)
        result.update(mixed_shape=list(gpu.shape), max_abs_diff=int(diff.max()),
                      mean_abs_diff=float(diff.mean()), ok=gpu.shape == cpu.shape and float(diff.mean()) < 2.0)
    else:
        result["ok"] = True
    result["seconds"] = round(time.perf_counter() - t, 2)
    return result


def cmd_env(a) -> int:
    from scanner.bench.probe import cpu_model

    info = {"when": time.strftime("%Y-%m-%d %H:%M:%S %z"), "python": sys.version.split()[0],
            "executable": sys.executable, "platform": platform.platform(), "cpu_model": cpu_model(),
            "cpu_cores": os.cpu_count(), "gpu": gpu_info(), "versions": versions(),
            "pythonpath": os.environ.get("PYTHONPATH", "")}
    ok = True
    try:
        import torch

        info["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                         "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["torch"].update(device=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                                 memory_gib=round(p.total_memory / 2**30, 1))
    except Exception as exc:  # report, then fail
        info["torch"] = {"error": repr(exc)}
        ok = False
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as exc:
        info["onnxruntime_providers"] = repr(exc)
    device = "gpu" if info.get("torch", {}).get("cuda_available") else "cpu"
    try:
        import nvidia.dali as dali

        info["dali"] = {"version": dali.__version__, "from": str(Path(dali.__file__).parent)}
        info["dali_smoke"] = dali_smoke(device)
        ok = ok and info["dali_smoke"]["ok"]
    except Exception as exc:
        import traceback

        traceback.print_exc()
        info["dali"] = {"error": repr(exc)}
        ok = False
    if device != "gpu" and not a.allow_cpu:
        ok = False
    g, t, v = info["gpu"], info.get("torch", {}), info["versions"]
    print(f"GPU {g.get('name')} ({t.get('memory_gib')} GiB, {t.get('sms')} SMs, cc {t.get('capability')}), "
          f"driver {g.get('driver_version')} (CUDA {g.get('driver_cuda')}), {g.get('pstate')}, SM clock "
          f"{g.get('clocks.sm')} of {g.get('clocks.max.sm')}, power limit {g.get('power.limit')}, "
          f"MIG {g.get('mig.mode.current')}")
    print(f"CPU {info['cpu_model']} x{info['cpu_cores']}; Python {info['python']}; torch {t.get('version')} "
          f"(CUDA {t.get('cuda')}, cuDNN {t.get('cudnn')}, available {t.get('cuda_available')})")
    print(f"DALI {info.get('dali', {}).get('version', info.get('dali'))} from {info.get('dali', {}).get('from')}; "
          f"nvimgcodec {v.get('nvidia-nvimgcodec-cu13')}; nvjpeg {v.get('nvidia-nvjpeg')}; "
          f"ONNX Runtime {v.get('onnxruntime') or v.get('onnxruntime-gpu')} {info['onnxruntime_providers']}; "
          f"TensorRT {v.get('tensorrt', 'absent')}")
    print(f"DALI smoke ({device}): {info.get('dali_smoke')}")
    print("ENV OK" if ok else "ENV BROKEN")
    merge_json(a.json, "env", info)
    return 0 if ok else 1


# ---------------------------------------------------------------- engine rate

def _model(checkpoint, arch: str, seed: int, res: int):
    from engines.export import model_from_source

    return model_from_source(Path(checkpoint) if checkpoint else None, None if checkpoint else arch,
                             seed, (res, res))


def _time(fn, inputs, device, seconds: float = 0.25, repeats: int = 5) -> list[float]:
    """Seconds per call: warm-up, then ``repeats`` timed runs of about ``seconds`` each (events on CUDA)."""
    import torch

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for i in range(5):
        fn(inputs[i % len(inputs)])
    sync()
    t = time.perf_counter()
    fn(inputs[0])
    sync()
    iters = max(3, min(500, int(seconds / max(time.perf_counter() - t, 1e-6))))
    out = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for i in range(iters):
                fn(inputs[i % len(inputs)])
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1000 / iters)
        else:
            t = time.perf_counter()
            for i in range(iters):
                fn(inputs[i % len(inputs)])
            out.append((time.perf_counter() - t) / iters)
    return out


def cmd_engine_rate(a) -> int:
    import copy

    import numpy as np
    import torch

    from engines.backends.torch_backend import TorchEngine

    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, config = _model(a.checkpoint, a.arch, a.seed, a.res)
    model.eval()
    torch.manual_seed(1)
    probe = torch.randn(16, 3, a.res, a.res)  # never zeros (METHOD.md)
    with torch.inference_mode():  # the reference: float64 on the CPU
        ref = copy.deepcopy(model).double()(probe.double()).numpy()

    def rel_err(out) -> float:
        out = np.asarray(out, dtype=np.float64)
        return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))

    half = device == "cuda"
    dtype = torch.float16 if half else torch.float32
    dname = "fp16" if half else "fp32"
    plain = copy.deepcopy(model).to(device, dtype).eval()
    cl = copy.deepcopy(model).to(device, dtype).to(memory_format=torch.channels_last).eval()
    engine = TorchEngine(copy.deepcopy(model), config, device)

    def as_in(x, channels_last=False, to_dtype=True):
        x = x.to(device)
        x = x.to(dtype) if to_dtype else x
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    variants = {  # name: (make(batch) -> (fn, inputs), check output for the 16-face probe)
        f"dfscan TorchEngine ({dname}, logits to host)": (
            lambda bs: (engine.infer, [as_in(torch.randn(bs, 3, a.res, a.res), to_dtype=False) for _ in range(3)]),
            lambda: engine.infer(as_in(probe, to_dtype=False))),
        f"plain {dname}": (
            lambda bs: (plain, [as_in(torch.randn(bs, 3, a.res, a.res)) for _ in range(3)]),
            lambda: plain(as_in(probe)).float().cpu()),
        f"{dname} channels_last": (
            lambda bs: (cl, [as_in(torch.randn(bs, 3, a.res, a.res), True) for _ in range(3)]),
            lambda: cl(as_in(probe, True)).float().cpu()),
    }
    if device == "cuda" and not a.no_graph:
        def graphed(bs):
            static_x = as_in(torch.randn(bs, 3, a.res, a.res), True)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    cl(static_x)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static_y = cl(static_x)  # noqa: F841  (kept alive by the graph's pool)

            def fn(x):
                static_x.copy_(x)
                g.replay()
            return fn, [as_in(torch.randn(bs, 3, a.res, a.res), True) for _ in range(3)]

        variants[f"{dname} channels_last + CUDA graph"] = (graphed, None)

    results = []
    with torch.inference_mode():
        for name, (make, check) in variants.items():
            try:
                err = rel_err(check()) if check else None
            except Exception as exc:
                print(f"{name}: check failed: {exc!r}")
                err = None
            for bs in a.batches:
                try:
                    fn, inputs = make(bs)
                    per_call = _time(fn, inputs, device, a.seconds)
                    med = statistics.median(per_call)
                    row = {"variant": name, "res": a.res, "batch": bs, "faces_per_s": bs / med,
                           "ms_per_batch": med * 1000, "spread": (max(per_call) - min(per_call)) / med,
                           "rel_err_vs_fp64": err}
                    del fn, inputs
                except Exception as exc:  # out of memory, a failed graph capture: recorded, the rest goes on
                    row = {"variant": name, "res": a.res, "batch": bs,
                           "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
                results.append(row)
                print(f"{name:45s} batch {bs:5d}: " + (f"{row['faces_per_s']:10.0f} faces/s "
                      f"({row['ms_per_batch']:.2f} ms/batch, spread {row['spread']:.1%}, rel err "
                      f"{err if err is None else f'{err:.1e}'})" if "error" not in row else row["error"]))
                if device == "cuda":
                    torch.cuda.empty_cache()
    best = max((r for r in results if r["variant"].startswith("dfscan") and "faces_per_s" in r),
               key=lambda r: r["faces_per_s"], default=None)
    section = {"device": device, "model": a.checkpoint or f"{a.arch} (untrained, seed {a.seed})",
               "cudnn_benchmark": torch.backends.cudnn.benchmark, "results": results,
               "best_dfscan_engine": best}
    if best and a.res == 224 and device == "cuda":
        met = best["faces_per_s"] >= TARGET_FP16_FACES_S
        print(f"TARGET fp16 MobileNetV2 >= {TARGET_FP16_FACES_S} faces/s at 224 (dfscan engine, best batch "
              f"{best['batch']}): {best['faces_per_s']:.0f} -> {'met' if met else 'NOT met'}")
    merge_json(a.json, "engine_rate", section)
    return 0


# ---------------------------------------------------------------- parity

def _faces(path: Path) -> dict:
    import pyarrow.parquet as pq

    d = pq.read_table(path, columns=["face_id", "score_fake", "status"]).to_pydict()
    return {f: (s, st) for f, s, st in zip(d["face_id"], d["score_fake"], d["status"])}


def cmd_parity(a) -> int:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "scanner.cli"]
    engine = Path(a.checkpoint) if a.checkpoint else work / "mobilenetv2-untrained.pt"
    if not a.checkpoint:
        subprocess.run([*cli, "export", "--arch", "mobilenetv2", "--format", "pt", "--out", str(engine)], check=True)
    data = Path(a.data)
    sets = [("realorfake/Test-Dev", data / "realorfake" / "Images" / "Test-Dev"),
            ("realorfake/Test-Challenge", data / "realorfake" / "Images" / "Test-Challenge"),
            ("multiface", data / "multiface" / "Images")]
    out, ok = {"engine": str(engine), "sets": []}, True
    for name, images in sets:
        if not images.is_dir():
            print(f"parity: {images} absent, skipped")
            continue
        runs = {}
        for dev in ("cpu", "gpu"):
            dest = work / f"{name.replace('/', '_')}-{dev}"
            t = time.perf_counter()
            res = subprocess.run([*cli, "run", str(images), "--engine", str(engine), "--out", str(dest),
                                  "--device", dev, "--quiet", "--overwrite"], capture_output=True, text=True)
            runs[dev] = {"rc": res.returncode, "seconds": round(time.perf_counter() - t, 1),
                         "tail": (res.stdout + res.stderr).strip().splitlines()[-1:]}
        row = {"set": name, "runs": runs}
        if all(r["rc"] == 0 for r in runs.values()):
            c = _faces(work / f"{name.replace('/', '_')}-cpu" / "faces.parquet")
            g = _faces(work / f"{name.replace('/', '_')}-gpu" / "faces.parquet")
            both = [f for f in c if f in g and c[f][0] is not None and g[f][0] is not None]
            diffs = [abs(c[f][0] - g[f][0]) for f in both]
            row.update(faces=len(c), compared=len(both),
                       status_mismatch=sum(c[f][1] != g[f][1] for f in c if f in g),
                       max_abs_diff=max(diffs, default=math.nan),
                       mean_abs_diff=statistics.fmean(diffs) if diffs else math.nan,
                       label_flips=sum((c[f][0] >= 0.5) != (g[f][0] >= 0.5) for f in both))
            ok = ok and row["status_mismatch"] == 0 and row["max_abs_diff"] < a.tolerance
        else:
            ok = False
        out["sets"].append(row)
        print(f"parity {name}: " + json.dumps({k: v for k, v in row.items() if k != "runs"}, default=str)
              + f"; cpu {runs['cpu']['seconds']} s rc {runs['cpu']['rc']}, gpu {runs['gpu']['seconds']} s "
                f"rc {runs['gpu']['rc']} {runs['gpu']['tail'] if runs['gpu']['rc'] else ''}")
    out["ok"] = ok
    print(f"PARITY {'OK' if ok else 'FAILED'} (score tolerance {a.tolerance})")
    merge_json(a.json, "parity", out)
    return 0 if ok else 1


# ---------------------------------------------------------------- data

def cmd_replicate(a) -> int:
    """ROOT2/Images/S-xN/ and ROOT2/S-xN_poly.json: every image of S N times (distinct files)."""
    src, dst = Path(a.src), Path(a.dst)
    coco = json.loads((src / f"{a.split}_poly.json").read_text())
    split = f"{a.split}-x{a.times}"
    folder = dst / "Images" / split
    if (dst / f"{split}_poly.json").is_file() and folder.is_dir():
        print(f"{dst} {split} (already there)")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for k in range(a.times):
        ids = {}
        for im in coco["images"]:
            name = f"{k:03d}_{Path(im['file_name']).name}"
            shutil.copyfile(src / im["file_name"], folder / name)
            ids[im["id"]] = len(images) + 1
            images.append({**im, "id": ids[im["id"]], "file_name": f"Images/{split}/{name}"})
        for ann in coco["annotations"]:
            anns.append({**ann, "id": len(anns) + 1, "image_id": ids[ann["image_id"]]})
    (dst / f"{split}_poly.json").write_text(json.dumps({**coco, "images": images, "annotations": anns}))
    print(f"{dst} {split}: {len(images)} images, {len(anns)} faces")
    return 0


def cmd_synth(a) -> int:
    if a.faces_from:
        os.environ["DFSCAN_FACES"] = a.faces_from
    from scanner.bench.bench import parse_faces_per_image
    from scanner.bench.synthetic import make_synthetic_set

    dst = Path(a.dst)
    marker = dst / f".made-{a.n}-{a.faces_per_image}-{a.seed}"
    if marker.is_file():
        print(f"{dst} (already there)")
        return 0
    shutil.rmtree(dst, ignore_errors=True)
    t = time.perf_counter()
    images = make_synthetic_set(dst, a.n, a.seed, parse_faces_per_image(a.faces_per_image),
                                workers=os.cpu_count() or 1)
    marker.touch()
    print(f"{images}: {a.n} images in {time.perf_counter() - t:.1f} s")
    return 0


# ---------------------------------------------------------------- summary

def _f(v, fmt="{:.0f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def cmd_summary(a) -> int:
    import pyarrow.parquet as pq

    out = Path(a.out)
    suite = json.loads((out / "suite.json").read_text()) if (out / "suite.json").is_file() else {}
    steps = []
    if a.steps and Path(a.steps).is_file():
        for line in Path(a.steps).read_text().splitlines():
            name, rc, secs, note = (line.split("\t") + ["", "", ""])[:4]
            steps.append({"step": name, "rc": rc, "seconds": secs, "note": note})
        merge_json(out / "suite.json", "steps", steps)
    lines, targets = [], []
    head = ("| run | res | batch | faces | dfscan faces/s | dfscan img/s | decode-only img/s | e2e / decode "
            "| infer-only faces/s | baseline faces/s | dfscan / baseline |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for path in sorted(out.glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        by = {(r["res"], r["pipeline"]): r for r in rows}
        for res in sorted({r["res"] for r in rows}):
            d, c, b = by.get((res, "dfscan"), {}), by.get((res, "decode_only"), {}), by.get((res, "baseline"), {})
            ratio = d["images_per_s"] / c["images_per_s"] if d.get("images_per_s") and c.get("images_per_s") else None
            infer = d["faces"] / d["infer_s"] if d.get("faces") and d.get("infer_s") else None
            lines.append(f"| {path.stem} | {res} | {d.get('batch_size', '–')} | {d.get('faces', '–')} "
                         f"| {_f(d.get('faces_per_s'))} | {_f(d.get('images_per_s'))} | {_f(c.get('images_per_s'))} "
                         f"| {_f(ratio, '{:.2f}')} | {_f(infer)} | {_f(b.get('faces_per_s'))} "
                         f"| {_f(d.get('speedup_vs_baseline'), '{:.1f}x')} |")
            if res == 224 and ratio is not None:
                targets.append((f"end to end >= {TARGET_E2E_VS_DECODE}x DALI decode-only images/s, {path.stem} at "
                                f"{res} px", f"{ratio:.2f}x ({d['images_per_s']:.0f} vs {c['images_per_s']:.0f} img/s)",
                                ratio >= TARGET_E2E_VS_DECODE))
    er = suite.get("engine_rate", {})
    best = er.get("best_dfscan_engine")
    if best and best.get("res") == 224 and er.get("device") == "cuda":
        targets.append((f"MobileNetV2 fp16 >= {TARGET_FP16_FACES_S} faces/s at 224 (dfscan engine alone)",
                        f"{best['faces_per_s']:.0f} at batch {best['batch']}", best["faces_per_s"] >= TARGET_FP16_FACES_S))
    rate_lines = []
    for variant in dict.fromkeys(r["variant"] for r in er.get("results", [])):
        rs = [r for r in er["results"] if r["variant"] == variant and "faces_per_s" in r]
        if rs:
            top = max(rs, key=lambda r: r["faces_per_s"])
            rate_lines.append(f"- {variant}: " + ", ".join(f"b{r['batch']} {r['faces_per_s']:.0f}" for r in rs)
                              + f" faces/s (best b{top['batch']}; rel. err vs fp64 "
                                f"{_f(top.get('rel_err_vs_fp64'), '{:.1e}')})")
    env = suite.get("env", {})
    g, t, v = env.get("gpu", {}), env.get("torch", {}), env.get("versions", {})
    md = ["# dfscan on a lent GPU: suite summary", "",
          f"- GPU: {g.get('name')} ({t.get('memory_gib')} GiB, {t.get('sms')} SMs), driver {g.get('driver_version')} "
          f"(CUDA {g.get('driver_cuda')}), clocks SM {g.get('clocks.sm')} / max {g.get('clocks.max.sm')}, "
          f"power limit {g.get('power.limit')}",
          f"- CPU: {env.get('cpu_model')} x{env.get('cpu_cores')}; Python {env.get('python')}",
          f"- Versions: DALI {env.get('dali', {}).get('version')} (nvidia-dali-cuda130), nvimgcodec "
          f"{v.get('nvidia-nvimgcodec-cu13')}, nvjpeg {v.get('nvidia-nvjpeg')}, torch {t.get('version')} (CUDA "
          f"{t.get('cuda')}, cuDNN {t.get('cudnn')}), ONNX Runtime {v.get('onnxruntime') or v.get('onnxruntime-gpu')} "
          f"{env.get('onnxruntime_providers')}, TensorRT {v.get('tensorrt', 'absent')}, numpy {v.get('numpy')}",
          f"- When: {env.get('when')}", ""]
    if steps:
        md += ["| step | rc | s | last line |", "|---|---|---|---|"]
        md += [f"| {s['step']} | {s['rc']} | {s['seconds']} | {s['note'].replace('|', '/')} |" for s in steps] + [""]
    if len(lines) > 2:
        md += lines + ["", "e2e / decode: dfscan scan images/s over DALI decode-only images/s on the same files; "
                           "infer-only: faces over the engine's synchronised seconds inside the scan.", ""]
    if rate_lines:
        md += [f"Engine alone ({er.get('model')}, {er.get('device')}, res 224, median of 5 runs, CUDA events):"]
        md += rate_lines + [""]
    if "parity" in suite:
        md += ["CPU vs GPU `dfscan run` on the same weights: " + "; ".join(
            f"{s['set']}: max |Δscore| {_f(s.get('max_abs_diff'), '{:.2e}')}, label flips {s.get('label_flips')}, "
            f"status mismatches {s.get('status_mismatch')}" for s in suite["parity"].get("sets", [])), ""]
    if targets:
        md += ["Targets:"] + [f"- {name}: {value} — {'met' if ok else 'NOT met'}" for name, value, ok in targets] + [""]
    (out / "SUMMARY.md").write_text("\n".join(md) + "\n")
    # The short table, last (the reply carries the end of the output).
    print("\n".join(md[2:5]))
    for s in steps:
        print(f"  step {s['step']:<22} rc {s['rc']:<8} {s['seconds']:>4} s  {s['note'][:110]}")
    if len(lines) > 2:
        print("\n".join(lines))
    for r in rate_lines:
        print(r)
    for name, value, ok in targets:
        print(f"TARGET {name}: {value} — {'met' if ok else 'NOT met'}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("env")
    s.add_argument("--json")
    s.add_argument("--allow-cpu", action="store_true", help="no GPU is not a failure (dry runs)")
    s = sub.add_parser("engine-rate")
    s.add_argument("--json")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--arch", default="mobilenetv2")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--res", type=int, default=224)
    s.add_argument("--batches", type=lambda t: [int(x) for x in t.split(",")], default=[64, 128, 256, 512, 1024])
    s.add_argument("--seconds", type=float, default=0.25, help="per timed run")
    s.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    s.add_argument("--no-graph", action="store_true")
    s = sub.add_parser("parity")
    s.add_argument("--json")
    s.add_argument("--data", required=True)
    s.add_argument("--work", default="/tmp/dfscan-parity")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--tolerance", type=float, default=1e-2)
    s = sub.add_parser("replicate")
    s.add_argument("--src", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--times", type=int, required=True)
    s.add_argument("--dst", required=True)
    s = sub.add_parser("synth")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--dst", required=True)
    s.add_argument("--faces-per-image", default="1..8")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--faces-from", default=None, help="realorfake root to take faces from ($DFSCAN_FACES)")
    s = sub.add_parser("summary")
    s.add_argument("--out", required=True)
    s.add_argument("--steps", default=None)
    a = p.parse_args(argv)
    return {"env": cmd_env, "engine-rate": cmd_engine_rate, "parity": cmd_parity, "replicate": cmd_replicate,
            "synth": cmd_synth, "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
