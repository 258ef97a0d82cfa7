"""The third arm, Hermes + real-time: the Hermes nightly plan, plus the streaming trigger engine (jobs/stream.py) over
the day's events, sharing the user's budget with the plan.

For a send day, after the nightly hours are delivered and before the outcomes are drawn: the day's raw events and
item changes (the world's, the same in every arm) are published to the arm's event stream in time order; the engine
— the production code, in this process, on an event-time clock (each step reads a batch of events and its clock is
the newest event's time) — applies them to its rule state, decides what falls due with the arm's @champion and the
night's sides, and its pushes go through the arm's ledger to the real gateway; the stream's receipts are written
to push_log, where the outcome draw finds them beside the nightly's. Pushes quiet hours hold past midnight go out
the next day (the next day's engine restores them from the trigger log). The rule state is checkpointed between
days: each day's engine resumes where the last one stopped.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone

from lab.evaluation.arms import Arm

log = logging.getLogger(__name__)
US = 1_000_000
STEP_ROWS = 100


def day_rows(wh, day: str, between: tuple[float, float] | None = None) -> dict[str, list[dict]]:
    """The day's raw events and item changes as stream rows (the raw contract's columns, ts in epoch seconds),
    optionally only those with between[0] <= ts < between[1] (their event ids are the same either way)."""
    import numpy as np
    import pyarrow.dataset as pads

    out = {}
    for table, cols in (("events", ["ts", "user_id", "event_type", "item_id", "seller_id", "category_id"]),
                        ("item_changes", ["item_id", "ts", "change", "price"])):
        path = wh.raw_partition(table, day)
        rows = []
        if path.exists():
            df = pads.dataset(str(path), format="parquet").to_table(columns=cols).to_pandas()
            ts = (df["ts"].astype("int64") // (1000 if df["ts"].dtype.unit == "ns" else 1)).to_numpy()
            pos = np.arange(len(df))
            if between is not None:
                keep = (ts >= between[0] * US) & (ts < between[1] * US)
                df, ts, pos = df[keep], ts[keep], pos[keep]
            df = df.drop(columns="ts").astype(object).where(df.drop(columns="ts").notna(), None)
            for i, t, rec in zip(pos, ts, df.to_dict("records")):
                rec = {k: (int(v) if isinstance(v, (np.integer, float)) and k != "price" else v) for k, v in rec.items()}
                rows.append({**rec, "ts": int(t) / US, "event_id": f"{table[0]}-{day}-{i}"})
            rows.sort(key=lambda r: r["ts"])
        out[table] = rows
    return out


def stream_day(arm: Arm, send_day: str) -> dict:
    """Publish the day's events to the arm's stream and let the engine live the day; returns decision and delivery
    counts. Raises if a push it emitted is left unsent."""
    from delivery.stream import EventStream
    from jobs.deliver import send_rows, write_receipts
    from jobs.stream import Engine

    s, loaded = arm.settings, arm.loaded
    start = datetime.fromisoformat(send_day).replace(tzinfo=timezone.utc).timestamp()
    end = start + 86400
    stream = EventStream(s.ledger_url)
    rows = day_rows(arm.wh, send_day)
    for table, docs in rows.items():
        for k in range(0, len(docs), 5000):
            out = stream.publish(table, docs[k:k + 5000], now=end)
            if out["rejected"]:
                raise AssertionError(f"{send_day}: the world's own {table} were rejected: {out['rejected'][:3]}")
    clock = {"t": start}
    engine = Engine(s, loaded, clock=lambda: clock["t"], replaying=True)
    gw = loaded.config.platform.gateway
    sent: dict[tuple[str, int], int] = {}
    states: dict[str, int] = {}

    def send(msgs: list[dict]) -> None:
        by_hour: dict[tuple[str, int], list[dict]] = {}
        for m in msgs:
            by_hour.setdefault((m["send_day"], int(m["hour"])), []).append(m)
        for (day, hour), group in sorted(by_hour.items()):
            r = send_rows(s, gw, group, day, hour, f"stream-{send_day}", ramp=False, scope=f"stream/{day}/h{hour:02d}",
                          now=clock["t"])
            sent[(day, hour)] = sent.get((day, hour), 0) + len(group)
            for k, v in r["states"].items():
                states[k] = states.get(k, 0) + v

    while True:
        nxt = stream.read(engine.offset, STEP_ROWS)
        clock["t"] = nxt[-1]["ts"] / US if nxt else end          # event time; at the end, the day's last instant
        n, msgs = engine.step(limit=STEP_ROWS)
        if msgs:
            send(msgs)
        if not nxt:
            break
    engine.checkpoint()
    engine.close()
    from delivery.ledger import Ledger

    ledger = Ledger(s.ledger_url)
    try:
        for day, hour in sorted(sent):
            write_receipts(arm.wh, ledger, day, hour, s.receipt_time, stream=True)
    finally:
        ledger.dispose()
    stream.dispose()
    out = {"events": sum(len(v) for v in rows.values()), "decided": engine.stats["decided"], "delivered": states,
           "messages": sum(sent.values())}
    log.info("%s %s real-time: %s", arm.name, send_day, out)
    return out


def next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
