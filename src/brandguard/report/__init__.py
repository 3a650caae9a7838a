"""Evidence outputs: the HTML report of a scoring run (a table of every photo, a card per flagged one).

Example:
    >>> from brandguard.report import write_html_report
    >>> write_html_report(preds, "report.html", index=det.index)    # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

from brandguard.report.html import (
    CARDS_PER_FILE,
    HEAT_MAX,
    compact_prediction,
    heat_colours,
    overlay_heatmap,
    write_html_report,
)

__all__ = ["CARDS_PER_FILE", "HEAT_MAX", "compact_prediction", "heat_colours", "overlay_heatmap", "write_html_report"]
