"""Large partitions are validated in parts cut by ranges of user_id: same verdicts as the whole table, every row
in exactly one part, and rules that do not split (a count of distinct values) still see the whole table."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from expectations.gate import splits_by_key, validate_dataset
from expectations.suites import output_suite

SCENES = ["a", "b", "c"]


def scored(n_users: int = 60, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(1000, 1000 + n_users), 6)
    return {"user_id": users.tolist(), "scene_id": [SCENES[i % 2] for i in range(len(users))],
            "item_id": (np.arange(len(users)) // 2).tolist(), "rank": [1] * len(users), "local_hour": [20] * len(users),
            "p_open": rng.uniform(0, 0.3, len(users)).tolist(), "model_version": ["3"] * len(users),
            "config_version": ["cfg-x"] * len(users)}


def write(tmp_path, cols: dict, files: int = 3):
    """The rows dealt round-robin over several files, so one user's rows sit in different files."""
    table = pa.table(cols, schema=pa.schema([("user_id", pa.int64()), ("scene_id", pa.string()),
                                             ("item_id", pa.int64()), ("rank", pa.int32()),
                                             ("local_hour", pa.int32()), ("p_open", pa.float64()),
                                             ("model_version", pa.string()), ("config_version", pa.string())]))
    idx = np.arange(table.num_rows)
    for f in range(files):
        pq.write_table(table.take(pa.array(idx[idx % files == f])), tmp_path / f"part-{f}.parquet")
    return pads.dataset(str(tmp_path), format="parquet")


def rules(report) -> set[str]:
    return {f.split(":")[0].removeprefix("plan/scored.") + ":" + f.split("rule=")[1].split()[0] for f in report.failures}


def check(ds, chunk_rows):
    suite = output_suite("plan/scored", "cfg-x", SCENES)
    return validate_dataset(ds, "plan/scored", suite, ds.schema.names, chunk_rows=chunk_rows)


def test_a_clean_table_passes_whole_and_in_parts(tmp_path):
    ds = write(tmp_path, scored())
    for chunk_rows in (10**9, 50):
        report = check(ds, chunk_rows)
        assert report.failures == [] and report.rows == 360 and report.checked == 8


def test_parts_catch_what_the_whole_table_catches(tmp_path, caplog):
    cols = scored()
    cols["item_id"][7] = cols["item_id"][9] = 999_999       # same user (1001), same scene: a duplicate pair
    cols["scene_id"][9] = cols["scene_id"][7]
    cols["p_open"][100] = 1.5                                 # not a probability
    cols["scene_id"][200] = "zz"                              # not a configured scene
    cols["user_id"][300] = None                               # a row without a user
    ds = write(tmp_path, cols)
    whole = check(ds, 10**9)
    with caplog.at_level("INFO", logger="expectations.gate"):
        parts = check(ds, 50)
    assert rules(whole) == rules(parts)
    assert {"p_open:expect_column_values_to_be_between", "scene_id:expect_column_values_to_be_in_set"} <= rules(parts)
    assert any("compound_columns_to_be_unique" in f for f in parts.failures)
    assert parts.rows == whole.rows == 360
    assert any("user_id is null" in f for f in parts.failures)           # the keyless row had its own part
    assert any("validated in" in r.message and "parts by user_id" in r.message for r in caplog.records)


def test_a_rule_that_does_not_split_sees_the_whole_table(tmp_path):
    import great_expectations.expectations as gxe

    one_scene = gxe.ExpectColumnUniqueValueCountToBeBetween(column="scene_id", min_value=1, max_value=1)
    assert not splits_by_key(one_scene, "user_id")
    assert splits_by_key(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "scene_id"]), "user_id")
    assert not splits_by_key(gxe.ExpectColumnValuesToBeUnique(column="item_id"), "user_id")
    assert not splits_by_key(gxe.ExpectColumnValuesToBeBetween(column="p_open", min_value=0, mostly=0.9), "user_id")
    cols = scored()
    cols["scene_id"] = ["a" if u < 1030 else "b" for u in cols["user_id"]]   # each half has one scene, the table two
    ds = write(tmp_path, cols)
    report = validate_dataset(ds, "plan/scored", [one_scene], ds.schema.names, chunk_rows=50)
    assert len(report.failures) == 1 and "unique_value_count" in report.failures[0]


@pytest.mark.parametrize("chunk_rows", [7, 50, 359])
def test_every_row_lands_in_one_part(tmp_path, chunk_rows):
    ds = write(tmp_path, scored(n_users=17))
    assert check(ds, chunk_rows).rows == 17 * 6
