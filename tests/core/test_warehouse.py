"""The warehouse's contract with every stage: an empty result is a partition with zero rows, never a missing
folder; a re-run replaces a partition whole; a raw table with nothing delivered yet reads as an empty table."""
from __future__ import annotations

import pyarrow.parquet as pq

from core.contract import RAW_SCHEMAS
from core.warehouse import Warehouse


def test_an_empty_result_is_a_zero_row_partition_with_its_columns(spark, tmp_path):
    wh = Warehouse(tmp_path)
    empty = spark.createDataFrame([], "user_id long, scene_id string")
    path = wh.write_partition(empty, "plan/baseline", "2026-10-30", "cfg-x")
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.column_names == ["user_id", "scene_id", "config_version"]
    assert wh.read_partition(spark, "plan/baseline", "2026-10-30").count() == 0      # no PATH_NOT_FOUND


def test_a_rerun_that_comes_out_empty_replaces_the_old_rows(spark, tmp_path):
    wh = Warehouse(tmp_path)
    wh.write_partition(spark.createDataFrame([(1, "a"), (2, "b")], "user_id long, scene_id string"), "plan/x",
                       "2026-10-30", "v1")
    wh.write_partition(spark.createDataFrame([(3, "c")], "user_id long, scene_id string"), "plan/x", "2026-10-31", "v1")
    wh.write_partition(spark.createDataFrame([], "user_id long, scene_id string"), "plan/x", "2026-10-30", "v2")
    assert wh.read_partition(spark, "plan/x", "2026-10-30").count() == 0
    assert wh.read_partition(spark, "plan/x", "2026-10-31").count() == 1                # other days untouched


def test_a_raw_table_with_nothing_delivered_reads_as_the_contracts_empty_table(spark, tmp_path):
    wh = Warehouse(tmp_path)
    (tmp_path / "raw" / "push_log").mkdir(parents=True)       # a fresh deployment: no push history yet
    for table in ("push_log", "item_changes"):
        df = wh.read_raw(spark, table, "2026-10-01", "2026-10-30")
        assert df.count() == 0 and df.columns == RAW_SCHEMAS[table].names + ["ds"]
