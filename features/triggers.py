"""IFTTT triggers on fresh events: pure pandas functions, no I/O (jobs/triggers.py runs them per window).

A *candidate* is (rule_id, user_id, item_id, event_ts, fire_at): the event that matched the rule's `when`,
and the time the push is due (event + delay; for chat_waiting, + the wait). A candidate is *due* in the run
whose window holds fire_at; it is *cancelled* if an exception of the rule's `unless` happened in
(event_ts, fire_at]; it is then checked against the rule's `if` condition, the shared fatigue budget and
the re-eligibility gap by the job. Its key — a hash of (rule, user, item, event time) — is what makes a
window's output the same on every re-run and lets a late event be emitted once, by whichever run sees it.

Times are int64 microseconds since the epoch (UTC) throughout.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from core.config.rules import Between, BoolOp, Compare, Feature, InList, IsNull, Literal, Node, Not, parse_rule

US_MIN = 60_000_000
US_H = 60 * US_MIN
US_DAY = 24 * US_H
CANDIDATE_COLUMNS = ["rule_id", "user_id", "item_id", "event_ts", "fire_at", "detail"]


def trigger_key(rule_id: str, user_id: int, item_id: int, event_ts: int) -> str:
    return hashlib.sha256(f"{rule_id}|{user_id}|{item_id}|{event_ts}".encode()).hexdigest()[:32]


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c not in ("rule_id", "detail") else "object")
                         for c in CANDIDATE_COLUMNS})


def _frame(rule, users, items, event_ts, fire_at, detail) -> pd.DataFrame:
    out = pd.DataFrame({"user_id": np.asarray(users, dtype=np.int64), "item_id": np.asarray(items, dtype=np.int64),
                        "event_ts": np.asarray(event_ts, dtype=np.int64), "fire_at": np.asarray(fire_at, dtype=np.int64),
                        "detail": detail})
    out.insert(0, "rule_id", rule.id)
    return out.drop_duplicates(["rule_id", "user_id", "item_id", "event_ts"])


def price_drops(changes: pd.DataFrame) -> pd.DataFrame:
    """Each price_drop change with the price before it (the previous listed/price_drop price) and the drop."""
    c = changes[changes["change"].isin(["listed", "price_drop"])].sort_values(["item_id", "ts"], kind="stable")
    c = c.assign(prev_price=c.groupby("item_id")["price"].shift(1))
    d = c[(c["change"] == "price_drop") & c["prev_price"].notna() & (c["prev_price"] > 0)]
    return d.assign(drop_pct=1.0 - d["price"] / d["prev_price"])


def not_own(m: pd.DataFrame, items: pd.DataFrame | None) -> pd.DataFrame:
    """The rows whose user_id is not the seller of their item_id (items: item_id, seller_id; None or an item it does
    not know: kept). A seller's views and favourites of their own listing are not a buyer's interest: "an item you keep
    looking at is drawing a crowd" or "it dropped its price" is no news to the one who listed or repriced it."""
    if items is None or m.empty:
        return m
    seller = m["item_id"].map(items.drop_duplicates("item_id").set_index("item_id")["seller_id"])
    return m[~(seller == m["user_id"]).fillna(False).astype(bool)]


