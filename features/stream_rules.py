"""The trigger rules, incrementally: per-key state updated by each event, timers for delays, no rescans.

The same rules as the micro-batch (features/triggers.py), and the same keys (hash of rule, user, item, event time),
so a candidate either path finds is decided once. jobs/stream.py feeds it events in stream order and asks for the
candidates that fall due.

Where the state lives (a keyed state store, as Flink or Kafka Streams keep theirs in RocksDB): the keyed maps -
which grow with users and items, about 40M entries for a 1M-user world - are tables of one SQLite file, indexed by
their key and by time (pruning deletes by time, it scans nothing); what is due soon (the timers and their pending
candidates, bounded by the delays) stays in memory. Every change since the last checkpoint is one open write
transaction; `commit(meta)` writes the in-memory part and the consumer's offset into the same file and commits, so
a checkpoint is atomic and costs what changed since the last one, and a crash rolls the file back to the last
checkpoint, whose offset the engine replays from. The engine holds the file's write lock while it runs: a second
engine on the same state fails at start instead of deciding everything twice. SQLite is in the standard library
and the project already runs it (the ledger's default); RocksDB bindings are not on PyPI for this Python as wheels
we could rely on, and a pickle of Python dicts (the first version) took 0.6 s and 8.8 MB at 10k users and grows to
gigabytes at 1M. Without a path (unit tests), the same tables live in memory.

State, by what a rule needs:
- price_drop: each item's last listed / price_drop price; who favourited or carted it, and when (lookback).
- seller_listed: each item's seller (the items snapshot, then `listed` changes that carry one); each seller's
  followers and when they followed.
- selling_out: per item, each viewer's first view and view times (lookback; an item draws a crowd once).
- chat_waiting: nothing but the timer: the seller is pushed wait_minutes after the buyer's message.
- unless: the pending timers by item (item_sold / item_removed), by (user, item) (bought) and by user (replied);
  items sold or removed are remembered, so a candidate on a gone item is cancelled at once.
- never an item's own seller for price_drop and selling_out (their views and favourites of their own listing are
  not a buyer's interest, and their views are no crowd), as features.triggers.not_own in the micro-batch.
Entries older than their rule's lookback are dropped as the event time passes them (`prune`).

Times are int64 microseconds since the epoch (UTC).
"""
from __future__ import annotations

import heapq
import os
import pickle
import sqlite3
from dataclasses import dataclass
from pathlib import Path

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


SCHEMA = """
CREATE TABLE IF NOT EXISTS items (item INTEGER PRIMARY KEY, seller INTEGER, price REAL, category INTEGER,
                                  listed_at INTEGER);
CREATE TABLE IF NOT EXISTS gone (item INTEGER PRIMARY KEY, name TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS crowded (item INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS interest (item INTEGER, user INTEGER, kind INTEGER, ts INTEGER NOT NULL,
                                     PRIMARY KEY (item, user, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS follows (seller INTEGER, user INTEGER, ts INTEGER NOT NULL,
                                    PRIMARY KEY (seller, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS views (item INTEGER, user INTEGER, ts INTEGER, n INTEGER NOT NULL,
                                  PRIMARY KEY (item, user, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS first_view (item INTEGER, user INTEGER, ts INTEGER NOT NULL,
                                       PRIMARY KEY (item, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB);
"""
# by time, for pruning; built after a bulk load (faster than maintaining them row by row)
TIME_INDEXES = """
CREATE INDEX IF NOT EXISTS gone_ts ON gone (ts);
CREATE INDEX IF NOT EXISTS interest_ts ON interest (ts);
CREATE INDEX IF NOT EXISTS follows_ts ON follows (ts);
CREATE INDEX IF NOT EXISTS views_ts ON views (ts);
CREATE INDEX IF NOT EXISTS first_view_ts ON first_view (ts);
"""
KIND = {"fav": 0, "cart": 1}
CACHE_KIB = 262_144            # the store's page cache (256 MiB); the rest of it is the OS's file cache


class StateLocked(RuntimeError):
    pass


