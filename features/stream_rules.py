"""The trigger rules, incrementally: per-key state updated by each event, timers for delays, no rescans.

The same rules as the micro-batch (features/triggers.py), and the same keys (hash of rule, user, item, event time),
so a candidate either path finds is decided once. Pure Python, no I/O: jobs/stream.py feeds it events in stream
order and asks for the candidates that fall due; its state is pickled into the engine's checkpoint.

State, by what a rule needs:
- price_drop: each item's last listed / price_drop price; who favourited or carted it, and when (lookback).
- seller_listed: each item's seller (the items snapshot, then `listed` changes that carry one); each seller's
  followers and when they followed.
- selling_out: per item, each viewer's first view and view times (lookback; an item draws a crowd once).
- chat_waiting: nothing but the timer: the seller is pushed wait_minutes after the buyer's message.
- unless: the pending timers by item (item_sold / item_removed), by (user, item) (bought) and by user (replied);
  items sold or removed are remembered, so a candidate on a gone item is cancelled at once.
Entries older than their rule's lookback are dropped as the event time passes them (`prune`).

Times are int64 microseconds since the epoch (UTC).
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from features.triggers import US_DAY, US_MIN, trigger_key


@dataclass(frozen=True)
class Candidate:
    rule_id: str
    user_id: int
    item_id: int
    event_ts: int
    fire_at: int
    detail: str

    @property
    def key(self) -> str:
        return trigger_key(self.rule_id, self.user_id, self.item_id, self.event_ts)


class RuleState:
    def __init__(self, rules: dict, item_sellers: dict[int, int] | None = None):
        self.set_rules(rules)
        self.item_seller: dict[int, int] = dict(item_sellers or {})
        self.price: dict[int, float] = {}
        self.listed_at: dict[int, int] = {}                           # live listings: when, and their category
        self.item_category: dict[int, int] = {}
        self.interest: dict[int, dict[int, dict[str, int]]] = {}     # item -> user -> {"fav"/"cart": last ts}
        self.follows: dict[int, dict[int, int]] = {}                  # seller -> user -> last follow ts
        self.first_view: dict[int, dict[int, int]] = {}               # item -> viewer -> first view ts
        self.views: dict[int, dict[int, deque]] = {}                  # item -> viewer -> view times
        self.crowded: set[int] = set()
        self.gone: dict[int, tuple[str, int]] = {}                     # item -> (item_sold | item_removed, ts)
        self.timers: list = []                                        # heap of (fire_at, key, Candidate)
        self.pending: dict[str, Candidate] = {}
        self.by_item: dict[int, set[str]] = {}                        # pending keys by item, and by pushed user
        self.by_user: dict[int, set[str]] = {}
        self.watermark = 0
        self._pruned_at = 0

    def set_rules(self, rules: dict) -> None:
        """The enabled rules (at start, or edited while running): a pending push of a rule that is gone is dropped
        when it falls due; a new rule kind starts from what the state holds."""
        self.rules = dict(rules)
        self.by_event: dict[str, list] = {}
        for r in self.rules.values():
            self.by_event.setdefault(r.when.event, []).append(r)
        self.lookback = {k: max(r.when.lookback_days for r in rs) * US_DAY for k, rs in self.by_event.items()}

    # ---- events ---------------------------------------------------------------------------------------------
    def on_event(self, e: dict) -> list[tuple[Candidate, str]]:
        """Apply one stream row (table_name, ts, kind, user_id, item_id, seller_id, price); returns the pending
        candidates it cancels, with the exception's name."""
        ts = int(e["ts"])
        self.watermark = max(self.watermark, ts)
        cancelled: list[tuple[Candidate, str]] = []
        if e["table_name"] == "item_changes":
            self._on_change(e, ts, cancelled)
        else:
            self._on_user_event(e, ts, cancelled)
        if self.watermark - self._pruned_at > US_DAY // 24:
            self.prune()
        return cancelled

    def _on_change(self, e: dict, ts: int, cancelled: list) -> None:
        item, kind = int(e["item_id"]), e["kind"]
        if e.get("seller_id") is not None:
            self.item_seller[item] = int(e["seller_id"])
        if e.get("category_id") is not None:
            self.item_category[item] = int(e["category_id"])
        if kind == "listed":
            self.listed_at[item] = ts
        if kind in ("sold", "removed"):
            name = "item_sold" if kind == "sold" else "item_removed"
            self.gone[item] = (name, ts)
            for c in self._pending_of(self.by_item, item):
                if name in self._unless(c):
                    cancelled.append((self._drop(c), name))
            return
        before = self.price.get(item)
        self.price[item] = float(e["price"])
        if kind == "price_drop" and before and before > 0:
            drop = 1.0 - float(e["price"]) / before
            for r in self.by_event.get("price_drop", []):
                if drop * 100 < r.when.min_drop_pct:
                    continue
                kinds = {"favourited": ("fav",), "carted": ("cart",), "favourited_or_carted": ("fav", "cart")}[r.when.items]
                since = ts - r.when.lookback_days * US_DAY
                for user, seen in self.interest.get(item, {}).items():
                    if any(since <= seen.get(k, -1) < ts for k in kinds):
                        self._schedule(Candidate(r.id, user, item, ts, ts + r.delay_minutes * US_MIN,
                                                 f"drop {100 * drop:.0f}%"), cancelled)
        elif kind == "listed":
            seller = self.item_seller.get(item)
            if seller is None:
                return
            for r in self.by_event.get("seller_listed", []):
                since = ts - r.when.lookback_days * US_DAY
                for user, at in self.follows.get(seller, {}).items():
                    if since <= at < ts and user != seller:
                        self._schedule(Candidate(r.id, user, item, ts, ts + r.delay_minutes * US_MIN,
                                                 f"seller {seller}"), cancelled)

    def _on_user_event(self, e: dict, ts: int, cancelled: list) -> None:
        user, kind = int(e["user_id"]), e["kind"]
        item = None if e.get("item_id") is None else int(e["item_id"])
        if kind in ("fav", "cart") and item is not None:
            seen = self.interest.setdefault(item, {}).setdefault(user, {})
            seen[kind] = max(seen.get(kind, ts), ts)
        elif kind == "follow_seller" and e.get("seller_id") is not None:
            self.follows.setdefault(int(e["seller_id"]), {})[user] = ts
        elif kind == "view" and item is not None and "selling_out" in self.by_event:
            self._on_view(user, item, ts, cancelled)
        elif kind == "chat":
            # the pushed user (a seller) answering any chat cancels their waiting-chat pushes
            for c in [c for c in self._pending_of(self.by_user, user) if c.event_ts < ts]:
                if "replied" in self._unless(c):
                    cancelled.append((self._drop(c), "replied"))
            seller = e.get("seller_id")
            if item is not None and seller is not None and int(seller) != user:
                for r in self.by_event.get("chat_waiting", []):
                    due = (r.when.wait_minutes + r.delay_minutes) * US_MIN
                    self._schedule(Candidate(r.id, int(seller), item, ts, ts + due, f"buyer {user}"), cancelled)
        elif kind == "buy" and item is not None:
            for c in [c for c in self._pending_of(self.by_user, user) if c.item_id == item and c.event_ts < ts]:
                if "bought" in self._unless(c):
                    cancelled.append((self._drop(c), "bought"))

    def _on_view(self, user: int, item: int, ts: int, cancelled: list) -> None:
        firsts = self.first_view.setdefault(item, {})
        self.views.setdefault(item, {}).setdefault(user, deque()).append(ts)
        if user in firsts:
            return
        firsts[user] = ts
        if item in self.crowded:
            return
        for r in self.by_event["selling_out"]:
            w = r.when
            recent = sorted(t for t in firsts.values() if t <= ts)
            if len(recent) < w.min_viewers or ts - recent[-w.min_viewers] > US_DAY:
                continue
            self.crowded.add(item)
            since = ts - w.lookback_days * US_DAY
            for viewer, times in self.views[item].items():
                n = sum(1 for t in times if since <= t < ts)
                if n >= w.min_views:
                    self._schedule(Candidate(r.id, viewer, item, ts, ts + r.delay_minutes * US_MIN,
                                             f"viewed {n}x"), cancelled)

    # ---- timers ---------------------------------------------------------------------------------------------
    def _schedule(self, c: Candidate, cancelled: list) -> None:
        key = c.key
        if key in self.pending:
            return
        gone = self.gone.get(c.item_id)
        if gone is not None and gone[0] in self._unless(c) and gone[1] <= c.fire_at:
            cancelled.append((c, gone[0]))
            return
        self.pending[key] = c
        self.by_item.setdefault(c.item_id, set()).add(key)
        self.by_user.setdefault(c.user_id, set()).add(key)
        heapq.heappush(self.timers, (c.fire_at, key, c))

    def _unless(self, c: Candidate) -> tuple:
        r = self.rules.get(c.rule_id)
        return r.unless if r is not None else ()

    def _pending_of(self, index: dict, k: int) -> list[Candidate]:
        return [self.pending[key] for key in sorted(index.get(k, ())) if key in self.pending]

    def _drop(self, c: Candidate) -> Candidate:
        """No longer pending (its heap entry is skipped when it comes up)."""
        key = c.key
        self.pending.pop(key, None)
        for index, k in ((self.by_item, c.item_id), (self.by_user, c.user_id)):
            keys = index.get(k)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[k]
        return c

    def pop_due(self, now_us: int) -> list[Candidate]:
        """Candidates whose push is due by now_us (not cancelled), in due order."""
        out = []
        while self.timers and self.timers[0][0] <= now_us:
            _, key, c = heapq.heappop(self.timers)
            if key in self.pending:
                self._drop(c)
                if c.rule_id in self.rules:
                    out.append(c)
        return out

    def next_due(self) -> int | None:
        while self.timers and self.timers[0][1] not in self.pending:
            heapq.heappop(self.timers)
        return self.timers[0][0] if self.timers else None

    def prune(self) -> None:
        """Forget what no rule can look back to any more (by event time)."""
        now = self.watermark
        self._pruned_at = now
        keep_interest = now - self.lookback.get("price_drop", 0)
        for item in list(self.interest):
            users = self.interest[item]
            for u in [u for u, seen in users.items() if max(seen.values()) < keep_interest]:
                del users[u]
            if not users:
                del self.interest[item]
        keep_follow = now - self.lookback.get("seller_listed", 0)
        for seller in list(self.follows):
            f = self.follows[seller]
            for u in [u for u, at in f.items() if at < keep_follow]:
                del f[u]
            if not f:
                del self.follows[seller]
        keep_view = now - max(self.lookback.get("selling_out", 0), US_DAY)
        for item in list(self.views):
            v = self.views[item]
            for u in list(v):
                q = v[u]
                while q and q[0] < keep_view:
                    q.popleft()
                if not q:
                    del v[u]
            firsts = self.first_view.get(item, {})
            for u in [u for u, t in firsts.items() if t < now - US_DAY]:
                del firsts[u]
            if not v:
                del self.views[item]
                self.first_view.pop(item, None)
        for item in [i for i, (_, t) in self.gone.items() if t < now - 2 * US_DAY]:
            del self.gone[item]

    def size(self) -> dict:
        return {"interest_pairs": sum(len(v) for v in self.interest.values()),
                "follows": sum(len(v) for v in self.follows.values()),
                "viewers": sum(len(v) for v in self.views.values()), "timers": len(self.pending),
                "items_priced": len(self.price)}
