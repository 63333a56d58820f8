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
@click.option("--bf16", is_flag=True, help="openvino: mark the IR to run in bf16 where the CPU has it (AVX512-BF16, "
                                         "AMX); with --gate-data, gate it against fp32 and record the figures.")
@click.option("--calib-data", type=click.Path(file_okay=False, exists=True), default=None,
              help="--int8: an images folder (annotations found as for 'run').")
@click.option("--gate-data", type=click.Path(file_okay=False, exists=True), default=None,
              help="--int8 --format onnx of a CHECKPOINT: labelled images (e.g. Images/Val) to gate the INT8 "
                   "file on; writes <out>.json beside it, so the file can ship next to the checkpoint "
                   "as <checkpoint stem>.int8.onnx and become the CPU default where it passed. With --bf16 "
                   "--format openvino: writes <out stem>.json, which ships as <checkpoint stem>.bf16.json.")
@click.option("--max-batch", type=int, default=128, show_default=True, help="plan: largest batch.")
def export(checkpoint, arch, fmt, out, res, seed, fp16, int8, bf16, calib_data, gate_data, max_batch):
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
    if bf16 and (fmt != "openvino" or int8):
        raise DfscanError("--bf16 marks an OpenVINO IR to run in bf16: use --format openvino without --int8")
    if gate_data and not (((int8 and fmt == "onnx") or bf16) and checkpoint):
        raise DfscanError("--gate-data gates an INT8 ONNX file or a bf16 IR made from a checkpoint: add "
                          "--int8 --format onnx, or --bf16 --format openvino, and the CHECKPOINT")
    if bf16:
        path, gated = _export_bf16(model, config, out, checkpoint, gate_data)
    elif fmt == "plan":
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


def _export_bf16(model, config, out, checkpoint=None, gate_data=None):
    """``(IR path, gate summary)``: the fp32 IR marked to run in bf16; with ``gate_data`` it is
    gated against the same IR in fp32 on those labelled faces, and the figures recorded beside it."""
    import tempfile
    from pathlib import Path

    from engines.backends import load_engine
    from engines.export import export_onnx, onnx_to_openvino
    from engines.quantize import accuracy_gate, write_bf16_record
    from scanner.run.training import face_batches

    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_to_openvino(export_onnx(model, config, Path(tmp) / "fp32.onnx"), out, precision="bf16")
    if not gate_data:
        return path, None
    validation = face_batches(gate_data, with_labels=True)
    gate = accuracy_gate(load_engine(path, "cpu", "openvino", precision="fp32"),
                         load_engine(path, "cpu", "openvino", precision="bf16"),
                         validation(config), (b for b, _ in validation(config)))
    record = write_bf16_record(Path(path).with_suffix(".json"), checkpoint, gate, validation=str(gate_data))
    return path, f"{gate.summary('bf16')}\nwrote {record}"


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
