"""``dfscan export``: a checkpoint (or a fresh architecture) as a .pt, .onnx, OpenVINO IR or
TensorRT plan; INT8 calibrated on face crops made by the scan's own pipeline."""
from __future__ import annotations

import click

from scanner.errors import DfscanError


@click.command()
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--arch", default=None, help="Export an untrained, seeded model of this architecture.")
@click.option("--format", "fmt", type=click.Choice(["pt", "onnx", "openvino", "plan"]), default="onnx",
              show_default=True, help="openvino: an IR .xml (+ .bin beside it).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Engine file to write.")
@click.option("--res", type=int, default=None, help="Input resolution (default: the model's own).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --arch weights.")
@click.option("--fp16/--fp32", default=True, show_default=True, help="plan: half precision where the GPU has it.")
@click.option("--int8", is_flag=True, help="onnx, openvino, plan: INT8 calibrated on face crops from --calib-data "
                                         "(static QDQ for ONNX Runtime and OpenVINO).")
@click.option("--calib-data", type=click.Path(file_okay=False, exists=True), default=None,
              help="--int8: an images folder (annotations found as for 'run').")
@click.option("--gate-data", type=click.Path(file_okay=False, exists=True), default=None,
              help="--int8 --format onnx of a CHECKPOINT: labelled images (e.g. Images/Val) to gate the INT8 "
                   "file on; writes <out>.json beside it, so the file can ship next to the checkpoint "
                   "as <checkpoint stem>.int8.onnx and become the CPU default where it passed.")
@click.option("--max-batch", type=int, default=128, show_default=True, help="plan: largest batch.")
def export(checkpoint, arch, fmt, out, res, seed, fp16, int8, calib_data, gate_data, max_batch):
    """Export CHECKPOINT (or a fresh --arch model) as an engine file.

    Example: dfscan export --arch mobilenetv2 --format onnx --out mobilenet.onnx
    """
    from engines.export import export as do_export
    from engines.export import model_from_source

    model, config = model_from_source(checkpoint, arch, seed, (res, res) if res else None)
    if int8 and calib_data is None:
        raise DfscanError("--int8 needs --calib-data IMAGES (a folder of representative faces)")
    if int8 and fmt == "pt":
        raise DfscanError("--int8: a .pt checkpoint stays fp32; export --format onnx, openvino or plan")
    if gate_data and not (int8 and fmt == "onnx" and checkpoint):
        raise DfscanError("--gate-data gates an INT8 ONNX file made from a checkpoint: add --int8 --format onnx CHECKPOINT")
    if fmt == "plan":
        path = _export_plan(model, config, out, fp16, int8, calib_data, max_batch)
    elif int8:
        path, gated = _export_int8(model, config, fmt, out, calib_data, checkpoint, gate_data)
    else:
        path = do_export(model, config, fmt, out)
    click.echo(f"wrote {path} ({config.arch}, {config.input_size[0]}x{config.input_size[1]})")
    if gate_data:
        click.echo(gated)


def _export_plan(model, config, out, fp16, int8, calib_data, max_batch):
    """ONNX first, then TensorRT; INT8 calibrates on crops made by the scan's own pipeline."""
    import tempfile
    from pathlib import Path

    from engines.export import export_onnx
    from engines.trt_build import build_plan

    from scanner.run.training import face_batches

    calib = face_batches(calib_data, batch_size=min(32, max_batch))(config) if int8 else None
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, config, Path(tmp) / "model.onnx")
        return build_plan(onnx_path, out, fp16=fp16, int8=int8, calib_batches=calib,
                          max_batch=max_batch, opt_batch=min(32, max_batch))


def _export_int8(model, config, fmt, out, calib_data, checkpoint=None, gate_data=None):
    """``(path, gate summary)``: a static QDQ INT8 ONNX (ONNX Runtime), converted to IR for
    OpenVINO, which reads QDQ. With ``gate_data`` the ONNX file is gated against the fp32 export
    on those labelled faces and the figures recorded beside it (``write_int8_record``)."""
    import tempfile
    from pathlib import Path

    from engines.export import export_onnx, onnx_to_openvino
    from engines.quantize import quantize_onnx
    from scanner.run.training import face_batches

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, config, Path(tmp) / "fp32.onnx")
        if fmt != "onnx":
            return onnx_to_openvino(quantize_onnx(fp32, Path(tmp) / "int8.onnx",
                                                  face_batches(calib_data)(config)), out), None
        path = quantize_onnx(fp32, out, face_batches(calib_data)(config))
        return path, _gate_int8(fp32, config, checkpoint, path, calib_data, gate_data) if gate_data else None


def _gate_int8(fp32_onnx, config, checkpoint, qdq, calib_data, gate_data) -> str:
    """Gate the INT8 file against the fp32 export on labelled faces; record it beside the file."""
    from engines.backends import load_engine
    from engines.quantize import accuracy_gate, write_int8_record
    from scanner.run.training import face_batches

    validation = face_batches(gate_data, with_labels=True)
    gate = accuracy_gate(load_engine(fp32_onnx, "cpu", "onnx"), load_engine(qdq, "cpu", "onnx"),
                         validation(config), (b for b, _ in validation(config)))
    record = write_int8_record(qdq, checkpoint, gate, calibration=str(calib_data), validation=str(gate_data))
    return f"{gate.summary()}\nwrote {record}"
