"""The trigger log and watermark: every trigger decision (emitted / cancelled / suppressed, with its reason),
keyed by hash(rule, user, item, event time), so a window re-run or a late event is decided once.
"""
from __future__ import annotations

import time

import pandas as pd

EMITTED, CANCELLED, SUPPRESSED = "emitted", "cancelled", "suppressed"


class TriggerState:
    def __init__(self, url: str):
        import sqlalchemy as sa

        from delivery.ledger import create_tables, state_engine

        self.engine = state_engine(url)
        md = sa.MetaData()
        self.log = sa.Table(
            "trigger_log", md,
            sa.Column("trigger_key", sa.String(64), primary_key=True),
            sa.Column("rule_id", sa.String(64), nullable=False),
            sa.Column("user_id", sa.BigInteger, nullable=False, index=True),
            sa.Column("item_id", sa.BigInteger, nullable=False),
            sa.Column("scene_id", sa.String(64), nullable=False),
            sa.Column("event_ts", sa.BigInteger, nullable=False),
            sa.Column("fire_at", sa.BigInteger, nullable=False),
            sa.Column("send_at", sa.BigInteger),
            sa.Column("local_day", sa.String(10)),
            sa.Column("due_window", sa.BigInteger, index=True),     # the window end it goes out with
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("reason", sa.String(64)),
            sa.Column("detail", sa.String(200)),
            sa.Column("decided_by", sa.BigInteger, nullable=False),  # the window end that decided it
            sa.Column("decided_at", sa.Float, nullable=False),
            sa.Column("p_open", sa.Float),                             # the model's estimate (streaming engine)
            sa.Column("engine", sa.String(16)),                        # batch | stream
        )
        self.mark = sa.Table("trigger_watermark", md, sa.Column("name", sa.String(32), primary_key=True),
                             sa.Column("processed_until", sa.BigInteger, nullable=False),
                             sa.Column("updated_at", sa.Float, nullable=False))
        create_tables(self.engine, md)
        self._migrate()

    def _migrate(self) -> None:
        """Trigger logs written before the streaming engine get its two columns."""
        import sqlalchemy as sa

        have = {c["name"] for c in sa.inspect(self.engine).get_columns("trigger_log")}
        with self.engine.begin() as c:
            for name, kind in (("p_open", "FLOAT"), ("engine", "VARCHAR(16)")):
                if name not in have:
                    c.exec_driver_sql(f"ALTER TABLE trigger_log ADD COLUMN {name} {kind}")

    def decided(self, keys: list[str]) -> set[str]:
        import sqlalchemy as sa

        out: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(keys), 900):
                out |= set(c.execute(sa.select(self.log.c.trigger_key).where(
                    self.log.c.trigger_key.in_(keys[i:i + 900]))).scalars())
        return out

    def record(self, rows: list[dict]) -> None:
        from delivery.ledger import insert_ignore

        if not rows:
            return
        with self.engine.begin() as c:
            c.execute(insert_ignore(self.engine, self.log), rows)

    def cancel_emitted(self, reasons: dict[str, str]) -> None:
        """Emitted pushes not sent after all (key -> reason): the item sold while quiet hours held them."""
        import sqlalchemy as sa

        if not reasons:
            return
        t = self.log
        with self.engine.begin() as c:
            c.execute(sa.update(t).where((t.c.trigger_key == sa.bindparam("k")) & (t.c.state == EMITTED))
                      .values(state=CANCELLED, reason=sa.bindparam("r"), decided_at=time.time()),
                      [{"k": k, "r": r[:64]} for k, r in reasons.items()])

    def emitted_for(self, user_ids: list[int] | None, since_us: int) -> pd.DataFrame:
        """Emitted decisions sent since since_us, of these users (None: of every user)."""
        import sqlalchemy as sa

        t = self.log
        q = sa.select(t.c.user_id, t.c.item_id, t.c.send_at, t.c.local_day).where(
            (t.c.state == EMITTED) & (t.c.send_at >= since_us))
        if user_ids is not None:
            q = q.where(t.c.user_id.in_(user_ids or [-1]))
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        return pd.DataFrame(rows, columns=["user_id", "item_id", "send_at", "local_day"])

    def emitted_since(self, since_us: int, engine: str | None = None) -> pd.DataFrame:
        """Every emitted decision with send_at >= since_us (all columns), oldest send first."""
        import sqlalchemy as sa

        t = self.log
        q = sa.select(t).where((t.c.state == EMITTED) & (t.c.send_at >= since_us))
        if engine:
            q = q.where(t.c.engine == engine)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(t.c.send_at, t.c.trigger_key)).all()
        return pd.DataFrame([dict(r._mapping) for r in rows])

    def due(self, window_end: int) -> pd.DataFrame:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            rows = c.execute(sa.select(self.log).where((self.log.c.due_window == window_end)
                                                      & (self.log.c.state == EMITTED))
                             .order_by(self.log.c.send_at, self.log.c.trigger_key)).all()
        return pd.DataFrame([dict(r._mapping) for r in rows])

    def watermark(self) -> int | None:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            return c.execute(sa.select(self.mark.c.processed_until).where(self.mark.c.name == "triggers")).scalar()

    def advance(self, window_end: int) -> int:
        import sqlalchemy as sa

        current = self.watermark()
        new = max(current or window_end, window_end)
        with self.engine.begin() as c:
            if current is None:
                c.execute(sa.insert(self.mark).values(name="triggers", processed_until=new, updated_at=time.time()))
            else:
                c.execute(sa.update(self.mark).where(self.mark.c.name == "triggers")
                          .values(processed_until=new, updated_at=time.time()))
        return new

    def dispose(self) -> None:
        self.engine.dispose()
