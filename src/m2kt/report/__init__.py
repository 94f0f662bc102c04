"""Reports: the JSON records of transfers and benchmarks as one self-contained HTML page.

Every transfer and benchmark already writes a JSON record (DESIGN.md); a report only reads
them, never re-computes a figure. `build_report(run_dir, out_dir)` finds the records under
`run_dir`, draws the figures as PNG files and writes `report.html` with the same images
inlined, so the page can be mailed or attached without its folder.
"""

from m2kt.report.build import Report, build_report
from m2kt.report.records import RunRecords, collect

__all__ = ["Report", "RunRecords", "build_report", "collect"]
