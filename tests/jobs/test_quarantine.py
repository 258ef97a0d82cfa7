"""Raw validation quarantines bad rows with their reason and the night goes on; counts add up; table-level
failures (too many bad rows, an unreadable, empty or missing partition, schema drift) stop the run."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config.schema import Validation
from core.contract import PARTITIONED, RAW_SCHEMAS
from core.warehouse import Warehouse, file_stats
from expectations.gate import DataQualityError
from jobs.validate_raw import validate_raw_table

LENIENT = Validation(max_bad_share=0.03)       # 3 %: one bad row of the small world's 87 item changes passes


@pytest.fixture
def copy(world, tmp_path):
    """A copy of the small world's raw/ a test can damage: (warehouse, ds, change(table, fn)). Fact tables keep
    their last three days only: each night validates every earlier partition once, and ten days of five tables
    would be most of these tests' time."""
    ds = world["spec"].last_ds
    src = Warehouse(world["warehouse"])
    keep = src.raw_days("events")[-3:]
    shutil.copytree(src.raw("users").parent, tmp_path / "raw",
                    ignore=lambda folder, names: [n for n in names if n.startswith("ds=") and n[3:] not in keep])
    wh = Warehouse(tmp_path)

    def change(table: str, fn) -> None:
        folder = wh.raw_partition(table, ds) if table in PARTITIONED else wh.raw(table)
        files = sorted(folder.glob("*.parquet"))
        data = pa.concat_tables([pq.read_table(f) for f in files])
        for f in files:
            f.unlink()
        pq.write_table(fn(data), folder / "part-00000.parquet")

    return wh, ds, change


def _set(t: pa.Table, column: str, row: int, value) -> pa.Table:
    col = t[column].to_pylist()
    col[row] = value
    return t.set_column(t.schema.get_field_index(column), column, pa.array(col, t.schema.field(column).type))


def _first(t: pa.Table, column: str, value) -> int:
    return t[column].to_pylist().index(value)


def _add_copy(t: pa.Table, row: int, **changes) -> pa.Table:
    extra = t.slice(row, 1)
    for c, v in changes.items():
        extra = _set(extra, c, 0, v)
    return pa.concat_tables([t, extra])


def _ts(ds: str, days: float) -> datetime:
    return datetime.fromisoformat(ds).replace(tzinfo=timezone.utc) + timedelta(days=days)


# (table, how to break one row (or add one), the reason it must be quarantined with, how many rows move)
KINDS = {
    "enum value": ("events", lambda t, ds: _set(t, "event_type", 0, "teleport"),
                   "event_type: expect_column_values_to_be_in_set", 1),
    "null key": ("events", lambda t, ds: _set(t, "user_id", 0, None), "user_id: expect_column_values_to_not_be_null", 1),
    "timestamp outside the partition's day": ("events", lambda t, ds: _set(t, "ts", 0, _ts(ds, 1.5)),
                                              "ts: expect_column_values_to_be_between", 1),
    "item event without its item": ("events", lambda t, ds: _set(t, "item_id", _first(t, "event_type", "view"), None),
                                    "item_id: expect_column_values_to_not_be_null where "
                                    "event_type.isin(['view', 'fav', 'cart', 'chat', 'buy'])", 1),
    "user absent from raw/users": ("events", lambda t, ds: _set(t, "user_id", 0, 987_654_321),
                                   "user_id: id_in_dimension raw/users", 1),
    "item absent from raw/items": ("events", lambda t, ds: _set(t, "item_id", _first(t, "event_type", "view"), 55_555_555),
                                   "item_id: id_in_dimension raw/items", 1),
    "exact duplicate row": ("events", lambda t, ds: _add_copy(t, 0), "(row): duplicate_row", 1),
    "price of +inf": ("items", lambda t, ds: _set(t, "price", 0, float("inf")),
                      "price: expect_column_values_to_be_between", 1),
    "negative price": ("item_changes", lambda t, ds: _set(t, "price", 0, -3.0),
                       "price: expect_column_values_to_be_between", 1),
    "conflicting duplicate key": ("items", lambda t, ds: _add_copy(t, 0, price=1.0),
                                  "item_id: expect_column_values_to_be_unique", 2),
    "opened before it was sent": ("push_log", lambda t, ds: _set(t, "opened_at", 0, _ts(ds, -3)),
                                  "opened_at/sent_at: expect_column_pair_values_a_to_be_greater_than_b", 1),
    "unknown time zone": ("users", lambda t, ds: _set(t, "tz", 0, "Mars/Olympus"),
                          "tz: expect_column_values_to_be_in_set", 1),
    "registered in the future": ("users", lambda t, ds: _set(t, "registered_at", 0, _ts(ds, 400)),
                                 "registered_at: expect_column_values_to_be_between", 1),
}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_bad_row_is_quarantined_with_its_reason_and_the_counts_add_up(copy, kind):
    wh, ds, change = copy
    table, breaks, reason, n_bad = KINDS[kind]
    folder = wh.raw_partition(table, ds) if table in PARTITIONED else wh.raw(table)
    change(table, lambda t: breaks(t, ds))
    rows_in = sum(pq.read_metadata(f).num_rows for f in folder.glob("*.parquet"))

    report = validate_raw_table(wh, table, ds, LENIENT)       # no exception: the night goes on

    assert report.quarantined == n_bad and report.rows == rows_in - n_bad and report.rows_in == rows_in
    assert report.by_rule == {reason: n_bad}
    qdir = wh.quarantine(table, ds if table in PARTITIONED else None)
    moved = pq.read_table(qdir)
    assert moved.num_rows == n_bad and set(moved["quarantine_reason"].to_pylist()) == {reason}
    kept = pq.read_table(folder)
    assert kept.num_rows == rows_in - n_bad                                    # the stages read only these
    assert kept.schema.equals(pq.read_table(qdir).drop_columns(["quarantine_reason"]).schema)
    on_disk = json.loads(wh.report("validation", ds, f"raw_{table}").read_text())
    assert on_disk["success"] and on_disk["rows_in"] == on_disk["rows_kept"] + on_disk["rows_quarantined"] == rows_in
    assert on_disk["quarantined_by_rule"][reason] == n_bad and on_disk["examples"][reason]


