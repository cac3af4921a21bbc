"""Reports of experiment sweeps: Markdown + CSV tables and PNG figures."""

from sao.reports.sweep import aggregate, table_rows, write_report

__all__ = ["aggregate", "table_rows", "write_report"]
