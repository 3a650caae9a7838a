"""Evidence outputs: a self-contained HTML report of flagged listings.

Example:
    >>> from brandguard.report import write_html_report
    >>> write_html_report(preds, "report.html")    # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

from brandguard.report.html import overlay_heatmap, write_html_report

__all__ = ["overlay_heatmap", "write_html_report"]
