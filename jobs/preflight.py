"""`hermes preflight`: a night's push batches checked as soon as they land, not when their first hour is sent.

The `hermes_preflight` DAG is scheduled on the `hermes_push_batches` asset the nightly's `batches` task emits; the
asset event carries the night (ds), the send day, the run id, the policy and the message count. The check reads the
day back from the object store with its own client, as the hourly delivery will:

- the manifest is there, of this format, for this send day and this night's plan;
- every hour's object is there and matches the manifest (SHA-256, bytes, messages), its rows are of that hour,
  and every message has a device token;
- no idempotency key is in two hours (one push, one send);
- the counts reconcile: the hours add up to the manifest, the manifest to the asset event, and both to the
  night's assigned windows of that policy in `plan/windows` (nothing lost between the plan and the bucket);
- hours that are over already (the plan landed late for them) are counted and named - unless every hour is: a
  past day's plan (a backfill, a replayed world) is delivered by hand (`hermes deliver --hour all`), not late.

Writes `reports/preflight/ds=<ds>/preflight.json` either way. A problem is an alert (`batches_invalid`, critical:
the first send hour is near) and fails the task once - the objects do not change by retrying; a late plan is an
alert (`deadline_missed`) but not a failure (those hours are delivered late, the rest on time).
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone

from core.settings import Settings
from core.warehouse import Warehouse

log = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    """The batches of a night cannot be delivered as planned (the report names each problem)."""


def _hour_start(send_day: str, hour: int) -> datetime:
    return datetime.fromisoformat(send_day).replace(tzinfo=timezone.utc) + timedelta(hours=hour)


def assigned_windows(wh: Warehouse, ds: str, policy: str) -> int | None:
    """The night's pushes of `policy` that got a send hour (None: no plan/windows partition to compare with)."""
    import pyarrow.compute as pc

    from jobs.windows import WINDOWS

    if not wh.partition(WINDOWS, ds).exists():
        return None
    w = wh.read_arrow(WINDOWS, ds)
    return int(pc.sum(pc.and_(pc.equal(w["policy"], policy), pc.greater_equal(w["slot"], 0))).as_py() or 0)


def check(settings: Settings, ds: str, announced: dict | None = None, now: float | None = None) -> dict:
    """The preflight report of night `ds` (announced: the asset event's extra, if a run was triggered by one)."""
    import pyarrow.compute as pc

    from delivery.batches import BatchError, _fetch_verified, read_manifest
    from jobs.windows import send_day as send_day_of

    announced = announced or {}
    now = time.time() if now is None else now
    day = announced.get("send_day") or send_day_of(ds)
    problems: list[str] = []
    report = {"ds": ds, "send_day": day, "checked_at": datetime.fromtimestamp(now, tz=timezone.utc).isoformat(
        timespec="seconds"), "announced": announced, "bucket": settings.s3_bucket}
    try:
        manifest = read_manifest(settings, day)
    except BatchError as e:
        problems.append(str(e))
        manifest = None
    if manifest is not None:
        report |= {"run_id": manifest.get("run_id"), "policy": manifest.get("policy"),
                   "model_version": manifest.get("model_version"), "messages": manifest["messages"]}
        if manifest.get("plan_ds") != ds:
            problems.append(f"batches ds={day}: the manifest is night {manifest.get('plan_ds')}'s plan, not {ds}'s")
        if announced.get("run_id") and announced["run_id"] != manifest.get("run_id"):
            report["superseded"] = f"the day was written again since the event (run {manifest.get('run_id')})"
        seen: set[str] = set()
        hours, total, late, repeated, tokenless = {}, 0, {}, 0, 0
        for key, entry in sorted(manifest["hours"].items()):
            hour, n = int(key), int(entry["messages"])
            total += n
            if not n:
                continue
            hours[key] = n
            if _hour_start(day, hour) + timedelta(hours=1) <= datetime.fromtimestamp(now, tz=timezone.utc):
                late[key] = n
            try:
                table = _fetch_verified(settings, entry, f"batches ds={day} hour={key}")
            except BatchError as e:
                problems.append(str(e))
                continue
            if pc.any(pc.not_equal(table["hour"], hour)).as_py():
                problems.append(f"batches ds={day} hour={key}: rows of another hour in the object")
            tokenless += int(pc.sum(pc.invert(pc.is_valid(table["device_token"]))).as_py() or 0)
            keys = table["idempotency_key"].to_pylist()
            repeated += len(keys) - len(set(keys)) + sum(1 for k in set(keys) if k in seen)
            seen.update(keys)
        # every hour over: a past day's plan (a backfill, or a replayed world) - caught up by hand, not late
        report |= {"hours": hours, "late_hours": {} if late == hours else late, "past_day": bool(hours) and late == hours}
        if total != manifest["messages"]:
            problems.append(f"batches ds={day}: the hours hold {total} messages, the manifest says "
                            f"{manifest['messages']}")
        if repeated:
            problems.append(f"batches ds={day}: {repeated} idempotency keys are in two places (rule: one message "
                            "per key)")
        if tokenless:
            problems.append(f"batches ds={day}: {tokenless} messages without a device token")
        if announced.get("messages") is not None and int(announced["messages"]) != manifest["messages"] \
                and "superseded" not in report:
            problems.append(f"batches ds={day}: the asset event announced {announced['messages']} messages, the "
                            f"manifest holds {manifest['messages']}")
        planned = assigned_windows(Warehouse(settings.warehouse), ds, manifest.get("policy") or "hermes")
        report["planned"] = planned
        if planned is not None and planned != manifest["messages"]:
            problems.append(f"batches ds={day}: plan/windows assigned {planned} pushes of policy "
                            f"{manifest.get('policy')}, the batches hold {manifest['messages']}")
    report |= {"ok": not problems, "problems": problems}
    path = Warehouse(settings.warehouse).report("preflight", ds, "preflight")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return report


def run(settings: Settings, ds: str, announced: dict | None = None, now: float | None = None) -> dict:
    """`check`, with its alerts; raises PreflightError when the batches cannot be delivered as planned."""
    from core.alerts import send_alert

    report = check(settings, ds, announced, now)
    day = report["send_day"]
    if report.get("late_hours"):
        n = sum(report["late_hours"].values())
        send_alert("deadline_missed", f"the batches of {day} landed after {len(report['late_hours'])} of their hours "
                   f"had ended ({n:,} pushes will go out late)", source="hermes_preflight",
                   dedupe=f"preflight|{day}|{report.get('run_id')}", ds=ds, hours=sorted(report["late_hours"]))
    if not report["ok"]:
        send_alert("batches_invalid", f"the batches of {day} (night {ds}) cannot be delivered as planned: "
                   f"{report['problems'][0]}", source="hermes_preflight", ds=ds, problems=report["problems"])
        raise PreflightError("; ".join(report["problems"]))
    log.info("preflight ds=%s: %s messages in %d hours for %s, reconciled with the plan (%s); %s", ds,
             f"{report['messages']:,}", len(report["hours"]), day, report["planned"],
             "a past day (backfill or replay): deliver it with `hermes deliver --hour all`" if report["past_day"]
             else f"{len(report['late_hours'])} hours already over")
    return report
