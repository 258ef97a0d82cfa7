"""Pair features are point-in-time: nothing from the push's own day or later leaks into them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pyspark.sql import functions as F

from features.pairs import pair_features
from tests.features.test_user_features import frame

D = datetime(2026, 10, 20, tzinfo=timezone.utc)           # the day the push is sent
DAY = (D.date() - datetime(1970, 1, 1).date()).days


def t(days: float) -> datetime:
    return D + timedelta(days=days)


@pytest.fixture
def inputs(spark):
    users = frame(spark, "users", [(1, "Asia/Shanghai", "ios", "tok", True, t(-100))])
    items = frame(spark, "items", [(10, 5, 7, 80.0, t(-3), "on_sale", "A"), (11, 6, 9, 10.0, t(-3), "on_sale", "B")])
    changes = frame(spark, "item_changes", [(10, t(-3), "listed", 100.0), (10, t(-1), "price_drop", 80.0),
                                            (11, t(-3), "listed", 10.0)])
    events = [(t(-2).replace(hour=12), 1, "app_open", None, None, None),     # 20:00 local
              (t(-2), 1, "view", 10, 5, 7), (t(-2), 1, "fav", 10, 5, 7), (t(-5), 1, "view", 11, 6, 9)]
    pushes = [("old", 1, "hot_items", [11], t(-1).replace(hour=12), t(-1).replace(hour=13), None, "baseline", 0.9)]
    return users, items, changes, events, pushes


def features(spark, inputs, extra_events=(), extra_pushes=(), extra_changes=()):
    users, items, changes, events, pushes = inputs
    keys = spark.createDataFrame([(1, 10, "guess_you_like", DAY, 20)],
                                 "user_id long, item_id long, scene_id string, day int, local_hour int")
    ch = changes.unionByName(frame(spark, "item_changes", list(extra_changes))) if extra_changes else changes
    row = pair_features(keys, users, frame(spark, "events", events + list(extra_events)),
                        frame(spark, "push_log", pushes + list(extra_pushes)), ch, items,
                        {"guess_you_like": 0, "hot_items": 1}).collect()
    assert len(row) == 1
    return row[0].asDict()


def test_features_describe_the_days_before(spark, inputs):
    f = features(spark, inputs)
    assert f["u_opens_7d"] == 1 and f["u_views_7d"] == 2 and f["u_favs_28d"] == 1
    assert f["u_pushes_1d"] == 1 and f["u_pushes_7d"] == 1
    assert f["aff_share"] == pytest.approx(4 / 5)          # view 1 + fav 3 in category 7, view 1 in 9
    assert f["i_drop_pct"] == pytest.approx(0.2)
    assert f["hour_share_log"] > 0                          # the one open was at 20:00 local, the push hour
    assert f["scene_code"] == 0


def test_a_crafted_leak_from_the_send_day_or_later_changes_nothing(spark, inputs):
    clean = features(spark, inputs)
    leaks = [(t(0.01), 1, "fav", 10, 5, 7), (t(0.5), 1, "app_open", None, None, None),
             (t(0.6), 1, "view", 10, 5, 7), (t(3), 1, "buy", 10, 5, 7)]
    leaked_pushes = [("later", 1, "hot_items", [10], t(0.4), t(0.41), 10, "baseline", 0.9)]
    later_drop = [(10, t(0.2), "price_drop", 50.0)]
    assert features(spark, inputs, leaks, leaked_pushes, later_drop) == clean


def test_the_one_day_fast_path_gives_the_same_features_as_the_general_one(spark, world):
    """Scoring uses key_day (filtered aggregates); training the general windows. On the session's world, for
    every user x a few items on one day, the two agree exactly."""
    from datetime import date

    from core.warehouse import Warehouse

    wh = Warehouse(world["warehouse"])
    last = world["spec"].last_ds
    day = (date.fromisoformat(last) - date(1970, 1, 1)).days
    users = wh.read_raw(spark, "users")
    items = wh.read_raw(spark, "items")
    # a few items, among them the ones favourited last (so some pairs are of the user's interest)
    liked = (wh.read_raw(spark, "events").where("event_type = 'fav'").orderBy(F.col("ts").desc()).limit(4)
             .select("item_id"))
    some = items.orderBy("item_id").limit(4).select("item_id").unionByName(liked).distinct()
    keys = (users.select("user_id").crossJoin(some)
            .selectExpr("user_id", "item_id", "'guess_you_like' AS scene_id", f"{day} AS day",
                        "CAST(user_id % 24 AS INT) AS local_hour"))
    args = (users, wh.read_raw(spark, "events"), wh.read_raw(spark, "push_log"), wh.read_raw(spark, "item_changes"),
            items, {"guess_you_like": 0})
    general = pair_features(keys, *args).toPandas().sort_values(["user_id", "item_id"]).reset_index(drop=True)
    fast = pair_features(keys, *args, key_day=day).toPandas().sort_values(["user_id", "item_id"]).reset_index(drop=True)
    assert len(general) == keys.count() > 1000
    assert general["u_opens_7d"].sum() > 0 and general["i_views_7d_log"].sum() > 0   # not all zeros
    assert 0 < general["interest"].sum() < len(general)
    import pandas as pd
    pd.testing.assert_frame_equal(fast[general.columns], general, check_exact=False, rtol=1e-12)
    # a scheduled scene is scored at its own hour, whatever hour the key carries: as if the key had that hour
    from features.pairs import one_day_features, one_day_sides

    sides = one_day_sides(users, args[1], args[2], args[3], items, day, some)
    fixed = one_day_features(keys, sides, {"guess_you_like": 0}, scene_hours={"guess_you_like": 18}).toPandas()
    at_18 = pair_features(keys.withColumn("local_hour", F.lit(18)), *args, key_day=day).toPandas()
    fixed, at_18 = (x.sort_values(["user_id", "item_id"]).reset_index(drop=True) for x in (fixed, at_18))
    assert (fixed["local_hour"] == 18).all() and fixed["hour_share_log"].nunique() > 10
    pd.testing.assert_frame_equal(fixed[at_18.columns], at_18, check_exact=False, rtol=1e-12)


def test_the_send_hour_share_spreads_opens_to_neighbouring_hours(spark, inputs):
    """hour_share_log at 20:00 local: an open at 20:00 counts most, one at 19:00 still counts (habits are bumps,
    not single hours), one at 08:00 pulls the share below the flat 1/24 (log < 0)."""
    users, items, changes, events, pushes = inputs
    others = [e for e in events if e[2] != "app_open"]
    share = {}
    for name, utc_hour in (("at_20", 12), ("at_19", 11), ("at_08", 0)):     # Asia/Shanghai is UTC+8
        opens = [(t(-d).replace(hour=utc_hour), 1, "app_open", None, None, None) for d in (2, 3, 4)]
        share[name] = features(spark, (users, items, changes, others + opens, pushes))["hour_share_log"]
    assert share["at_20"] > share["at_19"] > 0 > share["at_08"]


def test_interest_is_a_fav_or_cart_of_the_item_or_a_follow_of_its_seller_in_the_days_before(spark, inputs):
    """The pair (user 1, item 10): favourited at t(-2) in the fixture; a follow of item 10's seller (5) counts too,
    a fav of another item or a follow of another seller does not, nor anything older than INTEREST_DAYS or from the
    send day on."""
    from features.pairs import INTEREST_DAYS

    assert features(spark, inputs)["interest"] == 1
    users, items, changes, events, pushes = inputs
    no_fav = [e for e in events if e[2] != "fav"]
    assert features(spark, (users, items, changes, no_fav, pushes))["interest"] == 0
    cases = {((t(-3), 1, "follow_seller", None, 5, None),): 1, ((t(-3), 1, "cart", 10, 5, 7),): 1,
             ((t(-3), 1, "follow_seller", None, 6, None), (t(-3), 1, "fav", 11, 6, 9)): 0,
             ((t(-INTEREST_DAYS - 1), 1, "follow_seller", None, 5, None),): 0,
             ((t(0.1), 1, "follow_seller", None, 5, None), (t(0.2), 1, "cart", 10, 5, 7)): 0}
    for extra, want in cases.items():
        assert features(spark, (users, items, changes, no_fav, pushes), extra_events=extra)["interest"] == want, extra
