"""dfscan scanner: catalog → DALI pipeline → run loop → Parquet writers and metrics → CLI."""
from scanner.errors import DfscanError

__all__ = ["DfscanError"]
