"""Push messages rendered from the scene templates: the nightly plan's batches and a trigger window's pushes.

Pure: tables in, a pyarrow table of messages out (each with its idempotency key); no I/O.
"""
from __future__ import annotations

from delivery.batches import NIGHTLY_WINDOW, idempotency_key

# The item fields a template may read (template_fields), carried per feed item in the nightly batches.
FEED_FIELDS = ("item_id", "title", "price", "listing_price", "price_drop_pct", "category_id", "seller_id")


def render(template: str, fields: dict) -> str:
    return template.format(**fields)


def template_fields(item: dict | None, n_items: int) -> dict:
    """What a template may show (core.config.schema.TEMPLATE_FIELDS) for the feed's first item."""
    if item is None:
        return {"item_title": "an item", "item_price": "", "old_price": "", "drop_pct": 0, "category": "",
                "n_items": n_items, "n_more": max(n_items - 1, 0), "seller_id": ""}
    return {"item_title": item["title"], "item_price": f"¥{item['price']:,.0f}",
            "old_price": f"¥{item['listing_price']:,.0f}", "drop_pct": int(round(100 * item["price_drop_pct"])),
            "category": f"category {item['category_id']}", "n_items": n_items, "n_more": max(n_items - 1, 0),
            "seller_id": item["seller_id"]}


def nightly_messages(windows, users, items, config, send_day: str, config_version: str):
    """pyarrow Table of messages from the active policy's assigned windows."""
    import pyarrow as pa

    tokens = dict(zip(users["user_id"].to_pylist(), users["device_token"].to_pylist()))
    item_rows = {r["item_id"]: r for r in items.to_pylist()}
    scenes = {s.id: s for s in config.scenes}
    rows = windows.to_pylist()
    out: dict[str, list] = {k: [] for k in (
        "idempotency_key", "user_id", "device_token", "platform", "tz", "scene_id", "title", "body", "item_ids",
        "send_at", "hour", "local_hour", "p_open", "policy", "propensity", "explored", "model_version",
        "config_version", "window", "title_template", "body_template", "reserve_ids", "feed")}
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
        # what delivery needs to re-render the push when items sold before the send (delivery/availability.py)
        out["title_template"].append(scene.template.title)
        out["body_template"].append(scene.template.body)
        # the feed's items, then the reserves that replace any of them sold by the send
        reserves = [i for i in r.get("reserve_ids") or [] if i in item_rows]
        out["reserve_ids"].append(reserves)
        out["feed"].append([{k: item_rows[i][k] for k in FEED_FIELDS} for i in [*r["item_ids"], *reserves]
                            if i in item_rows])
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
                        ("window", pa.string()), ("title_template", pa.string()), ("body_template", pa.string()),
                        ("reserve_ids", pa.list_(pa.int64())),
                        ("feed", pa.list_(pa.struct([("item_id", pa.int64()), ("title", pa.string()),
                                                     ("price", pa.float64()), ("listing_price", pa.float64()),
                                                     ("price_drop_pct", pa.float64()), ("category_id", pa.int32()),
                                                     ("seller_id", pa.int64())])))])
    return pa.table(out, schema=schema)


def trigger_messages(due, users, items, cfg, loaded_version: str, hour: int):
    """Rendered messages for a trigger window's due pushes (policy `trigger:<rule id>`, key = the trigger key).
    users: pandas indexed by user_id (device_token, platform, tz); items: pandas indexed by item_id (seller_id,
    category_id, title, price)."""
    import pyarrow as pa

    if due.empty:
        return pa.table({"idempotency_key": pa.array([], pa.string())}), []
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
                     "fire_at_us": int(r.fire_at),
                     "config_version": loaded_version})
    return pa.Table.from_pylist(rows), rows
