"""Where the pixel budget per batch comes from: engine-only faces/s and peak RSS against batch size.

Each (input size, batch) runs in a fresh process (so ``ru_maxrss`` is that configuration's own
peak): the bundled MobileNetV2 exported to ONNX at the size, ONNX Runtime CPU, one warm-up batch,
then ``--batches`` timed batches of random ready tensors. Only calls the library. From the root:

    python benchmarks/batch_budget.py [--cases 224x16,224x64,512x12,1024x3] [--batches 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHECKPOINT = ROOT / "engines" / "default" / "mobilenetv2.pt"
CASES = "224x16,224x32,224x64,224x128,512x4,512x12,512x32,1024x3,1024x8"


def one(size: int, batch: int, batches: int) -> dict:
    import numpy as np

    from engines.backends import load_engine
    from engines.export import export_onnx, model_from_source

    model, config = model_from_source(CHECKPOINT, None, 0, (size, size))
    with tempfile.TemporaryDirectory() as tmp:
        engine = load_engine(export_onnx(model, config, Path(tmp) / "m.onnx"), device="cpu")
    del model
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    engine.infer(x)  # warm-up: the arena grows to this batch's size
    t = time.perf_counter()
    for _ in range(batches):
        engine.infer(x)
    s = time.perf_counter() - t
    return {"size": size, "batch": batch, "mpixels_per_batch": round(batch * size * size / 1e6, 2),
            "faces_per_s": round(batch * batches / s, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=CASES, help=f"SIZExBATCH list (default {CASES})")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        size, batch = (int(v) for v in a.one.split("x"))
        print(json.dumps(one(size, batch, a.batches)))
        return
    for case in a.cases.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", case, "--batches", str(a.batches)],
                             capture_output=True, text=True)
        print(out.stdout.strip() or f"{case}: failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)


if __name__ == "__main__":
    main()
