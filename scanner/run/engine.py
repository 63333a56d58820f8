"""Which engine a run uses: for a checkpoint (or none: the bundled model) the fastest this
machine runs, built once and cached (``engines.autoselect``); an explicit engine file as given.

The cores are budgeted here too. On the CPU, DALI and the engine share them: DALI decodes the
next batch in a producer thread while the engine scores this one, so the engine gets every core
and DALI a quarter of them (at least one). Decoding is the small share of the work — measured
here, DALI decodes ~2,000 realorfake images/s against ~300–500 faces/s of MobileNetV2 224 — and
more decoder threads only take cycles from the engine.
"""
from __future__ import annotations

import os
from pathlib import Path

from engines.checkpoint import DEFAULT_CHECKPOINT
from scanner.errors import DfscanError
from scanner.run.training import face_batches
from scanner.settings import RunSettings

DEFAULT_ENGINE = DEFAULT_CHECKPOINT  # the bundled model, used without --engine


def budget_threads(settings: RunSettings) -> tuple[int, int | None]:
    """``(DALI threads, engine threads)`` for ``settings`` (None: the engine's own default)."""
    cores = os.cpu_count() or 1
    if settings.device == "gpu":  # the GPU decodes and infers; the CPU only feeds it
        return settings.num_threads or cores, None
    # DALI: a quarter of the cores, but two where there are two. With spin-free engine threads
    # the scheduler shares the cores well; on the 2-core EPYC (1,920 faces, three interleaved
    # rounds, 1 vs 2 DALI threads) fp32 went 169/172/170 -> 178/178/173 faces/s, the bf16 default
    # 259/244/260 -> 263/268/260, INT8 322/321/304 -> 310/326/310 (a wash).
    return settings.num_threads or min(cores, max(2, cores // 4)), settings.engine_threads or cores


def choose(engine_path, settings: RunSettings, log=print):
    """The ``engines.autoselect.EngineChoice`` for this run. Raises DfscanError for a missing
    engine or an impossible ``--backend`` / ``--precision``."""
    from engines.autoselect import choose_engine

    if engine_path is None:
        if not DEFAULT_ENGINE.is_file():
            raise DfscanError("no --engine given and no default model is installed; pass --engine FILE "
                              "(.plan, .onnx or .pt; 'dfscan export --arch mobilenetv2' makes an untrained one)")
        engine_path = DEFAULT_ENGINE
    calibration = validation = None
    tag = []
    if settings.calib_data:
        calibration = face_batches(settings.calib_data, with_labels=False)
        tag.append(f"calib={Path(settings.calib_data).resolve()}")
    if settings.gate_data:
        validation = face_batches(settings.gate_data, with_labels=True)
        tag.append(f"gate={Path(settings.gate_data).resolve()}")
    _, engine_threads = budget_threads(settings)
    return choose_engine(engine_path, settings.device, settings.backend, settings.precision,
                         calibration=calibration, validation=validation, data_tag=";".join(tag),
                         threads=engine_threads, cache_dir=settings.cache_dir,
                         warn=lambda m: log(f"warning: {m}"))


def open_engine(engine_path, settings: RunSettings, log=print):
    """``(engine, engine_path, choice)``: the loaded engine, the file the user named (or the
    bundled model) and the choice that made it."""
    choice = choose(engine_path, settings, log)
    log(f"engine: {choice.reason} ({choice.path})")
    return choice.load(), Path(engine_path or DEFAULT_ENGINE), choice
