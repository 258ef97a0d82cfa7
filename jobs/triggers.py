"""The trigger micro-batch: IFTTT rules over fresh events, pushed within the window that makes them due.

    hermes triggers --window-end 2026-10-30T12:15:00        (the `hermes_triggers` DAG's task)

For the window [end - window, end) it:
1. reads the raw events and item changes the rules need — only those with event time before `end`
   (point in time: a replay never sees the future);
2. finds every candidate whose push falls due in [end - window - lateness, end): the lateness margin lets
   an event that arrived after its own window was processed still be emitted, once, by a later window;
3. drops candidates already decided (the trigger log, keyed by hash(rule, user, item, event time));
   cancels those with an exception in (event, due] (`unless`); checks the rule's `if` on the latest
   nightly user features; applies the fatigue shared with the nightly plan — opt-out, device token, dead
   token, platform quota and the daily cap over one budget per user per local day (pushes already sent +
   the nightly plan's pushes for that day + triggers already emitted) — and the re-eligibility gap for
   the same user x item across both paths; pushes due in the user's quiet hours wait for the quiet end;
4. logs every decision (emitted / cancelled / suppressed, with the reason) and advances the watermark;
5. writes the messages due in this window as a batch with its manifest and delivers it at once through
   the same sender, ledger and receipts as the hourly delivery (push_log policy `trigger:<rule id>`).
A re-run of a window decides nothing new and rewrites the same batch; its messages are already acked.
"""
from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from jobs.settings import Settings
from jobs.warehouse import Warehouse

log = logging.getLogger(__name__)
US = 1_000_000
EMITTED, CANCELLED, SUPPRESSED = "emitted", "cancelled", "suppressed"


# ---- state: the trigger log and the watermark --------------------------------------------------------
class TriggerState:
    def __init__(self, url: str):
        import sqlalchemy as sa

        from delivery.ledger import state_engine

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
        )
        self.mark = sa.Table("trigger_watermark", md, sa.Column("name", sa.String(32), primary_key=True),
                             sa.Column("processed_until", sa.BigInteger, nullable=False),
                             sa.Column("updated_at", sa.Float, nullable=False))
        md.create_all(self.engine)

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

    def emitted_for(self, user_ids: list[int], since_us: int) -> pd.DataFrame:
        import sqlalchemy as sa

        t = self.log
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.user_id, t.c.item_id, t.c.send_at, t.c.local_day).where(
                (t.c.state == EMITTED) & (t.c.send_at >= since_us) & t.c.user_id.in_(user_ids or [-1]))).all()
        return pd.DataFrame(rows, columns=["user_id", "item_id", "send_at", "local_day"])

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


# ---- inputs -----------------------------------------------------------------------------------------
def _read(wh: Warehouse, table: str, first: int, end: int, columns: list[str]) -> pd.DataFrame:
    """Raw fact rows with first <= ts < end (only the ds partitions that can hold them)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    days = pd.date_range(pd.Timestamp(first, unit="us").normalize(), pd.Timestamp(end - 1, unit="us").normalize())
    files = [str(p) for d in days for p in sorted(wh.raw_partition(table, d.date().isoformat()).glob("*.parquet"))]
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c != "event_type" and c != "change" else "object")
                             for c in columns})
    ts = "ts"
    t = pads.dataset(files, format="parquet").to_table(columns=columns)
    t = t.set_column(t.schema.get_field_index(ts), ts, pc.cast(t[ts], pa.timestamp("us", tz="UTC")).cast(pa.int64()))
    t = t.filter(pc.and_(pc.greater_equal(t[ts], first), pc.less(t[ts], end)))
    return t.to_pandas()


def _latest_partition(wh: Warehouse, name: str, on_or_before: str) -> str:
    parts = sorted(p.name[3:] for p in wh.table(name).glob("ds=*") if p.name[3:] <= on_or_before)
    if not parts:
        raise FileNotFoundError(f"{name}: no partition on or before {on_or_before}; the trigger rules' conditions "
                                "and the shared fatigue budget need a nightly run first")
    return parts[-1]


def _local_days(ts_us: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """Local date (ISO) of each (time, zone)."""
    return np.array([datetime.fromtimestamp(t / US, tz=ZoneInfo(z)).date().isoformat()
                     for t, z in zip(ts_us.tolist(), tz.tolist())], dtype=object)


def _after_quiet(ts_us: int, tz: str, quiet) -> int:
    """ts, or the end of the user's quiet hours if ts falls inside them."""
    d = datetime.fromtimestamp(ts_us / US, tz=ZoneInfo(tz))
    if not quiet.is_quiet(d.hour):
        return ts_us
    end = d.replace(hour=quiet.end_hour, minute=0, second=0, microsecond=0)
    if end <= d:
        end += timedelta(days=1)
    return int(end.timestamp() * US)