def test_a_null_is_shown_as_null_and_the_summary_lists_what_was_quarantined(copy, settings):
    from dataclasses import replace

    from jobs.summary import summary

    wh, ds, change = copy
    change("events", lambda t: _set(_set(t, "user_id", 0, None), "event_type", 1, "teleport"))
    report = validate_raw_table(wh, "events", ds, LENIENT)
    assert report.examples == {"user_id: expect_column_values_to_not_be_null": ["null"],
                               "event_type: expect_column_values_to_be_in_set": ["teleport"]}
    lines = "\n".join(summary(replace(settings, warehouse=wh.root), ds))
    assert f"{report.rows_in:,} in = {report.rows:,} kept + 2 quarantined" in lines
    assert "quarantined 1: user_id: expect_column_values_to_not_be_null (e.g. null)" in lines
    assert "quarantined 1: event_type: expect_column_values_to_be_in_set (e.g. teleport)" in lines


def test_a_bad_share_above_the_threshold_stops_the_run_and_moves_nothing(copy):
    wh, ds, change = copy
    change("events", lambda t: t.set_column(t.schema.get_field_index("event_type"), "event_type",
                                           pa.array(["teleport"] * 10 + t["event_type"].to_pylist()[10:])))
    before = file_stats(wh.raw_partition("events", ds))
    rows = pq.read_metadata(wh.raw_partition("events", ds) / "part-00000.parquet").num_rows
    with pytest.raises(DataQualityError) as err:
        validate_raw_table(wh, "events", ds)                   # the default: 0.1 %
    share = f"{100 * 10 / rows:.3f} %"
    assert (f"raw/events.(table): rule=max_bad_share: 10 of {rows} rows ({share}) break row rules, above "
            "validation.max_bad_share 0.100 % for events: event_type: expect_column_values_to_be_in_set 10 "
            "(e.g. teleport") in str(err.value)
    assert file_stats(wh.raw_partition("events", ds)) == before            # nothing moved
    assert not list(wh.quarantine("events", ds).glob("part-*.parquet"))
    report = json.loads(wh.report("validation", ds, "raw_events").read_text())
    assert not report["success"] and report["rows_quarantined"] == 10 and report["rows_in"] == rows


