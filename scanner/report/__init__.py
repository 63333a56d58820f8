"""``report.html`` and ``summary.json`` for a finished run (``report``, ``html``, ``plots``)."""
from scanner.report.report import write_report

__all__ = ["write_report"]
