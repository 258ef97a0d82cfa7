"""Fatigue rules on tiny inline data, with the edges that bite: local days, exact caps, platform
quotas, opt-outs, dead tokens, unknown scenes in history, empty inputs. in = eligible + suppressed."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from features.fatigue import FatigueRules, apply_fatigue
from tests.features.test_user_features import frame

PLAN = date(2026, 10, 31)
RULES = FatigueRules(max_per_user_per_day=2, min_spacing_hours=4,
                     platform_quotas={"android_huawei": 2, "android_xiaomi": 1},
                     scene_caps={"guess_you_like": (1, 1), "price_drop_fav": (1, 3), "hot_items": (2, 2)})


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def user(uid, tz="Asia/Shanghai", platform="ios", token="tok", opt_in=True):
    return (uid, tz, platform, None if token is None else f"{token}-{uid}", opt_in, utc(2025, 1, 1))


def push(uid, scene, sent_at, pid=None):
    return (pid or f"p-{uid}-{scene}-{sent_at:%d%H%M}", uid, scene, [1], sent_at, None, None, "hermes", 0.5)


def judge(spark, users, pushes, pairs, dead=None, rules=RULES):
    aud = spark.createDataFrame(pairs, "user_id long, scene_id string")
    dead_df = spark.createDataFrame(dead, "user_id long, token_sha256 string") if dead is not None else None
    eligible, suppressed = apply_fatigue(spark, aud, frame(spark, "users", users), frame(spark, "push_log", pushes),
                                         dead_df, rules, PLAN)
    e = {(r.user_id, r.scene_id): r for r in eligible.collect()}
    s = {(r.user_id, r.scene_id): r.reason for r in suppressed.collect()}
    assert len(e) + len(s) == len(pairs), "every audience pair is either eligible or suppressed"
    assert not set(e) & set(s)
    return e, s


def test_a_push_at_23_30_local_counts_for_that_local_day_not_the_utc_day(spark):
    # 2026-10-31 15:30 UTC is 23:30 on 10-31 in Shanghai (UTC+8) but still 10-31 in UTC; 10-30 16:30 UTC
    # is already 00:30 on 10-31 in Shanghai while the UTC day is 10-30.
    users = [user(1), user(2, tz="Europe/London")]
    pushes = [push(1, "hot_items", utc(2026, 10, 30, 16, 30)), push(1, "hot_items", utc(2026, 10, 30, 17, 0)),
              push(2, "hot_items", utc(2026, 10, 30, 16, 30)), push(2, "hot_items", utc(2026, 10, 30, 17, 0))]
    e, s = judge(spark, users, pushes, [(1, "guess_you_like"), (2, "guess_you_like")])
    assert s == {(1, "guess_you_like"): "daily_cap"}     # two pushes on local 10-31 in Shanghai
    assert (2, "guess_you_like") in e                    # in London both were on 10-30


def test_a_user_exactly_at_the_cap_is_suppressed_one_below_is_not(spark):
    users = [user(1), user(2)]
    at_cap = [push(1, "hot_items", utc(2026, 10, 31, 1)), push(1, "hot_items", utc(2026, 10, 31, 2))]
    below = [push(2, "hot_items", utc(2026, 10, 30, 18))]
    e, s = judge(spark, users, at_cap + below, [(1, "price_drop_fav"), (2, "price_drop_fav")])
    assert s == {(1, "price_drop_fav"): "daily_cap"}
    assert e[(2, "price_drop_fav")].sent_on_plan_day == 1


def test_platform_quotas_by_vendor(spark):
    users = [user(1, platform="android_xiaomi"), user(2, platform="android_huawei"), user(3, platform="ios")]
    one_each = [push(u, "hot_items", utc(2026, 10, 30, 20)) for u in (1, 2, 3)]
    e, s = judge(spark, users, one_each, [(u, "price_drop_fav") for u in (1, 2, 3)])
    assert s == {(1, "price_drop_fav"): "platform_quota"}   # Xiaomi allows one a day
    assert {(2, "price_drop_fav"), (3, "price_drop_fav")} == set(e)


def test_opt_outs_missing_and_dead_tokens_are_never_eligible(spark):
    from hashlib import sha256

    users = [user(1, opt_in=False), user(2, token=None), user(3), user(4)]
    dead = [(3, sha256(b"tok-3").hexdigest()), (4, sha256(b"an-old-token").hexdigest())]
    e, s = judge(spark, users, [], [(u, "hot_items") for u in (1, 2, 3, 4)], dead=dead)
    assert s == {(1, "hot_items"): "opted_out", (2, "hot_items"): "no_device_token", (3, "hot_items"): "dead_token"}
    assert (4, "hot_items") in e, "a dead *old* token does not block the user's new one"


def test_scene_cap_counts_local_days_in_its_window(spark):
    users = [user(1), user(2)]
    pushes = [push(1, "price_drop_fav", utc(2026, 10, 29, 12)),   # local 10-29: inside a 3-day window
              push(2, "price_drop_fav", utc(2026, 10, 28, 12)),   # local 10-28: outside
              push(2, "guess_you_like", utc(2026, 10, 30, 12))]   # cap 1 per 1 day: yesterday does not count
    e, s = judge(spark, users, pushes, [(1, "price_drop_fav"), (2, "price_drop_fav"), (2, "guess_you_like")])
    assert s == {(1, "price_drop_fav"): "scene_cap"}
    assert {(2, "price_drop_fav"), (2, "guess_you_like")} == set(e)


def test_min_spacing_moves_the_earliest_send_and_suppresses_only_when_the_day_is_gone(spark):
    users = [user(1, tz="UTC"), user(2, tz="UTC")]
    pushes = [push(1, "hot_items", utc(2026, 10, 31, 10)),   # next allowed 14:00 on the plan day
              push(2, "hot_items", utc(2026, 10, 30, 22))]   # next allowed 02:00 on the plan day
    rules = FatigueRules(3, 4, {}, {"hot_items": (5, 1), "guess_you_like": (1, 1)})
    e, _ = judge(spark, users, pushes, [(1, "guess_you_like"), (2, "guess_you_like")], rules=rules)
    assert e[(1, "guess_you_like")].earliest_send_at.replace(tzinfo=timezone.utc) == utc(2026, 10, 31, 14)
    assert e[(2, "guess_you_like")].earliest_send_at.replace(tzinfo=timezone.utc) == utc(2026, 10, 31, 2)
    late = [push(1, "hot_items", utc(2026, 10, 31, 21))]      # + 4 h is past the end of the local day
    _, s = judge(spark, [user(1, tz="UTC")], late, [(1, "guess_you_like")], rules=rules)
    assert s == {(1, "guess_you_like"): "min_spacing"}


def test_unknown_scene_ids_in_history_count_toward_the_daily_cap_only(spark):
    users = [user(1)]
    pushes = [push(1, "retired_scene", utc(2026, 10, 31, 1)), push(1, "retired_scene", utc(2026, 10, 31, 2))]
    e, s = judge(spark, users, pushes, [(1, "hot_items")])
    assert s == {(1, "hot_items"): "daily_cap"}


def test_one_reason_per_pair_in_rule_order(spark):
    users = [user(1, platform="android_xiaomi", opt_in=False)]
    pushes = [push(1, "hot_items", utc(2026, 10, 31, 1)), push(1, "hot_items", utc(2026, 10, 31, 2))]
    _, s = judge(spark, users, pushes, [(1, "hot_items")])
    assert s == {(1, "hot_items"): "opted_out"}


def test_empty_inputs_give_empty_outputs(spark):
    e, s = judge(spark, [user(1)], [], [])
    assert e == {} and s == {}
    e, s = judge(spark, [user(1)], [], [(1, "hot_items")])
    assert list(e) == [(1, "hot_items")] and s == {}


@pytest.mark.parametrize("tz,start_utc", [("Asia/Shanghai", datetime(2026, 10, 30, 16)),
                                          ("America/Los_Angeles", datetime(2026, 10, 31, 7))])
def test_eligible_pairs_carry_the_plan_days_local_window(spark, tz, start_utc):
    e, _ = judge(spark, [user(1, tz=tz)], [], [(1, "hot_items")])
    row = e[(1, "hot_items")]
    assert row.earliest_send_at == start_utc
    assert row.plan_day_end - row.earliest_send_at == timedelta(hours=24)


def test_a_far_east_user_is_planned_for_the_local_day_after_the_send_day(spark):
    """Sydney (UTC+11 in summer) with a plan day lead of 1: the plan day is Sunday 11-01, whose local day runs from
    Saturday 13:00 UTC; the daily cap counts the pushes of local Sunday, not those of local Saturday."""
    users = [user(1, tz="Australia/Sydney"), user(2, tz="Australia/Sydney"), user(3, tz="Europe/London")]
    pushes = [push(1, "hot_items", utc(2026, 10, 31, 1)), push(1, "hot_items", utc(2026, 10, 31, 3)),   # local Sat
              push(2, "hot_items", utc(2026, 10, 31, 14)), push(2, "hot_items", utc(2026, 10, 31, 15))]  # local Sun
    aud = spark.createDataFrame([(1, "price_drop_fav"), (2, "price_drop_fav"), (3, "price_drop_fav")],
                                "user_id long, scene_id string")
    eligible, suppressed = apply_fatigue(spark, aud, frame(spark, "users", users), frame(spark, "push_log", pushes),
                                         None, RULES, PLAN, {"Australia/Sydney": 1, "Europe/London": 0})
    e = {r.user_id: r for r in eligible.collect()}
    assert {r.user_id: r.reason for r in suppressed.collect()} == {2: "daily_cap"}
    assert e[1].plan_date == date(2026, 11, 1) and e[3].plan_date == PLAN
    assert e[1].earliest_send_at == datetime(2026, 10, 31, 13) and e[1].sent_on_plan_day == 0
    assert e[1].plan_day_end == datetime(2026, 11, 1, 13)
    assert e[3].earliest_send_at == datetime(2026, 10, 31, 0)


def test_the_persistent_holdout_is_never_eligible_and_is_stable(spark):
    from dataclasses import replace

    from features.holdout import in_holdout

    ids = list(range(1, 2001))
    held = {u for u, h in zip(ids, in_holdout(ids, 0.05)) if h}
    assert 60 < len(held) < 140                                     # ~5 % of 2,000 (sd ~ 10)
    assert held <= {u for u, h in zip(ids, in_holdout(ids, 0.10)) if h}, "a larger share only adds users"
    assert not in_holdout(ids, 0.0).any()
    users = [user(u) for u in ids]
    e, s = judge(spark, users, [], [(u, "hot_items") for u in ids], rules=replace(RULES, holdout_share=0.05))
    assert {u for (u, _), r in s.items() if r == "holdout"} == held   # the same users Spark and numpy agree on
    assert len(e) == len(ids) - len(held)
    # holdout comes first: an opted-out holdout user is counted as holdout
    e, s = judge(spark, [user(u, opt_in=False) for u in ids[:200]], [], [(u, "hot_items") for u in ids[:200]],
                 rules=replace(RULES, holdout_share=0.05))
    assert {r for r in s.values()} == {"holdout", "opted_out"}
