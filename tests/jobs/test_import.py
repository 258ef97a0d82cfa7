"""`hermes import`: a marketplace's own flat files into the raw contract, bad rows quarantined and counted."""
from __future__ import annotations

import json
from argparse import Namespace
from dataclasses import replace

import pyarrow as pa
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
    pq.write_table(read("item_changes"), out / "item_changes" / "part-1.parquet")
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
    return {"dir": out, "events": len(ev), "users": len(users), "push_log": len(pl), "spec": spec}


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
    text = "\n".join(lines(report))
    assert "unparsable 1: user_id: rule=parse_int64" in text and "ignored columns" in text


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
