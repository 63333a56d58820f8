"""``dfscan detect``, ``dfscan detectors`` and the detection options ``dfscan run`` shares."""
from __future__ import annotations

import functools

import click

from engines.errors import DfscanError

from .detectors import list_detectors


def _detector_names() -> list[str]:
    return [e.name for e in list_detectors()] + ["none"]


def detect_options(func):
    """Add the detection options; the command receives them as one ``detect`` argument
    (a ``DetectSettings``, or None for ``--detector none``)."""
    from .detect import DetectSettings

    d = DetectSettings()
    options = [
        click.option("--detector", type=click.Choice(_detector_names()), default=d.detector, show_default=True,
                     help="Face detector for images without annotations; 'none' scores each whole image "
                          "as one face. 'dfscan detectors' lists what is installed."),
        click.option("--det-margin", type=click.FloatRange(min=0, min_open=True), default=d.margin,
                     show_default=True,
                     help="Enlarge each detected box about its centre. The scan enlarges it again by the "
                          "model's crop_margin (1.3), as for annotated boxes: crop = det-margin x crop_margin."),
        click.option("--det-size", type=click.IntRange(min=32), default=d.max_side, show_default=True,
                     help="Longest side of the downscaled copy the detector sees (never enlarged); faces "
                          "are cropped from the full-resolution image."),
        click.option("--det-min-score", type=float, default=None,
                     help="Drop detections below this score. Default: the detector's own (MTCNN 0.9; Haar keeps all)."),
        click.option("--det-min-face", type=click.IntRange(min=12), default=None,
                     help="Smallest face sought, in pixels of the downscaled copy. Default: 20."),
    ]

    @functools.wraps(func)
    def wrapper(*args, detector, det_margin, det_size, det_min_score, det_min_face, **kwargs):
        settings = None
        if detector != "none":
            settings = DetectSettings(detector=detector, margin=det_margin, max_side=det_size,
                                      min_face=det_min_face, min_score=det_min_score)
        return func(*args, detect=settings, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


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
    from .detect import detect_to_file
    from .job import resolve_device

    try:
        if detect is None:
            raise DfscanError("--detector none: there is nothing to detect with; choose "
                              + " or ".join(_detector_names()[:-1]))
        detect.batch_size, detect.device, detect.max_pixels = batch_size, resolve_device(device), max_pixels
        path, n = detect_to_file(images, out_path, detect, progress=not quiet)
    except DfscanError as exc:  # one line, as scanner.cli.user_errors does (not imported: cli imports us)
        raise click.ClickException(str(exc)) from None
    rate = n["images"] / n["seconds"] if n["seconds"] > 0 else float("nan")
    click.echo(f"{n['faces']} faces in {n['images']} images ({n['no_face']} without a face, "
               f"{n['unreadable']} unreadable) in {n['seconds']:.1f} s ({rate:.2f} images/s) -> {path}")


@click.command()
def detectors():
    """List the face detectors and whether this machine can run each."""
    for entry in list_detectors():
        ok, why = entry.available()
        click.echo(f"{entry.name:6s} {'yes' if ok else 'no ':3s}  {entry.description}: {why}")
