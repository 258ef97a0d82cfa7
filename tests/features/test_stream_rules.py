"""The incremental trigger rules (features/stream_rules.py): each rule kind, delays, unless inside and outside the
delay, and the same candidates (same keys) as the micro-batch's rules on the same events."""
from __future__ import annotations

import pandas as pd
import pytest

from core.config.schema import Trigger
from features import triggers as ft
from features.stream_rules import RuleState, StateLocked

H, M, DAY = ft.US_H, ft.US_MIN, ft.US_DAY
T0 = 1_800_000_000 * 1_000_000 - (1_800_000_000 * 1_000_000) % DAY


def rule(event: str, rid: str | None = None, **kw) -> Trigger:
    when = {"event": event, **kw.pop("when", {})}
    return Trigger.model_validate({"id": rid or f"r_{event}", "name": "x", "when": when, "then": {"scene": "s"}, **kw})


def ev(ts, user, kind, item=None, seller=None):
    return {"table_name": "events", "ts": ts, "kind": kind, "user_id": user, "item_id": item, "seller_id": seller}


def ch(ts, item, kind, price=100.0, seller=None):
    return {"table_name": "item_changes", "ts": ts, "kind": kind, "item_id": item, "price": price, "seller_id": seller,
            "user_id": None}


def feed(state: RuleState, rows) -> list:
    cancelled = []
    for r in sorted(rows, key=lambda r: r["ts"]):
        cancelled += state.on_event(r)
    return cancelled


def test_price_drop_fires_at_once_for_who_favourited_within_the_lookback():
    r = rule("price_drop", when={"min_drop_pct": 10, "lookback_days": 7}, unless=["bought"])
    s = RuleState({r.id: r})
    feed(s, [ch(T0, 1, "listed", 100.0), ev(T0 - 8 * DAY, 10, "fav", 1), ev(T0 + H, 7, "fav", 1),
             ev(T0 + H, 8, "cart", 1), ch(T0 + 2 * H, 1, "price_drop", 95.0),          # -5 %: too small
             ch(T0 + 3 * H, 1, "price_drop", 80.0)])                                  # -15.8 % from 95
    due = s.pop_due(T0 + 3 * H)
    assert sorted(c.user_id for c in due) == [7, 8]
    assert {c.detail for c in due} == {"drop 16%"} and {c.fire_at for c in due} == {T0 + 3 * H}
    assert s.pop_due(T0 + 4 * H) == []                                                  # decided once


def test_a_delay_waits_and_unless_cancels_only_inside_it():
    r = rule("seller_listed", delay_minutes=10, unless=["item_sold"])
    s = RuleState({r.id: r}, item_sellers={1: 50, 2: 50})
    feed(s, [ev(T0, 7, "follow_seller", seller=50), ch(T0 + H, 1, "listed"), ch(T0 + H, 2, "listed")])
    assert s.pop_due(T0 + H + 9 * M) == []                                             # not before the delay
    assert s.next_due() == T0 + H + 10 * M
    cancelled = feed(s, [ch(T0 + H + 5 * M, 1, "sold")])                               # inside the delay
    assert [(c.item_id, why) for c, why in cancelled] == [(1, "item_sold")]
    due = s.pop_due(T0 + H + 10 * M)
    assert [(c.user_id, c.item_id) for c in due] == [(7, 2)]
    assert feed(s, [ch(T0 + H + 11 * M, 2, "sold")]) == []                              # after it: nothing to cancel


def test_chat_waiting_is_cancelled_by_the_sellers_reply_and_fires_without_one():
    r = rule("chat_waiting", when={"wait_minutes": 30}, unless=["replied"])
    s = RuleState({r.id: r})
    feed(s, [ev(T0, 7, "chat", 1, seller=50), ev(T0, 8, "chat", 2, seller=60)])
    cancelled = feed(s, [ev(T0 + 20 * M, 50, "chat", 1, seller=7)])                    # seller 50 answers
    assert [(c.user_id, why) for c, why in cancelled] == [(50, "replied")]
    due = s.pop_due(T0 + 30 * M)
    assert [(c.user_id, c.item_id, c.detail) for c in due] == [(60, 2, "buyer 8")]


def test_bought_cancels_a_pending_push_of_that_user_and_item_only():
    r = rule("price_drop", delay_minutes=30, unless=["bought"])
    s = RuleState({r.id: r})
    feed(s, [ch(T0, 1, "listed"), ev(T0 + M, 7, "fav", 1), ev(T0 + M, 8, "fav", 1), ch(T0 + H, 1, "price_drop", 50.0)])
    cancelled = feed(s, [ev(T0 + H + M, 7, "buy", 1)])
    assert [(c.user_id, why) for c, why in cancelled] == [(7, "bought")]
    assert [c.user_id for c in s.pop_due(T0 + 2 * H)] == [8]


