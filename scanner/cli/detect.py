"""``dfscan detect``, ``dfscan detectors`` and the detection options ``dfscan run`` shares."""
from __future__ import annotations

import click

from scanner.cli.options import detect_options, detector_names
from scanner.errors import DfscanError


@click.command()
@click.argument("images", type=click.Path(file_okay=False, exists=True, path_type=str))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="COCO annotation file to write, e.g. ROOT/MySplit_poly.json beside ROOT/Images/MySplit.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per DALI batch.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@click.option("--max-pixels", default=100_000_000, show_default=True,
              help="Refuse images larger than this (decompression bombs).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@detect_options
def detect(images, out_path, batch_size, device, max_pixels, quiet, detect):
    """Find the faces in every image below IMAGES and write them as COCO annotations.

    The file has OpenForensics' layout (images with id/file_name/width/height; annotations with
    id/image_id/bbox/area/iscrowd and the detector's score; no labels) and feeds
    'dfscan run IMAGES --annotations FILE' unchanged. Images without a face (or unreadable)
    are listed with a status, so the run gives each one row.

    Example: dfscan detect photos/ --out photos_poly.json --detector mtcnn
    """
    from scanner.detect.detect import detect_to_file
    from scanner.run.job import resolve_device

    if detect is None:
        raise DfscanError("--detector none: there is nothing to detect with; choose "
                          + " or ".join(detector_names()[:-1]))
    detect.batch_size, detect.device, detect.max_pixels = batch_size, resolve_device(device), max_pixels
    path, n = detect_to_file(images, out_path, detect, progress=not quiet)
    rate = n["images"] / n["seconds"] if n["seconds"] > 0 else float("nan")
    click.echo(f"{n['faces']} faces in {n['images']} images ({n['no_face']} without a face, "
               f"{n['unreadable']} unreadable) in {n['seconds']:.1f} s ({rate:.2f} images/s) -> {path}")


