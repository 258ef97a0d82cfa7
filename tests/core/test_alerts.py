"""Alerts (core/alerts.py): a local webhook receives each alert as JSON; a receiver that is down or refuses loses
nothing (the alert stays in $HERMES_HOME/alerts/alerts.jsonl) and fails nothing; a repeated cause is raised once;
the Airflow notifier turns a failure context into an alert; the hourly delivery raises the deadline alert when the
send day's plan is missing and `delivery_behind` when its hour is incomplete or its run starts late."""
from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import pytest

from core.alerts import HermesNotifier, alert_file, send_alert
from tests.core.receiver import Receiver


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    monkeypatch.delenv("HERMES_ALERT_WEBHOOK", raising=False)
    return tmp_path


def recorded() -> list[dict]:
    return [json.loads(x) for x in alert_file().read_text().splitlines()]


def test_an_alert_reaches_the_webhook_and_the_file_once_per_cause(home, monkeypatch):
    with Receiver() as r:
        monkeypatch.setenv("HERMES_ALERT_WEBHOOK", r.url)
        doc = send_alert("deadline_missed", "the plan is late", dedupe="plan|2026-10-31", send_day="2026-10-31")
        again = send_alert("deadline_missed", "the plan is late", dedupe="plan|2026-10-31")
        other = send_alert("deadline_missed", "the next day's plan is late", dedupe="plan|2026-11-01")
    assert doc["delivered"] is True and again.get("repeated") and other["delivered"] is True
    assert [g["summary"] for g in r.got] == ["the plan is late", "the next day's plan is late"]
    assert r.got[0]["severity"] == "critical" and r.got[0]["details"] == {"send_day": "2026-10-31"}
    assert [d["summary"] for d in recorded()] == ["the plan is late", "the next day's plan is late"]


def test_a_receiver_that_is_down_or_refuses_loses_nothing_and_fails_nothing(home, monkeypatch, caplog):
    with Receiver(status=500) as r:
        monkeypatch.setenv("HERMES_ALERT_WEBHOOK", r.url)
        with caplog.at_level(logging.WARNING, "hermes.alerts"):
            refused = send_alert("run_failed", "hermes_nightly failed")
        url = r.url
    assert refused["delivered"] is False and len(r.got) == 3              # three tries
    monkeypatch.setenv("HERMES_ALERT_WEBHOOK", url)                         # the receiver is gone now
    down = send_alert("run_failed", "hermes_hourly failed")
    assert down["delivered"] is False
    assert [d["summary"] for d in recorded()] == ["hermes_nightly failed", "hermes_hourly failed"]
    assert "s3cr3t-path" not in caplog.text                                 # the webhook's secret part is not logged
    monkeypatch.delenv("HERMES_ALERT_WEBHOOK")
    assert send_alert("task_failed", "no webhook: the file and the log only")["delivered"] is None


def test_the_airflow_notifier_names_the_dag_task_run_and_error(home, monkeypatch):
    ti = SimpleNamespace(dag_id="hermes_nightly", task_id="score", run_id="scheduled__2026-10-30", try_number=3,
                         map_index=-1)
    ctx = {"ti": ti, "dag_run": SimpleNamespace(dag_id="hermes_nightly", run_id="scheduled__2026-10-30"),
           "exception": RuntimeError("Traceback...\nscore: the model registry is unreachable"),
           "logical_date": "2026-10-30T00:00:00+00:00"}
    with Receiver() as r:
        monkeypatch.setenv("HERMES_ALERT_WEBHOOK", r.url)
        HermesNotifier("task_failed").notify(ctx)
        HermesNotifier("run_failed").notify({"dag_run": ctx["dag_run"], "reason": "task_failure"})
    task, run = r.got
    assert task["kind"] == "task_failed" and task["details"]["task_id"] == "score"
    assert task["summary"] == ("hermes_nightly.score failed in run scheduled__2026-10-30: RuntimeError: score: the "
                               "model registry is unreachable")
    assert task["details"]["try_number"] == 3 and "task_id=score" in task["details"]["log"]
    assert run["kind"] == "run_failed" and run["summary"].startswith("hermes_nightly failed in run")


def test_the_hourly_delivery_raises_the_deadline_and_the_behind_alerts(home, monkeypatch):
    from delivery.batches import NoBatch
    from jobs import tasks
    from jobs.deliver import DeliveryIncomplete

    calls = []

    def deliver_hour(day, hour, ramp=True):
        calls.append((day, hour))
        if day == "2026-10-31":
            raise NoBatch("batches ds=2026-10-31: no manifest at s3://hermes/batches/ds=2026-10-31/_manifest.json")
        raise DeliveryIncomplete(f"{day} h{hour}: 12 messages pending")

    monkeypatch.setattr(tasks, "deliver_hour", deliver_hour)
    for _ in range(2):                                                      # a retry raises nothing new
        with pytest.raises(NoBatch):
            tasks.deliver_utc_hour("2026-10-31", 3, scheduled_at=time.time() - 30 * 60)
    monkeypatch.setattr(tasks, "deliver_hour", lambda day, hour, ramp=True: (_ for _ in ()).throw(
        DeliveryIncomplete(f"{day} h{hour}: 12 messages pending")))
    with pytest.raises(DeliveryIncomplete):
        tasks.deliver_utc_hour("2026-11-01", 14, scheduled_at=time.time())
    kinds = [(d["kind"], d["details"].get("hour")) for d in recorded()]
    assert kinds == [("delivery_behind", 3), ("deadline_missed", 3), ("delivery_behind", 14)]
    late, deadline, incomplete = recorded()
    assert "started 30 min after its hour began" in late["summary"]
    assert deadline["details"]["plan_ds"] == "2026-10-30" and "is not done at 03:00 UTC" in deadline["summary"]
    assert "12 messages pending" in incomplete["summary"]
