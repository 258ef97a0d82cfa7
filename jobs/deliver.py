"""Delivery of one send hour: verified batch -> ledger -> throttled sending -> receipts in push_log.

    hermes deliver --day 2026-10-31 --hour 12        (also the `hermes_hourly` DAG's task)

1. Reads batches/ds=<day>/hour=<HH> through its manifest (a missing or mismatching batch is refused).
2. Registers every message in the delivery ledger (keys already there keep their state).
   Items sold or removed since the plan leave their feeds and are replaced by the feed's reserves still on sale; a
   feed left empty is withdrawn (`dead_letter`, `items_gone`), a changed one is re-rendered from its first item
   (delivery/availability.py).
3. Sends what is still pending (delivery/sender.py): rate limit, concurrency, ramp, retries, deadline.
4. Writes the hour's receipts — every acknowledged message — to raw/push_log (the raw contract; one file
   per send hour, rewritten whole on a re-run, so never duplicated) and the tokens the gateway reported
   UNREGISTERED to state/dead_tokens (read by the next fatigue run).
Counts reconcile: batch = acked + dead-lettered + pending, and pending is 0 unless the run was aborted.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from core.settings import Settings
from core.warehouse import Warehouse

log = logging.getLogger(__name__)


def _messages(table, send_day: str, hour: int, ramp_s: float) -> list[dict]:
    # each feed's item fields stay Arrow scalars: only a feed that lost items is read (delivery/availability.py)
    feed = table.column("feed") if "feed" in table.column_names else None
    rows = (table.drop_columns(["feed"]) if feed is not None else table).to_pylist()
    n = max(len(rows), 1)
    slot = datetime.fromisoformat(send_day).replace(tzinfo=timezone.utc).timestamp() + hour * 3600
    for i, r in enumerate(rows):
        r["send_day"] = send_day
        r["planned_at"] = slot + ramp_s * i / n      # the planned release time on the ramp
        if feed is not None:
            r["feed"] = _FeedRef(feed, i)
    return rows


class _FeedRef:
    """A message's feed item fields, read from the batch's column only when asked (as_py)."""
    __slots__ = ("column", "row")

    def __init__(self, column, row: int):
        self.column, self.row = column, row

    def as_py(self) -> list[dict]:
        return self.column[self.row].as_py()


def write_receipts(wh: Warehouse, ledger, send_day: str, hour: int, receipt_time: str, stream: bool = False) -> dict:
    """All acked messages of the hour as push_log rows, one file per UTC date of sent_at; dead tokens. The streaming
    engine's messages have their own file per hour (stream=True writes it; the batch paths' file leaves them out), so
    the two writers never rewrite each other's rows."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.contract import RAW_SCHEMAS
    from delivery.ledger import ACKED, DEAD

    acked = ledger.rows(send_day, hour, ACKED, stream=stream)
    name = f"receipts-{send_day}-h{hour:02d}{'-stream' if stream else ''}.parquet"
    by_day: dict[str, list[dict]] = {}
    for r in acked:
        at = r["planned_at"] if receipt_time == "planned" else r["acked_at"]
        ts = datetime.fromtimestamp(at, tz=timezone.utc)
        by_day.setdefault(ts.date().isoformat(), []).append({
            "push_id": r["idempotency_key"], "user_id": r["user_id"], "scene_id": r["scene_id"],
            "item_ids": json.loads(r["item_ids"]), "sent_at": ts, "opened_at": None, "clicked_item_id": None,
            "policy": r["policy"], "propensity": r["propensity"]})
    written = {}
    for day, rows in by_day.items():
        folder = wh.raw_partition("push_log", day)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SCHEMAS["push_log"]), tmp)
        tmp.replace(folder / name)                     # a re-run replaces the hour's file whole
        written[day] = len(rows)
    # One file per send hour in the whole table: a re-run that dates the receipts otherwise (another
    # HERMES_RECEIPT_TIME, or acks that moved past midnight) moves the file, never copies it (issue 22.2).
    # Only when this run wrote the hour's receipts: a ledger that knows none of them (a new ledger database)
    # must not delete the ones an earlier ledger recorded.
    for old in wh.raw("push_log").glob(f"ds=*/{name}") if written else []:
        if old.parent.name.removeprefix("ds=") not in written:
            old.unlink()
    dead = [r for r in ledger.rows(send_day, hour, DEAD, stream=stream) if r["reason"] == "unregistered"]
    if dead:
        folder = wh.dead_tokens
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.table({"user_id": pa.array([r["user_id"] for r in dead], pa.int64()),
                          "token_sha256": [r["token_sha256"] for r in dead],
                          "marked_at": pa.array([datetime.fromtimestamp(r["updated_at"], tz=timezone.utc)
                                                 for r in dead], pa.timestamp("us", tz="UTC"))})
        tag = f"{send_day}-h{hour:02d}{'-stream' if stream else ''}"
        tmp = folder / f".dead-{tag}.tmp"
        pq.write_table(table, tmp)
        tmp.replace(folder / f"dead-{tag}.parquet")
    return {"push_log_rows": written, "dead_tokens": len(dead)}


