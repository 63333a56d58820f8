"""dfscan checkpoints: a torch state dict plus the model config, loadable with weights_only=True."""
from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

from engines.config import ModelConfig
from engines.errors import DfscanError
from engines.files import write_atomic

FORMAT = "dfscan-checkpoint/1"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default" / "mobilenetv2.pt"  # the bundled model


def save_checkpoint(path, model, config: ModelConfig, extra: dict | None = None) -> Path:
    """Write ``model``'s weights with its config (and ``extra``: epoch, metrics, optimiser …)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "arch": config.arch, "config": config.to_dict(),
               "state_dict": model.state_dict()}
    if extra:
        payload["extra"] = extra
    return write_atomic(path, lambda fh: torch.save(payload, fh))


def read_checkpoint(path) -> dict:
    """The raw checkpoint dict. Raises DfscanError for anything that is not a dfscan checkpoint."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DfscanError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, non-allowed globals …
        raise DfscanError(f"{path}: not a loadable torch checkpoint ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0][:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DfscanError(f"{path}: not a dfscan checkpoint (no '{FORMAT}' header); "
                          "make one with 'dfscan train' or 'dfscan export --format pt'")
    return payload


class _HeaderUnpickler(pickle.Unpickler):
    """A checkpoint's pickle without its tensors: torch's rebuild functions and storage types
    become a stand-in returning None, and nothing outside ``collections.OrderedDict`` and torch
    may be named (anything else refuses, and the caller falls back to ``torch.load``)."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _no_tensor
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a dfscan checkpoint")

    def persistent_load(self, pid):
        return None  # a tensor's storage: not read


def _no_tensor(*args, **kwargs):
    return None


def read_header(path) -> dict:
    """The checkpoint's fields other than its weights (format, arch, config …), read without
    importing torch, whose import costs ~2 s a run: a run whose engine is already cached needs
    only the input size. ``state_dict`` entries are None. Falls back to ``read_checkpoint``
    for a file this reader cannot take apart (torch's legacy format, unexpected globals)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            with archive.open(name) as fh:
                payload = _HeaderUnpickler(fh).load()
    except (OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, AttributeError,
            ImportError, IndexError, TypeError, KeyError):
        return read_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return read_checkpoint(path)  # its message names what is wrong
    return payload


def load_checkpoint(path, input_size: tuple[int, int] | None = None):
    """Rebuild the model of a checkpoint. Returns ``(model in eval mode, ModelConfig, payload)``."""
    from engines.models import create_model, get_model_config  # (imports torch: not for an ONNX engine's run)

    payload = read_checkpoint(path)
    config = ModelConfig.from_dict({**get_model_config(payload["arch"]).to_dict(),
                                    **payload["config"]})
    model = create_model(config.arch, pretrained=None, num_classes=len(config.class_names),
                         input_size=config.input_size)
    state = payload["state_dict"]
    # fp16-shipped checkpoints are cast back: inference runs in the engine's own precision.
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DfscanError(f"{path}: weights do not fit architecture {config.arch!r} "
                          f"({str(exc).splitlines()[0][:200]})") from None
    model.eval()
    if input_size is not None:
        config = config.with_input_size(input_size)
    return model, config, payload