def test_selling_out_fires_once_per_item_for_its_repeat_viewers():
    r = rule("selling_out", when={"min_views": 2, "min_viewers": 3, "lookback_days": 7})
    s = RuleState({r.id: r})
    rows = [ev(T0 + k * M, 7, "view", 1) for k in range(3)] + [ev(T0 + 10 * M, 8, "view", 1)]
    feed(s, rows)
    assert s.pop_due(T0 + DAY) == []                                                   # two viewers only
    feed(s, [ev(T0 + 20 * M, 9, "view", 1), ev(T0 + 30 * M, 10, "view", 1)])
    due = s.pop_due(T0 + DAY)
    assert [(c.user_id, c.event_ts, c.detail) for c in due] == [(7, T0 + 20 * M, "viewed 3x")]


def test_the_same_candidates_and_keys_as_the_micro_batch():
    rules = {r.id: r for r in (
        rule("price_drop", when={"min_drop_pct": 5, "lookback_days": 28}),
        rule("seller_listed", delay_minutes=10, when={"lookback_days": 28}),
        rule("chat_waiting", when={"wait_minutes": 30}),
        rule("selling_out", when={"min_views": 2, "min_viewers": 3, "lookback_days": 7}))}
    import random

    rnd = random.Random(3)
    events, changes = [], []
    seller = lambda i: 36 + i % 4           # noqa: E731  sellers 36-39 are users too: they view their own listings
    for i in range(1, 30):
        changes.append(ch(T0 + i * M, i, "listed", 100.0, seller=seller(i)))
    for k in range(600):
        t = T0 + H + rnd.randrange(20 * H)
        u, i = rnd.randrange(1, 40), rnd.randrange(1, 30)
        kind = rnd.choice(["view", "view", "view", "fav", "cart", "chat", "follow_seller"])
        events.append(ev(t, u, kind, i, seller=seller(i) if kind in ("chat", "follow_seller") else None))
    for i in range(1, 30, 3):                 # sellers checking on their own listings
        events += [ev(T0 + H + rnd.randrange(20 * H), seller(i), kind, i) for kind in ("view", "view", "view", "fav")]
    for k in range(40):
        i = rnd.randrange(1, 30)
        changes.append(ch(T0 + H + rnd.randrange(22 * H), i, rnd.choice(["price_drop", "listed"]),
                          rnd.choice([60.0, 80.0, 99.0]), seller=seller(i)))
    s = RuleState(rules, item_sellers={i: seller(i) for i in range(1, 30)})
    feed(s, events + changes)
    stream = {c.key for c in s.pop_due(T0 + 3 * DAY)}

    e = pd.DataFrame([{"ts": r["ts"], "user_id": r["user_id"], "event_type": r["kind"], "item_id": r["item_id"],
                       "seller_id": r["seller_id"]} for r in events])
    c = pd.DataFrame([{"item_id": r["item_id"], "ts": r["ts"], "change": r["kind"], "price": r["price"]} for r in changes])
    items = pd.DataFrame({"item_id": range(1, 30), "seller_id": [seller(i) for i in range(1, 30)]})
    lo, hi = T0 - DAY, T0 + 3 * DAY
    batch = pd.concat([ft.price_drop(rules["r_price_drop"], c, e, lo, hi, items),
                       ft.seller_listed(rules["r_seller_listed"], c, e, items, lo, hi),
                       ft.chat_waiting(rules["r_chat_waiting"], e, lo, hi),
                       ft.selling_out(rules["r_selling_out"], e, lo, hi, items)])
    keys = {ft.trigger_key(*k) for k in zip(batch["rule_id"], batch["user_id"], batch["item_id"], batch["event_ts"])}
    assert len(keys) > 50
    assert stream == keys
    # the sellers' own views and favourites were there to be pushed on, and neither engine did
    unfiltered = pd.concat([ft.price_drop(rules["r_price_drop"], c, e, lo, hi),
                            ft.selling_out(rules["r_selling_out"], e, lo, hi)])
    assert (unfiltered["user_id"] == unfiltered["item_id"].map(seller)).sum() > 0
    assert not (batch["rule_id"].isin(["r_price_drop", "r_selling_out"])
                & (batch["user_id"] == batch["item_id"].map(seller))).any()