def _run_loop(coro):
    """uvloop when present (about a third less CPU per request), asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class DeliveryIncomplete(RuntimeError):
    """A delivery run ended with messages still pending."""


def send_rows(settings: Settings, gw, rows: list[dict], send_day: str, hour: int, batch_run: str,
              ramp: bool, scope: str | None = None, now: float | None = None,
              max_per_category: int | None = None) -> dict:
    """Register `rows` (messages with planned_at) in the ledger under (send_day, hour), withdraw or trim the
    pending ones whose items are gone (delivery/availability.py), send what is pending, write the hour's receipts;
    return the counts. Shared by the hourly delivery and the trigger runs.

    now: the run's clock (epoch seconds) for what it may know of sold items; the wall clock unless a replay of
    simulated days passes its own. The run holds the lease of `scope` (default: the nightly send hour)
    throughout: a second run of the same scope raises DeliveryBusy before it loads or sends anything.
    max_per_category: the feeds' diversity cap, which a reserve standing in for a sold item keeps."""
    import time
    from datetime import date, timedelta

    from delivery.availability import gone_items, prune
    from delivery.gateway import gateway_client
    from delivery.ledger import PENDING, SENDING, Ledger
    from delivery.ratelimit import TokenBucket
    from delivery.sender import RetryPolicy, deliver

    wh = Warehouse(settings.warehouse)
    ledger = Ledger(settings.ledger_url, lease_ttl_s=gw.lease_ttl_s)
    scope = scope or f"nightly/{send_day}/h{hour:02d}"
    try:
        run_id = ledger.acquire(scope)
    except Exception:
        ledger.dispose()
        raise
    try:
        policy = RetryPolicy.from_config(gw, ramp=ramp)
        new = ledger.load(rows, batch_run)
        pending = ledger.pending_keys(send_day, hour)
        todo = [r for r in rows if r["idempotency_key"] in pending]
        in_doubt = ledger.in_doubt([r["idempotency_key"] for r in todo])
        # items sold or removed since the plan: only keys never claimed are changed (one in doubt may have gone out)
        fresh = [r for r in todo if r["idempotency_key"] not in in_doubt]
        first_day = (date.fromisoformat(send_day) - timedelta(days=1)).isoformat()
        gone = gone_items(wh, settings.ledger_url,
                          (i for r in fresh for i in [*(r["item_ids"] or ()), *(r.get("reserve_ids") or ())]),
                          first_day, time.time() if now is None else now)
        fresh, withdrawn, revised = prune(fresh, gone, max_per_category)
        ledger.settle_availability(withdrawn, revised)
        todo = [r for r in todo if r["idempotency_key"] in in_doubt] + fresh
        refilled = sum(m["refilled"] for m in revised)
        log.info("ds=%s hour=%02d (run %s, %s): %d messages, %d new in the ledger, %d to send; for items sold or removed "
                 "since the plan %d withdrawn and %d revised (%d items replaced by reserves)", send_day, hour, batch_run,
                 run_id, len(rows), new, len(todo), len(withdrawn), len(revised), refilled)
        if in_doubt:
            log.warning("ds=%s hour=%02d: %d messages were claimed by a run that died before recording them; they are "
                        "sent again (a gateway that ignores idempotency keys may deliver them twice)", send_day, hour,
                        len(in_doubt))

        async def go():
            client = gateway_client(settings.gateway_url, gw.project, settings.gateway_token, gw.concurrency,
                                    gw.timeout_s)
            try:
                return await deliver(todo, client, TokenBucket(gw.rate_per_second, gw.burst), gw.concurrency, policy,
                                     record=lambda batch: ledger.record(batch, run_id),
                                     claim=lambda keys: ledger.claim(keys, run_id),
                                     heartbeat=lambda: ledger.heartbeat(run_id), max_in_doubt=gw.max_in_doubt,
                                     stop_on_signals=True)
            finally:
                await client.close()

        report = _run_loop(go()) if todo else None
        receipts = write_receipts(wh, ledger, send_day, hour, settings.receipt_time)
        keys = [r["idempotency_key"] for r in rows]
        states = dict(ledger.key_states(keys))
    finally:
        ledger.release(run_id)
        ledger.dispose()
    if sum(states.values()) != len(set(keys)):
        raise AssertionError(f"ledger holds {sum(states.values())} of the {len(set(keys))} keys just loaded")
    if states.get(PENDING) or states.get(SENDING):
        # nothing may end silently unsent: an aborted run, or keys this run could not send, fail it (exit != 0)
        raise DeliveryIncomplete(f"ds={send_day} hour={hour:02d}: {states.get(PENDING, 0) + states.get(SENDING, 0)} of "
                                 f"{len(set(keys))} messages are still pending after this run ({states}; `sending` ones "
                                 f"are held by another run); re-run `hermes deliver --day {send_day} --hour {hour}` "
                                 f"(acked messages are never sent again)")
    return {"batch": len(rows), "sent_this_run": len(todo), "in_doubt_resent": len(in_doubt),
            "withdrawn_items_gone": len(withdrawn), "trimmed_items_gone": len(revised),
            "reserve_items_sent": refilled, "states": states,
            "run": report.as_dict() if report else None, **receipts}


def run(settings: Settings, send_day: str, hour: int, loaded, ramp: bool = True, now: float | None = None) -> dict:
    from delivery.batches import read_batch
    from delivery.sender import RetryPolicy

    gw = loaded.config.platform.gateway
    table, manifest = read_batch(settings, send_day, hour)
    if table is None:
        log.info("batches ds=%s hour=%02d: the manifest lists no messages for this hour", send_day, hour)
        return {"send_day": send_day, "hour": hour, "batch": 0, "states": {}}
    rows = _messages(table, send_day, hour, RetryPolicy.from_config(gw, ramp=ramp).ramp_s)
    cap = loaded.config.platform.feed.max_per_category
    out = {"send_day": send_day, "hour": hour, **send_rows(settings, gw, rows, send_day, hour, manifest["run_id"], ramp,
                                                                 now=now, max_per_category=cap)}
    log.info("delivered ds=%s hour=%02d: %s", send_day, hour, out["states"])
    return out