# ---- the run ----------------------------------------------------------------------------------------
def evaluate(settings: Settings, window_end: datetime, loaded, window_minutes: int, lateness_minutes: int) -> dict:
    """Steps 1-4: decide every candidate due in the window (+ lateness); returns counts."""
    from features import triggers as ft

    cfg = loaded.config
    rules = {t.id: t for t in cfg.triggers if t.enabled}
    wh = Warehouse(settings.warehouse)
    end = int(window_end.timestamp() * US)
    lo = end - (window_minutes + lateness_minutes) * 60 * US
    max_delay = max([(r.delay_minutes + (r.when.wait_minutes if r.when.event == "chat_waiting" else 0)) for r in
                     rules.values()] + [0]) * 60 * US
    lookback = max([r.when.lookback_days for r in rules.values()] + [1]) * ft.US_DAY
    first = lo - max_delay - lookback - ft.US_DAY
    events = _read(wh, "events", first, end, ["ts", "user_id", "event_type", "item_id", "seller_id"])
    changes = _read(wh, "item_changes", first, end, ["item_id", "ts", "change", "price"])
    import pyarrow.dataset as pads

    items = pads.dataset(str(wh.raw("items")), format="parquet").to_table(
        columns=["item_id", "seller_id", "category_id", "title", "price"]).to_pandas()
    parts = []
    for r in rules.values():
        kind = r.when.event
        if kind == "price_drop":
            parts.append(ft.price_drop(r, changes, events, lo, end))
        elif kind == "seller_listed":
            parts.append(ft.seller_listed(r, changes, events, items, lo, end))
        elif kind == "selling_out":
            parts.append(ft.selling_out(r, events, lo, end))
        elif kind == "chat_waiting":
            parts.append(ft.chat_waiting(r, events, lo, end))
    cands = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(not p.empty for p in parts) \
        else ft._empty()
    cands["trigger_key"] = [ft.trigger_key(*k) for k in
                            zip(cands["rule_id"], cands["user_id"], cands["item_id"], cands["event_ts"])]
    state = TriggerState(settings.ledger_url)
    fresh = cands[~cands["trigger_key"].isin(state.decided(cands["trigger_key"].tolist()))].copy()
    counts = {"candidates": len(cands), "already_decided": len(cands) - len(fresh)}
    if fresh.empty:
        counts.update({EMITTED: 0, CANCELLED: 0, SUPPRESSED: 0, "reasons": {}})
        counts["watermark"] = state.advance(end)
        state.dispose()
        return counts
    fresh["scene_id"] = fresh["rule_id"].map(lambda r: rules[r].then.scene)
    fresh["send_at"] = np.nan
    fresh["local_day"] = None
    fresh["reason"] = ft.cancelled(fresh, rules, events, changes)
    fresh["state"] = np.where(fresh["reason"].notna(), CANCELLED, "")

    # the rule's `if` on the latest nightly features (as of the day before the window ends)
    feat_ds = _latest_partition(wh, "features/user_features", (window_end.date() - timedelta(days=1)).isoformat())
    uf = wh.read_arrow("features/user_features", feat_ds).to_pandas().set_index("user_id")
    for rid, r in rules.items():
        m = (fresh["rule_id"] == rid) & (fresh["state"] == "")
        if r.condition is None or not m.any():
            continue
        ids = fresh.loc[m, "user_id"]
        known = ids.isin(uf.index)
        ok = pd.Series(False, index=ids.index)
        ok[known] = ft.matches(r.condition, uf.loc[ids[known]].reset_index()).to_numpy()
        fresh.loc[m & ~ok.reindex(fresh.index, fill_value=True), ["state", "reason"]] = [SUPPRESSED, "condition"]

    # shared fatigue: people, then the budget in the user's local day and the re-eligibility gap
    people = pd.read_parquet(wh.raw("users"), columns=["user_id", "tz", "platform", "opt_in", "device_token"]) \
        .set_index("user_id")
    todo = fresh[fresh["state"] == ""].copy()
    todo = todo.join(people, on="user_id")
    import hashlib

    from features.holdout import in_holdout

    todo["held"] = in_holdout(todo["user_id"].to_numpy(), cfg.platform.holdout_share)

    dead = set()
    if wh.dead_tokens.exists():
        d = pd.read_parquet(wh.dead_tokens, columns=["user_id", "token_sha256"])
        dead = set(zip(d["user_id"], d["token_sha256"]))
    todo["send_at"] = [_after_quiet(int(t), z, cfg.platform.quiet_hours) if isinstance(z, str) else int(t)
                       for t, z in zip(todo["fire_at"], todo["tz"])]
    todo["local_day"] = _local_days(todo["send_at"].to_numpy(), todo["tz"].fillna("UTC").to_numpy())
    history = _sent_history(wh, cfg, todo, state, end)
    fat = cfg.platform.fatigue
    quotas = cfg.platform.platform_quotas
    used: dict[tuple[int, str], set] = {}
    for (u, day), keys in history["day_keys"].items():
        used[(u, day)] = set(keys)
    pairs_sent = history["pairs"]                         # (user, item) -> list of send times (us)
    decisions = []
    for idx, r in todo.sort_values(["send_at", "trigger_key"]).iterrows():
        u = int(r["user_id"])
        token = r["device_token"] if isinstance(r["device_token"], str) else ""
        reason = None
        if r["held"]:
            reason = "holdout"
        elif r["opt_in"] is not True and r["opt_in"] != 1:
            reason = "opted_out"
        elif not token:
            reason = "no_device_token"
        elif (u, hashlib.sha256(token.encode()).hexdigest()) in dead:
            reason = "dead_token"
        else:
            day_used = used.setdefault((u, r["local_day"]), set())
            quota = quotas.get(r["platform"])
            gap = rules[r["rule_id"]].regap_hours * 3600 * US
            recent = [t for t in pairs_sent.get((u, int(r["item_id"])), []) if abs(int(r["send_at"]) - t) < gap]
            if quota is not None and len(day_used) >= quota:
                reason = "platform_quota"
            elif len(day_used) >= fat.max_per_user_per_day:
                reason = "daily_cap"
            elif recent:
                reason = "regap"
            else:
                day_used.add(r["trigger_key"])
                pairs_sent.setdefault((u, int(r["item_id"])), []).append(int(r["send_at"]))
        decisions.append((idx, reason))
    for idx, reason in decisions:
        fresh.loc[idx, "state"] = SUPPRESSED if reason else EMITTED
        fresh.loc[idx, "reason"] = reason
        fresh.loc[idx, "send_at"] = todo.loc[idx, "send_at"]
        fresh.loc[idx, "local_day"] = todo.loc[idx, "local_day"]
    window_us = window_minutes * 60 * US
    rows = []
    now = time.time()
    for r in fresh.itertuples(index=False):
        send_at = int(r.send_at) if r.state == EMITTED else None
        # it goes out with this window, or (waiting for quiet hours to end) with the window holding send_at
        due = None if send_at is None else (end if send_at < end else (send_at // window_us + 1) * window_us)
        rows.append({"trigger_key": r.trigger_key, "rule_id": r.rule_id, "user_id": int(r.user_id),
                     "item_id": int(r.item_id), "scene_id": r.scene_id, "event_ts": int(r.event_ts),
                     "fire_at": int(r.fire_at), "send_at": send_at,
                     "local_day": r.local_day if r.state == EMITTED else None,
                     "due_window": due,
                     "state": r.state, "reason": r.reason, "detail": r.detail, "decided_by": end, "decided_at": now})
    state.record(rows)
    counts[EMITTED] = int((fresh["state"] == EMITTED).sum())
    counts[CANCELLED] = int((fresh["state"] == CANCELLED).sum())
    counts[SUPPRESSED] = int((fresh["state"] == SUPPRESSED).sum())
    counts["reasons"] = {k: int(v) for k, v in fresh.loc[fresh["reason"].notna(), "reason"].value_counts().items()}
    counts["by_rule"] = {k: int(v) for k, v in fresh.loc[fresh["state"] == EMITTED, "rule_id"].value_counts().items()}
    counts["watermark"] = state.advance(end)
    state.dispose()
    return counts


def _sent_history(wh: Warehouse, cfg, todo: pd.DataFrame, state: TriggerState, end: int) -> dict:
    """What already counts against each candidate user's budget and gap: pushes in push_log, the nightly
    plan's pushes (plan/windows of the plans covering these days), and triggers already emitted."""
    users = sorted(set(todo["user_id"].astype(int)))
    tz = todo.drop_duplicates("user_id").set_index("user_id")["tz"].to_dict()
    max_gap = max([t.regap_hours for t in cfg.triggers] + [24]) * 3600 * US
    first = end - max_gap - 2 * 24 * 3600 * US
    day_keys: dict[tuple[int, str], list] = {}
    pairs: dict[tuple[int, int], list] = {}

    def add(u, key, at, items_):
        d = datetime.fromtimestamp(at / US, tz=ZoneInfo(tz.get(u) or "UTC")).date().isoformat()
        day_keys.setdefault((u, d), []).append(key)
        for i in items_:
            pairs.setdefault((u, int(i)), []).append(at)

    log_rows = _read_push_log(wh, first, end + 2 * 24 * 3600 * US, users)
    for r in log_rows.itertuples(index=False):
        add(int(r.user_id), r.push_id, int(r.sent_at), r.item_ids)
    day = datetime.fromtimestamp(end / US, tz=timezone.utc).date()
    for plan_ds in ((day - timedelta(days=k)).isoformat() for k in (1, 2)):
        path = wh.partition("plan/windows", plan_ds)
        if not path.exists():
            continue
        w = wh.read_arrow("plan/windows", plan_ds, ["user_id", "policy", "slot", "send_at", "item_ids", "scene_id"])
        w = w.to_pandas()
        w = w[(w["policy"] == cfg.platform.windows.policy) & (w["slot"] >= 0) & w["user_id"].isin(users)]
        from delivery.batches import NIGHTLY_WINDOW, idempotency_key

        send_day = (date.fromisoformat(plan_ds) + timedelta(days=1)).isoformat()
        for r in w.itertuples(index=False):
            key = idempotency_key(int(r.user_id), r.scene_id, send_day, NIGHTLY_WINDOW)
            add(int(r.user_id), key, int(pd.Timestamp(r.send_at).value // 1000), r.item_ids)
    em = state.emitted_for(users, first)
    for r in em.itertuples(index=False):
        add(int(r.user_id), f"t-{r.user_id}-{r.item_id}-{r.send_at}", int(r.send_at), [r.item_id])
    # the same push counted once whether it is in the plan and in push_log
    return {"day_keys": {k: list(dict.fromkeys(v)) for k, v in day_keys.items()}, "pairs": pairs}


def _read_push_log(wh: Warehouse, first: int, end: int, users: list[int]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    days = pd.date_range(pd.Timestamp(first, unit="us").normalize(), pd.Timestamp(end - 1, unit="us").normalize())
    files = [str(p) for d in days for p in sorted(wh.raw_partition("push_log", d.date().isoformat()).glob("*.parquet"))]
    if not files:
        return pd.DataFrame(columns=["push_id", "user_id", "sent_at", "item_ids"])
    t = pads.dataset(files, format="parquet").to_table(columns=["push_id", "user_id", "sent_at", "item_ids"])
    t = t.filter(pc.is_in(t["user_id"], pa.array(users, pa.int64())))
    t = t.set_column(2, "sent_at", pc.cast(t["sent_at"], pa.timestamp("us", tz="UTC")).cast(pa.int64()))
    return t.to_pandas()


def _window_label(end: int, window_minutes: int) -> tuple[str, int, str]:
    """(UTC day, hour, HHMM) of the window's start — where its batch and ledger rows live."""
    start = datetime.fromtimestamp((end - window_minutes * 60 * US) / US, tz=timezone.utc)
    return start.date().isoformat(), start.hour, start.strftime("%H%M")


def build_messages(wh: Warehouse, due: pd.DataFrame, cfg, loaded_version: str, send_day: str, hour: int):
    """Rendered messages for the window's due triggers (policy `trigger:<rule id>`, key = the trigger key)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from jobs.batches import render, template_fields

    if due.empty:
        return pa.table({"idempotency_key": pa.array([], pa.string())}), []
    users = pd.read_parquet(wh.raw("users"), columns=["user_id", "device_token", "platform", "tz"]).set_index("user_id")
    items = pads.dataset(str(wh.raw("items")), format="parquet").to_table(
        columns=["item_id", "seller_id", "category_id", "title", "price"]).to_pandas().set_index("item_id")
    scenes = {s.id: s for s in cfg.scenes}
    rows = []
    for r in due.itertuples(index=False):
        u = users.loc[r.user_id]
        it = items.loc[r.item_id] if r.item_id in items.index else None
        drop = 0.0
        if r.detail and str(r.detail).startswith("drop "):
            drop = float(str(r.detail)[5:].rstrip("%")) / 100
        item = None if it is None else {"title": it["title"], "price": it["price"],
                                        "listing_price": it["price"] / (1 - drop) if drop < 1 else it["price"],
                                        "price_drop_pct": drop, "category_id": int(it["category_id"]),
                                        "seller_id": int(it["seller_id"])}
        fields = template_fields(item, 1)
        scene = scenes[r.scene_id]
        rows.append({"idempotency_key": r.trigger_key, "user_id": int(r.user_id), "device_token": u["device_token"],
                     "platform": u["platform"], "tz": u["tz"], "scene_id": r.scene_id,
                     "title": render(scene.template.title, fields), "body": render(scene.template.body, fields),
                     "item_ids": [int(r.item_id)], "hour": hour, "policy": f"trigger:{r.rule_id}", "propensity": 1.0,
                     "window": "trigger", "rule_id": r.rule_id, "event_ts": int(r.event_ts), "send_at_us": int(r.send_at),
                     "config_version": loaded_version})
    return pa.Table.from_pylist(rows), rows


def run(settings: Settings, window_end: datetime, loaded, window_minutes: int = 15, lateness_minutes: int = 60,
        deliver: bool = True) -> dict:
    """One trigger window: decide (evaluate), then write and deliver what is due with it."""
    from delivery.batches import read_window, write_window
    from jobs.deliver import send_rows

    t0 = time.time()
    counts = evaluate(settings, window_end, loaded, window_minutes, lateness_minutes)
    t_eval = time.time() - t0
    end = int(window_end.timestamp() * US)
    day, hour, label = _window_label(end, window_minutes)
    wh = Warehouse(settings.warehouse)
    state = TriggerState(settings.ledger_url)
    due = state.due(end)
    state.dispose()
    table, _ = build_messages(wh, due, loaded.config, loaded.version, day, hour)
    manifest = write_window(settings, day, label, table, {"window_end": window_end.isoformat(),
                                                          "config_version": loaded.version, "policy": "trigger"})
    out = {"window_end": window_end.isoformat(), "decided": counts, "due": int(len(due)),
           "batch": f"s3://{settings.s3_bucket}/batches/ds={day}/triggers/window={label}/",
           "evaluate_seconds": round(t_eval, 2)}
    if not deliver or manifest["messages"] == 0:
        return out
    verified, _ = read_window(settings, day, label)
    rows = verified.to_pylist()
    for r in rows:
        r["send_day"] = day
        r["planned_at"] = r["send_at_us"] / US
    sent = send_rows(settings, loaded.config.platform.gateway, rows, day, hour, f"trigger-{label}", ramp=False)
    out["delivery"] = sent
    out["latency_s"] = latency(settings, rows)
    log.info("trigger window ending %s: %s; due %d, delivered %s, latency %s", window_end.isoformat(),
             {k: counts[k] for k in (EMITTED, CANCELLED, SUPPRESSED)}, len(due), sent["states"], out["latency_s"])
    return out


def latency(settings: Settings, rows: list[dict]) -> dict:
    """Event time -> gateway acceptance (seconds) of these delivered trigger messages: median and p95."""
    from delivery.ledger import Ledger

    ledger = Ledger(settings.ledger_url)
    acked = ledger.acked_at([r["idempotency_key"] for r in rows])
    ledger.dispose()
    lat = np.array([acked[r["idempotency_key"]] - r["event_ts"] / US for r in rows if r["idempotency_key"] in acked])
    if lat.size == 0:
        return {"n": 0}
    return {"n": int(lat.size), "median": round(float(np.median(lat)), 2), "p95": round(float(np.percentile(lat, 95)), 2)}
