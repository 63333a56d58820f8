"""Which CPU runtime is faster for one engine on this machine: timed once, remembered.

The faster of OpenVINO and ONNX Runtime depends on the CPU and the precision, and our own
measurements disagree across machines: on an AVX-512/VNNI EPYC OpenVINO led at fp32 (510 vs
290 faces/s, MobileNetV2 224 batch 64), on the AVX2 EPYC this project runs on now ONNX Runtime
led at fp32 (113 vs 92) and OpenVINO at INT8 (194 vs 174) — benchmarks/results/engines-cpu-2026-12-01.
A fixed preference is wrong somewhere, so the chooser times the built candidates here, on random
input of the engine's size with the thread count the run will use, and keeps the verdict in the
engine cache (``races/<key>.json``) so later runs only read it. The key holds every candidate
engine file's sha256, the runtime versions, the threads, the CPU model and its instruction sets
(AVX-512, VNNI, BF16, AMX): a new engine, a runtime upgrade or another machine races again.

Candidates are timed in turns (A B A B …) so a load spike from another process hits both, and
each keeps its best round (the least disturbed). Turns are not enough under steady load: the two
runtimes suffer differently from a competing process (a verdict timed while other processes kept
the 2-core test machine busy read OpenVINO 61 / ONNX Runtime 52 faces/s and was kept; quiet, the
same engines ran 125-164 / 198). So the race also measures how many cores other processes used
while it ran; a verdict timed with more than a quarter of the cores busy elsewhere is kept as
provisional and timed again by later runs (up to ``MAX_ATTEMPTS`` races, the least disturbed
verdict kept), while a quiet verdict is final.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

from engines.errors import DfscanError
from engines.files import write_atomic

ROUNDS = 3
BUSY_SHARE = 0.25  # others' CPU use, as a share of the cores, above which a verdict is provisional
MAX_ATTEMPTS = 3  # races for one key before a disturbed verdict is kept as it is
MAX_BATCH_PIXELS = 32 * 224 * 224  # faces per timed call shrink with the input size (memory)


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of /proc/cpuinfo, or None (no such file or line)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    name = _cpuinfo("model name")
    return name if name is not None else platform.processor() or platform.machine()


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_isa() -> str:
    """The instruction sets that decide which runtime and precision win, from /proc/cpuinfo: the
    same model name has come with and without AVX-512/VNNI/BF16 on this project's cloud machines."""
    flags = set((_cpuinfo("flags") or "").split())
    return " ".join(f for f in ISA_FLAGS if f in flags)


def fastest(candidates: dict, input_size, threads: int | None, cache_dir: Path,
            load: Callable[[str, Path], object], warn: Callable[[str], None] = print) -> tuple[str, dict]:
    """``(name, figures)`` of the fastest of ``candidates`` ({backend name: (engine path,
    library version)}); ``load(name, path)`` opens one. ``figures`` holds faces/s per
    candidate, the batch and threads used, the cores other processes kept busy meanwhile
    (``other_cpu_cores``), whether the verdict came from the cache and whether it is
    ``provisional`` (disturbed: a later run times the runtimes again)."""
    if len(candidates) == 1:
        (name,) = candidates
        return name, {"raced": False, "why": "the only candidate"}
    from engines.cache import file_sha256

    fields = {"engines": {n: [file_sha256(p), lib] for n, (p, lib) in sorted(candidates.items())},
              "input_size": list(input_size), "threads": threads, "cpu": cpu_model(), "isa": cpu_isa()}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    verdict_file = Path(cache_dir) / "races" / f"{key}.json"
    saved = _saved(verdict_file, fields, candidates)
    if saved is not None and (not _disturbed(saved["figures"]) or saved.get("attempts", 1) >= MAX_ATTEMPTS):
        return saved["winner"], {**saved["figures"], "cached": True, "provisional": False}
    figures = _race(candidates, input_size, load)
    attempts = 1 + (saved.get("attempts", 1) if saved else 0)
    kept = saved is not None and _others(saved["figures"]) < figures["other_cpu_cores"]
    if kept:  # the earlier verdict was the less disturbed: keep it, count this race
        figures, winner = saved["figures"], saved["winner"]
    else:
        winner = max(figures["faces_per_s"], key=figures["faces_per_s"].get)
    try:
        verdict_file.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"fields": fields, "winner": winner, "figures": figures, "attempts": attempts},
                             indent=2)
        write_atomic(verdict_file, payload)
    except OSError as exc:
        warn(f"{verdict_file}: could not keep the runtime race's verdict ({exc.strerror or exc}); "
             f"the next run times the runtimes again")
    return winner, {**figures, "cached": kept, "provisional": _disturbed(figures) and attempts < MAX_ATTEMPTS}


def _saved(verdict_file: Path, fields: dict, candidates: dict) -> dict | None:
    """The verdict kept for these exact engines, or None (none yet, unreadable, another key)."""
    try:
        saved = json.loads(verdict_file.read_text())
        if (saved.get("fields") == fields and saved.get("winner") in candidates
                and isinstance(saved.get("figures"), dict)):
            return saved
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _others(figures: dict) -> float:
    """Cores other processes kept busy during the race; unknown (a verdict from before it was
    measured) counts as disturbed."""
    value = figures.get("other_cpu_cores")
    return float(value) if isinstance(value, (int, float)) else float("inf")


def _disturbed(figures: dict) -> bool:
    return _others(figures) > BUSY_SHARE * (os.cpu_count() or 1)


def cpu_ticks(pid: int) -> int:
    """CPU ticks (user + system) process ``pid`` has spent so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime; children are counted by pid
    except (OSError, IndexError, ValueError):
        return 0


def machine_busy_ticks() -> int:
    """CPU ticks every core has spent busy so far (all but idle and iowait), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)


def _busy_ticks() -> tuple[int, int]:
    """(ticks every CPU spent busy, ticks this process spent) so far; (0, 0) without /proc."""
    try:
        return machine_busy_ticks(), cpu_ticks(os.getpid())
    except (OSError, IndexError, ValueError):
        return 0, 0


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
    (busy0, own0), started_all = _busy_ticks(), time.perf_counter()
    for _ in range(ROUNDS):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.infer(x)
            best[name] = min(best[name], time.perf_counter() - started)
    (busy1, own1), wall = _busy_ticks(), time.perf_counter() - started_all
    others = max(0.0, ((busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / wall) if wall > 0 else 0.0
    return {"raced": True, "batch": batch, "rounds": ROUNDS, "failed": failures,
            "faces_per_s": {name: round(batch / s, 1) for name, s in best.items()},
            "other_cpu_cores": round(others, 2)}
