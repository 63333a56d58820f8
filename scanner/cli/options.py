"""Options shared by several commands."""
from __future__ import annotations

import functools

import click

from scanner.detect.detectors import list_detectors
from scanner.pipeline.video_decoders import VIDEO_DECODERS


# run and eval decide alike: the model's own threshold unless one is given
threshold_option = click.option(
    "--threshold", type=float, default=None,
    help="score_fake at or above it is Fake. Default: the model's own threshold (chosen on "
         "validation when it was trained; the run's log names it), else 0.5.")

# run and bench --videos read clips alike
video_decoder_option = click.option(
    "--video-decoder", type=click.Choice(["auto", *VIDEO_DECODERS]), default="auto", show_default=True,
    help="Decoder of video frames. auto: dali on a GPU (NVDEC), pyav on the CPU. pyav: FFmpeg on the "
         "CPU, every codec. dali on the CPU reads VP8, VP9 and MJPEG only; other clips get "
         "'unsupported_codec'.")


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


def engine_options(func):
    """``--backend``, ``--precision``, ``--cache-dir``, ``--calib-data``, ``--gate-data``: how a
    checkpoint becomes an engine (``scanner.run.engine``); the command receives them as one
    ``engine_settings`` dict of RunSettings fields."""
    options = [
        click.option("--backend", type=click.Choice(["openvino", "onnx", "torch", "trt"]), default=None,
                     help="Engine runtime for a .pt checkpoint. Default: the fastest this machine has "
                          "('dfscan engines' says which and why)."),
        click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default=None,
                     help="Default: fp16 on a GPU; on a CPU INT8 where it passed the accuracy gate "
                          "(needs --calib-data and --gate-data, or a gated INT8 file beside the "
                          "checkpoint), else bf16 where the CPU runs it natively and it passed its gate, "
                          "else fp32. fp32 gives the model's exact scores."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Where built engines are kept. Default: $XDG_CACHE_HOME/dfscan/engines."),
        click.option("--calib-data", type=click.Path(file_okay=False, exists=True), default=None,
                     help="Images (annotations found as for 'run') whose faces calibrate an INT8 engine."),
        click.option("--gate-data", type=click.Path(file_okay=False, exists=True), default=None,
                     help="Labelled images (e.g. a Val split) on which INT8 must keep the fp32 ROC-AUC "
                          "within 0.005 to be used by default."),
    ]

    @functools.wraps(func)
    def wrapper(*args, backend, precision, cache_dir, calib_data, gate_data, **kwargs):
        return func(*args, engine_settings={"backend": backend, "precision": precision, "cache_dir": cache_dir,
                                            "calib_data": calib_data, "gate_data": gate_data}, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper

