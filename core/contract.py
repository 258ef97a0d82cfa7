"""The raw data contract (DESIGN.md): the shape every upstream table arrives in, and where it lives.

Other people's data is mapped into this; keep names, types and meanings stable. Columns may be added.
"""
from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

PLATFORMS = ("ios", "android_huawei", "android_xiaomi", "android_oppo", "android_vivo", "android_other")
ITEM_STATUSES = ("on_sale", "sold", "removed")
ITEM_CHANGES = ("listed", "price_drop", "sold", "removed")
EVENT_TYPES = ("app_open", "view", "fav", "cart", "chat", "buy", "search", "follow_seller")

RAW_SCHEMAS: dict[str, pa.Schema] = {
    "users": pa.schema([
        ("user_id", pa.int64()), ("tz", pa.string()), ("platform", pa.string()),
        ("device_token", pa.string()), ("opt_in", pa.bool_()), ("registered_at", TS),
    ]),
    "items": pa.schema([
        ("item_id", pa.int64()), ("seller_id", pa.int64()), ("category_id", pa.int32()),
        ("price", pa.float64()), ("listed_at", TS), ("status", pa.string()), ("title", pa.string()),
    ]),
    "item_changes": pa.schema([
        ("item_id", pa.int64()), ("ts", TS), ("change", pa.string()), ("price", pa.float64()),
    ]),
    "events": pa.schema([
        ("ts", TS), ("user_id", pa.int64()), ("event_type", pa.string()), ("item_id", pa.int64()),
        ("seller_id", pa.int64()), ("category_id", pa.int32()),
    ]),
    "push_log": pa.schema([
        ("push_id", pa.string()), ("user_id", pa.int64()), ("scene_id", pa.string()),
        ("item_ids", pa.list_(pa.int64())), ("sent_at", TS), ("opened_at", TS),
        ("clicked_item_id", pa.int64()), ("policy", pa.string()), ("propensity", pa.float64()),
    ]),
}

# Fact tables are stored as Hive partitions `ds=YYYY-MM-DD` (UTC date of their time column), so a
# nightly or hourly run reads only the days it needs; dimensions are one snapshot folder.
TIME_COLUMN = {"item_changes": "ts", "events": "ts", "push_log": "sent_at"}
PARTITIONED = tuple(TIME_COLUMN)
RAW_TABLES = tuple(RAW_SCHEMAS)

