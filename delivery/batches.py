"""Push batches in the object store: one Parquet object per send hour, one manifest per send day.

Layout in the bucket (ds = the UTC send day, HH = the plan's hour: 00-23 on the send day, 24-35 = 00-11 of the
next UTC day, for users west of UTC whose local plan day reaches into it):

    batches/ds=YYYY-MM-DD/hour=HH/run=<run_id>/messages.parquet   the hour's messages
    batches/ds=YYYY-MM-DD/_manifest.json                           what is current for the day, written last

The manifest names, for each hour, the object, its message count and SHA-256, with the plan's model
version, config version and policy. Re-writing a day uploads the new objects under a new run id, then
replaces the manifest in one PUT (an S3 PUT of one object is atomic), then deletes the objects of older
runs: a reader sees the old day or the new day, never a mix, and never both. `read_batch` refuses an hour
whose manifest is missing, whose object is missing, or whose bytes or count do not match the manifest.

The idempotency key of a message is a hash of (user, scene, send day, window) where the window is the
planning window the push belongs to ("nightly" for the nightly plan, the trigger window for event pushes)
— deliberately not the hour: a re-plan that moves a user to another hour keeps the key, so the gateway
and the delivery ledger can never let the same push out twice.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from delivery.objectstore import client, list_keys

log = logging.getLogger(__name__)
PREFIX = "batches"
FORMAT = 1
NIGHTLY_WINDOW = "nightly"
PLAN_HOURS = 36       # a plan's hours: its send day's 0-23, then 24-35 = the next UTC day's 0-11


class BatchError(RuntimeError):
    """A batch that must not be delivered: missing or mismatching manifest or object."""


class NoBatch(BatchError):
    """No plan for that day, or the day's plan has no such hour (a plan written before plans had hours 24-35)."""


def idempotency_key(user_id: int, scene_id: str, send_day: str, window: str) -> str:
    return hashlib.sha256(f"{user_id}|{scene_id}|{send_day}|{window}".encode()).hexdigest()[:32]


def day_prefix(send_day: str) -> str:
    return f"{PREFIX}/ds={send_day}/"


def manifest_key(send_day: str) -> str:
    return f"{day_prefix(send_day)}_manifest.json"


def hour_key(send_day: str, hour: int, run_id: str) -> str:
    return f"{day_prefix(send_day)}hour={hour:02d}/run={run_id}/messages.parquet"


@dataclass(frozen=True)
class WriteResult:
    send_day: str
    run_id: str
    messages: int
    hours: dict          # hour -> messages
    manifest: dict
    deleted_objects: int


def _parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _upload(s3, bucket: str, key: str, table) -> dict:
    body = _parquet_bytes(table)
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/vnd.apache.parquet")
    return {"messages": table.num_rows, "key": key, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}


def _fetch_verified(settings, entry: dict, what: str):
    """The object a manifest entry names, refused if it is missing or differs from the entry."""
    import pyarrow.parquet as pq
    from botocore.exceptions import ClientError

    try:
        body = client(settings).get_object(Bucket=settings.s3_bucket, Key=entry["key"])["Body"].read()
    except ClientError:
        raise BatchError(f"{what}: object {entry['key']} named by the manifest is missing") from None
    digest = hashlib.sha256(body).hexdigest()
    if digest != entry["sha256"] or len(body) != entry["bytes"]:
        raise BatchError(f"{what}: object {entry['key']} does not match the manifest "
                         f"(sha256 {digest[:12]}… vs {entry['sha256'][:12]}…)")
    table = pq.read_table(io.BytesIO(body))
    if table.num_rows != entry["messages"]:
        raise BatchError(f"{what}: {table.num_rows} messages, manifest says {entry['messages']}")
    return table


def trigger_prefix(send_day: str, window: str) -> str:
    return f"{day_prefix(send_day)}triggers/window={window}/"


def write_window(settings, send_day: str, window: str, messages, meta: dict) -> dict:
    """A trigger window's messages: one object + its manifest (written last). A re-run of the window
    writes the same messages again under the same key (its content is deterministic)."""
    import pyarrow.compute as pc

    if pc.count_distinct(messages["idempotency_key"]).as_py() != messages.num_rows:
        raise BatchError(f"trigger batch ds={send_day} window={window}: idempotency_key is not unique")
    s3, bucket = client(settings), settings.s3_bucket
    prefix = trigger_prefix(send_day, window)
    entry = _upload(s3, bucket, f"{prefix}messages.parquet", messages) if messages.num_rows else \
        {"messages": 0, "key": None, "sha256": None, "bytes": 0}
    manifest = {"format": FORMAT, "send_day": send_day, "window": window, "messages": messages.num_rows,
                "object": entry, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **meta}
    s3.put_object(Bucket=bucket, Key=f"{prefix}_manifest.json", Body=json.dumps(manifest, indent=2).encode(),
                  ContentType="application/json")
    return manifest


