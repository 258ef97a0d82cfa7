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