def test_a_rerun_keeps_the_counts_and_a_new_delivery_is_validated_afresh(copy):
    wh, ds, change = copy
    original = pq.read_table(wh.raw_partition("events", ds))
    change("events", lambda t: _set(t, "event_type", 0, "teleport"))
    first = validate_raw_table(wh, "events", ds)
    again = validate_raw_table(wh, "events", ds)
    assert (again.rows_in, again.rows, again.quarantined) == (first.rows_in, first.rows, first.quarantined) \
        == (original.num_rows, original.num_rows - 1, 1)
    assert pq.read_table(wh.quarantine("events", ds)).num_rows == 1
    # upstream delivers the day again, with the same bad row: validated whole, the quarantine replaced (not added to)
    change("events", lambda t: _set(original, "event_type", 0, "teleport"))
    third = validate_raw_table(wh, "events", ds)
    assert (third.rows_in, third.quarantined) == (original.num_rows, 1)
    assert pq.read_table(wh.quarantine("events", ds)).num_rows == 1


def test_unreadable_and_empty_partitions_stop_the_run_an_empty_push_history_does_not(copy):
    wh, ds, change = copy
    f = next(wh.raw_partition("events", ds).glob("*.parquet"))
    f.write_bytes(f.read_bytes()[:200])                       # truncated
    with pytest.raises(DataQualityError, match=r"raw/events\.\(table\): rule=readable_parquet: part-00000.parquet"):
        validate_raw_table(wh, "events", ds)
    report = json.loads(wh.report("validation", ds, "raw_events").read_text())        # a report all the same
    assert not report["success"] and "rule=readable_parquet" in report["failures"][0]
    f.unlink()
    (wh.raw_partition("events", ds) / "notes.txt").write_text("not parquet")
    with pytest.raises(DataQualityError, match=r"rule=readable_parquet: notes.txt"):
        validate_raw_table(wh, "events", ds)
    (wh.raw_partition("events", ds) / "notes.txt").unlink()
    pq.write_table(RAW_SCHEMAS["events"].empty_table(), wh.raw_partition("events", ds) / "part-00000.parquet")
    with pytest.raises(DataQualityError, match=r"raw/events\.\(table\): rule=not_empty"):
        validate_raw_table(wh, "events", ds)
    change("push_log", lambda t: t.slice(0, 0))               # a platform with no push history yet
    report = validate_raw_table(wh, "push_log", ds)
    assert report.success and report.rows == report.rows_in == 0


def test_a_future_partition_is_a_warning_from_the_first_night_that_sees_it(copy):
    wh, ds, _ = copy
    shutil.copytree(wh.raw_partition("events", ds), wh.raw_partition("events", "2027-12-25"))
    earlier = (datetime.fromisoformat(ds) - timedelta(days=1)).date().isoformat()
    first = validate_raw_table(wh, "events", earlier)          # ds itself is the day this night runs on: not future
    assert first.warnings == [f"raw/events: partition ds=2027-12-25 is dated after this run's ds={earlier} and the "
                              "day after it (a future day): first seen by this night; no night reads it before a run "
                              "for that day"]
    assert validate_raw_table(wh, "events", earlier).warnings == first.warnings     # a re-run of that night
    assert validate_raw_table(wh, "events", ds).warnings == []                       # the next night: known


@pytest.mark.slow
def test_the_night_goes_on_from_the_clean_rows(copy, spark, settings):
    """Before quarantine, one unknown event type stopped the night: now the rollups (whose counts must add up to
    the raw partition's rows) and user_features run on the clean rows."""
    from dataclasses import replace

    from core.config.loader import load_config
    from jobs import rollups, user_features

    wh, ds, change = copy
    change("events", lambda t: _set(_set(t, "event_type", 0, "teleport"), "user_id", 1, None))
    s = replace(settings, warehouse=wh.root)
    loaded = load_config(settings.conf_dir)
    for table in ("users", "items", "item_changes", "events", "push_log"):
        validate_raw_table(wh, table, ds, loaded.config.platform.validation)
    rollups.run(spark, s, ds, loaded)
    user_features.run(spark, s, ds, loaded)
    day = wh.read_partition(spark, "rollups/user_day", ds)
    counted = day.selectExpr("sum(" + " + ".join(f"n_{e}" for e in ("app_open", "view", "fav", "cart", "chat", "buy",
                                                                      "search", "follow_seller")) + ")").first()[0]
    assert counted == pq.read_table(wh.raw_partition("events", ds)).num_rows == \
        json.loads(wh.report("validation", ds, "raw_events").read_text())["rows_kept"]
    assert wh.read_partition(spark, "features/user_features", ds).count() > 0


