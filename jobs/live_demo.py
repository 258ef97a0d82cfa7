"""`make run`'s last step: a handful of live events through the event API and the streaming engine, and what became
of them — decision, p(open), reason, and event -> gateway acceptance latency.

    python -m jobs.live_demo [--users 8]      (the event API and the engine must be running: infra/stream.sh)

For a few users who are awake now (outside quiet hours) it publishes, as an app backend would: the user favourites
an item on sale in their favourite category, at their usual hour of the app, then the item's price drops by 50 %.
The `fav_price_drop` rule fires on the drop; the model decides.
One malformed event is published too: it is rejected with its reason and lands in the stream's quarantine.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pandas as pd

from core.settings import Settings
from core.warehouse import Warehouse

US = 1_000_000


def _post(port: int, table: str, rows: list[dict]) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/{table}", data=json.dumps({table: rows}).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {os.environ.get('HERMES_EVENTS_TOKEN', '')}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:          # 422: every row rejected; the body says why
        return json.loads(e.read())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the pushes")
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    port = int(os.environ.get("HERMES_EVENTS_PORT", "8470"))
    wh = Warehouse(settings.warehouse)
    from core.config.loader import load_config

    cfg = load_config(settings.conf_dir).config
    quiet = cfg.platform.quiet_hours
    users = pd.read_parquet(wh.raw("users"), columns=["user_id", "tz", "opt_in", "device_token"])
    now = datetime.now(timezone.utc)
    awake = users[users["opt_in"].fillna(False) & users["device_token"].notna()
                  & ~users["tz"].map(lambda z: quiet.is_quiet(now.astimezone(ZoneInfo(z)).hour))]
    items = pd.read_parquet(wh.raw("items"), columns=["item_id", "status", "price", "category_id"])
    items = items[items["status"] == "on_sale"].sort_values("item_id")
    # users with a clear favourite category (the nightly's sides), an item on sale in it: what a favourite usually is
    from jobs.score import SIDES_USER

    ds = wh.latest_day(SIDES_USER, "9999-12-31")
    sides = wh.read_arrow(SIDES_USER, ds, ["user_id", "_w_by_category", "_h_by_hour"]).to_pylist()
    top = {r["user_id"]: max(dict(r["_w_by_category"]).items(), key=lambda kv: kv[1])[0]
           for r in sides if r["_w_by_category"]}
    peak = {r["user_id"]: max(dict(r["_h_by_hour"]).items(), key=lambda kv: kv[1])[0] for r in sides if r["_h_by_hour"]}
    # ... and who are in their usual hour of the app now (their best hour for a push)
    local = awake.set_index("user_id")["tz"].map(lambda z: now.astimezone(ZoneInfo(z)).hour)
    at_peak = [u for u, h in local.items() if u in top and abs(peak.get(u, -9) - h) <= 1]
    awake = awake[awake["user_id"].isin(at_peak or list(top))]
    picked = awake.sample(min(args.users, len(awake)), random_state=int(now.timestamp()) % 1000)
    by_category = {c: g for c, g in items.groupby("category_id")}
    t0 = time.time()
    favs, drops, plan = [], [], []
    for k, u in enumerate(picked.itertuples(index=False)):
        pool = by_category.get(top[int(u.user_id)], items)
        it = pool.iloc[(int(u.user_id) * 7919 + k) % len(pool)]
        favs.append({"ts": t0 - 5, "user_id": int(u.user_id), "event_type": "fav", "item_id": int(it.item_id),
                     "category_id": int(it.category_id), "event_id": f"demo-fav-{u.user_id}-{int(t0)}"})
        drops.append({"ts": t0, "item_id": int(it.item_id), "change": "price_drop", "price": round(0.5 * it.price, 2),
                      "event_id": f"demo-drop-{it.item_id}-{int(t0)}"})
        plan.append((int(u.user_id), int(it.item_id)))
    print(f"publishing {len(favs)} favourites and {len(drops)} price drops (-50 %) to http://127.0.0.1:{port}/v1/ ...")
    print("  events:", _post(port, "events", favs + [{"ts": "yesterday", "user_id": 1, "event_type": "fav"}]))
    print("  item_changes:", _post(port, "item_changes", drops))

    from delivery.ledger import Ledger
    from delivery.trigger_log import TriggerState
    from features.triggers import trigger_key

    keys = {trigger_key("fav_price_drop", u, i, int(round(t0 * US))): (u, i) for u, i in plan}
    log, ledger = TriggerState(settings.ledger_url), Ledger(settings.ledger_url)
    import sqlalchemy as sa

    deadline = time.time() + args.wait
    while True:
        with log.engine.connect() as c:
            rows = {r.trigger_key: r for r in c.execute(sa.select(log.log).where(log.log.c.trigger_key.in_(list(keys))))}
        acked = ledger.acked_at([k for k, r in rows.items() if r.state == "emitted"])
        waiting = [k for k, r in rows.items() if r.state == "emitted" and r.send_at <= time.time() * US and k not in acked]
        if (len(rows) == len(keys) and not waiting) or time.time() > deadline:
            break
        time.sleep(0.2)
    print(f"\n{'user':>8} {'item':>8}  {'decision':<10} {'p(open)':>7}  {'event -> gateway':>16}  reason")
    lat = []
    for k, (u, i) in keys.items():
        r = rows.get(k)
        if r is None:
            print(f"{u:>8} {i:>8}  {'undecided':<10}")
            continue
        took = f"{acked[k] - t0:.2f} s" if k in acked else ("deferred" if r.state == "emitted" else "-")
        if k in acked:
            lat.append(acked[k] - t0)
        p = f"{r.p_open:.3f}" if r.p_open is not None else "-"
        print(f"{u:>8} {i:>8}  {r.state:<10} {p:>7}  {took:>16}  {r.reason or ''}")
    if lat:
        s = pd.Series(lat)
        print(f"\n{len(lat)} pushed through the stream: event -> gateway acceptance median {s.median():.2f} s, max {s.max():.2f} s")
    else:
        print("\nno push went out: see the reasons above (`hermes stream-status`, the engine log)")
    log.dispose()
    ledger.dispose()


if __name__ == "__main__":
    main()
