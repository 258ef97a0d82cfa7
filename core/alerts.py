"""Alerts: what an on-call engineer must hear about, through one configurable notifier.

    HERMES_ALERT_WEBHOOK=https://hooks.example/...   (any receiver that takes a JSON POST: Slack/Teams/Mattermost
                                                    incoming webhooks, Alertmanager's webhook receiver, a pager)

Every alert is a JSON document {"kind", "severity", "summary", "details", "at", "source"} and is
- appended to `$HERMES_HOME/alerts/alerts.jsonl` (always: the record, and what remains when no webhook is set or it
  is down), and logged at ERROR;
- POSTed to `$HERMES_ALERT_WEBHOOK` when set (5 s timeout, 3 tries; a notifier that fails never fails the task
  that raised the alert — it is logged and stays in the file).

Kinds:
- `task_failed` / `run_failed`: every DAG's `on_failure_callback` (an Airflow notifier, `HermesNotifier`): the DAG,
  task, run, try and the error's last line, and the task log's place.
- `deadline_missed`: the nightly plan of a send day is not in the object store when the hourly delivery of that
  day's first hour runs (jobs.tasks.deliver_utc_hour), or its batches landed after some of their hours had ended
  (jobs.preflight).
- `batches_invalid`: the batches that landed cannot be delivered as planned - a missing or mismatching object, a key
  in two hours, counts that do not reconcile with the plan (jobs.preflight, on the `hermes_push_batches` asset).
- `delivery_behind`: an hour delivered late (`platform.alerts.delivery_late_minutes` after its hour began) or left
  incomplete (pending messages, another run holding the lease).

Device tokens, credentials and message bodies never go into an alert; the webhook URL (it carries a secret) is
never logged whole.
"""
from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from pathlib import Path

log = logging.getLogger("hermes.alerts")
SEVERITY = {"task_failed": "warning", "run_failed": "error", "deadline_missed": "critical",
            "delivery_behind": "error", "batches_invalid": "critical"}


def _redact(url: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{':' + str(u.port) if u.port else ''}/..."


def alert_file() -> Path:
    from core.settings import Settings

    return Settings.from_env().home / "alerts" / "alerts.jsonl"


def send_alert(kind: str, summary: str, source: str = "hermes", dedupe: str | None = None, **details) -> dict:
    """Record and deliver one alert; returns it (with `delivered`: True, False, or None without a webhook). With
    `dedupe`, an alert of the same kind and key is raised once (task retries and the next hours repeat a cause)."""
    if dedupe is not None:
        import hashlib

        marker = alert_file().parent / "raised" / hashlib.sha256(f"{kind}|{dedupe}".encode()).hexdigest()[:24]
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            with open(marker, "x"):
                pass
        except FileExistsError:
            log.info("alert %s (%s) was raised already", kind, dedupe)
            return {"kind": kind, "summary": summary, "repeated": True}
    doc = {"kind": kind, "severity": SEVERITY.get(kind, "error"), "summary": summary,
           "details": {k: v for k, v in details.items() if v is not None}, "at": time.time(), "source": source}
    log.error("ALERT %s: %s", kind, summary)
    url = os.environ.get("HERMES_ALERT_WEBHOOK", "").strip()
    doc["delivered"] = None
    if url:
        body = json.dumps(doc, default=str).encode()
        for attempt in range(3):
            try:
                req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    doc["delivered"] = 200 <= r.status < 300
                if doc["delivered"]:
                    break
            except OSError as e:
                log.warning("alert %s: the webhook %s did not take it (try %d of 3): %s", kind, _redact(url),
                            attempt + 1, e)
                doc["delivered"] = False
            time.sleep(0.5 * (attempt + 1))
    path = alert_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(doc, default=str) + "\n")
    except OSError as e:                        # the log line above stays
        log.warning("alert %s: could not append to %s: %s", kind, path, e)
    return doc


def _last_line(exc) -> str | None:
    if exc is None:
        return None
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:500]


try:
    from airflow.sdk import BaseNotifier
except ImportError:                             # the module is also used outside Airflow (jobs, tests)
    BaseNotifier = object


class HermesNotifier(BaseNotifier):
    """An Airflow notifier (on_failure_callback of every Hermes DAG and task): the failure as a Hermes alert."""

    template_fields = ()

    def __init__(self, kind: str = "task_failed"):
        if BaseNotifier is not object:
            super().__init__()
        self.kind = kind

    def notify(self, context) -> None:
        ti = context.get("ti") or context.get("task_instance")
        run = context.get("dag_run")
        dag_id = getattr(run, "dag_id", None) or getattr(ti, "dag_id", None)
        run_id = getattr(run, "run_id", None) or getattr(ti, "run_id", None)
        task_id = getattr(ti, "task_id", None) if self.kind == "task_failed" else None
        where = f"{dag_id}.{task_id}" if task_id else dag_id
        error = _last_line(context.get("exception")) or context.get("reason")
        send_alert(self.kind, f"{where} failed in run {run_id}" + (f": {error}" if error else ""), source="airflow",
                   dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=getattr(ti, "try_number", None),
                   map_index=getattr(ti, "map_index", None), logical_date=str(context.get("logical_date") or ""),
                   error=error, log=f"$AIRFLOW_HOME/logs/dag_id={dag_id}/run_id={run_id}/task_id={task_id}"
                   if task_id else None)
