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

from core.settings import Settings
from core.warehouse import Warehouse
from delivery.trigger_log import CANCELLED, EMITTED, SUPPRESSED, TriggerState
from features.trigger_budget import after_quiet, budget_reasons, local_days

log = logging.getLogger(__name__)
US = 1_000_000


def _latest_partition(wh: Warehouse, name: str, on_or_before: str) -> str:
    day = wh.latest_day(name, on_or_before)
    if day is None:
        raise FileNotFoundError(f"{name}: no partition on or before {on_or_before}; the trigger rules' conditions "
                                "and the shared fatigue budget need a nightly run first")
    return day


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
    events = wh.read_raw_between("events", "ts", first, end, ["ts", "user_id", "event_type", "item_id", "seller_id"])
    changes = wh.read_raw_between("item_changes", "ts", first, end, ["item_id", "ts", "change", "price"])
    import pyarrow.dataset as pads

    items = pads.dataset(str(wh.raw("items")), format="parquet").to_table(
        columns=["item_id", "seller_id", "category_id", "title", "price"]).to_pandas()
    parts = []
    for r in rules.values():
        kind = r.when.event
        if kind == "price_drop":
            parts.append(ft.price_drop(r, changes, events, lo, end, items))
        elif kind == "seller_listed":
            parts.append(ft.seller_listed(r, changes, events, items, lo, end))
        elif kind == "selling_out":
            parts.append(ft.selling_out(r, events, lo, end, items))
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
    from features.holdout import in_holdout

    todo["held"] = in_holdout(todo["user_id"].to_numpy(), cfg.platform.holdout_share)

    dead = set()
    if wh.dead_tokens.exists():
        d = pd.read_parquet(wh.dead_tokens, columns=["user_id", "token_sha256"])
        dead = set(zip(d["user_id"], d["token_sha256"]))
    todo["send_at"] = [after_quiet(int(t), z, cfg.platform.quiet_hours) if isinstance(z, str) else int(t)
                       for t, z in zip(todo["fire_at"], todo["tz"])]
    todo["local_day"] = local_days(todo["send_at"].to_numpy(), todo["tz"].fillna("UTC").to_numpy())
    history = _sent_history(wh, cfg, todo, state, end)
    decisions = budget_reasons(todo, history, dead, rules, cfg.platform.platform_quotas,
                               cfg.platform.fatigue.max_per_user_per_day)
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
                     "state": r.state, "reason": r.reason, "detail": r.detail, "decided_by": end, "decided_at": now,
                     "engine": "batch"})
    state.record(rows)
    counts[EMITTED] = int((fresh["state"] == EMITTED).sum())
    counts[CANCELLED] = int((fresh["state"] == CANCELLED).sum())
    counts[SUPPRESSED] = int((fresh["state"] == SUPPRESSED).sum())
    counts["reasons"] = {k: int(v) for k, v in fresh.loc[fresh["reason"].notna(), "reason"].value_counts().items()}
    counts["by_rule"] = {k: int(v) for k, v in fresh.loc[fresh["state"] == EMITTED, "rule_id"].value_counts().items()}
    counts["watermark"] = state.advance(end)
    state.dispose()
    return counts


def _sent_history(wh: Warehouse, cfg, todo: pd.DataFrame, state: TriggerState, end: int, every_user: bool = False) -> dict:
    """What already counts against each candidate user's budget and gap: pushes in push_log, the nightly
    plan's pushes (plan/windows of the plans covering these days), and triggers already emitted. every_user: todo
    holds every user (the streaming engine's history): read without a filter by user."""
    users = sorted(set(todo["user_id"].astype(int)))
    want = None if every_user else users
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

    log_rows = wh.read_raw_between("push_log", "sent_at", first, end + 2 * 24 * 3600 * US,
                                   ["push_id", "user_id", "sent_at", "item_ids"], user_ids=want)
    for r in log_rows.itertuples(index=False):
        add(int(r.user_id), r.push_id, int(r.sent_at), r.item_ids)
    day = datetime.fromtimestamp(end / US, tz=timezone.utc).date()
    for plan_ds in ((day - timedelta(days=k)).isoformat() for k in (1, 2)):
        path = wh.partition("plan/windows", plan_ds)
        if not path.exists():
            continue
        w = wh.read_arrow("plan/windows", plan_ds, ["user_id", "policy", "slot", "send_at", "item_ids", "scene_id"])
        w = w.to_pandas()
        w = w[(w["policy"] == cfg.platform.windows.policy) & (w["slot"] >= 0)]
        if want is not None:
            w = w[w["user_id"].isin(want)]
        from delivery.batches import NIGHTLY_WINDOW, idempotency_key

        send_day = (date.fromisoformat(plan_ds) + timedelta(days=1)).isoformat()
        for r in w.itertuples(index=False):
            key = idempotency_key(int(r.user_id), r.scene_id, send_day, NIGHTLY_WINDOW)
            add(int(r.user_id), key, int(pd.Timestamp(r.send_at).value // 1000), r.item_ids)
    em = state.emitted_for(want, first)
    for r in em.itertuples(index=False):
        add(int(r.user_id), f"t-{r.user_id}-{r.item_id}-{r.send_at}", int(r.send_at), [r.item_id])
    # the same push counted once whether it is in the plan and in push_log
    return {"day_keys": {k: set(v) for k, v in day_keys.items()}, "pairs": pairs}


def _window_label(end: int, window_minutes: int) -> tuple[str, int, str]:
    """(UTC day, hour, HHMM) of the window's start — where its batch and ledger rows live."""
    start = datetime.fromtimestamp((end - window_minutes * 60 * US) / US, tz=timezone.utc)
    return start.date().isoformat(), start.hour, start.strftime("%H%M")


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
    import pyarrow.dataset as pads

    from delivery.messages import trigger_messages

    users = pd.read_parquet(wh.raw("users"), columns=["user_id", "device_token", "platform", "tz"]).set_index("user_id")
    items = pads.dataset(str(wh.raw("items")), format="parquet").to_table(
        columns=["item_id", "seller_id", "category_id", "title", "price"]).to_pandas().set_index("item_id")
    table, _ = trigger_messages(due, users, items, loaded.config, loaded.version, hour)
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
    sent = send_rows(settings, loaded.config.platform.gateway, rows, day, hour, f"trigger-{label}", ramp=False,
                     scope=f"trigger/{day}/{label}", now=min(time.time(), window_end.timestamp()))
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
