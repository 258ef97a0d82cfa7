"""Validate one table the pipeline wrote for a run date with its GX suite (and the fatigue reconciliation).

Runs on the partition's Parquet through pandas: the partitions checked here are one day of one stage. A
partition larger than a pandas frame should be (plan/scored at 1M users: ~120M rows) is validated in parts that
each hold whole ranges of user_id (`expectations.gate.validate_dataset`).
"""
from __future__ import annotations

import json
import logging

import pyarrow.dataset as pads

from core.warehouse import Warehouse
from expectations.gate import DataQualityError, ValidationReport, referenced_columns, validate_dataset

log = logging.getLogger(__name__)


def _rows(wh: Warehouse, name: str, ds: str) -> int:
    return pads.dataset(wh.partition(name, ds), format="parquet").count_rows()


def validate_output_table(wh: Warehouse, name: str, ds: str, loaded) -> ValidationReport:
    from expectations.suites import output_suite

    path = wh.partition(name, ds)
    if not path.exists():
        raise DataQualityError(name, [f"(table): rule=partition_exists: no partition ds={ds} at {path}"])
    scene_ids = [s.id for s in loaded.config.scenes]
    # Only the columns the expectations read (and user_id, which the parts are cut by), never a nested one: pandas
    # stays light (plan/scored at 1M users: 55.6M rows, 6 of its 10 columns). A column an expectation names that the
    # table lacks is not read, and the expectation fails on it as missing.
    ds_ = pads.dataset(path, format="parquet")
    flat = [f.name for f in ds_.schema if not (f.type.num_fields or str(f.type).startswith(("list", "map")))]
    suite = output_suite(name, loaded.version, scene_ids)
    used = set(referenced_columns(suite, flat)) | ({"user_id"} & set(flat))
    report = validate_dataset(ds_, name, suite, [c for c in flat if c in used] or flat)
    if name == "plan/suppressed":
        n_in, n_ok, n_out = _rows(wh, "plan/audiences", ds), _rows(wh, "plan/eligible", ds), report.rows
        if n_in != n_ok + n_out:
            report.failures.append(f"{name}.(table): rule=reconcile_with_audiences: audiences {n_in} != "
                                   f"eligible {n_ok} + suppressed {n_out}")
    out = wh.report("validation", ds, name.replace("/", "_"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"table": name, "ds": ds, "rows": report.rows, "expectations": report.checked,
                               "success": report.success, "failures": report.failures,
                               "results": report.results, "config_version": loaded.version}, indent=2))
    from expectations.docs import render

    render(wh, ds)
    log.info("%s ds=%s: %d rows, %d expectations, %d failed", name, ds, report.rows, report.checked,
             len(report.failures))
    return report.raise_for_failures()


def main(argv: list[str] | None = None) -> None:
    """`python -m jobs.validate_output --table plan/scored --ds YYYY-MM-DD`: one check_* task by hand."""
    import argparse
    from datetime import date

    from core.settings import Settings
    from jobs.entry import load_run_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m jobs.validate_output", description=__doc__)
    p.add_argument("--table", required=True, help="a derived table, e.g. plan/scored")
    p.add_argument("--ds", required=True, type=lambda s: date.fromisoformat(s).isoformat())
    p.add_argument("--config", help="config snapshot JSON (default: validate conf/ now)")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    report = validate_output_table(Warehouse(settings.warehouse), args.table, args.ds,
                                   load_run_config(settings, args.config))
    print(json.dumps({"table": args.table, "ds": args.ds, "rows": report.rows, "expectations": report.checked}))


if __name__ == "__main__":
    main()
