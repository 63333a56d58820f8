"""``dfscan run``: scan a folder (or a Ray cluster's share of it) into Parquet."""
from __future__ import annotations

import click

from scanner.cli.options import detect_options, engine_options, threshold_option, video_decoder_option
from scanner.errors import DfscanError


def sigterm_as_interrupt():
    """A scheduler's SIGTERM stops the run like Ctrl-C: rows so far are saved for --resume."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.command()
@click.argument("images", type=click.Path(file_okay=False, path_type=str))
@click.option("--annotations", type=click.Path(dir_okay=False), default=None,
              help="COCO / OpenForensics *_poly.json. Default: found beside IMAGES "
                   "(ROOT/<Split>_poly.json for ROOT/Images/<Split>); none means whole-image faces.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), default=None,
              help="Engine file: .plan/.engine (TensorRT), .onnx (ONNX Runtime), .pt (torch). "
                   "Default: the bundled model.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--batch-size", default=64, show_default=True, help="Faces per batch.")
@threshold_option
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out: scan only what is missing.")
@click.option("--overwrite", is_flag=True, help="Delete dfscan's results in --out and start again.")
@click.option("--max-pixels", default=100_000_000, show_default=True,
              help="Refuse images larger than this (decompression bombs); their faces get 'too_large'.")
@click.option("--allow-outside-paths", is_flag=True,
              help="Let annotation file_name entries be absolute or contain '..'.")
@click.option("--part-rows", default=4096, show_default=True,
              help="Rows per part file: a killed run loses at most this many faces (or 30 s of work).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-report", is_flag=True, help="Skip OUT/report.html and OUT/summary.json.")
@click.option("--no-isolate", is_flag=True,
              help="Decode images and scan video clips in this process instead of a supervised child "
                   "process (CPU). Without the child, an image or clip that crashes the decoder stops the "
                   "run (it would get 'decoder_crashed'); use it to see such a crash (a core dump, a "
                   "debugger) or where a child process cannot start. GPU runs always decode in-process.")
@click.option("--ray", "use_ray", is_flag=True,
              help="Scan on a Ray cluster (pip install 'dfscan[ray]'): shards of whole images, one DALI "
                   "pipeline and engine per worker; same output as a run here.")
@click.option("--ray-address", default=None,
              help="--ray: 'auto' (the cluster 'ray start' runs on this machine), HOST:PORT, or 'local' "
                   "(a private cluster for this run). Default: $RAY_ADDRESS, else local.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="--ray: number of workers. Default: one per GPU of the cluster (per CPU without GPUs).")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
              help="--ray: GPUs per worker (0.5 puts two on a GPU, 0 scans on CPUs). "
                   "Default: 1 where the cluster has GPUs, else 0.")
@click.option("--shard-images", type=click.IntRange(min=1), default=None,
              help="--ray: images per shard, the unit a worker scans and a crash re-runs. Default: 256.")
@click.option("--frames-per-video", type=click.IntRange(min=0), default=32, show_default=True,
              help="Video files (.mp4 .mov .mkv .webm .avi .m4v) below IMAGES: frames sampled per clip, "
                   "evenly spaced in time; 0 skips videos.")
@click.option("--fps", "sample_fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Sample this many frames per second of video instead of --frames-per-video.")
@click.option("--labels", "labels_csv", type=click.Path(dir_okay=False), default=None,
              help="CSV with columns file (relative to IMAGES) and label (real/fake or 0/1) for video "
                   "files; other columns are ignored. Adds videos' labels to the rows and video_metrics.parquet.")
@video_decoder_option
@detect_options
@engine_options
def run(images, annotations, engine_path, out_dir, batch_size, threshold, device, resume, overwrite,
        max_pixels, allow_outside_paths, part_rows, quiet, no_report, no_isolate, use_ray, ray_address, workers,
        gpus_per_worker, shard_images, frames_per_video, sample_fps, labels_csv, video_decoder, detect,
        engine_settings):
    """Scan IMAGES and write OUT/faces.parquet (+ OUT/metrics.parquet when labels exist), then
    OUT/report.html and OUT/summary.json. Video files below IMAGES are sampled, their faces found,
    followed and scored (faces.parquet rows with frame, time_s, track_id), one row per clip in
    OUT/videos.parquet.

    Without --engine, or with a .pt checkpoint, the run uses the fastest engine this machine has
    for it, built once and cached; an .onnx, .xml or .plan file is used as given.

    Example: dfscan run data/realorfake/Images/Test-Dev --engine model.onnx --out results/

    Videos: dfscan run clips/ --labels labels.csv --frames-per-video 32 --out results/

    On a Ray cluster: dfscan run IMAGES --engine model.plan --out results/ --ray --ray-address auto
    """
    from scanner.run.job import run_job
    from scanner.run.videos import VideoSettings
    from scanner.settings import RunSettings

    if batch_size < 1:
        raise DfscanError("--batch-size must be at least 1")
    if resume and overwrite:
        raise DfscanError("--resume and --overwrite contradict each other; pick one")
    ray_opts = _ray_options(use_ray, ray_address, workers, gpus_per_worker, shard_images)
    sigterm_as_interrupt()
    settings = RunSettings(batch_size=batch_size, device=device, threshold=threshold, max_pixels=max_pixels,
                           isolate_decoder=not no_isolate, **engine_settings)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    summary = run_job(images, out_dir, engine_path, annotations, settings, overwrite=overwrite,
                      resume=resume, allow_outside=allow_outside_paths, part_rows=part_rows, progress=not quiet,
                      log=log, ray=ray_opts, detect=detect,
                      videos=VideoSettings(frames_per_video=frames_per_video, fps=sample_fps, labels=labels_csv,
                                          decoder=video_decoder))
    click.echo(summary.line())
    if not no_report:
        from scanner.report import write_report

        html, summary_json = write_report(out_dir, log=log, progress=not quiet)
        click.echo(f"report: {html} (summary for schedulers: {summary_json})")

def _ray_options(use_ray, address, workers, gpus_per_worker, shard_images):
    """RayOptions for --ray (importing Ray only then), or None; the --ray options alone are an error."""
    given = {"--ray-address": address, "--workers": workers, "--gpus-per-worker": gpus_per_worker,
             "--shard-images": shard_images}
    if not use_ray:
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            raise DfscanError(f"{', '.join(stray)} only apply with --ray")
        return None
    from scanner.run.distributed import RayOptions

    opts = RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker)
    if shard_images is not None:
        opts.shard_images = shard_images
    return opts
