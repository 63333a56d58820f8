"""Options shared by several commands."""
from __future__ import annotations

import functools

import click

from scanner.detect.detectors import list_detectors


def detector_names() -> list[str]:
    return [e.name for e in list_detectors()] + ["none"]

def detect_options(func):
    """Add the detection options; the command receives them as one ``detect`` argument
    (a ``DetectSettings``, or None for ``--detector none``)."""
    from scanner.detect.detect import DetectSettings

    d = DetectSettings()
    options = [
        click.option("--detector", type=click.Choice(detector_names()), default=d.detector, show_default=True,
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
