"""The row rules Great Expectations does not express: exact duplicate rows and ids absent from their dimension."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from expectations.quarantine import duplicate_rows, unknown_ids


def test_only_later_copies_of_an_identical_row_are_duplicates():
    t = pa.table({"id": pa.array([1, 2, 1, None, None, 1, 1], pa.int64()),
                  "kind": ["x", "y", "x", None, None, "x", None],
                  "price": [1.0, 2.0, 1.0, None, None, 1.5, 1.0],
                  "items": [[1, 2], [3], [1, 2], None, None, [1, 2], [1, 2]]})
    got = duplicate_rows(t, ["id", "kind", "price"])
    # rows 2 and 4 repeat rows 0 and 3 (nulls equal); rows 5 and 6 differ from row 0 in one column each
    assert got.tolist() == [False, False, True, False, True, False, False]
    assert duplicate_rows(t, t.column_names).tolist() == got.tolist()         # a list column compares whole
    assert duplicate_rows(t.slice(0, 0), ["id"]).tolist() == []


def test_many_distinct_rows_have_no_duplicates_and_a_planted_one_is_found():
    rng = np.random.default_rng(1)
    n = 200_000
    t = pa.table({"user_id": rng.permutation(n), "event_type": rng.choice(["view", "fav"], n)})
    assert not duplicate_rows(t, t.column_names).any()
    planted = pa.concat_tables([t, t.slice(123, 1)])
    assert np.flatnonzero(duplicate_rows(planted, t.column_names)).tolist() == [n]


def test_an_id_missing_from_its_dimension_is_flagged_a_null_id_is_not():
    t = pa.table({"user_id": pa.array([1, 7, None, 2], pa.int64())})
    assert unknown_ids(t, "user_id", pa.array([1, 2, 3], pa.int64())).tolist() == [False, True, False, False]
