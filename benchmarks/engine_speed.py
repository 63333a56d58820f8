"""Engine-only CPU speed: faces/s of each backend and precision on ready tensors (no decode, no crop).

MobileNetV2 (the bundled default checkpoint) at 224 px, batch 64, one synchronous request per
batch (how the scanner calls engines): torch fp32, ONNX Runtime fp32 and INT8, OpenVINO fp32 and
INT8 under the LATENCY and THROUGHPUT hints. INT8 is the QDQ model from ``engines.quantize``; the
calibration batches are random here because only speed is measured (accuracy: tests/test_quantize.py).
Rounds are interleaved and the median is reported, to damp other jobs on a shared machine.
Only calls the library. Run from the repository root:

    python benchmarks/engine_speed.py [--size 224] [--batch 64] [--batches 4] [--rounds 3] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.backends import load_engine  # noqa: E402
from engines.checkpoint import load_checkpoint  # noqa: E402
from engines.export import export_onnx  # noqa: E402
from engines.quantize import quantize_onnx  # noqa: E402
from scanner.bench.probe import cpu_model  # noqa: E402

CHECKPOINT = ROOT / "engines" / "default" / "mobilenetv2.pt"


def versions() -> str:
    names = ("torch", "onnxruntime", "openvino", "numpy")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def faces_per_second(engine, x: np.ndarray, batches: int) -> float:
    engine.infer(x)  # warm-up: first-call allocations and kernel selection
    engine.infer(x)
    start = time.perf_counter()  # CPU engines return host arrays: nothing left to synchronise
    for _ in range(batches):
        engine.infer(x)
    return batches * len(x) / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input size in pixels (default 224)")
    parser.add_argument("--batch", type=int, default=64, help="faces per batch (default 64)")
    parser.add_argument("--batches", type=int, default=4, help="timed batches per round (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; median reported (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for every engine (default: the runtimes' own choice)")
    args = parser.parse_args(argv)

    size = (args.size, args.size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, *size)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="dfscan-speed-") as tmp:
        model, config, _ = load_checkpoint(CHECKPOINT, input_size=size)
        fp32 = export_onnx(model, config, Path(tmp) / "fp32.onnx")
        calib = (rng.standard_normal((16, 3, *size)).astype(np.float32) for _ in range(4))
        int8 = quantize_onnx(fp32, Path(tmp) / "int8.onnx", calib)
        t = args.threads
        engines = {
            "torch fp32": lambda: load_engine(CHECKPOINT, threads=t),
            "onnxruntime fp32": lambda: load_engine(fp32, threads=t),
            "onnxruntime int8": lambda: load_engine(int8, threads=t),
            "openvino fp32 LATENCY": lambda: load_engine(fp32, backend="openvino", threads=t, hint="LATENCY"),
            "openvino fp32 THROUGHPUT": lambda: load_engine(fp32, backend="openvino", threads=t, hint="THROUGHPUT"),
            "openvino int8 LATENCY": lambda: load_engine(int8, backend="openvino", threads=t, hint="LATENCY"),
            "openvino int8 THROUGHPUT": lambda: load_engine(int8, backend="openvino", threads=t, hint="THROUGHPUT"),
        }
        loaded = {name: make() for name, make in engines.items()}  # torch runs any input size
        rates = {name: [] for name in loaded}
        for _ in range(args.rounds):
            for name, engine in loaded.items():
                rates[name].append(faces_per_second(engine, x, args.batches))

    print(f"# engine-only CPU speed, MobileNetV2 {args.size} px, batch {args.batch}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.platform()}")
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"versions: {versions()}")
    print(f"threads: {args.threads or 'runtime default'}; {args.rounds} rounds × {args.batches} batches, "
          f"median (min–max) faces/s")
    print()
    print("| engine | faces/s | range |")
    print("|---|---:|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f}–{max(values):.0f} |")


if __name__ == "__main__":
    main()
