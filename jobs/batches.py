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

from core.settings import Settings
from core.warehouse import Warehouse

log = logging.getLogger(__name__)


def run(settings: Settings, ds: str, loaded, policy: str | None = None) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from delivery.batches import write_day
    from delivery.messages import nightly_messages
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
    wanted = pc.unique(pa.concat_arrays([pc.list_flatten(assigned[c]).combine_chunks()
                                         for c in ("item_ids", "reserve_ids") if c in assigned.column_names]))
    items = wh.read_arrow("features/material_features", ds,
                          ["item_id", "seller_id", "category_id", "title", "price", "listing_price", "price_drop_pct"])
    items = items.filter(pc.is_in(items["item_id"], wanted))
    day = send_day(ds)
    messages = nightly_messages(assigned, users, items, loaded.config, day, loaded.version)
    versions = sorted(set(messages["model_version"].to_pylist()))
    result = write_day(settings, day, messages, {"plan_ds": ds, "policy": policy, "model_version": ",".join(versions),
                                                 "config_version": loaded.version})
    if result.messages != assigned.num_rows:
        raise AssertionError(f"batches ds={day}: wrote {result.messages} messages for {assigned.num_rows} windows")
    log.info("policy %s: %d planned, %d in batches, %d without a slot (see plan/windows.reason)", policy,
             windows.num_rows, result.messages, unassigned)
    per_hour = np.array([result.hours[h] for h in sorted(result.hours)])
    out = {"ds": ds, "send_day": day, "policy": policy, "run_id": result.run_id, "model_version": ",".join(versions),
           "config_version": loaded.version,
           "planned": windows.num_rows, "messages": result.messages, "unassigned": unassigned,
           "hours": per_hour.tolist(), "bucket": settings.s3_bucket,
           "manifest": f"s3://{settings.s3_bucket}/batches/ds={day}/_manifest.json",
           "stale_objects_removed": result.deleted_objects}
    path = wh.report("batches", ds, "batches")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return out
