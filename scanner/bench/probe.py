"""What the bench records beside its clocks: the machine, peak memory and the load from others.

Memory is sampled from /proc (no psutil), so a peak is the peak of this measurement and not of
the process's life: the bench process's RSS every 20 ms, plus the PSS of all its descendants
(DataLoader workers and any process they start) every 0.5 s. PSS, because a forked worker's RSS repeats the pages it shares with its
parent; it is read less often because the kernel takes milliseconds to add it up.
``other_cpu_cores`` is how many cores other processes kept busy meanwhile: on a shared machine
it tells which numbers were taken under load.
"""
from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path

# the one reader of /proc/cpuinfo (the race keys its verdict on it) and of CPU ticks (the race measures
# others' CPU use as the bench does)
from engines.race import cpu_model, cpu_ticks, machine_busy_ticks

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def machine_info(device: str) -> dict:
    """CPU model and cores (+ GPU name, driver and CUDA on a GPU run)."""
    info = {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count() or 1,
            "cpu_cores_usable": len(os.sched_getaffinity(0)), "host_memory_gb":
            round(os.sysconf("SC_PHYS_PAGES") * _PAGE / 2**30, 1), "platform": platform.platform(),
            "python": platform.python_version(), "gpu_name": None, "gpu_driver": None, "cuda": None}
    if device == "gpu":
        import torch

        info["gpu_name"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            info["gpu_driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            pass
    return info


def extra_versions() -> dict:
    """Versions ``engines.files.versions()`` leaves out but a benchmark depends on."""
    from importlib import metadata

    out = {}
    for dist in ("numpy", "pillow", "torchvision", "pyarrow", "onnx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (children's children too: a worker may start its own)."""
    kids, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                found = [int(p) for p in task.read_text().split()]
            except OSError:
                continue
            kids += found
            todo += found
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return _rss_bytes(pid)


class ResourceProbe:
    """Context manager: peak host RSS (self + children), peak GPU memory and others' CPU use."""

    def __init__(self, device: str = "cpu", interval: float = 0.02):
        self.device, self.interval = device, interval
        self.peak_rss_mb = self.peak_gpu_mem_mb = float("nan")
        self.other_cpu_cores = self.load_avg_1m = float("nan")
        self._stop = threading.Event()
        self._kids: dict[int, int] = {}  # child pid -> its last CPU ticks (children come and go)
        self._pss: dict[int, int] = {}  # child pid -> its last PSS and when it was read
        self._pss_at: dict[int, float] = {}

    def _sample(self):
        pid = os.getpid()
        kids = _children(pid)
        now = time.perf_counter()
        for k in kids:
            self._kids[k] = cpu_ticks(k)
            if now - self._pss_at.get(k, -1.0) >= 0.5:
                self._pss[k], self._pss_at[k] = _pss_bytes(k), now
        rss = _rss_bytes(pid) + sum(self._pss.get(k, 0) for k in kids)
        self._peak_rss = max(self._peak_rss, rss)
        if self.device == "gpu":
            import torch

            free, total = torch.cuda.mem_get_info()
            self._peak_gpu = max(self._peak_gpu, total - free)

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def _own_ticks(self) -> int:
        return cpu_ticks(os.getpid()) + sum(self._kids.values())

    def __enter__(self):
        self._peak_rss, self._peak_gpu = 0, 0
        self._sample()
        self._t0, self._busy0, self._own0 = time.perf_counter(), machine_busy_ticks(), self._own_ticks()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-probe")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._t0
        others = (machine_busy_ticks() - self._busy0) - (self._own_ticks() - self._own0)
        self.other_cpu_cores = max(0.0, others / _TICK / wall) if wall > 0 else float("nan")
        self.load_avg_1m = os.getloadavg()[0]
        self.peak_rss_mb = self._peak_rss / 2**20
        if self.device == "gpu":
            self.peak_gpu_mem_mb = self._peak_gpu / 2**20
        return False

    def fields(self) -> dict:
        return {"peak_rss_mb": self.peak_rss_mb, "peak_gpu_mem_mb": self.peak_gpu_mem_mb,
                "other_cpu_cores": self.other_cpu_cores, "load_avg_1m": self.load_avg_1m}
