"""`hermes summary`: what a nightly run produced for a date — row counts, report verdicts, paths, UIs.

Reads only Parquet footers and JSON reports, so it is instant at any scale.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from jobs.contract import PARTITIONED, RAW_TABLES
from jobs.settings import Settings
from jobs.warehouse import DERIVED_TABLES, Warehouse


def parquet_rows(path: Path) -> int | None:
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def summary(settings: Settings, ds: str) -> list[str]:
    wh = Warehouse(settings.warehouse)
    lines = [f"Hermes nightly, ds={ds}", f"warehouse: {wh.root}", "", "inputs (raw contract):"]
    for table in RAW_TABLES:
        path = wh.raw_partition(table, ds) if table in PARTITIONED else wh.raw(table)
        report_path = wh.report("validation", ds, f"raw_{table}")
        verdict = "not validated"
        if report_path.exists():
            rep = json.loads(report_path.read_text())
            verdict = (f"{rep['expectations']} expectations passed" if rep["success"]
                       else f"FAILED: {len(rep['failures'])} rule(s)")
        scope = f"ds={ds}" if table in PARTITIONED else "snapshot"
        lines.append(f"  raw/{table:<14}{scope:<15}{_fmt(parquet_rows(path)):>12} rows   {verdict}")
    lines += ["", "outputs:"]
    for name in DERIVED_TABLES:
        path = wh.partition(name, ds)
        lines.append(f"  {name:<28}{_fmt(parquet_rows(path)):>12} rows   {path}")
    lines += ["", f"validation reports: {wh.report('validation', ds, 'x').parent}"]
    return lines


def _fmt(n: int | None) -> str:
    return "missing" if n is None else f"{n:,}"
