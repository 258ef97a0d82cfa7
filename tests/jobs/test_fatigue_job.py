"""The nightly fatigue job's history: what was sent before the send day, never the send day's own receipts."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from core.contract import RAW_SCHEMAS
from core.warehouse import Warehouse
from jobs.fatigue import push_history


def receipt(pid: str, user: int, at: datetime) -> dict:
    return {"push_id": pid, "user_id": user, "scene_id": "hot_items", "item_ids": [1], "sent_at": at,
            "opened_at": None, "clicked_item_id": None, "policy": "hermes", "propensity": 1.0}


def test_a_rerun_of_a_delivered_night_sees_the_history_the_first_run_saw(spark, tmp_path):
    """Issue 25.4: fatigue read push_log with no upper bound, so a re-plan after delivery counted the send day's
    own receipts, suppressed those users' first scene and gave them another one: a second push."""
    wh = Warehouse(tmp_path / "wh")
    utc = timezone.utc
    days = {"2026-10-29": [receipt("old", 1, datetime(2026, 10, 29, 20, tzinfo=utc))],
            "2026-10-30": [receipt("eve", 2, datetime(2026, 10, 30, 23, 59, tzinfo=utc))],   # Shanghai: 10-31 local
            "2026-10-31": [receipt("own", 1, datetime(2026, 10, 31, 12, tzinfo=utc)),        # this plan's receipt
                           receipt("late", 3, datetime(2026, 10, 31, 0, 0, tzinfo=utc))]}
    for ds, rows in days.items():
        folder = wh.raw_partition("push_log", ds)
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SCHEMAS["push_log"]), folder / "part.parquet")
    got = {r.push_id for r in push_history(spark, wh, date(2026, 10, 31), 3).collect()}
    assert got == {"old", "eve"}


def _windows(wh, ds: str, rows: list[tuple]) -> None:
    """A plan/windows partition: (user_id, policy, scene_id, slot, send_at)."""
    wh.write_arrow(pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.int64()), "policy": [r[1] for r in rows],
        "scene_id": [r[2] for r in rows], "item_ids": pa.array([[1]] * len(rows), pa.list_(pa.int64())),
        "slot": pa.array([r[3] for r in rows], pa.int16()),
        "send_at": pa.array([r[4] for r in rows], pa.timestamp("us", tz="UTC"))}), "plan/windows", ds, "cfg-x")


def test_the_previous_plans_late_hours_count_as_history_before_they_are_sent(spark, tmp_path):
    """Issue 24.1: a plan's slots 24-35 (users west of UTC) go out during the next plan's first UTC hours. When the
    next night plans, they are not in push_log yet; fatigue must count them (scene caps, spacing) all the same."""
    wh = Warehouse(tmp_path / "wh")
    utc = timezone.utc
    # the plan made on 2026-10-29 for send day 10-30: user 7 at slot 28 = 10-31 04:00 UTC (20:00 in Los Angeles)
    _windows(wh, "2026-10-29", [(7, "hermes", "hot_items", 28, datetime(2026, 10, 31, 4, tzinfo=utc)),
                                (8, "hermes", "hot_items", 12, datetime(2026, 10, 30, 12, tzinfo=utc)),
                                (9, "baseline", "hot_items", 30, datetime(2026, 10, 31, 6, tzinfo=utc))])
    got = push_history(spark, wh, date(2026, 10, 31), 3, "hermes").collect()
    assert [(r.user_id, r.scene_id, r.sent_at) for r in got] == [(7, "hot_items", datetime(2026, 10, 31, 4))]   # UTC


def test_the_next_plan_leaves_room_for_the_previous_plans_late_hours(tmp_path):
    from jobs.windows import carried_load

    wh = Warehouse(tmp_path / "wh")
    at = datetime(2026, 10, 31, 0, tzinfo=timezone.utc)
    _windows(wh, "2026-10-29", [(1, "hermes", "s", 3, at), (2, "hermes", "s", 24, at), (3, "hermes", "s", 24, at),
                                (4, "hermes", "s", 30, at), (5, "hermes", "s", 35, at), (6, "baseline", "s", 25, at),
                                (7, "hermes", "s", -1, None)])
    load = carried_load(wh, "2026-10-30", "hermes", 36)
    assert load.tolist() == [2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1] + [0] * 24
    assert carried_load(wh, "2026-10-29", "hermes", 36).sum() == 0          # no plan the night before: nothing