class RuleState:
    def __init__(self, rules: dict, item_sellers: dict[int, int] | None = None, path: Path | str | None = None,
                 lock_timeout_s: float = 30.0, bulk: bool = False):
        """bulk: a file being built from scratch (the bootstrap): no journal and no syncs while it loads - a crash
        leaves a file without a checkpoint, which is rebuilt - then `moved_to` puts it in place in WAL mode."""
        self.path = str(path) if path is not None else ":memory:"
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=lock_timeout_s, check_same_thread=False)
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        if path is not None and bulk:
            self.db.execute("PRAGMA journal_mode=OFF")
            self.db.execute("PRAGMA synchronous=OFF")
        elif path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA + TIME_INDEXES)
        try:
            self.db.execute("BEGIN IMMEDIATE")             # the write lock, held from here on (see the module doc)
        except sqlite3.OperationalError as e:
            self.db.close()
            raise StateLocked(f"{self.path}: another stream engine holds this rule state ({e}); stop it first "
                              "(infra/stream.sh stop)") from e
        self.set_rules(rules)
        if item_sellers:
            self.load_items(list(item_sellers), sellers=list(item_sellers.values()))
        self.timers: list = []                                        # heap of (fire_at, key, Candidate)
        self.pending: dict[str, Candidate] = {}
        self.by_item: dict[int, set[str]] = {}                        # pending keys by item, and by pushed user
        self.by_user: dict[int, set[str]] = {}
        self.watermark = 0
        self._pruned_at = 0

    # ---- the store: open, commit, close ------------------------------------------------------------------------
    MEMORY = ("timers", "pending", "by_item", "by_user", "watermark", "_pruned_at")

    @classmethod
    def open(cls, path: Path, rules: dict, lock_timeout_s: float = 30.0) -> tuple[RuleState, dict | None]:
        """The state committed at the last checkpoint, and that checkpoint's meta (None: nothing was committed)."""
        state = cls(rules, path=path, lock_timeout_s=lock_timeout_s)
        row = state.db.execute("SELECT v FROM meta WHERE k = 'checkpoint'").fetchone()
        if row is None:
            return state, None
        doc = pickle.loads(row[0])
        for k in cls.MEMORY:
            setattr(state, k, doc["memory"][k])
        return state, doc["meta"]

    def commit(self, meta: dict) -> None:
        """A checkpoint: the in-memory part and `meta` (the consumer's offset) with every change since the last one,
        in one transaction."""
        doc = {"meta": meta, "memory": {k: getattr(self, k) for k in self.MEMORY}}
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)",
                        (pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL),))
        self.db.execute("COMMIT")
        self.db.execute("BEGIN IMMEDIATE")

    def moved_to(self, path: Path, meta: dict) -> RuleState:
        """A bulk-built store committed with `meta`, synced, renamed to `path` (atomic) and opened there."""
        self.commit(meta)
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA journal_mode=WAL")        # the mode is kept in the file: it opens as WAL
        self.db.close()
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.remove(path)
        os.replace(self.path, path)
        state, _ = RuleState.open(path, self.rules)
        return state

    def close(self) -> None:
        """Without a commit: what changed since the last checkpoint is rolled back (as a crash would)."""
        try:
            self.db.close()
        except sqlite3.Error:
            pass

    @staticmethod
    def remove(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    # ---- bulk loads (the bootstrap) ------------------------------------------------------------------------------
    def load_items(self, items, sellers=None, prices=None, categories=None, listed_at=None) -> None:
        """Items' seller, price, category and listing time (None/NaN: left as the store has it)."""
        n = len(items)

        def col(values, cast):
            if values is None:
                return [None] * n
            return [None if v is None or v != v else cast(v) for v in values]

        self.db.executemany(
            "INSERT INTO items (item, seller, price, category, listed_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (item) "
            "DO UPDATE SET seller = coalesce(excluded.seller, seller), price = coalesce(excluded.price, price), "
            "category = coalesce(excluded.category, category), listed_at = coalesce(excluded.listed_at, listed_at)",
            zip(map(int, items), col(sellers, int), col(prices, float), col(categories, int), col(listed_at, int)))

    def load(self, table: str, rows) -> None:
        """Rows already reduced to the table's key (interest: item, user, kind, last ts; follows: seller, user, ts;
        views: item, user, ts, n; first_view: item, user, ts; crowded: item)."""
        width = {"interest": 4, "follows": 3, "views": 4, "first_view": 3, "crowded": 1}[table]
        self.db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({', '.join('?' * width)})", rows)

    def set_rules(self, rules: dict) -> None:
        """The enabled rules (at start, or edited while running): a pending push of a rule that is gone is dropped
        when it falls due; a new rule kind starts from what the state holds."""
        self.rules = dict(rules)
        self.by_event: dict[str, list] = {}
        for r in self.rules.values():
            self.by_event.setdefault(r.when.event, []).append(r)
        self.lookback = {k: max(r.when.lookback_days for r in rs) * US_DAY for k, rs in self.by_event.items()}

    # ---- reads the engine needs ----------------------------------------------------------------------------------
    def item_info(self, items) -> dict[int, tuple]:
        """item -> (price, category, listed_at) for the items the store knows."""
        return {r[0]: r[1:] for r in self._for_items("SELECT item, price, category, listed_at FROM items WHERE", items)}

    def gone(self, items, until_us: int) -> dict[int, str]:
        """item -> item_sold / item_removed, for those of `items` that left the market at or before until_us."""
        return {r[0]: r[1] for r in self._for_items("SELECT item, name FROM gone WHERE ts <= ? AND", items, until_us)}

    def _for_items(self, select: str, items, *args) -> list[tuple]:
        """Rows of `select ... item IN (...)` for the distinct items, in chunks of 500 (SQLite's variable limit)."""
        ids = sorted({int(i) for i in items})
        rows = []
        for k in range(0, len(ids), 500):
            part = ids[k:k + 500]
            rows += self.db.execute(f"{select} item IN ({', '.join('?' * len(part))})", [*args, *part]).fetchall()
        return rows

    def _one(self, sql: str, *args):
        row = self.db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _set_item(self, item: int, column: str, value) -> None:
        self.db.execute(f"INSERT INTO items (item, {column}) VALUES (?, ?) ON CONFLICT (item) DO UPDATE "
                        f"SET {column} = excluded.{column}", (item, value))

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
            self._set_item(item, "seller", int(e["seller_id"]))
        if e.get("category_id") is not None:
            self._set_item(item, "category", int(e["category_id"]))
        if kind == "listed":
            self._set_item(item, "listed_at", ts)
        if kind in ("sold", "removed"):
            name = "item_sold" if kind == "sold" else "item_removed"
            self.db.execute("INSERT OR REPLACE INTO gone VALUES (?, ?, ?)", (item, name, ts))
            for c in self._pending_of(self.by_item, item):
                if name in self._unless(c):
                    cancelled.append((self._drop(c), name))
            return
        before = self._one("SELECT price FROM items WHERE item = ?", item)
        self._set_item(item, "price", float(e["price"]))
        if kind == "price_drop" and before and before > 0:
            drop = 1.0 - float(e["price"]) / before
            for r in self.by_event.get("price_drop", []):
                if drop * 100 < r.when.min_drop_pct:
                    continue
                kinds = {"favourited": ("fav",), "carted": ("cart",), "favourited_or_carted": ("fav", "cart")}[r.when.items]
                since = ts - r.when.lookback_days * US_DAY
                q = (f"SELECT DISTINCT user FROM interest WHERE item = ? AND kind IN ({', '.join('?' * len(kinds))}) "
                     "AND ts >= ? AND ts < ? AND user IS NOT (SELECT seller FROM items WHERE item = ?) ORDER BY user")
                for (user,) in self.db.execute(q, (item, *(KIND[k] for k in kinds), since, ts, item)).fetchall():
                    self._schedule(Candidate(r.id, user, item, ts, ts + r.delay_minutes * US_MIN,
                                             f"drop {100 * drop:.0f}%"), cancelled)
        elif kind == "listed":
            seller = self._one("SELECT seller FROM items WHERE item = ?", item)
            if seller is None:
                return
            for r in self.by_event.get("seller_listed", []):
                since = ts - r.when.lookback_days * US_DAY
                q = "SELECT user FROM follows WHERE seller = ? AND ts >= ? AND ts < ? AND user != ? ORDER BY user"
                for (user,) in self.db.execute(q, (seller, since, ts, seller)).fetchall():
                    self._schedule(Candidate(r.id, user, item, ts, ts + r.delay_minutes * US_MIN,
                                             f"seller {seller}"), cancelled)

    def _on_user_event(self, e: dict, ts: int, cancelled: list) -> None:
        user, kind = int(e["user_id"]), e["kind"]
        item = None if e.get("item_id") is None else int(e["item_id"])
        if kind in ("fav", "cart") and item is not None:
            self.db.execute("INSERT INTO interest VALUES (?, ?, ?, ?) ON CONFLICT (item, user, kind) DO UPDATE "
                            "SET ts = max(ts, excluded.ts)", (item, user, KIND[kind], ts))
        elif kind == "follow_seller" and e.get("seller_id") is not None:
            self.db.execute("INSERT OR REPLACE INTO follows VALUES (?, ?, ?)", (int(e["seller_id"]), user, ts))
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
        db = self.db
        if user == self._one("SELECT seller FROM items WHERE item = ?", item):
            return                  # a seller's view of their own listing: no crowd, and no news to them
        db.execute("INSERT INTO views VALUES (?, ?, ?, 1) ON CONFLICT (item, user, ts) DO UPDATE SET n = n + 1",
                   (item, user, ts))
        if db.execute("SELECT 1 FROM first_view WHERE item = ? AND user = ?", (item, user)).fetchone():
            return
        db.execute("INSERT INTO first_view VALUES (?, ?, ?)", (item, user, ts))
        if db.execute("SELECT 1 FROM crowded WHERE item = ?", (item,)).fetchone():
            return
        for r in self.by_event["selling_out"]:
            w = r.when
            # the min_viewers-th most recent first view: the crowd gathered within a day
            kth = self._one("SELECT ts FROM first_view WHERE item = ? AND ts <= ? ORDER BY ts DESC LIMIT 1 OFFSET ?",
                            item, ts, w.min_viewers - 1)
            if kth is None or ts - kth > US_DAY:
                continue
            db.execute("INSERT OR IGNORE INTO crowded VALUES (?)", (item,))
            since = ts - w.lookback_days * US_DAY
            q = ("SELECT user, sum(n) FROM views WHERE item = ? AND ts >= ? AND ts < ? GROUP BY user "
                 "HAVING sum(n) >= ? ORDER BY user")
            for viewer, n in db.execute(q, (item, since, ts, w.min_views)).fetchall():
                self._schedule(Candidate(r.id, viewer, item, ts, ts + r.delay_minutes * US_MIN, f"viewed {n}x"),
                               cancelled)

    # ---- timers ---------------------------------------------------------------------------------------------
    def _schedule(self, c: Candidate, cancelled: list) -> None:
        key = c.key
        if key in self.pending:
            return
        gone = self.db.execute("SELECT name, ts FROM gone WHERE item = ?", (c.item_id,)).fetchone()
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
        """Forget what no rule can look back to any more (by event time, through the time indexes)."""
        now = self.watermark
        self._pruned_at = now
        db = self.db
        db.execute("DELETE FROM interest WHERE ts < ?", (now - self.lookback.get("price_drop", 0),))
        db.execute("DELETE FROM follows WHERE ts < ?", (now - self.lookback.get("seller_listed", 0),))
        db.execute("DELETE FROM views WHERE ts < ?", (now - max(self.lookback.get("selling_out", 0), US_DAY),))
        db.execute("DELETE FROM first_view WHERE ts < ?", (now - US_DAY,))
        db.execute("DELETE FROM gone WHERE ts < ?", (now - 2 * US_DAY,))

    def size(self) -> dict:
        n = {t: self._one(f"SELECT count(*) FROM {t}") for t in ("interest", "follows", "items")}
        return {"interest_pairs": n["interest"], "follows": n["follows"],
                "viewers": self._one("SELECT count(*) FROM first_view"),
                "view_rows": self._one("SELECT count(*) FROM views"), "timers": len(self.pending),
                "items_priced": self._one("SELECT count(*) FROM items WHERE price IS NOT NULL")}