def test_a_seller_is_never_pushed_about_their_own_listing_by_interest_rules():
    """A seller who keeps opening their own listing, or favourited it, is not told it draws a crowd or got cheaper:
    they listed and repriced it, and their views are no crowd. Its buyers still are; a waiting chat is the seller's
    to answer, as before."""
    drop = rule("price_drop", when={"min_drop_pct": 10, "lookback_days": 7})
    crowd = rule("selling_out", when={"min_views": 2, "min_viewers": 3, "lookback_days": 7})
    chat = rule("chat_waiting", when={"wait_minutes": 30})
    rows = ([ev(T0 + k * M, u, "view", 1) for u in (50, 7) for k in range(3)] + [ev(T0 + 10 * M, 8, "view", 1)]
            + [ev(T0 + H, 50, "fav", 1), ev(T0 + H, 7, "fav", 1), ch(T0, 1, "listed", 100.0),
               ch(T0 + 2 * H, 1, "price_drop", 80.0), ev(T0 + 3 * H, 7, "chat", 1, seller=50)])
    third = [ev(T0 + 5 * H, 9, "view", 1)]              # the third viewer who is not the seller

    def frames(rows):
        e = pd.DataFrame([{"ts": r["ts"], "user_id": r["user_id"], "event_type": r["kind"], "item_id": r["item_id"],
                           "seller_id": r["seller_id"]} for r in rows if r["table_name"] == "events"])
        c = pd.DataFrame([{"item_id": r["item_id"], "ts": r["ts"], "change": r["kind"], "price": r["price"]}
                          for r in rows if r["table_name"] == "item_changes"])
        return e, c

    items = pd.DataFrame({"item_id": [1], "seller_id": [50]})
    lo, hi = T0 - DAY, T0 + DAY
    s = RuleState({r.id: r for r in (drop, crowd, chat)}, item_sellers={1: 50})
    feed(s, rows)
    assert sorted((c.rule_id, c.user_id) for c in s.pop_due(T0 + 4 * H)) == [("r_chat_waiting", 50), ("r_price_drop", 7)]
    e, c = frames(rows)
    assert list(ft.price_drop(drop, c, e, lo, hi, items)["user_id"]) == [7]
    assert ft.selling_out(crowd, e, lo, hi, items).empty               # the seller and two buyers: no crowd yet
    assert list(ft.selling_out(crowd, e, lo, hi)["user_id"]) == [7, 50]   # what it was without the items
    assert sorted(ft.price_drop(drop, c, e, lo, hi)["user_id"]) == [7, 50]
    feed(s, third)
    assert [(c.rule_id, c.user_id) for c in s.pop_due(T0 + DAY)] == [("r_selling_out", 7)]
    e, c = frames(rows + third)
    assert list(ft.selling_out(crowd, e, lo, hi, items)["user_id"]) == [7]


def test_a_rule_disabled_while_running_drops_its_pending_pushes():
    chat = rule("chat_waiting", when={"wait_minutes": 30}, unless=["replied"])
    drop = rule("price_drop", delay_minutes=5)
    s = RuleState({chat.id: chat, drop.id: drop})
    feed(s, [ev(T0, 7, "chat", 1, seller=50), ch(T0, 2, "listed"), ev(T0 + M, 8, "fav", 2),
             ch(T0 + 2 * M, 2, "price_drop", 50.0)])
    s.set_rules({drop.id: drop})                                        # chat_waiting switched off in conf/
    assert feed(s, [ev(T0 + 3 * M, 50, "chat", 9, seller=7)]) == []      # its pending push is not cancelled: gone
    assert [(c.rule_id, c.user_id) for c in s.pop_due(T0 + H)] == [("r_price_drop", 8)]


def test_the_state_store_commits_at_checkpoints_holds_its_lock_and_prunes_by_time(tmp_path):
    """The keyed state lives in a SQLite file: a checkpoint is one commit (what came after it is rolled back with
    the process that dies), a second engine on the same state is refused, and pruning forgets by event time."""
    r = rule("price_drop", when={"min_drop_pct": 10, "lookback_days": 7})
    p = tmp_path / "state.sqlite"
    s = RuleState({r.id: r}, path=p)
    feed(s, [ev(T0, 7, "fav", 1), ch(T0 + H, 1, "listed", 100.0), ch(T0 + H, 2, "listed", 50.0)])
    s.commit({"offset": 3})
    with pytest.raises(StateLocked, match="another stream engine"):
        RuleState({r.id: r}, path=p, lock_timeout_s=0.1)
    feed(s, [ev(T0 + 2 * H, 8, "fav", 1)])                     # after the checkpoint: lost with the process
    s.close()
    again, meta = RuleState.open(p, {r.id: r})
    assert meta == {"offset": 3}
    assert again.size()["interest_pairs"] == 1 and again.item_info([1, 2, 3]) == {1: (100.0, None, T0 + H),
                                                                                  2: (50.0, None, T0 + H)}
    feed(again, [ch(T0 + 3 * H, 1, "price_drop", 80.0)])
    assert [c.user_id for c in again.pop_due(T0 + 3 * H)] == [7]
    # eight days on, the favourite is older than the rule's lookback: pruned, and a new drop pushes nobody
    feed(again, [ev(T0 + 8 * DAY, 9, "fav", 2)])
    assert again.size()["interest_pairs"] == 1                  # user 9's; user 7's went
    feed(again, [ch(T0 + 8 * DAY + H, 1, "price_drop", 60.0)])
    assert again.pop_due(T0 + 9 * DAY) == []
    again.close()