def test_an_earlier_partition_is_validated_once_when_first_seen_and_again_when_delivered_again(copy):
    """The rollups and the training window read weeks of partitions: a bad row in an old day is quarantined by the
    first night that sees it (before, it surfaced as the rollups' counts_add_up failure), and once only."""
    wh, ds, _ = copy
    old = wh.raw_days("events")[0]
    f = next(wh.raw_partition("events", old).glob("*.parquet"))
    t = pq.read_table(f)
    pq.write_table(_set(t, "event_type", 0, "teleport"), f)
    report = validate_raw_table(wh, "events", ds)
    assert report.older_partitions[old] == {"rows_in": t.num_rows, "rows_kept": t.num_rows - 1, "rows_quarantined": 1}
    assert len(report.older_partitions) == len(wh.raw_days("events")) - 1          # every earlier day, once
    assert pq.read_table(wh.quarantine("events", old))["quarantine_reason"].to_pylist() == [
        "event_type: expect_column_values_to_be_in_set"]
    assert validate_raw_table(wh, "events", ds).older_partitions == {}              # the next run: nothing new
    pq.write_table(_set(t, "user_id", 1, None), wh.raw_partition("events", old) / "part-00000.parquet")  # redelivered
    again = validate_raw_table(wh, "events", ds)
    assert list(again.older_partitions) == [old] and again.older_partitions[old]["rows_quarantined"] == 1


def test_a_lone_partition_far_ahead_does_not_move_the_dimensions_horizon(copy):
    wh, ds, change = copy
    shutil.copytree(wh.raw_partition("events", ds), wh.raw_partition("events", "2027-12-25"))
    change("users", lambda t: _set(t, "registered_at", 0, _ts("2027-12-24", 0)))
    report = validate_raw_table(wh, "users", ds, LENIENT)
    assert report.by_rule == {"registered_at: expect_column_values_to_be_between": 1}


def test_a_receipt_another_partition_already_holds_is_quarantined_the_first_copy_stays(copy):
    """Issue 22.2: a delivered hour re-run by hand wrote its receipts again into another day's partition; training
    then counted those pushes twice. push_id is unique across push_log's partitions."""
    wh, ds, change = copy
    earlier = wh.raw_days("push_log")[-2]
    first = pq.read_table(wh.raw_partition("push_log", earlier)).slice(0, 2)
    again = _set(_set(first, "sent_at", 0, _ts(ds, 0.5)), "sent_at", 1, _ts(ds, 0.6))
    again = _set(_set(again, "opened_at", 0, None), "opened_at", 1, None)
    change("push_log", lambda t: pa.concat_tables([t, again]))
    report = validate_raw_table(wh, "push_log", ds, LENIENT)
    rule = "push_id: unique_across_partitions"
    assert report.by_rule == {rule: 2} and report.quarantined == 2
    assert set(pq.read_table(wh.quarantine("push_log", ds))["push_id"].to_pylist()) == set(first["push_id"].to_pylist())
    kept_earlier = pq.read_table(wh.raw_partition("push_log", earlier))["push_id"].to_pylist()
    assert set(first["push_id"].to_pylist()) <= set(kept_earlier)                # the first copy stays where it was
    ids = pq.read_table(wh.raw("push_log"), columns=["push_id"])["push_id"].to_pylist()
    assert len(ids) == len(set(ids))


def test_the_validation_docs_list_every_rule_passed_or_failed_and_a_missing_partition(copy):
    """Issue 22 (browsable validation): an HTML page per night with every table and every rule checked, passed or
    failed, its quarantine examples escaped, and a page for a partition that is missing too."""
    import re

    wh, ds, change = copy
    change("events", lambda t: _set(t, "event_type", 1, "<script>x</script>"))
    report = validate_raw_table(wh, "events", ds, LENIENT)
    page = (wh.report("validation", ds, "x").parent / "index.html").read_text()
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td>(.*?)</td>", page)
    verdicts = {rule: "FAILED" in v for rule, v in rows}
    assert verdicts["event_type: expect_column_values_to_be_in_set"] is True
    assert verdicts["user_id: expect_column_values_to_not_be_null"] is False
    assert len(verdicts) == report.checked >= 5                             # every rule, not only the failed ones
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    shutil.rmtree(wh.raw_partition("item_changes", ds))                    # a missing partition: a page all the same
    with pytest.raises(DataQualityError):
        validate_raw_table(wh, "item_changes", ds, Validation(allow_empty=[]))
    page = (wh.report("validation", ds, "x").parent / "index.html").read_text()
    assert "raw/item_changes <span class=\"bad\">FAILED</span>" in page and "2 tables: 1 passed" in page
