"""User features on tiny inline data: windows, local time, affinity, point-in-time correctness."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.contract import RAW_SCHEMAS
from features.user_features import user_features

AS_OF = datetime(2026, 10, 31, tzinfo=timezone.utc)


def at(days_before: float, hour: int = 0) -> datetime:
    return AS_OF - timedelta(days=days_before) + timedelta(hours=hour)


def frame(spark, table, rows):
    from pyspark.sql.pandas.types import from_arrow_schema

    return spark.createDataFrame(rows, schema=from_arrow_schema(RAW_SCHEMAS[table]))


@pytest.fixture
def users(spark):
    return frame(spark, "users", [
        (1, "Asia/Shanghai", "ios", "tok-1", True, at(100)),
        (2, "Europe/London", "android_huawei", None, False, at(50)),
        (3, "Asia/Shanghai", "android_xiaomi", "tok-3", True, at(10)),
        (4, "Asia/Shanghai", "ios", "tok-4", True, AS_OF + timedelta(hours=1)),  # registers after as_of
    ])


def ev(ts, user, etype, item=None, seller=None, cat=None):
    return (ts, user, etype, item, seller, cat)


@pytest.fixture
def events(spark):
    return frame(spark, "events", [
        # user 1: opens at 12:00 UTC = 20:00 Shanghai, on three days; views in category 7 mostly
        ev(at(0.5, 0).replace(hour=12), 1, "app_open"),
        ev(at(3).replace(hour=12), 1, "app_open"),
        ev(at(20).replace(hour=12), 1, "app_open"),
        ev(at(0.5), 1, "view", 10, 100, 7),
        ev(at(2), 1, "view", 11, 100, 7),
        ev(at(2), 1, "fav", 11, 100, 7),
        ev(at(5), 1, "view", 12, 101, 9),
        ev(at(40), 1, "buy", 13, 102, 9),            # outside the 28-day lookback
        ev(AS_OF + timedelta(minutes=1), 1, "app_open"),  # after as_of: must not count
        # user 2: one open at 08:00 UTC = 08:00 or 09:00 London
        ev(at(6).replace(hour=8), 2, "app_open"),
    ])


@pytest.fixture
def push_log(spark):
    return frame(spark, "push_log", [
        ("p1", 1, "guess_you_like", [10], at(2), at(2) + timedelta(minutes=5), 10, "baseline", 0.9),
        ("p2", 1, "hot_items", [11], at(10), None, None, "baseline", 0.9),
        # opened only after as_of: sent counts, the open must not
        ("p3", 1, "hot_items", [12], AS_OF - timedelta(minutes=10), AS_OF + timedelta(minutes=5), None,
         "baseline", 0.9),
    ])


@pytest.fixture
def features(users, events, push_log):
    rows = user_features(users, events, push_log, AS_OF).collect()
    return {r.user_id: r.asDict() for r in rows}


def test_one_row_per_user_registered_before_as_of(features):
    assert sorted(features) == [1, 2, 3]


def test_windowed_counts_are_point_in_time(features):
    u1 = features[1]
    assert (u1["n_app_open_1d"], u1["n_app_open_7d"], u1["n_app_open_28d"]) == (1, 2, 3)
    assert (u1["n_view_1d"], u1["n_view_7d"], u1["n_view_28d"]) == (1, 3, 3)
    assert u1["n_buy_28d"] == 0, "a buy 40 days ago is outside the lookback"
    assert u1["days_since_last_open"] == 0


def test_hour_profile_is_in_local_time_and_sums_to_one(features):
    u1, u2 = features[1], features[2]
    assert u1["peak_local_hour"] == 20          # 12:00 UTC in Asia/Shanghai
    assert u2["peak_local_hour"] in (8, 9)      # 08:00 UTC in Europe/London (GMT or BST)
    assert sum(u1["open_hour_profile"]) == pytest.approx(1.0)
    assert u1["open_hour_profile"][20] == max(u1["open_hour_profile"])


def test_weekend_hours_count_the_users_local_days_off(spark, users, push_log):
    """Friday 17:00 UTC is Saturday 01:00 in Shanghai (a day off there); Sunday 20:00 UTC is Sunday in Los Angeles
    but Monday 04:00 in Shanghai; with a Friday-Saturday weekend the Shanghai Friday evening counts instead."""
    friday = datetime(2026, 10, 23, 17, tzinfo=timezone.utc)
    sunday = datetime(2026, 10, 25, 20, tzinfo=timezone.utc)
    wednesday = datetime(2026, 10, 28, 12, tzinfo=timezone.utc)
    opens = frame(spark, "events", [ev(friday, 1, "app_open"), ev(sunday, 1, "app_open"),
                                    ev(wednesday, 1, "app_open"), ev(sunday, 2, "app_open")])
    sat_sun = {r.user_id: r for r in user_features(users, opens, push_log, AS_OF).collect()}
    u1, u2 = sat_sun[1], sat_sun[2]
    assert u1["app_open_hours"][1] == 1 and u1["app_open_hours"][4] == 1 and u1["app_open_hours"][20] == 1
    assert [h for h, n in enumerate(u1["app_open_hours_weekend"]) if n] == [1]
    assert u2["app_open_hours_weekend"][20] == 1 and sum(u2["app_open_hours_weekend"]) == 1   # GMT from Oct 25
    assert sum(sat_sun[3]["app_open_hours_weekend"]) == 0
    fri_sat = {r.user_id: r for r in user_features(users, opens, push_log, AS_OF, weekend_days=(5, 6)).collect()}
    assert [h for h, n in enumerate(fri_sat[1]["app_open_hours_weekend"]) if n] == [1]   # Saturday 01:00 local
    assert sum(fri_sat[2]["app_open_hours_weekend"]) == 0                               # Sunday is a working day
    none = {r.user_id: r for r in user_features(users, opens, push_log, AS_OF, weekend_days=()).collect()}
    assert sum(none[1]["app_open_hours_weekend"]) == 0 and sum(none[1]["app_open_hours"]) == 3


def test_category_affinity_weights_strong_signals(features):
    u1 = features[1]
    assert u1["top_categories"][0] == 7
    assert u1["top_category_shares"][0] > 0.7   # view 1 + view 1 + fav 3 against one view of 9


def test_users_without_history_get_neutral_features_not_nulls(features):
    u3 = features[3]
    assert u3["n_view_28d"] == 0 and u3["pushes_sent_28d"] == 0
    assert u3["open_hour_profile"] == pytest.approx([1 / 24] * 24)
    assert u3["top_categories"] == []
    assert u3["days_since_last_open"] is None and u3["peak_local_hour"] is None
    assert u3["has_device_token"] is True and features[2]["has_device_token"] is False


def test_push_history_counts_only_opens_seen_by_as_of(features):
    u1 = features[1]
    assert (u1["pushes_sent_7d"], u1["pushes_sent_28d"]) == (2, 3)
    assert (u1["pushes_opened_7d"], u1["pushes_opened_28d"]) == (1, 1)


def test_job_rerun_overwrites_its_partition(world, settings, spark):
    from core.config.loader import load_config
    from jobs import rollups
    from jobs.user_features import TABLE, run

    loaded = load_config()
    ds = world["spec"].last_ds
    rollups.run(spark, settings, ds, loaded)      # the features read the events' daily rollups
    first = run(spark, settings, ds, loaded)["tables"][TABLE]
    second = run(spark, settings, ds, loaded)["tables"][TABLE]
    assert first["rows"] == second["rows"] == world["counts"]["users"]
    earlier = run(spark, settings, world["spec"].start.isoformat(), loaded)["tables"][TABLE]
    # Another date is another partition; the first one is untouched.
    assert earlier["path"] != first["path"]
    assert spark.read.parquet(first["path"]).count() == world["counts"]["users"]
