"""The events' daily rollups: each raw partition rolled up once, again when its files change, never read stale;
and the features from them are exactly the features from the events."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.config.loader import load_config
from core.warehouse import Warehouse
from jobs import rollups


@pytest.fixture
def own(world, settings, tmp_path):
    """The session world's raw tables in a warehouse of this test's own (it rewrites raw partitions)."""
    for table in ("users", "items", "item_changes", "events", "push_log"):
        shutil.copytree(world["warehouse"] / "raw" / table, tmp_path / "warehouse" / "raw" / table)
    return replace(settings, warehouse=tmp_path / "warehouse")


def _user_day_total(spark, wh, ds):
    from features.rollups import EVENT_TYPES

    df = spark.read.parquet(str(wh.table("rollups/user_day"))).where(f"ds = '{ds}'")
    return df.selectExpr(f"sum({' + '.join(f'n_{et}' for et in EVENT_TYPES)}) AS n").collect()[0]["n"]


def test_each_raw_partition_is_rolled_up_once_and_again_only_when_it_changes(spark, own, world, monkeypatch):
    loaded = load_config()
    wh = Warehouse(own.warehouse)
    last = world["spec"].last_ds
    days = sorted(p.name.removeprefix("ds=") for p in wh.raw("events").iterdir())
    assert len(days) == world["spec"].days

    first = rollups.run(spark, own, last, loaded)
    assert first["rolled_up"] == days and first["kept"] == 0 and first["rows"] > 0
    # the history's opened pushes logged their own app opens: found, and counted in the partitions' sources
    opened = sum(pq.read_table(wh.raw("push_log"), columns=["opened_at"])["opened_at"].is_valid().to_numpy(
        zero_copy_only=False))
    sources = [json.loads((wh.table("rollups/_sources") / f"ds={d}.json").read_text()) for d in days]
    assert opened > 0 and first["push_driven_events"] == sum(s["push_driven_events"] for s in sources) >= opened
    # the counts add up: every event of a partition is in exactly one user-day count of it
    for ds in (days[0], days[-1]):
        assert _user_day_total(spark, wh, ds) == pq.read_table(wh.raw_partition("events", ds)).num_rows
    again = rollups.run(spark, own, last, loaded)
    assert again["rolled_up"] == [] and again["kept"] == len(days)

    # a re-delivered day (new file times): readers refuse it, naming it, until the stage rolls it up again
    changed = days[3]
    for f in wh.raw_partition("events", changed).iterdir():
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(RuntimeError, match=f"without a fresh rollup: ds={changed}.*rollups stage"):
        rollups.read_activity(spark, wh, days[0], last)
    assert rollups.run(spark, own, last, loaded)["rolled_up"] == [changed]

    # a corrected day with fewer events: its rollup follows the new file
    part = wh.raw_partition("events", changed)
    files = [f for f in part.iterdir() if f.suffix == ".parquet"]
    table = pq.read_table(files[0])
    for f in files:
        f.unlink()
    pq.write_table(table.slice(0, table.num_rows // 2), part / "part-corrected.parquet")
    assert rollups.run(spark, own, last, loaded)["rolled_up"] == [changed]
    assert _user_day_total(spark, wh, changed) == table.num_rows // 2
    # ... and a day corrected to no chats at all leaves no chats of its old rollup behind
    chats = spark.read.parquet(str(wh.table("rollups/seller_day"))).where(f"ds = '{changed}'").count()
    no_chats = pq.read_table(part / "part-corrected.parquet")
    no_chats = no_chats.filter(pc.not_equal(no_chats["event_type"], "chat"))
    (part / "part-corrected.parquet").unlink()
    pq.write_table(no_chats, part / "part-no-chats.parquet")
    assert chats > 0 and rollups.run(spark, own, last, loaded)["rolled_up"] == [changed]
    assert not wh.partition("rollups/seller_day", changed).exists()
    assert _user_day_total(spark, wh, changed) == no_chats.num_rows

    # receipts delivered again (opens that came in late) mark other events push-driven: their day and the next
    # are rolled up again
    for f in wh.raw_partition("push_log", days[5]).iterdir():
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert rollups.run(spark, own, last, loaded)["rolled_up"] == days[5:7]

    # a day withdrawn from raw: its rollups go too, and nothing reads them meanwhile
    shutil.rmtree(part)
    with pytest.raises(RuntimeError, match=f"raw partitions that are gone: ds={changed}"):
        rollups.read_activity(spark, wh, days[0], last)
    assert rollups.run(spark, own, last, loaded)["removed"] == [changed]
    assert not wh.partition("rollups/user_day", changed).exists()
    manifests = [json.loads((wh.table("rollups/_sources") / f"ds={d}.json").read_text()) for d in days if d != changed]
    assert rollups.read_activity(spark, wh, days[0], last).user_day.count() == sum(m["rows"]["user_day"] for m in manifests)

    # another definition of the rollups: every partition is rolled up again
    monkeypatch.setattr("features.rollups.ROLLUP_VERSION", 99)
    assert rollups.run(spark, own, last, loaded)["rolled_up"] == [d for d in days if d != changed]

    # a range without events reads as empty rollups of the same columns
    empty = rollups.read_activity(spark, wh, "2020-01-01", "2020-01-31")
    assert empty.user_day.count() == 0 and "n_app_open" in empty.user_day.columns


def test_features_from_stored_rollups_equal_the_features_from_the_events(spark, own, world):
    """user_features and the pair features (both paths) from rollups/ exactly as from raw/events."""
    from features.pairs import pair_features
    from features.user_features import user_features
    from jobs.entry import as_of_end

    rollups.run(spark, own, world["spec"].last_ds, load_config())
    wh = Warehouse(own.warehouse)
    last = world["spec"].last_ds
    first = (date.fromisoformat(last) - timedelta(days=28)).isoformat()
    users, pushes = wh.read_raw(spark, "users"), wh.read_raw(spark, "push_log", first, last)
    stored, raw = rollups.read_activity(spark, wh, first, last), wh.read_raw(spark, "events", first, last)

    def rows(events):
        return sorted(user_features(users, events, pushes, as_of_end(last)).collect(), key=lambda r: r["user_id"])

    from_rollups, from_events = rows(stored), rows(raw)
    assert len(from_rollups) == world["counts"]["users"]
    assert sum(r["n_app_open_28d"] for r in from_rollups) > 0 and any(r["top_categories"] for r in from_rollups)
    assert from_rollups == from_events

    day = (date.fromisoformat(last) - date(1970, 1, 1)).days + 1
    items = wh.read_raw(spark, "items")
    keys = (users.select("user_id").crossJoin(items.orderBy("item_id").limit(5).select("item_id"))
            .selectExpr("user_id", "item_id", "'guess_you_like' AS scene_id", f"{day} AS day",
                        "CAST(user_id % 24 AS INT) AS local_hour"))
    changes = wh.read_raw(spark, "item_changes")
    for key_day in (None, day):
        a, b = (pair_features(keys, users, ev, pushes, changes, items, {"guess_you_like": 0}, key_day=key_day)
                .toPandas().sort_values(["user_id", "item_id"]).reset_index(drop=True) for ev in (stored, raw))
        assert len(a) == keys.count() > 1000 and a["u_opens_7d"].sum() > 0 and (a["hour_share_log"] != 0).any()
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def test_local_hours_from_15_minute_slots_equal_each_events_own(spark):
    """Half- and quarter-hour zones, and daylight saving changes (Lord Howe's is 30 minutes): the local hour of
    an app open's slot is the local hour of the open itself."""
    import random

    from pyspark.sql import functions as F

    from features.rollups import opens_by_local_hour, roll_up
    from tests.features.test_user_features import frame

    zones = ["Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Europe/London", "Australia/Lord_Howe",
             "America/St_Johns", "Asia/Shanghai"]
    users = frame(spark, "users", [(i, tz, "ios", "t", True, datetime(2025, 1, 1, tzinfo=timezone.utc))
                                   for i, tz in enumerate(zones)])
    rng = random.Random(5)
    # around the 2026 changes of these zones: March/April and October/November
    spans = [(datetime(2026, 3, 7, tzinfo=timezone.utc), 30), (datetime(2026, 10, 2, tzinfo=timezone.utc), 32)]
    events = [(start + timedelta(seconds=rng.randrange(days * 86400)), u, "app_open", None, None, None)
              for u in range(len(zones)) for start, days in spans for _ in range(1500)]
    ev = frame(spark, "events", events)
    own = (ev.join(users.select("user_id", "tz"), "user_id")
           .groupBy("user_id", F.hour(F.from_utc_timestamp("ts", F.col("tz"))).alias("local_hour"))
           .agg(F.count("*").alias("n")))
    slots = (opens_by_local_hour(roll_up(ev).open_slots, users)
             .groupBy("user_id", "local_hour").agg(F.sum("n").alias("n")))
    a = sorted(tuple(r) for r in own.collect())
    assert len(a) == 24 * len(zones) and sum(r[2] for r in a) == len(events)
    assert sorted(tuple(r) for r in slots.collect()) == a


def test_a_pushs_own_open_and_views_count_as_engagement_but_not_as_habit_or_popularity(spark):
    """The app open a push's opening logged and the views of its items right after: in the user's counts (with
    n_via_push), not in their hours, their categories or the items' views; the user's own opens and views are."""
    from features.rollups import roll_up
    from tests.features.test_user_features import frame

    t0 = datetime(2026, 10, 30, 20, 0, 7, tzinfo=timezone.utc)
    pushes = frame(spark, "push_log", [("p1", 1, "top_picks", [11, 12], t0 - timedelta(minutes=25), t0, 11,
                                        "hermes", 0.8),
                                       ("p2", 2, "top_picks", [11], t0 - timedelta(minutes=25), None, None,
                                        "hermes", 0.8)])
    events = frame(spark, "events", [
        (t0 + timedelta(seconds=1), 1, "app_open", None, None, None),       # the push's open (clocks 1 s apart)
        (t0 + timedelta(seconds=5), 1, "view", 11, 100, 7),                 # its click
        (t0 + timedelta(minutes=3), 1, "view", 12, 100, 7),                 # the feed's other item
        (t0 + timedelta(minutes=3), 1, "view", 13, 100, 8),                 # an item the push did not carry
        (t0 + timedelta(hours=3), 1, "app_open", None, None, None),         # their own visit later
        (t0 + timedelta(hours=3, seconds=9), 1, "view", 11, 100, 7),        # ... back to the pushed item
        (t0 + timedelta(seconds=1), 2, "app_open", None, None, None),       # a user whose push was not opened
        (t0 + timedelta(seconds=5), 2, "view", 11, 100, 7),
    ])
    plain, act = roll_up(events), roll_up(events, push_log=pushes)
    day = {r["user_id"]: r for r in act.user_day.collect()}
    assert (day[1]["n_app_open"], day[1]["n_view"], day[1]["n_via_push"]) == (2, 4, 3)
    assert (day[2]["n_app_open"], day[2]["n_view"], day[2]["n_via_push"]) == (1, 1, 0)
    assert sum(r["n"] for r in plain.open_slots.collect()) == 3
    assert sorted((r["user_id"], r["slot"].hour, r["n"]) for r in act.open_slots.collect()) == [(1, 23, 1), (2, 20, 1)]
    assert {r["item_id"]: r["n_view"] for r in act.item_day.collect()} == {11: 2, 13: 1}
    assert {(r["user_id"], r["category_id"]): r["w"] for r in act.user_category_day.collect()} == {
        (1, 7): 1.0, (1, 8): 1.0, (2, 7): 1.0}
    assert {(r["user_id"], r["category_id"]): r["w"] for r in plain.user_category_day.collect()} == {
        (1, 7): 3.0, (1, 8): 1.0, (2, 7): 1.0}


def test_the_interest_rollup_keeps_who_favourited_or_carted_which_item_and_followed_which_seller_each_day(spark):
    """interest_day: one row per (user, day, item) favourited or carted and per (user, day, seller) followed, pushed
    or not; views and chats are not interest, a repeat is one row, a follow keeps no item."""
    from pyspark.sql import functions as F

    from features.rollups import roll_up
    from tests.features.test_user_features import frame

    t0 = datetime(2026, 10, 30, 9, 0, tzinfo=timezone.utc)
    events = frame(spark, "events", [
        (t0, 1, "fav", 11, 100, 7), (t0 + timedelta(hours=1), 1, "fav", 11, 100, 7),   # twice: one row
        (t0, 1, "cart", 12, 101, 7), (t0, 1, "view", 13, 102, 7), (t0, 1, "chat", 14, 103, 7),
        (t0, 2, "follow_seller", 15, 104, None), (t0 + timedelta(days=1), 2, "fav", 11, 100, 7),
    ])
    got = sorted((r["user_id"], r["day"] - 20756, r["item_id"], r["seller_id"])
                 for r in roll_up(events).interest_day.collect())
    assert got == [(1, 0, 11, None), (1, 0, 12, None), (2, 0, None, 104), (2, 1, 11, None)]
    assert roll_up(events).for_users(F.col("user_id") == 2).interest_day.count() == 2


def test_features_refuse_an_as_of_that_is_not_a_utc_midnight(spark):
    from features.user_features import user_features
    from tests.features.test_user_features import frame

    users = frame(spark, "users", [])
    with pytest.raises(ValueError, match="not a UTC midnight"):
        user_features(users, frame(spark, "events", []), frame(spark, "push_log", []),
                      datetime(2026, 10, 31, 6, tzinfo=timezone.utc))


def test_counts_that_do_not_add_up_name_the_rows_that_could_not_be_counted(spark, own, world):
    """A partition that skipped validation (an unknown event type, a row without a user): the rollup refuses it and
    says which rows it could not count and what to run."""
    loaded = load_config()
    wh = Warehouse(own.warehouse)
    last = world["spec"].last_ds
    f = next(wh.raw_partition("events", last).glob("*.parquet"))
    t = pq.read_table(f)
    kinds = t["event_type"].to_pylist()
    kinds[0] = "teleport"
    t = t.set_column(t.schema.get_field_index("event_type"), "event_type", pa.array(kinds, pa.string()))
    pq.write_table(t, f)
    with pytest.raises(RuntimeError, match=r"rule=counts_add_up: .* uncounted: 1 rows of event_type 'teleport' "
                                           rf"\(not in the contract\)\. Validate the partition: hermes validate-raw "
                                           rf"--ds {last} --table events"):
        rollups.run(spark, own, last, loaded)
