"""The ``dfscan`` command line: a thin click layer over ``scanner`` and ``engines``."""
from __future__ import annotations

import functools
import sys

import click

from engines.errors import DfscanError
from scanner.detect_cli import detect_options

EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


def _sigterm_as_interrupt():
    """A scheduler's SIGTERM stops the run like Ctrl-C: rows so far are saved for --resume."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def user_errors(func):
    """Turn DfscanError (and Ctrl-C) into one line on stderr instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from scanner.job import RunInterrupted

        try:
            return func(*args, **kwargs)
        except RunInterrupted as exc:
            click.echo(str(exc), err=True)
            sys.exit(EXIT_INTERRUPTED)
        except DfscanError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dfscan")
def main():
    """Scan image collections for deepfake faces: DALI decode + crop, TensorRT / ONNX Runtime /
    torch engines, one Parquet row per face."""


@main.command()
@click.argument("images", type=click.Path(file_okay=False, path_type=str))
@click.option("--annotations", type=click.Path(dir_okay=False), default=None,
              help="COCO / OpenForensics *_poly.json. Default: found beside IMAGES "
                   "(ROOT/<Split>_poly.json for ROOT/Images/<Split>); none means whole-image faces.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), default=None,
              help="Engine file: .plan/.engine (TensorRT), .onnx (ONNX Runtime), .pt (torch). "
                   "Default: the bundled model.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--batch-size", default=64, show_default=True, help="Faces per batch.")
@click.option("--threshold", default=0.5, show_default=True, help="score_fake at or above it is Fake.")
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
@detect_options
@user_errors
def run(images, annotations, engine_path, out_dir, batch_size, threshold, device, resume, overwrite,
        max_pixels, allow_outside_paths, part_rows, quiet, use_ray, ray_address, workers, gpus_per_worker,
        shard_images, detect):
    """Scan IMAGES and write OUT/faces.parquet (+ OUT/metrics.parquet when labels exist).

    Example: dfscan run data/realorfake/Images/Test-Dev --engine model.onnx --out results/

    On a Ray cluster: dfscan run IMAGES --engine model.plan --out results/ --ray --ray-address auto
    """
    from scanner.job import run_job
    from scanner.runner import RunSettings

    if batch_size < 1:
        raise DfscanError("--batch-size must be at least 1")
    if resume and overwrite:
        raise DfscanError("--resume and --overwrite contradict each other; pick one")
    ray_opts = _ray_options(use_ray, ray_address, workers, gpus_per_worker, shard_images)
    _sigterm_as_interrupt()
    settings = RunSettings(batch_size=batch_size, device=device, threshold=threshold, max_pixels=max_pixels)
    summary = run_job(images, out_dir, engine_path, annotations, settings, overwrite=overwrite,
                      resume=resume, allow_outside=allow_outside_paths, part_rows=part_rows, progress=not quiet,
                      log=lambda m: click.echo(m, err=True), ray=ray_opts, detect=detect)
    click.echo(summary.line())


def _ray_options(use_ray, address, workers, gpus_per_worker, shard_images):
    """RayOptions for --ray (importing Ray only then), or None; the --ray options alone are an error."""
    given = {"--ray-address": address, "--workers": workers, "--gpus-per-worker": gpus_per_worker,
             "--shard-images": shard_images}
    if not use_ray:
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            raise DfscanError(f"{', '.join(stray)} only apply with --ray")
        return None
    from scanner.distributed import RayOptions

    opts = RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker)
    if shard_images is not None:
        opts.shard_images = shard_images
    return opts


@main.command()
@user_errors
def models():
    """List the registered architectures with their input size and normalisation."""
    from engines.models import get_model_entry, list_models

    for name in list_models():
        c = get_model_entry(name).config
        click.echo(f"{name:22s} {c.input_size[0]}x{c.input_size[1]}  mean={c.mean} std={c.std}  "
                   f"{c.pretrained_hint or ''}")


@main.command()
@user_errors
def engines():
    """List the engine backends and whether this machine can run each."""
    from engines.backends import list_backends

    for entry in list_backends():
        ok, why = entry.available()
        click.echo(f"{entry.name:6s} {'/'.join(entry.suffixes):14s} {'yes' if ok else 'no ':3s}  "
                   f"{entry.description}: {why}")


@main.command()
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--arch", default=None, help="Export an untrained, seeded model of this architecture.")
@click.option("--format", "fmt", type=click.Choice(["pt", "onnx", "plan"]), default="onnx", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Engine file to write.")
@click.option("--res", type=int, default=None, help="Input resolution (default: the model's own).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --arch weights.")
@click.option("--fp16/--fp32", default=True, show_default=True, help="plan: half precision where the GPU has it.")
@click.option("--int8", is_flag=True, help="plan: INT8 calibrated on face crops from --calib-data.")
@click.option("--calib-data", type=click.Path(file_okay=False, exists=True), default=None,
              help="plan --int8: an images folder (annotations found as for 'run').")
@click.option("--max-batch", type=int, default=128, show_default=True, help="plan: largest batch.")
@user_errors
def export(checkpoint, arch, fmt, out, res, seed, fp16, int8, calib_data, max_batch):
    """Export CHECKPOINT (or a fresh --arch model) as an engine file.

    Example: dfscan export --arch mobilenetv2 --format onnx --out mobilenet.onnx
    """
    from engines.export import export as do_export
    from engines.export import model_from_source

    model, config = model_from_source(checkpoint, arch, seed, (res, res) if res else None)
    if fmt == "plan":
        path = _export_plan(model, config, out, fp16, int8, calib_data, max_batch)
    else:
        path = do_export(model, config, fmt, out)
    click.echo(f"wrote {path} ({config.arch}, {config.input_size[0]}x{config.input_size[1]})")


def _export_plan(model, config, out, fp16, int8, calib_data, max_batch):
    """ONNX first, then TensorRT; INT8 calibrates on crops made by the scan's own pipeline."""
    import tempfile
    from pathlib import Path

    from engines.export import export_onnx
    from engines.trt_build import build_plan

    calib = None
    if int8:
        if calib_data is None:
            raise DfscanError("--int8 needs --calib-data IMAGES (a folder of representative faces)")
        from scanner.catalog import load_catalog
        from scanner.runner import RunSettings, iter_crops

        catalog = load_catalog(calib_data)
        settings = RunSettings(batch_size=min(32, max_batch))
        calib = (crops for batch in iter_crops(catalog, config, settings) for _, crops in batch.pieces)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, config, Path(tmp) / "model.onnx")
        return build_plan(onnx_path, out, fp16=fp16, int8=int8, calib_batches=calib,
                          max_batch=max_batch, opt_batch=min(32, max_batch))


__import__("engines.train_cli", fromlist=["register"]).register(main)  # dfscan train, dfscan eval
main.add_command(__import__("scanner.bench", fromlist=["bench"]).bench)  # dfscan bench
main.add_command(__import__("scanner.explain", fromlist=["explain"]).explain)  # dfscan explain
main.add_command(__import__("scanner.detect_cli", fromlist=["detect"]).detect)  # dfscan detect
main.add_command(__import__("scanner.detect_cli", fromlist=["detectors"]).detectors)  # dfscan detectors


if __name__ == "__main__":
    main()
