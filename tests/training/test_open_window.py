"""A push's label is final only once its opens have had time to happen (training.dataset.OpenWindow)."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from core.contract import RAW_SCHEMAS

AS_OF = datetime(2026, 10, 11)


def _push_log(spark, rows):
    """rows: (push_id, sent_at, opened_at or None)."""
    import pyarrow as pa

    t = pa.Table.from_pylist([{"push_id": p, "user_id": 1, "scene_id": "guess_you_like", "item_ids": [7],
                               "sent_at": s, "opened_at": o, "clicked_item_id": None, "policy": "hermes",
                               "propensity": 1.0} for p, s, o in rows], schema=RAW_SCHEMAS["push_log"])
    return spark.createDataFrame(t.to_pandas())


def test_open_window_is_the_99th_percentile_of_the_delays_seen_clamped(spark):
    from training.dataset import MAX_OPEN_WINDOW_H, MIN_OPEN_WINDOW_H, open_window

    day = datetime(2026, 10, 5, 8)
    # 200 opens: 198 after 30 minutes, 2 after 3 hours -> the 99th percentile is 30 minutes: the 1 h floor
    quick = [(f"q{i}", day, day + timedelta(minutes=30 if i < 198 else 180)) for i in range(200)]
    w = open_window(_push_log(spark, quick), "2026-10-01", AS_OF)
    assert w.hours == MIN_OPEN_WINDOW_H and w.delays_seen == 200 and "clamped" in w.reason
    # users who open the next morning: 16 h for most, 20 h for the slowest 5 %
    slow = [(f"s{i}", day, day + timedelta(hours=16 if i < 190 else 20)) for i in range(200)]
    w = open_window(_push_log(spark, slow), "2026-10-01", AS_OF)
    assert w.hours == pytest.approx(20.0) and "99th percentile of 200" in w.reason
    # an open seen after as_of is not known yet, and pushes before first_day are not the window's: either would
    # make the longest delay 48 h here
    late = [("a", day, day + timedelta(hours=5)), ("x", day, AS_OF + timedelta(hours=1)),
            ("old", datetime(2026, 9, 1), datetime(2026, 9, 3))]
    w = open_window(_push_log(spark, late), "2026-10-01", AS_OF)
    assert w.hours == pytest.approx(5.0) and w.delays_seen == 1
    # opens days later are clamped, so the holdout days keep mature pushes
    days = [(f"d{i}", day - timedelta(days=3), day) for i in range(150)]
    assert open_window(_push_log(spark, days), "2026-09-20", AS_OF).hours == MAX_OPEN_WINDOW_H
    # too few opens for a percentile: the longest delay seen
    few = [("a", day, day + timedelta(hours=5)), ("b", day, day + timedelta(hours=2)), ("c", day, None)]
    w = open_window(_push_log(spark, few), "2026-10-01", AS_OF)
    assert w.hours == pytest.approx(5.0) and w.delays_seen == 2 and "longest of 2" in w.reason


def test_push_keys_leave_out_the_pushes_whose_window_has_not_passed(spark):
    from training.dataset import push_keys

    users = spark.createDataFrame([(1, "UTC")], "user_id long, tz string")
    log = _push_log(spark, [("early", datetime(2026, 10, 10, 12), datetime(2026, 10, 10, 12, 20)),
                            ("late_opened", datetime(2026, 10, 10, 23, 10), datetime(2026, 10, 10, 23, 40)),
                            ("late_unopened", datetime(2026, 10, 10, 23, 30), None)])
    every = {r["push_id"]: r["label"] for r in push_keys(log, users, "2026-10-10", "2026-10-10", AS_OF).collect()}
    assert every == {"early": 1, "late_opened": 1, "late_unopened": 0}
    mature = push_keys(log, users, "2026-10-10", "2026-10-10", AS_OF, mature_before=AS_OF - timedelta(hours=2))
    assert {r["push_id"]: r["label"] for r in mature.collect()} == {"early": 1}
