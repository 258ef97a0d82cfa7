"""The trigger job on a crafted warehouse: shared fatigue, re-eligibility, quiet hours, the watermark,
exactly-once windows and late events (decisions only; delivery is the same sender tested elsewhere)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config.loader import load_config
from core.contract import RAW_SCHEMAS
from core.settings import Settings
from core.warehouse import Warehouse
from jobs.triggers import EMITTED, SUPPRESSED, TriggerState, evaluate

W1 = datetime(2026, 10, 20, 4, 15, tzinfo=timezone.utc)            # 12:15 in Shanghai
DROP = W1 - timedelta(minutes=10)
FAV = datetime(2026, 10, 15, 3, 0, tzinfo=timezone.utc)


def write(path, rows, table):
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SCHEMAS[table]), path / f"part-{len(list(path.iterdir()))}.parquet")


@pytest.fixture()
def wh(tmp_path):
    w = Warehouse(tmp_path / "warehouse")
    tz = {8: "Europe/London"}
    platform = {6: "android_xiaomi"}
    users = [{"user_id": u, "tz": tz.get(u, "Asia/Shanghai"), "platform": platform.get(u, "ios"),
              "device_token": f"tok-{u}", "opt_in": u != 5, "registered_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}
             for u in range(1, 10)]
    write(w.raw("users"), users, "users")
    write(w.raw("items"), [{"item_id": i, "seller_id": 50, "category_id": 3, "price": 80.0, "title": f"Lamp {i}",
                            "listed_at": datetime(2026, 10, 10, tzinfo=timezone.utc), "status": "on_sale"}
                           for i in (100, 101)], "items")
    write(w.raw_partition("item_changes", "2026-10-10"),
          [{"item_id": i, "ts": datetime(2026, 10, 10, tzinfo=timezone.utc), "change": "listed", "price": 100.0}
           for i in (100, 101)], "item_changes")
    write(w.raw_partition("item_changes", "2026-10-20"),
          [{"item_id": 100, "ts": DROP, "change": "price_drop", "price": 80.0}], "item_changes")
    favs = [u for u in (1, 2, 3, 5, 6, 7, 8, 9)]                     # user 4's favourite arrives late
    write(w.raw_partition("events", "2026-10-15"),
          [{"ts": FAV, "user_id": u, "event_type": "fav", "item_id": 100, "seller_id": 50, "category_id": 3}
           for u in favs], "events")
    today = datetime(2026, 10, 20, 1, 0, tzinfo=timezone.utc)        # 09:00 in Shanghai: the same local day
    log = [{"push_id": f"p{k}", "user_id": u, "scene_id": "hot_items", "item_ids": [i], "sent_at": at,
            "opened_at": None, "clicked_item_id": None, "policy": "hermes", "propensity": 1.0}
           for k, (u, i, at) in enumerate([(2, 7, today), (2, 8, today - timedelta(minutes=30)),   # 2 at the cap
                                           (3, 100, today - timedelta(days=1)),                     # regap for 3
                                           (6, 9, today), (7, 9, today)])]                          # xiaomi quota 1
    write(w.raw_partition("push_log", "2026-10-20"), [r for r in log if r["sent_at"].day == 20], "push_log")
    write(w.raw_partition("push_log", "2026-10-19"), [r for r in log if r["sent_at"].day == 19], "push_log")
    # the nightly plan for 10-20 already gives user 7 a second push that local day
    plan = pa.table({"user_id": pa.array([7], pa.int64()), "policy": ["hermes"], "slot": pa.array([12], pa.int16()),
                     "send_at": pa.array([datetime(2026, 10, 20, 12, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC")),
                     "item_ids": pa.array([[55]], pa.list_(pa.int64())), "scene_id": ["guess_you_like"]})
    w.write_arrow(plan, "plan/windows", "2026-10-19", "cfg-test")
    feats = pa.table({"user_id": pa.array(range(1, 10), pa.int64()),
                      "n_app_open_28d": pa.array([0 if u == 9 else 5 for u in range(1, 10)], pa.int32())})
    w.write_arrow(feats, "features/user_features", "2026-10-19", "cfg-test")
    return w


def decisions(settings) -> dict:
    st = TriggerState(settings.ledger_url)
    with st.engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(st.log.select())]
    st.dispose()
    return {(r["rule_id"], r["user_id"], r["item_id"]): r for r in rows}


def test_a_window_decides_each_trigger_once_with_the_shared_budget(wh, tmp_path):
    settings = Settings.from_env({"HERMES_HOME": str(tmp_path), "HERMES_WAREHOUSE": str(wh.root)})
    loaded = load_config()
    counts = evaluate(settings, W1, loaded, 15, 60)
    d = {k[1]: v for k, v in decisions(settings).items() if k[0] == "fav_price_drop"}
    assert {u: (r["state"], r["reason"]) for u, r in d.items()} == {
        1: (EMITTED, None),
        2: (SUPPRESSED, "daily_cap"),          # two pushes already today (local day)
        3: (SUPPRESSED, "regap"),              # pushed the same item yesterday, gap 72 h
        5: (SUPPRESSED, "opted_out"),
        6: (SUPPRESSED, "platform_quota"),     # Xiaomi: 1 a day, already sent
        7: (SUPPRESSED, "daily_cap"),          # one sent + one in the nightly plan for the same local day
        8: (EMITTED, None),                    # London: 05:15 is quiet, waits for 08:00
        9: (SUPPRESSED, "condition"),          # the rule's `if`: n_app_open_28d >= 1
    }
    assert counts[EMITTED] == 2 and counts["candidates"] == 8
    assert d[1]["due_window"] == int(W1.timestamp() * 1e6) and d[1]["send_at"] == d[1]["fire_at"]
    london_8am = datetime(2026, 10, 20, 7, 0, tzinfo=timezone.utc)
    assert d[8]["send_at"] == int(london_8am.timestamp() * 1e6)
    assert d[8]["due_window"] == int((london_8am + timedelta(minutes=15)).timestamp() * 1e6)

    # a re-run of the same window decides nothing new; the watermark stays
    again = evaluate(settings, W1, loaded, 15, 60)
    assert again[EMITTED] == 0 and again["already_decided"] == 8
    assert TriggerState(settings.ledger_url).watermark() == int(W1.timestamp() * 1e6)

    # a late favourite (its file lands after W1 ran) is pushed once, by the next window, inside the lateness
    write(wh.raw_partition("events", "2026-10-15"),
          [{"ts": FAV, "user_id": 4, "event_type": "fav", "item_id": 100, "seller_id": 50, "category_id": 3}], "events")
    # ... but a drop older than the lateness margin is not
    write(wh.raw_partition("item_changes", "2026-10-20"),
          [{"item_id": 101, "ts": W1 - timedelta(hours=3), "change": "price_drop", "price": 50.0}], "item_changes")
    write(wh.raw_partition("events", "2026-10-16"),
          [{"ts": FAV + timedelta(days=1), "user_id": 1, "event_type": "fav", "item_id": 101, "seller_id": 50,
            "category_id": 3}], "events")
    w2 = W1 + timedelta(minutes=15)
    late = evaluate(settings, w2, loaded, 15, 60)
    d = decisions(settings)
    assert d[("fav_price_drop", 4, 100)]["state"] == EMITTED and d[("fav_price_drop", 4, 100)]["decided_by"] == int(
        w2.timestamp() * 1e6)
    assert ("fav_price_drop", 1, 101) not in d
    assert late[EMITTED] == 1 and TriggerState(settings.ledger_url).watermark() == int(w2.timestamp() * 1e6)


def test_events_after_the_window_end_are_not_seen(wh, tmp_path):
    """Point in time: a replayed window never reads the future, even when the files hold it."""
    settings = Settings.from_env({"HERMES_HOME": str(tmp_path), "HERMES_WAREHOUSE": str(wh.root)})
    early = DROP - timedelta(minutes=1)                               # the drop has not happened yet
    counts = evaluate(settings, early, load_config(), 15, 60)
    assert counts["candidates"] == 0 and decisions(settings) == {}