def price_drop(rule, changes, events, lo: int, hi: int, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Users who favourited/carted an item (within lookback, before the drop) whose price dropped by at
    least min_drop_pct, for drops whose push is due in [lo, hi); never the item's own seller (`not_own`)."""
    w = rule.when
    delay = rule.delay_minutes * US_MIN
    d = price_drops(changes)
    d = d[(d["ts"] + delay >= lo) & (d["ts"] + delay < hi) & (d["drop_pct"] * 100 >= w.min_drop_pct)]
    if d.empty:
        return _empty()
    kinds = {"favourited": ["fav"], "carted": ["cart"], "favourited_or_carted": ["fav", "cart"]}[w.items]
    interest = events[events["event_type"].isin(kinds) & events["item_id"].isin(d["item_id"])][["user_id", "item_id", "ts"]]
    m = d[["item_id", "ts", "drop_pct"]].merge(interest, on="item_id", suffixes=("", "_i"))
    m = not_own(m[(m["ts_i"] < m["ts"]) & (m["ts_i"] >= m["ts"] - w.lookback_days * US_DAY)], items)
    return _frame(rule, m["user_id"], m["item_id"], m["ts"], m["ts"] + delay,
                  [f"drop {100 * x:.0f}%" for x in m["drop_pct"]])


def seller_listed(rule, changes, events, items, lo: int, hi: int) -> pd.DataFrame:
    """Followers (follow_seller within lookback, before the listing) of a seller who listed an item."""
    delay = rule.delay_minutes * US_MIN
    listed = changes[(changes["change"] == "listed") & (changes["ts"] + delay >= lo) & (changes["ts"] + delay < hi)]
    listed = listed.merge(items[["item_id", "seller_id"]], on="item_id")
    if listed.empty:
        return _empty()
    follows = events[(events["event_type"] == "follow_seller") & events["seller_id"].isin(listed["seller_id"])]
    m = listed[["item_id", "seller_id", "ts"]].merge(follows[["user_id", "seller_id", "ts"]], on="seller_id",
                                                     suffixes=("", "_f"))
    m = m[(m["ts_f"] < m["ts"]) & (m["ts_f"] >= m["ts"] - rule.when.lookback_days * US_DAY)
          & (m["user_id"] != m["seller_id"])]
    return _frame(rule, m["user_id"], m["item_id"], m["ts"], m["ts"] + delay, [f"seller {s}" for s in m["seller_id"]])


def selling_out(rule, events, lo: int, hi: int, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """An item reaches min_viewers distinct viewers within 24 h (the view that reaches it is the event);
    users who viewed it at least min_views times (lookback, before that view) are pushed. The item's own seller
    (`not_own`) is neither: their views of their own listing are no crowd, and it is no news to them."""
    w = rule.when
    delay = rule.delay_minutes * US_MIN
    views = not_own(events[events["event_type"] == "view"][["user_id", "item_id", "ts"]], items)
    views = views.sort_values(["item_id", "ts"])
    if views.empty:
        return _empty()
    # the first view of each (item, viewer) inside a trailing day; the k-th distinct viewer's first view is
    # when the item "draws a crowd"
    first = views.drop_duplicates(["item_id", "user_id"])
    first = first.assign(rank=first.groupby("item_id").cumcount() + 1)
    kth = first[first["rank"] >= w.min_viewers].copy()
    start = first.groupby("item_id")["ts"].transform(lambda s: s.shift(w.min_viewers - 1))
    kth = kth.assign(span=kth["ts"] - start.loc[kth.index])
    crowd = kth[kth["span"] <= US_DAY].drop_duplicates("item_id")       # the first time per item
    crowd = crowd[(crowd["ts"] + delay >= lo) & (crowd["ts"] + delay < hi)]
    if crowd.empty:
        return _empty()
    v = views[views["item_id"].isin(crowd["item_id"])].merge(crowd[["item_id", "ts"]], on="item_id",
                                                             suffixes=("", "_c"))
    v = v[(v["ts"] < v["ts_c"]) & (v["ts"] >= v["ts_c"] - w.lookback_days * US_DAY)]
    n = v.groupby(["user_id", "item_id", "ts_c"]).size().reset_index(name="n")
    n = n[n["n"] >= w.min_views]
    return _frame(rule, n["user_id"], n["item_id"], n["ts_c"], n["ts_c"] + delay, [f"viewed {k}x" for k in n["n"]])


def chat_waiting(rule, events, lo: int, hi: int) -> pd.DataFrame:
    """A buyer's chat about a seller's item; the seller is pushed wait_minutes later (+ delay)."""
    due = (rule.when.wait_minutes + rule.delay_minutes) * US_MIN
    c = events[(events["event_type"] == "chat") & events["seller_id"].notna() & (events["ts"] + due >= lo)
               & (events["ts"] + due < hi)]
    c = c[c["seller_id"] != c["user_id"]]
    return _frame(rule, c["seller_id"].astype("int64"), c["item_id"], c["ts"], c["ts"] + due,
                  [f"buyer {u}" for u in c["user_id"]])


def cancelled(cands: pd.DataFrame, rules: dict, events: pd.DataFrame, changes: pd.DataFrame) -> pd.Series:
    """The exception that cancels each candidate (None when none): bought / item_sold / item_removed /
    replied, looked for in (event_ts, fire_at] — a sale or removal any time up to fire_at."""
    reason = pd.Series([None] * len(cands), index=cands.index, dtype="object")
    if cands.empty:
        return reason
    unless = cands["rule_id"].map(lambda r: set(rules[r].unless))
    k = cands.reset_index()
    gone = changes[changes["change"].isin(["sold", "removed"])][["item_id", "change", "ts"]]
    m = k.merge(gone, on="item_id")
    m = m[m["ts"] <= m["fire_at"]]
    for change, name in (("sold", "item_sold"), ("removed", "item_removed")):
        hit = m[(m["change"] == change)]["index"]
        hit = hit[unless.loc[hit].map(lambda s: name in s).to_numpy()] if len(hit) else hit
        reason.loc[hit[reason.loc[hit].isna().to_numpy()]] = name
    buys = events[events["event_type"] == "buy"][["user_id", "item_id", "ts"]]
    b = k.merge(buys, on=["user_id", "item_id"])
    hit = b[(b["ts"] > b["event_ts"]) & (b["ts"] <= b["fire_at"])]["index"]
    hit = hit[unless.loc[hit].map(lambda s: "bought" in s).to_numpy()] if len(hit) else hit
    reason.loc[hit[reason.loc[hit].isna().to_numpy()]] = "bought"
    chats = events[events["event_type"] == "chat"][["user_id", "ts"]]      # the pushed user (seller) chatting
    r = k.merge(chats, on="user_id")
    hit = r[(r["ts"] > r["event_ts"]) & (r["ts"] <= r["fire_at"])]["index"].drop_duplicates()
    hit = hit[unless.loc[hit].map(lambda s: "replied" in s).to_numpy()] if len(hit) else hit
    reason.loc[hit[reason.loc[hit].isna().to_numpy()]] = "replied"
    return reason


# ---- the rule language on pandas (three-valued, like the Spark compiler in features/audiences.py) ------
_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _value(node: Node, df: pd.DataFrame):
    if isinstance(node, Feature):
        return df[node.name]
    if isinstance(node, Literal):
        return node.value
    raise TypeError(f"not a value: {node!r}")


def _known(*vals) -> pd.Series | bool:
    mask = True
    for v in vals:
        if isinstance(v, pd.Series):
            mask = mask & v.notna()
    return mask


def _bool(node: Node, df: pd.DataFrame) -> pd.Series:
    """Nullable boolean: NA where a null feature makes the answer unknown."""
    def tri(result, known):
        s = pd.Series(result, index=df.index).astype("boolean")
        if isinstance(known, pd.Series):
            s[~known] = pd.NA
        return s

    if isinstance(node, (Feature, Literal)):   # a bare condition: `true`, or a boolean feature such as opt_in
        a = _value(node, df)
        return tri(a.fillna(False).astype(bool) if isinstance(a, pd.Series) else bool(a), _known(a))
    if isinstance(node, Compare):
        a, b = _value(node.left, df), _value(node.right, df)
        return tri(_OPS[node.op](a, b), _known(a, b))
    if isinstance(node, InList):
        a = _value(node.operand, df)
        s = tri(a.isin(node.values), _known(a))
        return ~s if node.negated else s
    if isinstance(node, Between):
        a, lo, hi = (_value(n, df) for n in (node.operand, node.low, node.high))
        s = tri((a >= lo) & (a <= hi), _known(a, lo, hi))
        return ~s if node.negated else s
    if isinstance(node, IsNull):
        a = _value(node.operand, df)
        s = pd.Series(a.isna(), index=df.index).astype("boolean")
        return ~s if node.negated else s
    if isinstance(node, BoolOp):
        parts = [_bool(i, df) for i in node.items]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if node.op == "and" else (out | p)
        return out
    if isinstance(node, Not):
        return ~_bool(node.item, df)
    raise TypeError(f"not a rule node: {node!r}")


def matches(rule_text: str | None, df: pd.DataFrame) -> pd.Series:
    """Rows of `df` (user features) for which the rule holds; unknown counts as no. No rule: all rows."""
    if rule_text is None:
        return pd.Series(True, index=df.index)
    return _bool(parse_rule(rule_text), df).fillna(False).astype(bool)
