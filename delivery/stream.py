"""The live event stream: the entry point an app backend publishes user events and item changes to while Hermes
runs, read by the streaming trigger engine (jobs/stream.py) and handed to the nightly's raw partitions once.

Why a table in the state database (SQLite by default, PostgreSQL in the production profile) and not Kafka, Redis
Streams or a landing folder: it is the transactional-outbox pattern. An append is durable when the producer's
request returns (a committed row: SQLite WAL + fsync, PostgreSQL WAL), every row gets a total order (`seq`) that a
consumer resumes from, the engine's offset and its decisions live in the same database as the delivery ledger,
and nothing new has to run beside the servers Hermes already starts. Redis/Valkey Streams fsync once a second by
default (a crash may lose the last second of accepted events); a folder of files needs its own offsets and
compaction. Throughput is not the limit: one SQLite writer appends ~50k events/s in batches (bench/streaming.py).

Contract: the raw contract's columns (core/contract.py) of `events` or `item_changes`, as JSON, plus an optional
`event_id` (the producer's id, at most 64 characters): a retried publish with the same id — or, without one, the
exact same row — is acknowledged and stored once. Every rule breaks with `<table>.<column>: rule=<rule> ...`; a
rejected row goes to `stream_quarantine` with its reason and its JSON, never silently dropped.

Days: once the engine has handed a UTC day's rows to raw/ (`flush_day`: one file per table and day, rewritten whole,
so never twice), a late row for that day is rejected (`rule=day_closed`): the nightly may have read the day already.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import datetime, timezone

from core.contract import EVENT_TYPES, ITEM_CHANGES

TABLES = ("events", "item_changes")
ITEM_EVENTS = ("view", "fav", "cart", "chat", "buy")        # an item_id is required (expectations/suites.py)
MAX_FUTURE_S = 300                                           # a clock ahead by more than this is a producer bug
INT64 = 2 ** 63 - 1
US = 1_000_000
FIELDS = {"events": ("ts", "user_id", "event_type", "item_id", "seller_id", "category_id"),
          "item_changes": ("item_id", "ts", "change", "price", "seller_id", "category_id")}


class Rejected(ValueError):
    pass


def _ts_us(table: str, value) -> int:
    if isinstance(value, bool) or value is None:
        raise Rejected(f"{table}.ts: rule=required: a time is required (ISO 8601 with a zone, or epoch seconds)")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise Rejected(f"{table}.ts: rule=parse_timestamp: {value!r} is not a time")
        return int(round(float(value) * US))
    if not isinstance(value, str):
        raise Rejected(f"{table}.ts: rule=parse_timestamp: {value!r} is not a time")
    try:
        d = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Rejected(f"{table}.ts: rule=parse_timestamp: {value!r} is not ISO 8601") from None
    if d.tzinfo is None:
        raise Rejected(f"{table}.ts: rule=timezone_required: {value!r} has no zone (write 2026-10-30T12:00:00Z)")
    return int(round(d.timestamp() * US))


def _int(table: str, col: str, value, required: bool, bits: int = 64) -> int | None:
    if value is None:
        if required:
            raise Rejected(f"{table}.{col}: rule=required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise Rejected(f"{table}.{col}: rule=parse_int{bits}: {value!r} is not an integer")
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise Rejected(f"{table}.{col}: rule=parse_int{bits}: {value} is out of range")
    return value


def check(table: str, doc, now_us: int) -> dict:
    """One published row -> the stored row (ts in microseconds, `event_id`), or Rejected naming column and rule."""
    if table not in TABLES:
        raise Rejected(f"{table}: rule=known_table: the stream takes {list(TABLES)}")
    if not isinstance(doc, dict):
        raise Rejected(f"{table}: rule=json_object: each row is a JSON object, got {type(doc).__name__}")
    ts = _ts_us(table, doc.get("ts"))
    if ts > now_us + MAX_FUTURE_S * US:
        raise Rejected(f"{table}.ts: rule=not_in_future: {ts / US - now_us / US:.0f} s ahead of the receiver's clock")
    row = {"table_name": table, "ts": ts}
    if table == "events":
        kind = doc.get("event_type")
        if kind not in EVENT_TYPES:
            raise Rejected(f"events.event_type: rule=in_set: {kind!r} is not one of {list(EVENT_TYPES)}")
        row.update(kind=kind, user_id=_int(table, "user_id", doc.get("user_id"), True),
                   item_id=_int(table, "item_id", doc.get("item_id"), kind in ITEM_EVENTS),
                   seller_id=_int(table, "seller_id", doc.get("seller_id"), kind == "follow_seller"),
                   category_id=_int(table, "category_id", doc.get("category_id"), False, 32), price=None)
    else:
        kind = doc.get("change")
        if kind not in ITEM_CHANGES:
            raise Rejected(f"item_changes.change: rule=in_set: {kind!r} is not one of {list(ITEM_CHANGES)}")
        price = doc.get("price")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
            raise Rejected(f"item_changes.price: rule=positive_price: {price!r} (a finite price above 0 is required)")
        row.update(kind=kind, user_id=None, item_id=_int(table, "item_id", doc.get("item_id"), True),
                   seller_id=_int(table, "seller_id", doc.get("seller_id"), False),
                   category_id=_int(table, "category_id", doc.get("category_id"), False, 32), price=float(price))
    eid = doc.get("event_id")
    if eid is not None and (not isinstance(eid, str) or not 0 < len(eid) <= 64):
        raise Rejected(f"{table}.event_id: rule=event_id: a string of 1 to 64 characters, got {eid!r}")
    # without the producer's id, the row itself is its identity: an exact resend is stored once
    row["event_id"] = eid or "h-" + hashlib.sha256(json.dumps(
        [table, *[row.get(k) for k in ("ts", "kind", "user_id", "item_id", "seller_id", "category_id", "price")]]
    ).encode()).hexdigest()[:40]
    return row


def day_of(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / US, tz=timezone.utc).date().isoformat()


class EventStream:
    """The stream's tables: `stream_events` (seq = the order), `stream_quarantine`, `stream_offsets` (one row per
    consumer), `stream_days` (UTC days handed to raw/)."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        from delivery.ledger import create_tables, state_engine

        self.engine = state_engine(url)
        md = sa.MetaData()
        self.t = sa.Table(
            "stream_events", md,
            sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
            sa.Column("event_id", sa.String(64), nullable=False, unique=True),
            sa.Column("table_name", sa.String(16), nullable=False),
            sa.Column("ts", sa.BigInteger, nullable=False),
            sa.Column("day", sa.String(10), nullable=False, index=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("user_id", sa.BigInteger),
            sa.Column("item_id", sa.BigInteger),
            sa.Column("seller_id", sa.BigInteger),
            sa.Column("category_id", sa.Integer),
            sa.Column("price", sa.Float),
            sa.Column("received_at", sa.Float, nullable=False),
        )
        self.q = sa.Table(
            "stream_quarantine", md,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
            sa.Column("table_name", sa.String(16), nullable=False),
            sa.Column("reason", sa.String(300), nullable=False),
            sa.Column("doc", sa.Text, nullable=False),
            sa.Column("received_at", sa.Float, nullable=False),
        )
        self.offsets = sa.Table(
            "stream_offsets", md, sa.Column("consumer", sa.String(64), primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False), sa.Column("updated_at", sa.Float, nullable=False),
            sa.Column("status", sa.Text))
        self.days = sa.Table(
            "stream_days", md, sa.Column("table_name", sa.String(16), primary_key=True),
            sa.Column("day", sa.String(10), primary_key=True), sa.Column("rows", sa.BigInteger, nullable=False),
            sa.Column("path", sa.Text, nullable=False), sa.Column("flushed_at", sa.Float, nullable=False))
        create_tables(self.engine, md)
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as c:
                c.exec_driver_sql("PRAGMA synchronous=FULL")       # an acknowledged append survives a power cut

    # producers ---------------------------------------------------------------------------------------------
    def publish(self, table: str, docs: list, now: float | None = None) -> dict:
        """Check and append `docs` in one transaction: {accepted, duplicates, rejected: [{index, reason}]}."""
        import sqlalchemy as sa

        now = time.time() if now is None else now
        good, bad = [], []
        for i, doc in enumerate(docs):
            try:
                row = check(table, doc, int(now * US))
                row.update(day=day_of(row["ts"]), received_at=now, _index=i)
                good.append(row)
            except Rejected as e:
                bad.append({"index": i, "reason": str(e)})
        closed = self.closed_days(table, {r["day"] for r in good}) if good else set()
        if closed:
            kept = []
            for r in good:
                if r["day"] in closed:
                    bad.append({"index": r["_index"], "reason": f"{table}.ts: rule=day_closed: ds={r['day']} was already handed "
                                                      f"to raw/{table} for the nightly; publish it there"})
                else:
                    kept.append(r)
            good = kept
        accepted = 0
        with self.engine.begin() as c:
            if self.engine.dialect.name == "postgresql":
                # appends commit in seq order (a reader after seq N never skips a row committed later with a lower
                # seq): one appender at a time, across API processes. SQLite serialises writers by itself.
                c.exec_driver_sql("SELECT pg_advisory_xact_lock(714201302)")
            if good:
                rows = [{k: v for k, v in r.items() if k != "_index"} for r in good]
                accepted = len(c.execute(self._insert_ignore_event_id().returning(self.t.c.seq), rows).all())
            if bad:
                c.execute(sa.insert(self.q), [{"table_name": table, "reason": b["reason"][:300],
                                               "doc": _safe_json(docs[b["index"]]), "received_at": now} for b in bad])
        return {"accepted": accepted, "duplicates": len(good) - accepted, "rejected": sorted(bad, key=lambda b: b["index"])}

    def _insert_ignore_event_id(self):
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(self.t).on_conflict_do_nothing(index_elements=["event_id"])

    # consumers ---------------------------------------------------------------------------------------------
    def read(self, after_seq: int, limit: int = 5000) -> list[dict]:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            rows = c.execute(sa.select(self.t).where(self.t.c.seq > after_seq).order_by(self.t.c.seq).limit(limit)).all()
        return [dict(r._mapping) for r in rows]

    def head(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.coalesce(sa.func.max(self.t.c.seq), 0))).scalar_one())

    def commit_offset(self, consumer: str, seq: int, status: dict | None = None) -> None:
        import sqlalchemy as sa

        doc = json.dumps(status) if status is not None else None
        with self.engine.begin() as c:
            n = c.execute(sa.update(self.offsets).where(self.offsets.c.consumer == consumer)
                          .values(seq=seq, updated_at=time.time(), status=doc)).rowcount
            if not n:
                c.execute(sa.insert(self.offsets).values(consumer=consumer, seq=seq, updated_at=time.time(), status=doc))

    def offset(self, consumer: str) -> dict | None:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            r = c.execute(sa.select(self.offsets).where(self.offsets.c.consumer == consumer)).first()
        if r is None:
            return None
        out = dict(r._mapping)
        out["status"] = json.loads(out["status"]) if out["status"] else {}
        return out

    def quarantined(self, limit: int = 100) -> list[dict]:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            rows = c.execute(sa.select(self.q).order_by(self.q.c.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]

    def counts(self) -> dict:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            ev = dict(c.execute(sa.select(self.t.c.table_name, sa.func.count()).group_by(self.t.c.table_name)).all())
            q = dict(c.execute(sa.select(self.q.c.table_name, sa.func.count()).group_by(self.q.c.table_name)).all())
        return {"accepted": {k: int(v) for k, v in ev.items()}, "quarantined": {k: int(v) for k, v in q.items()}}

    # the nightly's copy ----------------------------------------------------------------------------------------
    def closed_days(self, table: str, days: set[str]) -> set[str]:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            return set(c.execute(sa.select(self.days.c.day).where((self.days.c.table_name == table)
                                                                  & self.days.c.day.in_(sorted(days)))).scalars())

    def open_days(self, before_day: str) -> list[tuple[str, str]]:
        """(table, day) pairs holding rows, older than before_day, not yet handed to raw/."""
        import sqlalchemy as sa

        with self.engine.connect() as c:
            have = set(c.execute(sa.select(self.t.c.table_name, self.t.c.day).where(self.t.c.day < before_day)
                                 .distinct()).all())
            done = set(c.execute(sa.select(self.days.c.table_name, self.days.c.day)).all())
        return sorted(have - done)

    def flush_day(self, warehouse, table: str, day: str) -> dict:
        """Write the day's rows of `table` to raw/<table>/ds=<day>/part-stream.parquet (whole, atomically) and close
        the day: later rows for it are rejected at the door. Idempotent: a second flush rewrites the same file."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        import sqlalchemy as sa

        from core.contract import RAW_SCHEMAS

        t = self.t
        with self.engine.begin() as c:
            # close first (in the same transaction as the read): a row accepted after this is refused, not lost
            c.execute(sa.delete(self.days).where((self.days.c.table_name == table) & (self.days.c.day == day)))
            rows = c.execute(sa.select(t).where((t.c.table_name == table) & (t.c.day == day)).order_by(t.c.seq)).all()
            folder = warehouse.raw_partition(table, day)
            path = folder / "part-stream.parquet"
            c.execute(sa.insert(self.days).values(table_name=table, day=day, rows=len(rows), path=str(path),
                                                  flushed_at=time.time()))
            schema = RAW_SCHEMAS[table]
            when = [datetime.fromtimestamp(r.ts / US, tz=timezone.utc) for r in rows]
            if table == "events":
                data = {"ts": when, "user_id": [r.user_id for r in rows], "event_type": [r.kind for r in rows],
                        "item_id": [r.item_id for r in rows], "seller_id": [r.seller_id for r in rows],
                        "category_id": [r.category_id for r in rows]}
            else:
                data = {"item_id": [r.item_id for r in rows], "ts": when, "change": [r.kind for r in rows],
                        "price": [r.price for r in rows]}
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / ".part-stream.parquet.tmp"
            pq.write_table(pa.table(data, schema=schema), tmp)
            tmp.replace(path)
        return {"table": table, "day": day, "rows": len(rows), "path": str(path)}

    def dispose(self) -> None:
        self.engine.dispose()


def _safe_json(doc) -> str:
    try:
        return json.dumps(doc, default=str)[:4000]
    except (TypeError, ValueError):
        return repr(doc)[:4000]
