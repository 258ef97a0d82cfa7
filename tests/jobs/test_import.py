"""`hermes import`: a marketplace's own flat files into the raw contract, bad rows quarantined and counted."""
from __future__ import annotations

import json
from argparse import Namespace
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from core.config.loader import load_config
from core.settings import Settings
from core.warehouse import Warehouse


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A small world's tables as a marketplace would hand them over: users and events as CSV (with an extra column
    and bad values), items and item_changes as Parquet, push_log as CSV with its item lists as text."""
    from lab.simulator.market import WorldSpec, simulate

    src = tmp_path_factory.mktemp("world")
    spec = WorldSpec(users=3000, items=6000, days=5, seed=13)
    simulate(spec, src, push_days=3)
    out = tmp_path_factory.mktemp("export")
    raw = Warehouse(src).raw

    def read(table):
        return pads.dataset(str(raw(table)), format="parquet", partitioning="hive").to_table(
            columns=[f.name for f in pq.read_schema(next(raw(table).rglob("*.parquet")))])

    users = read("users").to_pandas()
    users["marketing_segment"] = "a"                          # not in the contract: ignored and reported
    users.to_csv(out / "users.csv", index=False)
    pq.write_table(read("items"), out / "items.parquet")
    (out / "item_changes").mkdir()
    changes = read("item_changes")                             # times as epoch milliseconds, as many exports give them
    ms = pa.compute.divide(changes["ts"].cast(pa.timestamp("us")).cast(pa.int64()), 1000)
    changes = changes.set_column(changes.schema.get_field_index("ts"), "ts", ms)
    pq.write_table(changes, out / "item_changes" / "part-1.parquet")
    change_days = sorted(set(pa.compute.strftime(read("item_changes")["ts"], format="%Y-%m-%d").to_pylist()))
    ev = read("events").to_pandas()
    ev["ts"] = ev["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for c in ("item_id", "seller_id", "category_id"):
        ev[c] = ev[c].astype("Int64").astype(str).replace("<NA>", "")
    ev["user_id"] = ev["user_id"].astype(object)
    ev.loc[3, "ts"] = "yesterday"                              # unparsable time
    ev.loc[5, "user_id"] = "12x"                               # unparsable id
    ev.loc[7, "event_type"] = "teleport"                       # parses; validation's enum rule quarantines it
    ev.loc[9, "user_id"] = "99999999"                          # parses; no such user: quarantined by validation
    (out / "events").mkdir()
    half = len(ev) // 2
    ev.iloc[:half].to_csv(out / "events" / "a.csv", index=False)
    ev.iloc[half:].to_csv(out / "events" / "b.csv", index=False)
    pl = read("push_log").to_pandas()
    pl["item_ids"] = pl["item_ids"].astype(object).map(lambda x: json.dumps([int(i) for i in x]))
    pl.loc[2, "item_ids"] = "[1, two]"                         # unparsable list
    pl.to_csv(out / "push_log.csv", index=False)
    return {"dir": out, "events": len(ev), "users": len(users), "push_log": len(pl), "spec": spec,
            "change_days": change_days}


def _settings(tmp_path) -> Settings:
    base = Settings.from_env()
    return replace(base, home=tmp_path, warehouse=tmp_path / "warehouse")


def test_a_folder_of_flat_files_is_imported_partitioned_validated_and_every_row_accounted_for(export, tmp_path):
    from jobs.importer import lines, run

    s = _settings(tmp_path)
    report = run(Namespace(paths=[str(export["dir"])], table=None), s)
    assert report["success"], report
    t = report["tables"]
    assert set(t) == {"users", "items", "item_changes", "events", "push_log"}
    ev = t["events"]
    assert ev["rows_in"] == export["events"]
    assert ev["unparsable_by_rule"] == {"ts: rule=parse_timestamp[us, tz=UTC]": 1, "user_id: rule=parse_int64": 1}
    assert ev["rows_in"] == ev["rows_written"] + ev["unparsable"]
    v = ev["validation"]
    # the enum rule and the unknown user quarantine one row each; rows written = kept + quarantined
    assert v["success"] and v["quarantined"] >= 2 and v["partitions"] == 5
    assert v["by_rule"] == {"event_type: expect_column_values_to_be_in_set": 1, "user_id: id_in_dimension raw/users": 1}
    wh = Warehouse(s.warehouse)
    kept = sum(pq.read_metadata(f).num_rows for f in wh.raw("events").rglob("*.parquet"))
    assert kept == v["rows_kept"] == ev["rows_written"] - v["quarantined"]
    assert sorted(wh.raw_days("events")) == [(export["spec"].start.replace(day=d)).isoformat() for d in range(1, 6)]
    # the unparsable rows are kept with their reason
    bad = pq.read_table(next((wh.root / "quarantine" / "events" / "import").glob("*.parquet"))).to_pandas()
    assert sorted(bad["quarantine_reason"]) == ["ts: rule=parse_timestamp[us, tz=UTC]", "user_id: rule=parse_int64"]
    assert t["users"]["ignored_columns"] == ["marketing_segment"]
    assert t["users"]["rows_written"] == export["users"]
    assert t["push_log"]["unparsable"] == 1 and t["push_log"]["rows_written"] == export["push_log"] - 1
    lists = pads.dataset(str(wh.raw("push_log")), format="parquet", partitioning="hive").to_table(columns=["item_ids"])
    assert lists.num_rows == t["push_log"]["validation"]["rows_kept"] and lists["item_ids"].type == pa.list_(pa.int64())
    # push history covers the first 3 days only: the days after are explicit empty days
    assert len(wh.raw_days("push_log")) == 5
    # epoch milliseconds are read as such (a number read as nanoseconds would put every change in 1970)
    assert t["item_changes"]["read_as"] == {"ts": ["epoch milliseconds (the unit read off the numbers' magnitude)"]}
    assert t["item_changes"]["unparsable"] == 0
    assert sorted(wh.raw_days("item_changes")) == export["change_days"] and export["change_days"][0] > "2020"
    text = "\n".join(lines(report))
    assert "unparsable 1: user_id: rule=parse_int64" in text and "ignored columns" in text
    assert "ts read as epoch milliseconds" in text


def test_a_table_missing_a_contract_column_is_refused_naming_table_column_and_rule(export, tmp_path):
    from jobs.importer import ImportError_, run

    f = tmp_path / "users.csv"
    t = pacsv.read_csv(export["dir"] / "users.csv").drop_columns(["opt_in"])
    pacsv.write_csv(t, f)
    with pytest.raises(ImportError_, match=r"raw/users\.opt_in: rule=required_column"):
        run(Namespace(paths=[str(f)], table="users"), _settings(tmp_path))
    assert not (tmp_path / "warehouse" / "raw" / "users").exists()


def test_too_many_unparsable_rows_stop_the_import_before_anything_is_written(export, tmp_path):
    from jobs.importer import ImportError_, import_tables

    f = tmp_path / "items.csv"
    items = pq.read_table(export["dir"] / "items.parquet").to_pandas()
    items["price"] = items["price"].astype(object)
    items.loc[:40, "price"] = "call me"
    items.to_csv(f, index=False)
    s = _settings(tmp_path)
    with pytest.raises(ImportError_, match=r"raw/items\.\(table\): rule=max_bad_share: 41 of \d+ rows .*price: "
                                           r"rule=parse_double 41"):
        import_tables(s, {"items": [f]}, load_config(s.conf_dir))
    assert not (tmp_path / "warehouse").exists()


@pytest.mark.parametrize("values, unit, expected", [
    (pa.array([1_730_000_000, 1_730_000_001], pa.int64()), "seconds", ["2024-10-27 03:33:20", "2024-10-27 03:33:21"]),
    (pa.array(["1730000000000", None]), "milliseconds", ["2024-10-27 03:33:20", None]),
    (pa.array([1_730_000_000_000_000], pa.int64()), "microseconds", ["2024-10-27 03:33:20"]),
    (pa.array([1_730_000_000_000_000_000], pa.int64()), "nanoseconds", ["2024-10-27 03:33:20"]),
    (pa.array([1_730_000_000.5], pa.float64()), "seconds", ["2024-10-27 03:33:20.500000"]),
])
def test_timestamps_given_as_epoch_numbers_are_read_in_the_unit_their_magnitude_says(values, unit, expected):
    from core.contract import RAW_SCHEMAS
    from jobs.importer import _parse

    got, bad, note = _parse(RAW_SCHEMAS["events"].field("ts").type, pa.chunked_array([values]))
    assert note.startswith(f"epoch {unit} (") and not bad.any()
    assert [None if x is None else x.strftime("%Y-%m-%d %H:%M:%S.%f").removesuffix(".000000") for x in got.to_pylist()] \
        == expected


def test_an_epoch_number_of_another_magnitude_or_far_from_now_is_unparsable_not_a_date_in_1970():
    from core.contract import RAW_SCHEMAS
    from jobs.importer import _parse

    # milliseconds with one value in seconds, one 0, one in 2200
    col = pa.chunked_array([pa.array([1_730_000_000_000, 1_730_000_000, 0, 7_258_118_400_000], pa.int64())])
    got, bad, note = _parse(RAW_SCHEMAS["events"].field("ts").type, col)
    assert note.startswith("epoch milliseconds") and bad.tolist() == [False, True, True, True]
    assert got.null_count == 3
    # dates as text are not epoch numbers, and a number among them is unparsable; numbers as text are, and a date
    # among them is
    ts = RAW_SCHEMAS["events"].field("ts").type
    got, bad, note = _parse(ts, pa.chunked_array([pa.array(["2026-10-01", "2026-10-02", "17"])]))
    assert note == "" and bad.tolist() == [False, False, True]
    got, bad, note = _parse(ts, pa.chunked_array([pa.array(["1730000000", "1730000060", "yesterday"])]))
    assert note.startswith("epoch seconds") and bad.tolist() == [False, False, True]


def test_parquet_lists_of_another_element_type_are_cast_and_a_list_that_cannot_be_is_unparsable():
    from core.contract import RAW_SCHEMAS
    from jobs.importer import _parse

    typ = RAW_SCHEMAS["push_log"].field("item_ids").type
    got, bad, _ = _parse(typ, pa.chunked_array([pa.array([[1, 2], None, []], pa.list_(pa.int32()))]))
    assert got.type == typ and got.to_pylist() == [[1, 2], None, []] and not bad.any()
    got, bad, _ = _parse(typ, pa.chunked_array([pa.array([[3]], pa.large_list(pa.int64()))]))
    assert got.to_pylist() == [[3]] and not bad.any()
    got, bad, _ = _parse(typ, pa.chunked_array([pa.array([[1.0, 2.5], [3.0], [2.0 ** 64]], pa.list_(pa.float64()))]))
    assert got.to_pylist() == [None, [3], None] and bad.tolist() == [True, False, True]
    # a 64-bit id beside a value that does not fit keeps every digit
    got, bad, _ = _parse(typ, pa.chunked_array([pa.array([[1800000000000000001], [2 ** 64 - 1]], pa.list_(pa.uint64()))]))
    assert got.to_pylist() == [[1800000000000000001], None] and bad.tolist() == [False, True]


def test_an_id_the_contract_column_cannot_hold_is_unparsable():
    from core.contract import RAW_SCHEMAS
    from jobs.importer import _parse

    got, bad, _ = _parse(RAW_SCHEMAS["items"].field("category_id").type,
                         pa.chunked_array([pa.array([3, 3_000_000_000, -1], pa.int64())]))
    assert got.to_pylist() == [3, None, -1] and bad.tolist() == [False, True, False]


@pytest.mark.parametrize("sep, suffix", [(";", ".csv"), ("\t", ".tsv"), ("|", ".csv")])
def test_a_semicolon_tab_or_pipe_separated_export_with_a_byte_order_mark_and_padded_names_reads_as_csv(
        export, tmp_path, sep, suffix):
    from jobs.importer import _read_file, conform

    users = pacsv.read_csv(export["dir"] / "users.csv").to_pandas()
    f = tmp_path / f"users{suffix}"
    users.rename(columns={"user_id": " user_id ", "tz": "tz "}).to_csv(f, sep=sep, index=False, encoding="utf-8-sig")
    assert f.read_bytes().startswith(b"\xef\xbb\xbf")
    clean, bad, extra, _ = conform("users", _read_file("users", f))
    assert clean.num_rows == len(users) and bad.num_rows == 0 and extra == ["marketing_segment"]
    assert clean["user_id"].to_pylist() == users["user_id"].tolist()


def test_64_bit_ids_stay_exact_beside_a_bad_value_or_a_null():
    """Through float64 a bad value (or a null in an unsigned column) rounded every 64-bit id in its column to the same
    number: 1800000000000000001 and ...003 both became 1800000000000000000, two users merged into one."""
    from core.contract import RAW_SCHEMAS
    from jobs.importer import _parse

    typ = RAW_SCHEMAS["events"].field("user_id").type
    got, bad, _ = _parse(typ, pa.chunked_array([pa.array(["1800000000000000001", "12x", "1800000000000000003"])]))
    assert got.to_pylist() == [1800000000000000001, None, 1800000000000000003] and bad.tolist() == [False, True, False]
    got, bad, _ = _parse(typ, pa.chunked_array([pa.array([1800000000000000001, None, 2 ** 64 - 1], pa.uint64())]))
    assert got.to_pylist() == [1800000000000000001, None, None] and bad.tolist() == [False, False, True]
    # a float is an id only while it is exact
    got, bad, _ = _parse(typ, pa.chunked_array([pa.array([3.0, 2.5, 2.0 ** 60], pa.float64())]))
    assert got.to_pylist() == [3, None, None] and bad.tolist() == [False, True, True]


@pytest.mark.parametrize("values, read, note", [
    (["05/10/2026 14:00", "13/10/2026 09:30"], ["2026-10-05 14:00", "2026-10-13 09:30"], "day-first"),
    (["10/05/2026", "10/13/2026"], ["2026-10-05 00:00", "2026-10-13 00:00"], "month-first"),
    (["05.10.2026 08:00", "06.10.2026 08:00"], ["2026-10-05 08:00", "2026-10-06 08:00"], "day-first dates (written with dots"),
    (["05/10/2026", "06/10/2026"], ["2026-05-10 00:00", "2026-06-10 00:00"], "month-first dates (no number above 12"),
    (["05/10/2026", "13/10/2026", "10/13/2026"], [None, "2026-10-13 00:00", "2026-10-13 00:00"], "both"),
])
def test_dates_written_with_numbers_are_read_in_one_order_per_column(values, read, note):
    """A parser deciding per value reads 05/10/2026 as 10 May beside 13/10/2026 as 13 October: a day-first export
    would be half wrong without a word."""
    from core.contract import RAW_SCHEMAS
    from jobs.importer import _parse

    got, bad, how = _parse(RAW_SCHEMAS["events"].field("ts").type, pa.chunked_array([pa.array(values)]))
    assert [x.strftime("%Y-%m-%d %H:%M") if x else None for x in got.to_pylist()] == read
    assert bad.tolist() == [r is None for r in read] and note in how


def test_a_semicolon_separated_export_has_decimal_commas_and_a_comma_separated_one_does_not(export, tmp_path):
    from jobs.importer import _read_file, conform

    items = pq.read_table(export["dir"] / "items.parquet").to_pandas().head(4)
    items["price"] = ["12,50", "1.234,50", "7", "-0,5"]
    f = tmp_path / "items.csv"
    items.to_csv(f, sep=";", index=False)
    clean, bad, _, notes = conform("items", _read_file("items", f))
    assert clean["price"].to_pylist() == [12.5, 1234.5, 7.0, -0.5] and bad.num_rows == 0
    assert notes["price"].startswith("decimal commas")
    # comma-separated, "12,50" quoted: a comma there is not a decimal mark to guess at
    items["price"] = ["12,50", "3.5", "7", "8"]
    g = tmp_path / "items_comma.csv"
    items.to_csv(g, index=False)
    clean, bad, _, notes = conform("items", _read_file("items", g))
    assert clean["price"].to_pylist() == [3.5, 7.0, 8.0] and bad["quarantine_reason"].to_pylist() == [
        "price: rule=parse_double"] and "price" not in notes
