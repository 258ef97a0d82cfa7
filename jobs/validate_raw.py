"""Validate one raw-contract table for a run date: bad rows are quarantined with their reason, the night goes on.

Fact tables are checked one `ds` partition at a time, dimensions whole (dimensions first: the facts' ids must
exist in them). Two kinds of failure, as GX's `mostly` and dbt's `warn_if`/`error_if` separate them:

- **Row-level defects** (every rule of the table's suite, exact duplicate rows, ids absent from their dimension):
  the rows move to `quarantine/<table>/ds=<ds>/` (dimensions: `quarantine/<table>/snapshot/`) with a
  `quarantine_reason` each, the raw partition keeps only the clean rows (swapped in atomically), and every stage
  reads only those. Counts add up: rows in = rows kept + rows quarantined, checked and reported.
- **Table-level failures** stop the run with `DataQualityError`, naming table, column and rule: a missing,
  unreadable or (unless `validation.allow_empty`) empty partition, schema drift, and a quarantined share above
  `validation.max_bad_share`. Nothing is moved then: the data stays as delivered for someone to look at.

A partition is validated when it is first seen or delivered again (its files' names, sizes and times differ from
the ones validation wrote); re-running a validated night finds it clean and keeps its counts. A fact partition
dated after the day the night runs on (ds + 1) is reported as a warning by the first night that sees it.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.contract import PARTITIONED, RAW_SCHEMAS, RAW_TABLES
from core.settings import Settings
from core.warehouse import Warehouse, file_stats
from expectations.gate import DataQualityError, ValidationReport, check_schema

log = logging.getLogger(__name__)
# The ids a fact row names that must exist in a dimension: {table: {column: dimension}}.
REFERENCES = {"events": {"user_id": "users", "item_id": "items"}, "push_log": {"user_id": "users"},
              "item_changes": {"item_id": "items"}}
DIMENSION_KEY = {"users": "user_id", "items": "item_id"}
MANIFEST = "_validation.json"
FUTURE_SEEN = "future_partitions.json"
EMPTY_DAY = "part-empty-day.parquet"   # what validation writes for a missing day of an allow_empty table


def _data_files(path: Path) -> list[Path]:
    return sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith((".", "_")))


def _read(name: str, path: Path) -> pa.Table:
    """Every Parquet file of a partition, or a table-level failure naming the file that cannot be read."""
    parts = []
    for f in _data_files(path):
        try:
            parts.append(pq.read_table(f))
        except (pa.ArrowInvalid, OSError) as e:
            raise _Stop([f"{name}.(table): rule=readable_parquet: {f.name} in {path} is not a readable Parquet file "
                         f"({str(e)[:160]}); replace or remove it upstream"], {}) from None
    if not parts:
        return RAW_SCHEMAS[name.split("/", 1)[1]].empty_table()
    try:
        return pa.concat_tables(parts, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise _Stop([f"{name}.(table): rule=one_schema_per_partition: the files of {path} disagree on their "
                     f"columns ({str(e)[:160]})"], {}) from None


def _future_partitions(wh: Warehouse, table: str, ds: str) -> list[str]:
    """Partitions of a day that had not begun when the night for ds ran (after ds + 1: the night for ds runs on
    ds + 1, whose partition may be filling) that no earlier night has reported: reported now, once, as warnings."""
    from datetime import date, timedelta

    tomorrow = (date.fromisoformat(ds) + timedelta(days=1)).isoformat()
    later = [d for d in wh.raw_days(table) if d > tomorrow]
    seen_file = Path(wh.root) / "reports" / "validation" / FUTURE_SEEN
    seen = json.loads(seen_file.read_text()) if seen_file.exists() else {}
    new = [d for d in later if seen.get(f"{table}/ds={d}", ds) == ds]     # a re-run of that night reports it again
    if new:
        seen.update({f"{table}/ds={d}": ds for d in new})
        seen_file.parent.mkdir(parents=True, exist_ok=True)
        seen_file.write_text(json.dumps(seen, indent=2, sort_keys=True))
    return [f"raw/{table}: partition ds={d} is dated after this run's ds={ds} and the day after it (a future day): "
            f"first seen by this night; no night reads it before a run for that day" for d in new]


def _dimension_ids(wh: Warehouse, table: str) -> dict:
    import pyarrow.dataset as pads

    out = {}
    for column, dim in REFERENCES.get(table, {}).items():
        ids = pads.dataset(str(wh.raw(dim)), format="parquet").to_table(columns=[DIMENSION_KEY[dim]])
        out[column] = (dim, ids[DIMENSION_KEY[dim]].combine_chunks())
    return out


UNIQUE_ACROSS_PARTITIONS = {"push_log": "push_id"}     # a key no two partitions may both hold


def _taken_keys(wh: Warehouse, table: str, pds: str | None) -> dict:
    """{column: the keys the table's other partitions hold} for its cross-partition unique key: the earlier
    partitions and the later ones validation has accepted. The first copy stays; a later-dated one, or one
    delivered after another partition was accepted with it, is quarantined."""
    column = UNIQUE_ACROSS_PARTITIONS.get(table)
    if column is None or pds is None:
        return {}
    days = [d for d in wh.raw_days(table) if d < pds or (d > pds and _validated(wh, table, d))]
    others = [f for d in days for f in _data_files(wh.raw_partition(table, d))]
    if not others:
        return {column: pa.array([], RAW_SCHEMAS[table].field(column).type)}
    keys = pa.concat_tables([pq.read_table(f, columns=[column]) for f in others])[column].combine_chunks()
    return {column: keys}


def _write_report(wh: Warehouse, ds: str, table: str, body: dict) -> None:
    from expectations.docs import render

    out = wh.report("validation", ds, f"raw_{table}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"table": f"raw/{table}", "ds": ds} | body, indent=2, default=str))
    render(wh, ds)


class _Stop(Exception):
    """A table-level failure of one partition, with the counts known so far (for the report)."""

    def __init__(self, failures: list[str], counts: dict):
        self.failures, self.counts = failures, counts


def _validated(warehouse: Warehouse, table: str, pds: str | None) -> bool:
    """The partition (or snapshot) is the one validation left: its files are the ones its manifest recorded."""
    path = warehouse.raw_partition(table, pds) if pds is not None else warehouse.raw(table)
    f = warehouse.quarantine(table, pds) / MANIFEST
    return f.exists() and json.loads(f.read_text()).get("clean_files") == [list(s) for s in file_stats(path)]


def _horizon(warehouse: Warehouse, ds: str) -> str:
    """The newest day a dimension's snapshot may hold rows of: the last day of the unbroken run of events
    partitions from ds on (the newest data delivered so far; a backfill sees later snapshots), and at least ds + 1,
    the day the night runs on and the snapshot may be taken. A lone partition far ahead (a mis-dated delivery) is
    not part of the run and does not move the horizon."""
    from datetime import date, timedelta

    days, day = set(warehouse.raw_days("events")), date.fromisoformat(ds) + timedelta(days=1)
    while (day + timedelta(days=1)).isoformat() in days:
        day += timedelta(days=1)
    return day.isoformat()


def _validate_partition(warehouse: Warehouse, table: str, pds: str | None, run_ds: str, rules) -> dict:
    """Validate one fact partition (pds) or a dimension's snapshot (pds None): quarantine its bad rows, check the
    counts, record its manifest. Returns its counts; raises _Stop on a table-level failure (nothing moved)."""
    from expectations.quarantine import row_verdict
    from expectations.suites import raw_suite

    name = f"raw/{table}"
    where = f" ds={pds}" if pds is not None and pds != run_ds else ""
    path = warehouse.raw_partition(table, pds) if pds is not None else warehouse.raw(table)
    if not path.exists() and pds is not None and table in rules.allow_empty:
        # a day without item changes, a platform with no push history yet: an explicit empty day, so every reader
        # sees the contract's columns rather than no data at all
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(RAW_SCHEMAS[table].empty_table(), path / EMPTY_DAY)
        log.warning("%s ds=%s: no partition delivered; written as an empty day (%s is in validation.allow_empty)",
                    name, pds, table)
    if not path.exists():
        what = f"partition ds={pds}" if pds is not None else "snapshot"
        raise _Stop([f"(table): rule=partition_exists: no {what} at {path}: it has not been delivered (import it "
                     "with the contract's columns, then re-run this night)"], {})
    qdir = warehouse.quarantine(table, pds)
    manifest = json.loads((qdir / MANIFEST).read_text()) if _validated(warehouse, table, pds) else None
    data = _read(name, path)
    problems = check_schema(name, data.schema, RAW_SCHEMAS[table])
    if problems:
        raise _Stop([f"{p}{where}" for p in problems], {"rows": data.num_rows})
    if data.num_rows == 0 and table not in rules.allow_empty:
        raise _Stop([f"(table): rule=not_empty: {path} holds no rows (allowed empty: {rules.allow_empty}, "
                     "validation.allow_empty)"], {"rows": 0})
    horizon = _horizon(warehouse, run_ds) if pds is None else None
    verdict = row_verdict(data, name, raw_suite(table, pds or run_ds, horizon), RAW_SCHEMAS[table].names,
                          _dimension_ids(warehouse, table), _taken_keys(warehouse, table, pds))
    earlier = manifest or {"rows_in": data.num_rows, "quarantined": 0, "by_rule": {}, "examples": {}}
    rows_in = int(earlier["rows_in"])
    quarantined = int(earlier["quarantined"]) + verdict.n_bad
    by_rule = dict(earlier["by_rule"])
    for rule, n in verdict.by_rule.items():
        by_rule[rule] = by_rule.get(rule, 0) + n
    examples = dict(earlier["examples"]) | {k: v for k, v in verdict.examples.items() if k not in earlier["examples"]}
    share = quarantined / rows_in if rows_in else 0.0
    limit = rules.threshold(table)
    counts = {"rows_in": rows_in, "rows_kept": data.num_rows - verdict.n_bad, "rows_quarantined": quarantined,
              "bad_share": share, "max_bad_share": limit, "quarantined_by_rule": by_rule, "examples": examples,
              "expectations": verdict.checked, "rules": verdict.rules}
    if share > limit:
        detail = "; ".join(f"{r} {n} (e.g. {', '.join(examples.get(r, []))})" for r, n in by_rule.items())
        raise _Stop([f"(table): rule=max_bad_share{where}: {quarantined} of {rows_in} rows ({100 * share:.3f} %) "
                     f"break row rules, above validation.max_bad_share {100 * limit:.3f} % for {table}: {detail}"],
                    counts)
    if verdict.n_bad:
        bad = verdict.bad
        moved = data.filter(pa.array(bad)).append_column(
            "quarantine_reason", pa.array(verdict.reason[bad].tolist(), pa.string()))
        qdir.mkdir(parents=True, exist_ok=True)
        part = len(list(qdir.glob("part-*.parquet"))) if manifest else 0
        if not manifest:                            # a new delivery: its quarantine starts afresh
            for f in qdir.glob("part-*.parquet"):
                f.unlink()
        # the bad rows are safe in the quarantine before the raw partition loses them
        pq.write_table(moved, qdir / f"part-{part:05d}.parquet")
        warehouse.replace_raw(table, pds, data.filter(pa.array(~bad)))
    elif not manifest:
        for f in qdir.glob("part-*.parquet") if qdir.exists() else []:
            f.unlink()
    # what is on disk now, counted from the files' footers: the raw partition and the quarantine
    kept = sum(pq.read_metadata(f).num_rows for f in _data_files(path))
    in_quarantine = sum(pq.read_metadata(f).num_rows for f in qdir.glob("part-*.parquet")) if qdir.exists() else 0
    if rows_in != kept + in_quarantine:
        raise _Stop([f"(table): rule=counts_add_up{where}: {rows_in} rows in, {kept} kept + {in_quarantine} "
                     "quarantined"], counts)
    qdir.mkdir(parents=True, exist_ok=True)
    (qdir / MANIFEST).write_text(json.dumps({"table": name, "ds": pds, "validated_by_ds": run_ds, "rows_in": rows_in,
                                             "rows_kept": kept, "quarantined": in_quarantine, "by_rule": by_rule,
                                             "examples": examples,
                                             "clean_files": [list(f) for f in file_stats(path)]}, indent=2))
    log.info("%s%s: %d rows in, %d kept, %d quarantined (%s), %d rules", name, f" ds={pds}" if pds else "", rows_in,
             kept, in_quarantine, by_rule or "none", verdict.checked)
    return counts | {"rows_kept": kept, "rows_quarantined": in_quarantine, "quarantine": str(qdir)}


def validate_raw_table(warehouse: Warehouse, table: str, ds: str, rules=None) -> ValidationReport:
    """Validate, quarantine and report one raw table for the night of ds: a fact table's ds partition and every
    earlier partition not validated yet or delivered again since (what the night's stages may read: the rollups
    and the training window reach back weeks), or a dimension's snapshot. rules: the config's `validation`
    section (defaults when None). Raises DataQualityError on a table-level failure; returns the report."""
    from core.config.schema import Validation

    rules = rules or Validation()
    name = f"raw/{table}"
    fact = table in PARTITIONED
    warnings = _future_partitions(warehouse, table, ds) if fact else []
    for w in warnings:
        log.warning("%s", w)
    older = [d for d in warehouse.raw_days(table) if d < ds and not _validated(warehouse, table, d)] if fact else []
    checked_older = {}
    try:
        for d in older:
            c = _validate_partition(warehouse, table, d, ds, rules)
            checked_older[d] = {k: c[k] for k in ("rows_in", "rows_kept", "rows_quarantined")}
        counts = _validate_partition(warehouse, table, ds if fact else None, ds, rules)
    except _Stop as stop:
        failures = [f if f.startswith(name) else f"{name}.{f}" for f in stop.failures]
        _write_report(warehouse, ds, table, {"success": False, "failures": failures, "warnings": warnings,
                                             "older_partitions": checked_older} | stop.counts)
        raise DataQualityError(name, failures) from None
    if checked_older:
        log.info("%s: %d earlier partitions validated first (%s rows quarantined)", name, len(checked_older),
                 sum(c["rows_quarantined"] for c in checked_older.values()))
    _write_report(warehouse, ds, table, {"rows": counts["rows_kept"], "success": True, "failures": [],
                                         "warnings": warnings, "older_partitions": checked_older} | counts)
    return ValidationReport(table=name, rows=counts["rows_kept"], checked=counts["expectations"],
                            rows_in=counts["rows_in"], quarantined=counts["rows_quarantined"],
                            by_rule=counts["quarantined_by_rule"], examples=counts["examples"], warnings=warnings,
                            older_partitions=checked_older)


def raw_reports(wh: Warehouse, ds: str) -> dict[str, dict]:
    """The night's raw validation reports by table (what the summary and the plan report show)."""
    out = {}
    for table in RAW_TABLES:
        path = wh.report("validation", ds, f"raw_{table}")
        if path.exists():
            out[table] = json.loads(path.read_text())
    return out


def quarantine_lines(report: dict, indent: str = "      ") -> list[str]:
    """One line per quarantined rule, with examples, and the report's warnings."""
    lines = [f"{indent}quarantined {n:,}: {rule} (e.g. {', '.join(report.get('examples', {}).get(rule, []))})"
             for rule, n in report.get("quarantined_by_rule", {}).items()]
    return lines + [f"{indent}WARNING {w}" for w in report.get("warnings", [])]


def main(argv: list[str] | None = None) -> None:
    from core.config.loader import load_config

    logging.basicConfig(level=logging.INFO)
    p = argparse.ArgumentParser(prog="python -m jobs.validate_raw", description=__doc__)
    p.add_argument("--ds", required=True)
    p.add_argument("--table", choices=RAW_TABLES, action="append")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    wh = Warehouse(settings.warehouse)
    rules = load_config(settings.conf_dir).config.platform.validation
    for table in args.table or RAW_TABLES:
        r = validate_raw_table(wh, table, args.ds, rules)
        print(f"raw/{table}: {r.rows_in} rows in, {r.rows} kept, {r.quarantined} quarantined, "
              f"{r.checked} rules")


if __name__ == "__main__":
    main()
