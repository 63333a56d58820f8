"""Which CPU runtime is faster for one engine on this machine: timed once, remembered.

The faster of OpenVINO and ONNX Runtime depends on the CPU and the precision, and our own
measurements disagree across machines: on an AVX-512/VNNI EPYC OpenVINO led at fp32 (510 vs
290 faces/s, MobileNetV2 224 batch 64), on the AVX2 EPYC this project runs on now ONNX Runtime
led at fp32 (113 vs 92) and OpenVINO at INT8 (194 vs 174) — benchmarks/results/engines-cpu-2026-12-01.
A fixed preference is wrong somewhere, so the chooser times the built candidates here, on random
input of the engine's size with the thread count the run will use, and keeps the verdict in the
engine cache (``races/<key>.json``) so later runs only read it. The key holds every candidate
engine file's sha256, the runtime versions, the threads and the CPU model: a new engine, a
runtime upgrade or another machine races again.

Candidates are timed in turns (A B A B …) so a load spike from another process hits both, and
each keeps its best round (the least disturbed).
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Callable

from engines.errors import DfscanError
from engines.files import write_atomic

ROUNDS = 3
MAX_BATCH_PIXELS = 32 * 224 * 224  # faces per timed call shrink with the input size (memory)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fastest(candidates: dict, input_size, threads: int | None, cache_dir: Path,
            load: Callable[[str, Path], object], warn: Callable[[str], None] = print) -> tuple[str, dict]:
    """``(name, figures)`` of the fastest of ``candidates`` ({backend name: (engine path,
    library version)}); ``load(name, path)`` opens one. ``figures`` holds faces/s per
    candidate, the batch and threads used, and whether the verdict came from the cache."""
    if len(candidates) == 1:
        (name,) = candidates
        return name, {"raced": False, "why": "the only candidate"}
    from engines.cache import file_sha256

    fields = {"engines": {n: [file_sha256(p), lib] for n, (p, lib) in sorted(candidates.items())},
              "input_size": list(input_size), "threads": threads, "cpu": cpu_model()}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    verdict_file = Path(cache_dir) / "races" / f"{key}.json"
    try:
        saved = json.loads(verdict_file.read_text())
        if saved.get("fields") == fields and saved.get("winner") in candidates:
            return saved["winner"], {**saved["figures"], "cached": True}
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or unreadable: race again and overwrite it
    figures = _race(candidates, input_size, load)
    winner = max(figures["faces_per_s"], key=figures["faces_per_s"].get)
    try:
        verdict_file.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"fields": fields, "winner": winner, "figures": figures}, indent=2)
        write_atomic(verdict_file, payload)
    except OSError as exc:
        warn(f"{verdict_file}: could not keep the runtime race's verdict ({exc.strerror or exc}); "
             f"the next run times the runtimes again")
    return winner, {**figures, "cached": False}


def _race(candidates: dict, input_size, load) -> dict:
    import numpy as np

    h, w = input_size
    batch = max(1, min(32, MAX_BATCH_PIXELS // (h * w)))
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w), dtype=np.float32)
    engines, failures = {}, []
    for name, (path, _) in candidates.items():
        try:
            engine = load(name, path)
            engine.infer(x)  # warm-up: first-call allocations and kernel selection
            engines[name] = engine
        except Exception as exc:  # a candidate that cannot run here loses the race
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:120]}")
    if not engines:
        raise DfscanError(f"no CPU runtime could run {list(candidates.values())[0][0]}: {'; '.join(failures)}")
    best = {name: float("inf") for name in engines}
    for _ in range(ROUNDS):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.infer(x)
            best[name] = min(best[name], time.perf_counter() - started)
    return {"raced": True, "batch": batch, "rounds": ROUNDS, "failed": failures,
            "faces_per_s": {name: round(batch / s, 1) for name, s in best.items()}}
