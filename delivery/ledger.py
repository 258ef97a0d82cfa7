"""The delivery ledger: the state of every idempotency key, so a crashed or re-run delivery resumes.

One row per message (key = its idempotency key): `pending` until the gateway acknowledges it (`acked`,
with the gateway's message name) or it is given up (`dead_letter`, with the reason). A re-run loads the
same batch again (existing keys are left as they are), then sends only what is still pending: nothing
acknowledged is sent again, nothing unacknowledged is forgotten. SQLite by default, PostgreSQL by URL
(SQLAlchemy Core, the same statements on both).
"""
from __future__ import annotations

import json
import time
from collections import Counter

PENDING, ACKED, DEAD = "pending", "acked", "dead_letter"


def state_engine(url: str):
    """The engine of the delivery state database (ledger, trigger log): SQLite file or PostgreSQL."""
    import sqlalchemy as sa

    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        with engine.begin() as c:
            c.exec_driver_sql("PRAGMA journal_mode=WAL")
    return engine


def insert_ignore(engine, table):
    """INSERT ... ON CONFLICT DO NOTHING on the table's primary key, in the engine's dialect."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=[c.name for c in table.primary_key])


class Ledger:
    def __init__(self, url: str):
        import sqlalchemy as sa

        self.engine = state_engine(url)
        md = sa.MetaData()
        self.t = sa.Table(
            "delivery_ledger", md,
            sa.Column("idempotency_key", sa.String(64), primary_key=True),
            sa.Column("send_day", sa.String(10), nullable=False, index=True),
            sa.Column("hour", sa.Integer, nullable=False),
            sa.Column("window", sa.String(64), nullable=False),
            sa.Column("user_id", sa.BigInteger, nullable=False),
            sa.Column("scene_id", sa.String(64), nullable=False),
            sa.Column("item_ids", sa.Text, nullable=False),          # JSON list
            sa.Column("policy", sa.String(32)),
            sa.Column("propensity", sa.Float),
            sa.Column("token_sha256", sa.String(64), nullable=False),
            sa.Column("planned_at", sa.Float, nullable=False),      # epoch seconds of the slot start
            sa.Column("batch_run", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("last_status", sa.Integer),
            sa.Column("reason", sa.String(200)),
            sa.Column("message_name", sa.String(200)),
            sa.Column("acked_at", sa.Float),
            sa.Column("updated_at", sa.Float, nullable=False),
        )
        sa.Index("ix_ledger_day_hour_state", self.t.c.send_day, self.t.c.hour, self.t.c.state)
        md.create_all(self.engine)

    def load(self, rows: list[dict], batch_run: str) -> int:
        """Register a batch's messages; keys already in the ledger keep their state. Returns new keys."""
        import hashlib

        now = time.time()
        records = [{
            "idempotency_key": r["idempotency_key"], "send_day": r["send_day"], "hour": int(r["hour"]),
            "window": r["window"], "user_id": int(r["user_id"]), "scene_id": r["scene_id"],
            "item_ids": json.dumps([int(i) for i in r["item_ids"]]), "policy": r.get("policy"),
            "propensity": r.get("propensity"), "token_sha256": hashlib.sha256(r["device_token"].encode()).hexdigest(),
            "planned_at": float(r["planned_at"]), "batch_run": batch_run, "state": PENDING, "attempts": 0,
            "updated_at": now} for r in rows]
        import sqlalchemy as sa

        before = self.count()
        t = self.t
        # A key still pending goes out with the batch that holds it now: a re-plan may have moved it to another
        # hour, and filed under its old hour it would never be sent (the old hour's run is over).
        move = (sa.update(t).where((t.c.idempotency_key == sa.bindparam("k")) & (t.c.state == PENDING)
                                   & (t.c.hour != sa.bindparam("h")))
                .values(hour=sa.bindparam("h"), planned_at=sa.bindparam("p"), batch_run=batch_run, updated_at=now))
        with self.engine.begin() as c:
            for i in range(0, len(records), 5000):
                c.execute(insert_ignore(self.engine, t), records[i:i + 5000])
            if before:
                c.execute(move, [{"k": r["idempotency_key"], "h": r["hour"], "p": r["planned_at"]} for r in records])
        return self.count() - before

    def count(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(self.t)).scalar_one()

    def pending_keys(self, send_day: str, hour: int) -> set[str]:
        import sqlalchemy as sa

        t = self.t
        with self.engine.connect() as c:
            return set(c.execute(sa.select(t.c.idempotency_key).where(
                (t.c.send_day == send_day) & (t.c.hour == hour) & (t.c.state == PENDING))).scalars())

    def record(self, results: list[dict]) -> None:
        """Apply outcomes in one transaction: {key, state, attempts, last_status, reason, message_name, acked_at}.
        An acknowledged key is never moved back (a late retry's answer cannot undo an ack)."""
        import sqlalchemy as sa

        if not results:
            return
        t = self.t
        now = time.time()
        stmt = (sa.update(t).where((t.c.idempotency_key == sa.bindparam("k")) & (t.c.state != ACKED))
                .values(state=sa.bindparam("s"), attempts=sa.bindparam("a"), last_status=sa.bindparam("st"),
                        reason=sa.bindparam("r"), message_name=sa.bindparam("n"), acked_at=sa.bindparam("at"),
                        updated_at=now))
        with self.engine.begin() as c:
            c.execute(stmt, [{"k": r["key"], "s": r["state"], "a": r["attempts"], "st": r.get("last_status"),
                              "r": r.get("reason"), "n": r.get("message_name"), "at": r.get("acked_at")}
                             for r in results])

    def states(self, send_day: str, hour: int | None = None) -> Counter:
        import sqlalchemy as sa

        t = self.t
        q = sa.select(t.c.state, sa.func.count()).where(t.c.send_day == send_day)
        if hour is not None:
            q = q.where(t.c.hour == hour)
        with self.engine.connect() as c:
            return Counter(dict(c.execute(q.group_by(t.c.state)).all()))

    def acked_at(self, keys: list[str]) -> dict[str, float]:
        import sqlalchemy as sa

        out: dict[str, float] = {}
        t = self.t
        with self.engine.connect() as c:
            for i in range(0, len(keys), 900):
                out.update(dict(c.execute(sa.select(t.c.idempotency_key, t.c.acked_at).where(
                    t.c.idempotency_key.in_(keys[i:i + 900]) & (t.c.state == ACKED))).all()))
        return out

    def key_states(self, keys: list[str]) -> Counter:
        """State counts of exactly these keys."""
        import sqlalchemy as sa

        out: Counter = Counter()
        with self.engine.connect() as c:
            for i in range(0, len(keys), 900):
                out.update(dict(c.execute(sa.select(self.t.c.state, sa.func.count()).where(
                    self.t.c.idempotency_key.in_(keys[i:i + 900])).group_by(self.t.c.state)).all()))
        return out

    def dead_letter_reasons(self, send_day: str) -> Counter:
        """Dead letters of a day by reason (the reason's first word: unregistered, rejected, retries, next)."""
        import sqlalchemy as sa

        t = self.t
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.reason).where((t.c.send_day == send_day) & (t.c.state == DEAD))).scalars()
            return Counter((r or "").split(":")[0] for r in rows)

    def rows(self, send_day: str, hour: int, state: str | None = None) -> list[dict]:
        import sqlalchemy as sa

        t = self.t
        q = sa.select(t).where((t.c.send_day == send_day) & (t.c.hour == hour))
        if state:
            q = q.where(t.c.state == state)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q.order_by(t.c.idempotency_key))]

    def dispose(self) -> None:
        self.engine.dispose()
