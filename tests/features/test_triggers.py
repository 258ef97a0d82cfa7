"""Trigger rules per kind, their exceptions, and the rule language on pandas (no I/O)."""
from __future__ import annotations

import pandas as pd
import pytest

from core.config.schema import Trigger
from features import triggers as ft

H = ft.US_H
M = ft.US_MIN
T0 = 1_800_000_000 * 1_000_000 - (1_800_000_000 * 1_000_000) % ft.US_DAY   # a UTC midnight


def rule(event: str, **kw) -> Trigger:
    when = {"event": event, **kw.pop("when", {})}
    return Trigger.model_validate({"id": f"r_{event}", "name": "x", "when": when, "then": {"scene": "s"}, **kw})


def events(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ts", "user_id", "event_type", "item_id", "seller_id"])


def changes(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "ts", "change", "price"])


def test_price_drop_pushes_who_favourited_before_a_big_enough_drop():
    r = rule("price_drop", when={"min_drop_pct": 10, "lookback_days": 7})
    ch = changes((1, T0, "listed", 100.0), (1, T0 + 10 * H, "price_drop", 80.0),     # -20%: counts
                 (2, T0, "listed", 100.0), (2, T0 + 10 * H, "price_drop", 95.0))     # -5%: too small
    ev = events((T0 + 2 * H, 7, "fav", 1, 50), (T0 + 2 * H, 8, "cart", 1, 50),        # both interested in 1
                (T0 + 11 * H, 9, "fav", 1, 50),                                     # after the drop: no
                (T0 - 8 * ft.US_DAY, 10, "fav", 1, 50),                              # beyond lookback: no
                (T0 + 2 * H, 11, "fav", 2, 50))
    c = ft.price_drop(r, ch, ev, T0 + 10 * H, T0 + 10 * H + 15 * M)
    assert sorted(c["user_id"]) == [7, 8] and set(c["item_id"]) == {1}
    assert set(c["event_ts"]) == {T0 + 10 * H} and set(c["detail"]) == {"drop 20%"}
    only_favs = rule("price_drop", when={"items": "favourited", "min_drop_pct": 10, "lookback_days": 7})
    assert list(ft.price_drop(only_favs, ch, ev, T0 + 10 * H, T0 + 11 * H)["user_id"]) == [7]
    # not due yet in an earlier window, due in the window holding event + delay
    delayed = rule("price_drop", when={"min_drop_pct": 10, "lookback_days": 7}, delay_minutes=30)
    assert ft.price_drop(delayed, ch, ev, T0 + 10 * H, T0 + 10 * H + 15 * M).empty
    assert len(ft.price_drop(delayed, ch, ev, T0 + 10 * H + 30 * M, T0 + 10 * H + 45 * M)) == 2


def test_seller_listed_pushes_followers_who_followed_before_the_listing():
    r = rule("seller_listed", delay_minutes=10)
    ch = changes((3, T0 + 5 * H, "listed", 40.0))
    items = pd.DataFrame({"item_id": [3], "seller_id": [9]})
    ev = events((T0 + H, 5, "follow_seller", None, 9), (T0 + 6 * H, 6, "follow_seller", None, 9),
                (T0 + H, 9, "follow_seller", None, 9), (T0 + H, 4, "follow_seller", None, 8))
    c = ft.seller_listed(r, ch, ev, items, T0 + 5 * H, T0 + 6 * H)
    assert list(c["user_id"]) == [5] and list(c["fire_at"]) == [T0 + 5 * H + 10 * M]


def test_selling_out_fires_when_a_crowd_forms_for_users_who_kept_looking():
    r = rule("selling_out", when={"min_views": 3, "min_viewers": 4})
    views = [(T0 + k * H, u, "view", 4, 50) for k, u in enumerate([2, 2, 2, 3, 3])]       # 2 looked 3 times
    views += [(T0 + 10 * H, 5, "view", 4, 50), (T0 + 11 * H, 6, "view", 4, 50)]          # viewers 4 at 11h
    c = ft.selling_out(r, events(*views), T0, T0 + ft.US_DAY)
    assert list(c["user_id"]) == [2] and list(c["event_ts"]) == [T0 + 11 * H]
    sparse = [(T0 + k * 30 * H, u, "view", 4, 50) for k, u in enumerate([2, 2, 2, 3, 5, 6])]  # 4 viewers, > 24 h
    assert ft.selling_out(r, events(*sparse), T0, T0 + 10 * ft.US_DAY).empty


def test_chat_waiting_pushes_the_seller_after_the_wait():
    r = rule("chat_waiting", when={"wait_minutes": 30})
    ev = events((T0 + H, 3, "chat", 6, 8), (T0 + H, 8, "chat", 6, 8))          # the seller's own chat: no
    c = ft.chat_waiting(r, ev, T0 + H + 30 * M, T0 + H + 45 * M)
    assert list(c["user_id"]) == [8] and list(c["fire_at"]) == [T0 + H + 30 * M]
    assert ft.chat_waiting(r, ev, T0 + H, T0 + H + 15 * M).empty


def test_exceptions_cancel_only_inside_the_delay_and_only_when_the_rule_lists_them():
    rules = {"a": rule("price_drop", unless=["bought", "item_sold"]).model_copy(update={"id": "a"}),
             "b": rule("price_drop", unless=[]).model_copy(update={"id": "b"}),
             "c": rule("chat_waiting", unless=["replied"]).model_copy(update={"id": "c"})}
    cands = pd.DataFrame({"rule_id": ["a", "a", "a", "b", "a", "c"], "user_id": [1, 2, 3, 4, 5, 8],
                          "item_id": [10, 11, 12, 11, 13, 6], "event_ts": [T0] * 6,
                          "fire_at": [T0 + H] * 6, "detail": [""] * 6})
    ev = events((T0 + 30 * M, 1, "buy", 10, 50),      # bought within the delay -> cancelled
                (T0 + 2 * H, 3, "buy", 12, 50),       # bought after it fired -> not cancelled
                (T0 + 20 * M, 8, "chat", 6, 8))       # the seller replied -> cancelled
    ch = changes((11, T0 + 10 * M, "sold", 5.0), (13, T0 + 3 * H, "sold", 5.0))
    reasons = ft.cancelled(cands, rules, ev, ch).tolist()
    assert reasons == ["bought", "item_sold", None, None, None, "replied"]   # rule b does not list item_sold


@pytest.mark.parametrize("text,expected", [
    ("n_app_open_28d >= 1", [True, False, False]),
    ("days_since_last_open between 0 and 7", [True, False, False]),     # null -> unknown -> no
    ("not days_since_last_open > 7", [True, False, False]),
    ("platform in ('ios')", [True, False, False]),
    ("days_since_last_open is null or n_app_open_28d = 0", [False, True, True]),
    (None, [True, True, True]),
])
def test_the_rule_language_on_pandas_is_three_valued_like_spark(text, expected):
    df = pd.DataFrame({"n_app_open_28d": [3, 0, 0], "days_since_last_open": [2, None, 9],
                       "platform": ["ios", "android_oppo", None]})
    df.loc[2, "days_since_last_open"] = None
    assert ft.matches(text, df).tolist() == expected


def test_trigger_keys_are_stable_and_distinct():
    a = ft.trigger_key("r", 1, 2, 3)
    assert a == ft.trigger_key("r", 1, 2, 3) and a != ft.trigger_key("r", 1, 2, 4) and len(a) == 32
