"""The delivery ledger: the state of every idempotency key, so a crashed or re-run delivery resumes.

One row per message (key = its idempotency key): `pending` until a run claims it (`sending`: the
send intent, committed before the request goes out), then `acked` (with the gateway's message name) or
`dead_letter` (with the reason). A re-run loads the same batch again (existing keys are left as they are),
then sends only what is still pending: nothing acknowledged is sent again, nothing unacknowledged is
forgotten. SQLite by default, PostgreSQL by URL (SQLAlchemy Core, the same statements on both).

Exactly-once without the gateway's help (FCM ignores idempotency keys):
- A lease per delivery scope (one send hour, one trigger window): a second run of the same scope is
  refused while the first is alive (heartbeat, or its PID on this host); a dead holder's lease is taken over.
- Claims: a run sends only the keys it moved from `pending` to `sending` under its own run id (a compare-and-
  set), so two runs of different scopes that hold the same key (a re-plan moved it) never both send it.
- In doubt: a key left `sending` by a run that died may or may not have reached the phone. It is sent again
  (never lost) and counted as `in_doubt`; the sender keeps at most `max_in_doubt` keys claimed and not yet
  recorded, so a crash repeats at most that many.
- One nightly push per user and send day: a re-plan's new key for a user who already has a live or
  delivered nightly key that day is filed `dead_letter` (`superseded`), never sent.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter

log = logging.getLogger(__name__)

PENDING, SENDING, ACKED, DEAD = "pending", "sending", "acked", "dead_letter"
NIGHTLY = "nightly"
STREAM = "stream"          # the window of the streaming trigger engine's messages (their receipts are its own files)


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


class DeliveryBusy(RuntimeError):
    """Another live run holds the delivery scope's lease: a second run would send the same messages."""


def create_tables(engine, md) -> None:
    """create_all that two processes may run at once on a fresh database (PostgreSQL: under an advisory lock,
    else `pg_type` unique violations; SQLite: a concurrent CREATE is retried)."""
    import sqlalchemy as sa

    if engine.dialect.name == "postgresql":
        with engine.begin() as c:
            c.exec_driver_sql("SELECT pg_advisory_xact_lock(714201301)")
            md.create_all(c)
        return
    for attempt in range(5):
        try:
            md.create_all(engine)
            return
        except sa.exc.OperationalError as e:
            if "already exists" not in str(e) or attempt == 4:
                raise


