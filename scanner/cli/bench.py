"""``dfscan bench``: throughput and accuracy against input resolution (``scanner.bench``)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from scanner.bench.bench import BenchSettings, parse_faces_per_image, parse_resolutions, run_bench
from scanner.cli.options import video_decoder_option
from scanner.errors import DfscanError


@click.command()
@click.option("--res", "res", default=None, metavar="A..B|R1,R2",
              help="Resolutions: a range (powers of two from A to B plus the model's native size) "
                   "or a comma list. Default: the native size.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), default=None,
              help="dfscan checkpoint (.pt) to bench. Default: engines/default/mobilenetv2.pt where it "
                   "exists, else an untrained --arch mobilenetv2.")
@click.option("--arch", default=None, help="Bench an untrained, seeded model of this architecture.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="OpenForensics-style root (with --split) or a folder of images.")
@click.option("--split", default=None, help="Split under --data: DATA/Images/SPLIT with DATA/SPLIT_poly.json.")
@click.option("--synthetic", type=int, default=None, metavar="N_IMAGES",
              help="Bench a synthetic multi-face set of this many images (made in a temp folder).")
@click.option("--faces-per-image", default=None, help="Faces per synthetic image: K or a range A..B. "
                                                     "Default: 1..8.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic set and of --arch weights.")
@click.option("--batch-size", default=64, show_default=True, help="Faces per batch (both pipelines).")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "onnx", "openvino", "torch", "trt"]), default="auto",
              show_default=True, help="dfscan engine; auto: a TensorRT plan on a GPU where TensorRT "
                                      "runs, else the faster of OpenVINO and ONNX Runtime here (as run).")
@click.option("--precision", type=click.Choice(["fp32", "int8", "bf16"]), default="fp32", show_default=True,
              help="int8: the CPU runtimes on a static QDQ model calibrated on --calib-data; bf16: "
                   "OpenVINO in bf16, on CPUs that run it natively.")
@click.option("--calib-data", type=click.Path(file_okay=False, exists=True), default=None,
              help="--precision int8: images whose faces calibrate it (default: the benched images).")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also time PIL + DataLoader + eager torch on the same faces.")
@click.option("--workers", type=int, default=None, help="Baseline DataLoader workers. Default: min(4, cores).")
@click.option("--max-faces", type=int, default=None, help="Bench only the first images holding at most N faces.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace a bench.parquet already in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--videos", type=click.Path(exists=True, file_okay=False), default=None,
              help="Bench scanning the video files below this folder instead: decode only, the video "
                   "scan, and the same sampled frames as JPEG images (OUT/bench_videos.parquet).")
@click.option("--frames-per-video", type=click.IntRange(min=1), default=32, show_default=True,
              help="--videos: frames sampled per clip.")
@video_decoder_option
def bench(**options):
    """Time dfscan against PIL + eager torch across input resolutions; write OUT/bench.parquet
    and OUT/bench.png.

    Example: dfscan bench --res 32..1024 --data ../shared/data/realorfake --split Test-Dev --out bench/

    Videos: dfscan bench --videos ../shared/data/videos --out bench-videos/
    """
    if options["videos"] is not None:
        _bench_videos(options)
        return
    del options["videos"], options["frames_per_video"], options["video_decoder"]
    _bench_command(**options)


def _bench_videos(o):
    from scanner.bench.videos import bench_videos, summary_lines
    from scanner.detect.detect import DetectSettings
    from scanner.run.job import resolve_device
    from scanner.run.videos import VideoSettings
    from scanner.settings import RunSettings

    if (Path(o["out_dir"]) / "bench_videos.parquet").exists() and not o["overwrite"]:
        raise DfscanError(f"{Path(o['out_dir']) / 'bench_videos.parquet'} exists; pass --overwrite or choose "
                          "another --out")
    settings = RunSettings(batch_size=o["batch_size"], device=resolve_device(o["device"]), isolate_decoder=False)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    vs = VideoSettings(frames_per_video=o["frames_per_video"], decoder=o["video_decoder"])
    table = bench_videos(o["videos"], o["out_dir"], o["engine_path"], settings, DetectSettings(), vs,
                         progress=not o["quiet"], log=log)
    for line in summary_lines(table):
        click.echo(line)
    click.echo(f"wrote {Path(o['out_dir']) / 'bench_videos.parquet'}")


def _bench_command(res, engine_path, arch, data, split, synthetic, faces_per_image, seed, batch_size,
                   device, backend, precision, calib_data, baseline, workers, max_faces, out_dir, overwrite, quiet):
    from scanner.bench.engines import resolve_source
    from scanner.run.job import DEFAULT_ENGINE

    if (data is None) == (synthetic is None):
        raise DfscanError("give --data ROOT [--split S] or --synthetic N_IMAGES (one of them)")
    if faces_per_image is not None and synthetic is None:
        raise DfscanError("--faces-per-image shapes a --synthetic set; real data has the faces it has")
    if batch_size < 1 or (max_faces is not None and max_faces < 1) or (workers is not None and workers < 0):
        raise DfscanError("--batch-size and --max-faces must be at least 1, --workers at least 0")
    if (Path(out_dir) / "bench.parquet").exists() and not overwrite:
        raise DfscanError(f"{Path(out_dir) / 'bench.parquet'} exists; pass --overwrite or choose another --out")
    source = resolve_source(engine_path, arch, DEFAULT_ENGINE, seed)
    settings = BenchSettings(res, batch_size, device, backend, precision, calib_data, baseline, workers, max_faces)
    parse_resolutions(res, 224)  # a malformed --res fails before any work
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if data is not None:
        images = Path(data) / "Images" / split if split else Path(data)
        if not images.is_dir():
            raise DfscanError(f"{images}: no such folder (--data ROOT --split S reads ROOT/Images/S)")
        name = f"{Path(data).resolve().name}/{split}" if split else Path(data).resolve().name
        table = run_bench(images, out_dir, source, settings, name, progress=not quiet, log=log)
    else:
        import os

        from scanner.bench.synthetic import make_synthetic_set

        lo, hi = parse_faces_per_image(faces_per_image or "1..8")
        with tempfile.TemporaryDirectory(prefix="dfscan-synth-") as tmp:
            log(f"making {synthetic} synthetic images ({lo}..{hi} faces each, seed {seed}) in {tmp}")
            images = make_synthetic_set(tmp, synthetic, seed, (lo, hi), workers=os.cpu_count() or 1)
            extra = {"synthetic": {"images": synthetic, "faces_per_image": [lo, hi], "seed": seed}}
            table = run_bench(images, out_dir, source, settings, f"synthetic-{synthetic}-f{lo}..{hi}-s{seed}",
                              progress=not quiet, log=log, extra_meta=extra)
    out = Path(out_dir)
    click.echo(f"wrote {out / 'bench.parquet'} ({table.num_rows} rows) and {out / 'bench.png'}")
