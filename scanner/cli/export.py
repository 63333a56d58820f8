"""``dfscan export``: a checkpoint (or a fresh architecture) as a .pt, .onnx or TensorRT plan."""
from __future__ import annotations

import click

from scanner.errors import DfscanError


@click.command()
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
        from scanner.pipeline.cropper import iter_crops
        from scanner.settings import RunSettings

        catalog = load_catalog(calib_data)
        settings = RunSettings(batch_size=min(32, max_batch))
        calib = (crops for batch in iter_crops(catalog, config, settings) for _, crops in batch.pieces)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, config, Path(tmp) / "model.onnx")
        return build_plan(onnx_path, out, fp16=fp16, int8=int8, calib_batches=calib,
                          max_batch=max_batch, opt_batch=min(32, max_batch))