def run_identity() -> str:
    """host:pid:random — a run's id; the host and PID let another run on this host tell it is dead."""
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(run_id: str) -> bool:
    """True when `run_id` is a process of this host that no longer exists."""
    import os
    import socket

    host, _, rest = run_id.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Ledger:
    def __init__(self, url: str, lease_ttl_s: float = 30.0):
        import sqlalchemy as sa

        self.engine = state_engine(url)
        self.lease_ttl_s = lease_ttl_s
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
            sa.Column("claimed_by", sa.String(120)),                 # the run that sent (or is sending) it
            sa.Column("claimed_at", sa.Float),
        )
        sa.Index("ix_ledger_day_hour_state", self.t.c.send_day, self.t.c.hour, self.t.c.state)
        sa.Index("ix_ledger_day_user", self.t.c.send_day, self.t.c.user_id)
        self.lease = sa.Table(
            "delivery_lease", md,
            sa.Column("scope", sa.String(120), primary_key=True),   # nightly/<day>/h<HH>, trigger/<day>/<HHMM>
            sa.Column("run_id", sa.String(120), nullable=False),
            sa.Column("started_at", sa.Float, nullable=False),
            sa.Column("heartbeat_at", sa.Float, nullable=False),
        )
        create_tables(self.engine, md)
        self._migrate()

    def _migrate(self) -> None:
        """Ledgers written before claims existed get the two columns and the (day, user) index."""
        import sqlalchemy as sa

        have = {c["name"] for c in sa.inspect(self.engine).get_columns("delivery_ledger")}
        if {"claimed_by", "claimed_at"} <= have:
            return
        with self.engine.begin() as c:
            for name, kind in (("claimed_by", "VARCHAR(120)"), ("claimed_at", "FLOAT")):
                if name not in have:
                    c.exec_driver_sql(f"ALTER TABLE delivery_ledger ADD COLUMN {name} {kind}")
            for index in self.t.indexes:
                index.create(c, checkfirst=True)

    # leases -------------------------------------------------------------------------------------------------
    def acquire(self, scope: str) -> str:
        """Take the scope's lease for a new run and return its id; DeliveryBusy when a live run holds it."""
        import sqlalchemy as sa

        run_id, now, L = run_identity(), time.time(), self.lease
        with self.engine.begin() as c:
            for (other,) in c.execute(sa.select(L.c.run_id)).all():     # leases of runs that died on this host
                if _dead_here(other):
                    c.execute(sa.delete(L).where(L.c.run_id == other))
            c.execute(insert_ignore(self.engine, L), {"scope": scope, "run_id": run_id, "started_at": now,
                                                      "heartbeat_at": now})
            holder, beat = c.execute(sa.select(L.c.run_id, L.c.heartbeat_at).where(L.c.scope == scope)).one()
            if holder == run_id:
                return run_id
            if beat < now - self.lease_ttl_s:
                took = c.execute(sa.update(L).where((L.c.scope == scope) & (L.c.run_id == holder))
                                 .values(run_id=run_id, started_at=now, heartbeat_at=now)).rowcount
                if took == 1:
                    log.warning("%s: took over the lease of run %s (no heartbeat for %.0f s)", scope, holder, now - beat)
                    return run_id
        raise DeliveryBusy(f"{scope} is being delivered by run {holder} (heartbeat {now - beat:.1f} s ago): a second "
                           f"run would send the same messages, so this one does not start. The lease passes on when "
                           f"that run ends, dies, or misses heartbeats for {self.lease_ttl_s:.0f} s.")

    def heartbeat(self, run_id: str) -> bool:
        """Renew the run's lease; False when it was lost (taken over after missed heartbeats)."""
        import sqlalchemy as sa

        with self.engine.begin() as c:
            return c.execute(sa.update(self.lease).where(self.lease.c.run_id == run_id)
                             .values(heartbeat_at=time.time())).rowcount > 0

    def release(self, run_id: str) -> None:
        import sqlalchemy as sa

        with self.engine.begin() as c:
            c.execute(sa.delete(self.lease).where(self.lease.c.run_id == run_id))

    def _live_runs(self):
        import sqlalchemy as sa

        return sa.select(self.lease.c.run_id).where(self.lease.c.heartbeat_at >= time.time() - self.lease_ttl_s)

    def _orphaned(self):
        """`sending` rows whose run is no longer alive: in doubt (they may or may not have been delivered)."""
        t = self.t
        return (t.c.state == SENDING) & (t.c.claimed_by.is_(None) | t.c.claimed_by.not_in(self._live_runs()))

    def claim(self, keys: list[str], run_id: str) -> set[str]:
        """The send intent: move these keys from pending (or in doubt) to `sending` under `run_id`, committed
        before any of them is sent. Returns the keys this run now holds; a key another live run holds, or one
        already acked or dead-lettered, is not among them."""
        import sqlalchemy as sa

        t, now = self.t, time.time()
        got: set[str] = set()
        with self.engine.begin() as c:
            for i in range(0, len(keys), 900):
                chunk = keys[i:i + 900]
                c.execute(sa.update(t).where(t.c.idempotency_key.in_(chunk) & ((t.c.state == PENDING) | self._orphaned()))
                          .values(state=SENDING, claimed_by=run_id, claimed_at=now, updated_at=now))
                got.update(c.execute(sa.select(t.c.idempotency_key).where(
                    t.c.idempotency_key.in_(chunk) & (t.c.claimed_by == run_id) & (t.c.state == SENDING))).scalars())
        return got

    # messages -----------------------------------------------------------------------------------------------
    def load(self, rows: list[dict], batch_run: str) -> int:
        """Register a batch's messages; keys already in the ledger keep their state. Returns new keys.

        One nightly push per user and send day: when a re-plan gives a user a new nightly key, the user's old
        key wins if it was sent (or is being sent) — the new one is filed `dead_letter`, reason `superseded` —
        and the new one wins over an old key still pending (that one is filed `dead_letter`, `replanned`)."""
        import hashlib

        now = time.time()
        records = [{
            "idempotency_key": r["idempotency_key"], "send_day": r["send_day"], "hour": int(r["hour"]),
            "window": r["window"], "user_id": int(r["user_id"]), "scene_id": r["scene_id"],
            "item_ids": json.dumps([int(i) for i in r["item_ids"]]), "policy": r.get("policy"),
            "propensity": r.get("propensity"), "token_sha256": hashlib.sha256(r["device_token"].encode()).hexdigest(),
            "planned_at": float(r["planned_at"]), "batch_run": batch_run, "state": PENDING, "attempts": 0,
            "reason": None, "updated_at": now} for r in rows]
        import sqlalchemy as sa

        before = self.count()
        t = self.t
        # A key still pending goes out with the batch that holds it now: a re-plan may have moved it to another
        # hour, and filed under its old hour it would never be sent (the old hour's run is over).
        move = (sa.update(t).where((t.c.idempotency_key == sa.bindparam("k")) & (t.c.state == PENDING)
                                   & (t.c.hour != sa.bindparam("h")))
                .values(hour=sa.bindparam("h"), planned_at=sa.bindparam("p"), batch_run=batch_run, updated_at=now))
        with self.engine.begin() as c:
            if before:
                self._resolve_replans(c, [r for r in records if r["window"] == NIGHTLY], now)
            for i in range(0, len(records), 5000):
                c.execute(insert_ignore(self.engine, t), records[i:i + 5000])
            if before:
                c.execute(move, [{"k": r["idempotency_key"], "h": r["hour"], "p": r["planned_at"]} for r in records])
        return self.count() - before

    def _resolve_replans(self, c, nightly: list[dict], now: float) -> None:
        """Within load's transaction: settle new nightly keys against the users' other nightly keys that day."""
        import sqlalchemy as sa

        if not nightly:
            return
        t = self.t
        mine = {(r["send_day"], r["user_id"]): r for r in nightly}
        others: dict[tuple, list] = {}
        for day in {r["send_day"] for r in nightly}:
            users = [u for d, u in mine if d == day]
            for i in range(0, len(users), 900):
                for key, user, state in c.execute(sa.select(t.c.idempotency_key, t.c.user_id, t.c.state).where(
                        (t.c.send_day == day) & (t.c.window == NIGHTLY) & t.c.user_id.in_(users[i:i + 900])
                        & (t.c.state != DEAD))):
                    if key != mine[(day, user)]["idempotency_key"]:
                        others.setdefault((day, user), []).append((key, state))
        replanned = []
        for du, olds in others.items():
            r = mine[du]
            kept = [(k, s) for k, s in olds if s != PENDING]
            if kept:
                r["state"], r["reason"] = DEAD, f"superseded: the user's nightly push this day is {kept[0][0]} ({kept[0][1]})"
            else:
                replanned += [{"k": k, "r": f"replanned: superseded by {r['idempotency_key']}"} for k, _ in olds]
        if replanned:
            c.execute(sa.update(t).where((t.c.idempotency_key == sa.bindparam("k")) & (t.c.state == PENDING))
                      .values(state=DEAD, reason=sa.bindparam("r"), updated_at=now), replanned)

    def settle_availability(self, withdrawn: list[dict], revised: list[dict]) -> None:
        """In one transaction: file the withdrawn messages `dead_letter` with their `withdrawn_reason`, and store the
        revised ones' remaining items (the receipts list what was sent). Only keys still pending are changed."""
        import sqlalchemy as sa

        if not withdrawn and not revised:
            return
        t, now = self.t, time.time()
        pending = (t.c.idempotency_key == sa.bindparam("k")) & (t.c.state == PENDING)
        with self.engine.begin() as c:
            if withdrawn:
                c.execute(sa.update(t).where(pending).values(state=DEAD, reason=sa.bindparam("r"), updated_at=now),
                          [{"k": m["idempotency_key"], "r": m["withdrawn_reason"][:200]} for m in withdrawn])
            if revised:
                c.execute(sa.update(t).where(pending).values(item_ids=sa.bindparam("i"), updated_at=now),
                          [{"k": m["idempotency_key"], "i": json.dumps([int(i) for i in m["item_ids"]])}
                           for m in revised])

    def count(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(self.t)).scalar_one()

    def pending_keys(self, send_day: str, hour: int) -> set[str]:
        """Keys of the hour still to send: pending, or left in doubt by a run that died."""
        import sqlalchemy as sa

        t = self.t
        with self.engine.connect() as c:
            return set(c.execute(sa.select(t.c.idempotency_key).where(
                (t.c.send_day == send_day) & (t.c.hour == hour) & ((t.c.state == PENDING) | self._orphaned()))).scalars())

    def in_doubt(self, keys: list[str]) -> set[str]:
        """Those of `keys` a dead run had claimed and not recorded: sent again, they may reach a phone twice."""
        import sqlalchemy as sa

        out: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(keys), 900):
                out.update(c.execute(sa.select(self.t.c.idempotency_key).where(
                    self.t.c.idempotency_key.in_(keys[i:i + 900]) & self._orphaned())).scalars())
        return out

    def record(self, results: list[dict], run_id: str | None = None) -> None:
        """Apply outcomes in one transaction: {key, state, attempts, last_status, reason, message_name, acked_at}.
        An acknowledged key is never moved back (a late retry's answer cannot undo an ack). With `run_id`, a key
        goes back to pending only while this run still holds it: a run that lost its lease cannot un-claim what
        the run that took over is sending."""
        import sqlalchemy as sa

        if not results:
            return
        t = self.t
        now = time.time()
        stmt = (sa.update(t).where((t.c.idempotency_key == sa.bindparam("k")) & (t.c.state != ACKED))
                .values(state=sa.bindparam("s"), attempts=sa.bindparam("a"), last_status=sa.bindparam("st"),
                        reason=sa.bindparam("r"), message_name=sa.bindparam("n"), acked_at=sa.bindparam("at"),
                        updated_at=now))
        rows = lambda state_is_pending: [  # noqa: E731
            {"k": r["key"], "s": r["state"], "a": r["attempts"], "st": r.get("last_status"), "r": r.get("reason"),
             "n": r.get("message_name"), "at": r.get("acked_at")}
            for r in results if (r["state"] == PENDING) == state_is_pending]
        final, back = rows(False), rows(True)
        with self.engine.begin() as c:
            if final:
                c.execute(stmt, final)
            if back:
                c.execute(stmt.where(t.c.claimed_by == run_id) if run_id else stmt, back)

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
        """Dead letters of a day by reason (the reason's first word: unregistered, rejected, retries, next,
        superseded, replanned, items_gone)."""
        import sqlalchemy as sa

        t = self.t
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.reason).where((t.c.send_day == send_day) & (t.c.state == DEAD))).scalars()
            return Counter((r or "").split(":")[0] for r in rows)

    def rows(self, send_day: str, hour: int, state: str | None = None, stream: bool | None = None) -> list[dict]:
        """The hour's rows (of one state); stream: only the streaming engine's (True) or all but them (False)."""
        import sqlalchemy as sa

        t = self.t
        q = sa.select(t).where((t.c.send_day == send_day) & (t.c.hour == hour))
        if state:
            q = q.where(t.c.state == state)
        if stream is not None:
            q = q.where(t.c.window == STREAM if stream else t.c.window != STREAM)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q.order_by(t.c.idempotency_key))]

    def dispose(self) -> None:
        self.engine.dispose()
