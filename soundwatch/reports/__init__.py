"""Reports of evaluation results: one self-contained HTML page per results folder.

Decision metrics and the oracle operating points (best F1, Youden's J) come from
:mod:`soundwatch.evaluation.decisions`.

- :mod:`~soundwatch.reports.data` reads ``evaluate`` and ``bench`` folders;
- :mod:`~soundwatch.reports.plots` draws the figures (matplotlib, Agg canvas);
- :mod:`~soundwatch.reports.html` assembles the page (base64 PNGs, no scripts);
- :mod:`~soundwatch.reports.build` puts the sections together (``soundwatch report``);
- :mod:`~soundwatch.reports.inspect` scores and draws one clip (``soundwatch inspect``).
"""

from soundwatch.reports.build import build_report, default_report_path

__all__ = ["build_report", "default_report_path"]
