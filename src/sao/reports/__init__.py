"""Reports of experiment sweeps: Markdown + CSV tables and PNG figures."""

from sao._extras import require_extra

require_extra(__name__)  # the experiments extra, before any module that needs it

from sao.reports.sweep import aggregate, table_rows, write_report

__all__ = ["aggregate", "table_rows", "write_report"]