def read_window(settings, send_day: str, window: str):
    from botocore.exceptions import ClientError

    key = f"{trigger_prefix(send_day, window)}_manifest.json"
    try:
        manifest = json.loads(client(settings).get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read())
    except ClientError:
        raise BatchError(f"trigger batch ds={send_day} window={window}: no manifest at {key}") from None
    if manifest["messages"] == 0:
        return None, manifest
    return _fetch_verified(settings, manifest["object"], f"trigger batch ds={send_day} window={window}"), manifest


def write_day(settings, send_day: str, messages, meta: dict) -> WriteResult:
    """Replace the batches of `send_day` with `messages` (a pyarrow Table with an int `hour` column and a
    unique `idempotency_key`). meta: plan_ds, policy, model_version, config_version (go into the manifest)."""
    import pyarrow.compute as pc

    keys = messages["idempotency_key"]
    if pc.count_distinct(keys).as_py() != messages.num_rows:
        raise BatchError(f"batches ds={send_day}: idempotency_key is not unique (rule: one message per key)")
    s3, bucket = client(settings), settings.s3_bucket
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    hours: dict[str, dict] = {}
    hour_col = messages["hour"].to_numpy()
    for hour in range(PLAN_HOURS):
        part = messages.filter(pc.equal(messages["hour"], hour)) if (hour_col == hour).any() else None
        if part is None:
            hours[f"{hour:02d}"] = {"messages": 0, "key": None, "sha256": None, "bytes": 0}
            continue
        hours[f"{hour:02d}"] = _upload(s3, bucket, hour_key(send_day, hour, run_id), part)
    manifest = {"format": FORMAT, "send_day": send_day, "run_id": run_id,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "messages": messages.num_rows, "hours": hours, **meta}
    # the switch: one PUT; until it lands readers see the previous run's manifest and objects
    s3.put_object(Bucket=bucket, Key=manifest_key(send_day), Body=json.dumps(manifest, indent=2).encode(),
                  ContentType="application/json")
    current = {h["key"] for h in hours.values() if h["key"]}
    stale = [k for k in list_keys(s3, bucket, day_prefix(send_day))
             if k.endswith(".parquet") and k not in current]
    for i in range(0, len(stale), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[i:i + 1000]], "Quiet": True})
    log.info("batches ds=%s run %s: %d messages in %d hours, manifest written, %d stale objects removed",
             send_day, run_id, messages.num_rows, sum(1 for h in hours.values() if h["messages"]), len(stale))
    return WriteResult(send_day, run_id, messages.num_rows,
                       {int(h): v["messages"] for h, v in hours.items()}, manifest, len(stale))


def read_manifest(settings, send_day: str) -> dict:
    from botocore.exceptions import ClientError

    s3 = client(settings)
    try:
        body = s3.get_object(Bucket=settings.s3_bucket, Key=manifest_key(send_day))["Body"].read()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise NoBatch(f"batches ds={send_day}: no manifest at s3://{settings.s3_bucket}/"
                             f"{manifest_key(send_day)}; refusing to read objects without one") from None
        raise
    manifest = json.loads(body)
    if manifest.get("format") != FORMAT or manifest.get("send_day") != send_day:
        raise BatchError(f"batches ds={send_day}: manifest is for {manifest.get('send_day')!r} format "
                         f"{manifest.get('format')!r}, expected {send_day!r} format {FORMAT}")
    return manifest


def read_batch(settings, send_day: str, hour: int):
    """The verified messages of one hour (a pyarrow Table, possibly empty) and the day's manifest."""
    manifest = read_manifest(settings, send_day)
    entry = manifest["hours"].get(f"{hour:02d}")
    if entry is None:
        raise NoBatch(f"batches ds={send_day}: manifest has no entry for hour {hour:02d}")
    if entry["messages"] == 0:
        return None, manifest
    return _fetch_verified(settings, entry, f"batches ds={send_day} hour={hour:02d}"), manifest
