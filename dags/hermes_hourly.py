"""
### hermes_hourly — deliver the push batch of the hour

Runs at the top of every UTC hour H (`CronTriggerTimetable`, logical date = H) and delivers
`batches/ds=<H's date>/hour=<H's hour>` that the nightly plan wrote to the object store:

| task | what it does |
|---|---|
| `deliver` | takes the hour's lease (a second run of the same hour fails as BUSY and retries later), reads the hour's batch through the day's manifest (refuses a missing or mismatching one), registers every message in the delivery ledger, claims each message (a committed send intent) and sends what is still pending to the push gateway under the configured rate, burst and concurrency, released evenly over `gateway.ramp_minutes`; retries 429/5xx/timeouts with backoff (honouring `Retry-After`) until `gateway.deadline_minutes`; dead-letters 400s, 404 UNREGISTERED (the token is recorded dead for the next plan) and exhausted retries, each with its reason; appends the hour's receipts to `raw/push_log` |

**Re-runs and catch-up are safe**: the ledger knows every idempotency key's state, so a re-run (or a
retry after a crash) sends only what was not acknowledged, and the gateway acknowledges a repeated key
without delivering it twice. The receipts file of an hour is rewritten whole, never appended.

Params (trigger form or `airflow dags trigger hermes_hourly --conf '{...}'`):
`send_day` + `hour` deliver another hour than the run's own (catch-up by hand); `ramp=false` releases
the batch at once (catching up on a past hour).
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.timetables.trigger import CronTriggerTimetable

from core.alerts import HermesNotifier

BATCHES = Asset(name="hermes_push_batches", uri="s3://hermes/batches")


@dag(
    dag_id="hermes_hourly",
    schedule=CronTriggerTimetable("0 * * * *", timezone="UTC"),
    # Any logical date may be run by hand (real logs can be decades old, e.g. MovieLens 1997-98); catchup is off,
    # so the scheduler never backfills from here.
    start_date=pendulum.datetime(1970, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hermes", "hourly", "delivery"],
    doc_md=__doc__,
    params={
        "send_day": Param(None, type=["null", "string"], format="date",
                          description="UTC send day to deliver (default: the run's own)"),
        "hour": Param(None, type=["null", "integer"], minimum=0, maximum=35,
                      description="UTC hour to deliver (default: the run's own). With send_day: that plan's hour "
                                  "0-35 alone (24-35 = 00-11 of the next UTC day)"),
        "ramp": Param(True, type="boolean", description="spread the batch over gateway.ramp_minutes"),
    },
    # every failed task (after its retries) and every failed run is an alert (core/alerts.py, $HERMES_ALERT_WEBHOOK)
    on_failure_callback=HermesNotifier("run_failed"),
    default_args={"owner": "hermes", "on_failure_callback": HermesNotifier("task_failed"),
                  "retries": 2, "retry_delay": timedelta(minutes=1),
                  "execution_timeout": timedelta(minutes=58)},
)
def hermes_hourly():
    @task(inlets=[BATCHES])
    def deliver() -> dict:
        from jobs.tasks import deliver_hour, deliver_utc_hour

        ctx = get_current_context()
        # a run triggered by hand without a logical date (Airflow 3 allows it) delivers the hour it runs in
        when = ctx.get("logical_date") or ctx["dag_run"].run_after
        p = ctx["params"]
        ramp = bool(p.get("ramp", True))
        if p.get("send_day") is not None and p.get("hour") is not None:     # one plan hour, by hand
            return deliver_hour(p["send_day"], int(p["hour"]), ramp=ramp)
        day = p.get("send_day") or when.strftime("%Y-%m-%d")
        hour = when.hour if p.get("hour") is None else int(p["hour"])
        # a scheduled run of its own hour is late when it starts long after the hour began (an alert)
        own = p.get("send_day") is None and p.get("hour") is None and ctx["dag_run"].run_type == "scheduled"
        # the UTC hour: the send day's own hour, and for 00-11 the previous plan's hour 24-35 (west of UTC)
        return deliver_utc_hour(day, hour, ramp=ramp, scheduled_at=when.timestamp() if own else None)

    deliver()


hermes_hourly()
