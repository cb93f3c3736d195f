"""Reports rendered from result JSON files only: tables, significance tests, plots."""

from sizewise.report.render import load_results, write_report

__all__ = ["load_results", "write_report"]
