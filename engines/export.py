"""Turn a checkpoint (or a fresh seeded architecture) into an engine file: .pt, .onnx or an
OpenVINO IR (.xml + .bin).

TensorRT plans are built from the ONNX export (``engines.trt_build``), OpenVINO IRs are converted
from it, and INT8 models are quantised from it (``engines.quantize``).
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from engines.checkpoint import load_checkpoint, save_checkpoint
from engines.errors import DfscanError
from engines.files import write_atomic
from engines.models import create_model, get_model_config

ONNX_OPSET = 17


def model_from_source(checkpoint=None, arch=None, seed: int = 0, input_size=None):
    """``(model, config)`` from a checkpoint, or an untrained ``arch`` seeded with ``seed``."""
    import torch

    if (checkpoint is None) == (arch is None):
        raise DfscanError("give either a checkpoint or --arch, not both")
    if checkpoint is not None:
        model, config, _ = load_checkpoint(checkpoint, input_size=None)
        if input_size is not None and tuple(input_size) != tuple(config.input_size):
            config = config.with_input_size(input_size)
        return model, config
    config = get_model_config(arch)
    if input_size is not None:
        config = config.with_input_size(input_size)
    torch.manual_seed(seed)
    model = create_model(arch, pretrained=None, input_size=config.input_size)
    return model, config


def export_pt(model, config, out) -> Path:
    return save_checkpoint(out, model, config)


def export_onnx(model, config, out, opset: int = ONNX_OPSET) -> Path:
    """ONNX with a dynamic batch axis; the model config goes into the file's metadata."""
    import onnx
    import torch

    from engines.backends.onnx_backend import CONFIG_KEY

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = config.input_size
    dummy = torch.zeros(2, 3, h, w)
    buffer = io.BytesIO()
    model = model.eval().float()
    with torch.inference_mode():
        torch.onnx.export(model, (dummy,), buffer, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, json.dumps(config.to_dict())
    return write_atomic(out, proto.SerializeToString())


def onnx_to_openvino(onnx_path, out, precision: str = "fp32") -> Path:
    """Convert a dfscan ONNX file (fp32 or QDQ INT8) to an OpenVINO IR ``out`` (.xml + .bin).

    The dfscan config goes into the IR's rt_info (``dfscan_config``), so the .xml carries it.
    Weights stay fp32 (``compress_to_fp16=False``): fp16-compressed weights would move scores
    away from the torch model. Both files are written under temporary names and renamed, .bin
    first, so a reader never pairs a new .xml with an old .bin. ``precision='bf16'`` marks the IR
    (rt_info ``dfscan_precision``) to run in bf16 where the CPU has it; its weights stay fp32.
    """
    import openvino as ov

    from engines.backends.onnx_backend import read_onnx_config
    from engines.backends.openvino_backend import CONFIG_KEY, PRECISION_KEY

    out = Path(out)
    if out.suffix.lower() != ".xml":
        raise DfscanError(f"{out}: an OpenVINO IR is named *.xml (its weights go beside it in *.bin)")
    config = read_onnx_config(onnx_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(json.dumps(config.to_dict()), [CONFIG_KEY])
    if precision != "fp32":
        model.set_rt_info(precision, [PRECISION_KEY])
    tmp = out.with_name(out.stem + ".tmp.xml")  # OpenVINO names the weights tmp.bin beside it
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(tmp, out)
    return out


def export_openvino(model, config, out) -> Path:
    """OpenVINO IR (``out`` = .xml, weights in .bin beside it) via an ONNX export."""
    with tempfile.TemporaryDirectory(prefix="dfscan-ov-") as tmp:
        return onnx_to_openvino(export_onnx(model, config, Path(tmp) / "model.onnx"), out)


EXPORTERS = {"pt": export_pt, "onnx": export_onnx, "openvino": export_openvino}


def export(model, config, fmt: str, out) -> Path:
    if fmt not in EXPORTERS:
        raise DfscanError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt](model, config, out)
