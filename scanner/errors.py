"""The errors a user sees: ``DfscanError`` (one line naming the file and the fix) and
``RunInterrupted``. DfscanError is defined with the engines, the lowest layer, which raise it too
and never import ``scanner``; it is re-exported here for the scanner's modules. The CLI
(``scanner.cli``) is the one place that turns them into a line on stderr and an exit code.
"""
from engines.errors import DfscanError

__all__ = ["DfscanError", "RunInterrupted"]


class RunInterrupted(DfscanError):
    """Ctrl-C or SIGTERM: what was scanned is saved; ``--resume`` finishes the job."""
