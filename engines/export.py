"""Turn a checkpoint (or a fresh seeded architecture) into an engine file: .pt or .onnx.

TensorRT plans are built from the ONNX export (``engines.trt_build``).
"""
from __future__ import annotations

import io
import json
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


EXPORTERS = {"pt": export_pt, "onnx": export_onnx}


def export(model, config, fmt: str, out) -> Path:
    if fmt not in EXPORTERS:
        raise DfscanError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt](model, config, out)
