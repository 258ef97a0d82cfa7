"""Raw tables that break the contract are rejected with a message naming table, column and rule when the bad
share is above the threshold (here 0: every bad row counts); clean tables pass. Quarantine below the threshold:
tests/jobs/test_quarantine.py."""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.config.schema import Validation
from core.contract import PARTITIONED, RAW_TABLES
from core.warehouse import Warehouse
from expectations.gate import DataQualityError
from jobs.validate_raw import validate_raw_table

STRICT = Validation(max_bad_share=0.0)


@pytest.fixture
def broken(world, tmp_path):
    """A copy of the small world's raw/ that a test can damage; returns (warehouse, ds, rewrite)."""
    ds = world["spec"].last_ds
    keep = Warehouse(world["warehouse"]).raw_days("events")[-2:]     # each night validates earlier days once too
    shutil.copytree(Warehouse(world["warehouse"]).raw("users").parent, tmp_path / "raw",
                    ignore=lambda folder, names: [n for n in names if n.startswith("ds=") and n[3:] not in keep])
    wh = Warehouse(tmp_path)

    def rewrite(table: str, change) -> None:
        folder = wh.raw_partition(table, ds) if table in PARTITIONED else wh.raw(table)
        f = next(folder.glob("*.parquet"))
        pq.write_table(change(pq.read_table(f)), f)

    return wh, ds, rewrite


def _set(table: pa.Table, column: str, row: int, value, typ=None) -> pa.Table:
    col = table[column].to_pylist()
    col[row] = value
    return table.set_column(table.schema.get_field_index(column), column,
                            pa.array(col, type=typ or table.schema.field(column).type))


@pytest.mark.parametrize("table", RAW_TABLES)
def test_clean_tables_pass(world, table):
    report = validate_raw_table(Warehouse(world["warehouse"]), table, world["spec"].last_ds, STRICT)
    assert report.success and report.rows > 0 and report.checked >= 5
    assert report.quarantined == 0 and report.rows_in == report.rows


@pytest.mark.parametrize("table,column,value,rule", [
    ("users", "user_id", None, "expect_column_values_to_not_be_null"),
    ("items", "item_id", None, "expect_column_values_to_not_be_null"),
    ("events", "user_id", None, "expect_column_values_to_not_be_null"),
    ("push_log", "push_id", None, "expect_column_values_to_not_be_null"),
    ("items", "price", -5.0, "expect_column_values_to_be_between"),
    ("item_changes", "price", -1.0, "expect_column_values_to_be_between"),
    ("events", "event_type", "teleport", "expect_column_values_to_be_in_set"),
    ("users", "platform", "symbian", "expect_column_values_to_be_in_set"),
    ("users", "tz", "Mars/Olympus", "expect_column_values_to_be_in_set"),
    ("item_changes", "change", "stolen", "expect_column_values_to_be_in_set"),
])
def test_broken_values_are_named_by_table_column_and_rule(broken, table, column, value, rule):
    wh, ds, rewrite = broken
    rewrite(table, lambda t: _set(t, column, 0, value))
    with pytest.raises(DataQualityError) as err:
        validate_raw_table(wh, table, ds, STRICT)
    msg = str(err.value)
    assert f"raw/{table}.(table): rule=max_bad_share: 1 of " in msg
    assert f"{column}: {rule} 1 (e.g. {'null' if value is None else value})" in msg
    report = (wh.report("validation", ds, f"raw_{table}"))
    assert report.exists()


@pytest.mark.parametrize("table,column", [("events", "ts"), ("push_log", "sent_at"), ("item_changes", "ts"),
                                          ("items", "listed_at"), ("users", "registered_at")])
def test_timestamps_in_the_future_are_rejected(broken, table, column):
    wh, ds, rewrite = broken

    def to_future(t: pa.Table) -> pa.Table:
        # One day after the run's day: later than any data delivered so far.
        return _set(t, column, 0, datetime.fromisoformat(ds).replace(tzinfo=timezone.utc) + timedelta(days=2))

    rewrite(table, to_future)
    with pytest.raises(DataQualityError, match=rf"rule=max_bad_share: 1 of .* {column}: expect_column_values_to_be_between"):
        validate_raw_table(wh, table, ds, STRICT)


def test_item_events_must_name_their_item(broken):
    wh, ds, rewrite = broken

    def drop_item(t: pa.Table) -> pa.Table:
        row = t["event_type"].to_pylist().index("view")
        return _set(t, "item_id", row, None)

    rewrite("events", drop_item)
    with pytest.raises(DataQualityError, match=r"item_id: expect_column_values_to_not_be_null where event_type"):
        validate_raw_table(wh, "events", ds, STRICT)


def test_missing_or_retyped_columns_fail_before_any_expectation(broken):
    wh, ds, rewrite = broken
    rewrite("items", lambda t: t.drop_columns(["status"]))
    rewrite("users", lambda t: t.set_column(0, "user_id", pc.cast(t["user_id"], pa.string())))
    with pytest.raises(DataQualityError, match=r"raw/items\.status: rule=column_exists"):
        validate_raw_table(wh, "items", ds)
    with pytest.raises(DataQualityError, match=r"raw/users\.user_id: rule=column_type: expected int64, found string"):
        validate_raw_table(wh, "users", ds)


def test_a_missing_partition_is_an_error_not_an_empty_pass(broken):
    wh, ds, _ = broken
    shutil.rmtree(wh.raw_partition("events", ds))
    with pytest.raises(DataQualityError, match=r"(?s)raw/events.*rule=partition_exists: no partition ds=") as err:
        validate_raw_table(wh, "events", ds)
    assert "simulate" not in str(err.value)          # said to a user with real data: deliver or import it


def test_duplicate_push_ids_are_rejected(broken):
    wh, ds, rewrite = broken
    rewrite("push_log", lambda t: _set(t, "push_id", 1, t["push_id"][0].as_py()))
    with pytest.raises(DataQualityError, match=r"push_id: expect_column_values_to_be_unique 2 "):
        validate_raw_table(wh, "push_log", ds, STRICT)
