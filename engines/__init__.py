"""dfscan engines: model zoo, checkpoints, export/build, runtime backends.

Submodules are imported on use (``engines.models``, ``engines.backends``, ``engines.export``)
so that ``import engines`` stays cheap and needs no GPU library.
"""
from engines.errors import DfscanError

__all__ = ["DfscanError"]
