"""Nightly stage: the active policy's planned pushes as hourly batches in the object store.

Reads plan/windows (rows of the policy named by `windows.policy` that got a slot), raw users (device
tokens) and features/material_features (what the templates show); renders each scene's title/body; gives
every message its idempotency key; writes batches/ds=<send day>/hour=HH/ and the day's manifest
(delivery/batches.py). Counts reconcile: assigned windows = messages written = the manifest's total.
"""
from __future__ import annotations

import json
import logging

import numpy as np

from jobs.settings import Settings
from jobs.warehouse import Warehouse

log = logging.getLogger(__name__)


def render(template: str, fields: dict) -> str:
    return template.format(**fields)


def template_fields(item: dict | None, n_items: int) -> dict:
    """What a template may show (jobs.config.schema.TEMPLATE_FIELDS) for the feed's first item."""
    if item is None:
        return {"item_title": "an item", "item_price": "", "old_price": "", "drop_pct": 0, "category": "",
                "n_items": n_items, "n_more": max(n_items - 1, 0), "seller_id": ""}
    return {"item_title": item["title"], "item_price": f"¥{item['price']:,.0f}",
            "old_price": f"¥{item['listing_price']:,.0f}", "drop_pct": int(round(100 * item["price_drop_pct"])),
            "category": f"category {item['category_id']}", "n_items": n_items, "n_more": max(n_items - 1, 0),
            "seller_id": item["seller_id"]}


def build_messages(windows, users, items, config, send_day: str, config_version: str):
    """pyarrow Table of messages from the active policy's assigned windows."""
    import pyarrow as pa

    from delivery.batches import NIGHTLY_WINDOW, idempotency_key

    tokens = dict(zip(users["user_id"].to_pylist(), users["device_token"].to_pylist()))
    item_rows = {r["item_id"]: r for r in items.to_pylist()}
    scenes = {s.id: s for s in config.scenes}
    rows = windows.to_pylist()
    out: dict[str, list] = {k: [] for k in (
        "idempotency_key", "user_id", "device_token", "platform", "tz", "scene_id", "title", "body", "item_ids",
        "send_at", "hour", "local_hour", "p_open", "policy", "propensity", "explored", "model_version",
        "config_version", "window")}
    missing_tokens = 0
    for r in rows:
        token = tokens.get(r["user_id"])
        if not token:
            missing_tokens += 1
            continue
        scene = scenes[r["scene_id"]]
        fields = template_fields(item_rows.get(r["item_ids"][0]) if r["item_ids"] else None, len(r["item_ids"]))
        out["idempotency_key"].append(idempotency_key(r["user_id"], r["scene_id"], send_day, NIGHTLY_WINDOW))
        out["user_id"].append(r["user_id"])
        out["device_token"].append(token)
        for k in ("platform", "tz", "scene_id", "item_ids", "send_at", "local_hour", "p_open", "policy", "explored",
                  "model_version"):
            out[k].append(r[k])
        out["title"].append(render(scene.template.title, fields))
        out["body"].append(render(scene.template.body, fields))
        out["hour"].append(int(r["slot"]))
        # P(this scene and this hour | the policy): the baseline explores scenes, Hermes explores hours
        out["propensity"].append(float(r["scene_propensity"]) * float(r["hour_propensity"]))
        out["config_version"].append(config_version)
        out["window"].append(NIGHTLY_WINDOW)
    if missing_tokens:
        # fatigue drops users without a token; a token removed since then is a data change, not a silent drop
        raise ValueError(f"raw/users: {missing_tokens} planned users have no device_token any more "
                         "(rule: every planned push needs a device token; re-run fatigue)")
    schema = pa.schema([("idempotency_key", pa.string()), ("user_id", pa.int64()), ("device_token", pa.string()),
                        ("platform", pa.string()), ("tz", pa.string()), ("scene_id", pa.string()),
                        ("title", pa.string()), ("body", pa.string()), ("item_ids", pa.list_(pa.int64())),
                        ("send_at", pa.timestamp("us", tz="UTC")), ("hour", pa.int8()), ("local_hour", pa.int8()),
                        ("p_open", pa.float64()), ("policy", pa.string()), ("propensity", pa.float64()),
                        ("explored", pa.bool_()), ("model_version", pa.string()), ("config_version", pa.string()),
                        ("window", pa.string())])
    return pa.table(out, schema=schema)


def run(settings: Settings, ds: str, loaded, policy: str | None = None) -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from delivery.batches import write_day
    from jobs.windows import WINDOWS, send_day

    wh = Warehouse(settings.warehouse)
    policy = policy or loaded.config.platform.windows.policy
    if policy not in ("hermes", "baseline"):
        raise ValueError(f"policy must be 'hermes' or 'baseline', got {policy!r}")
    windows = wh.read_arrow(WINDOWS, ds)
    windows = windows.filter(pc.equal(windows["policy"], policy))
    assigned = windows.filter(pc.greater_equal(windows["slot"], 0))
    unassigned = windows.num_rows - assigned.num_rows
    users = pads.dataset(str(wh.raw("users")), format="parquet").to_table(columns=["user_id", "device_token"])
    wanted = pc.unique(pc.list_flatten(assigned["item_ids"]))
    items = wh.read_arrow("features/material_features", ds,
                          ["item_id", "seller_id", "category_id", "title", "price", "listing_price", "price_drop_pct"])
    items = items.filter(pc.is_in(items["item_id"], wanted))
    day = send_day(ds)
    messages = build_messages(assigned, users, items, loaded.config, day, loaded.version)
    versions = sorted(set(messages["model_version"].to_pylist()))
    result = write_day(settings, day, messages, {"plan_ds": ds, "policy": policy, "model_version": ",".join(versions),
                                                 "config_version": loaded.version})
    if result.messages != assigned.num_rows:
        raise AssertionError(f"batches ds={day}: wrote {result.messages} messages for {assigned.num_rows} windows")
    log.info("policy %s: %d planned, %d in batches, %d without a slot (see plan/windows.reason)", policy,
             windows.num_rows, result.messages, unassigned)
    per_hour = np.array([result.hours[h] for h in range(24)])
    out = {"ds": ds, "send_day": day, "policy": policy, "run_id": result.run_id, "planned": windows.num_rows,
            "messages": result.messages, "unassigned": unassigned, "hours": per_hour.tolist(),
            "bucket": settings.s3_bucket, "manifest": f"s3://{settings.s3_bucket}/batches/ds={day}/_manifest.json",
            "stale_objects_removed": result.deleted_objects}
    path = wh.report("batches", ds, "batches")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return out
