"""Validate one raw-contract table for a run date: exact schema, then its Great Expectations suite.

Fact tables are checked one `ds` partition at a time, dimensions whole. Writes a JSON report and raises
`DataQualityError` naming table, column and rule when anything is broken.
"""
from __future__ import annotations

import argparse
import json
import logging

import pyarrow.parquet as pq

from core.contract import PARTITIONED, RAW_SCHEMAS, RAW_TABLES
from core.settings import Settings
from core.warehouse import Warehouse
from expectations.gate import DataQualityError, ValidationReport, check_schema, validate

log = logging.getLogger(__name__)


def newest_partition(warehouse: Warehouse, table: str) -> str | None:
    days = warehouse.raw_days(table)
    return days[-1] if days else None


def validate_raw_table(warehouse: Warehouse, table: str, ds: str) -> ValidationReport:
    from expectations.suites import raw_suite

    name = f"raw/{table}"
    path = warehouse.raw_partition(table, ds) if table in PARTITIONED else warehouse.raw(table)
    if not path.exists():
        what = f"partition ds={ds}" if table in PARTITIONED else "snapshot"
        raise DataQualityError(name, [f"(table): rule=partition_exists: no {what} at {path}; "
                                      f"upstream has not delivered it (run `hermes simulate` locally)"])
    data = pq.read_table(path)
    problems = check_schema(name, data.schema, RAW_SCHEMAS[table])
    if problems:
        raise DataQualityError(name, problems)
    horizon = None if table in PARTITIONED else newest_partition(warehouse, "events")
    report = validate(data.to_pandas(), name, raw_suite(table, ds, horizon))
    out = warehouse.report("validation", ds, f"raw_{table}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"table": name, "ds": ds, "rows": report.rows, "expectations": report.checked,
                               "success": report.success, "failures": report.failures}, indent=2))
    log.info("%s ds=%s: %d rows, %d expectations, %d failed", name, ds, report.rows, report.checked,
             len(report.failures))
    return report.raise_for_failures()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    p = argparse.ArgumentParser(prog="python -m jobs.validate_raw", description=__doc__)
    p.add_argument("--ds", required=True)
    p.add_argument("--table", choices=RAW_TABLES, action="append")
    args = p.parse_args(argv)
    wh = Warehouse(Settings.from_env().warehouse)
    for table in args.table or RAW_TABLES:
        r = validate_raw_table(wh, table, args.ds)
        print(f"raw/{table}: {r.rows} rows, {r.checked} expectations passed")


if __name__ == "__main__":
    main()
