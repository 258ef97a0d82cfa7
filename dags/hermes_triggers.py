"""
### hermes_triggers — IFTTT rules on fresh events, pushed within the window

Every 15 minutes (the interval timetable's window = `trigger_run.window_minutes` in `conf/platform.yaml`;
keep the two equal) the run for the event window `[data_interval_start, data_interval_end)` runs `evaluate`
and `deliver` in one task:

| step | what it does |
|---|---|
| stream_health | which engine decides: the streaming engine (`hermes stream`) when it is running — then this window is skipped (one engine, never two) and the task logs its lag, decisions and latency; this batch when the event stream was never used (events arrive as raw files); a failure naming the fix when the stream is in use and its engine is silent (the events wait in the stream, not in raw/) |
| decide | every trigger rule (`conf/triggers/*.yaml`: *when* an event, *if* a condition on the user, *then* a scene, after a *delay*, *unless* an exception, not again within a *re-eligibility gap*) over the events whose push falls due in the window — and in the `lateness_minutes` before it, so late events are still pushed once; exceptions cancel; fatigue is shared with the nightly plan (one budget per user per local day, the same platform quotas, the same user × item gap); every decision and its reason goes to the trigger log; the watermark advances |
| deliver | the window's due pushes as a batch with its manifest in the object store (`batches/ds=<day>/triggers/window=HHMM/`), sent at once through the same sender and ledger as `hermes_hourly`; receipts in `push_log` with policy `trigger:<rule id>` |

**Exactly once**: a trigger's key is a hash of (rule, user, item, event time); the trigger log decides a
key once, so a re-run of a window (or an overlapping later window) emits nothing twice, and the ledger
acknowledges each message once. By hand: `hermes triggers --window-end 2026-10-30T12:15`.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from core.alerts import HermesNotifier

EVENTS = Asset(name="hermes_raw_events", uri="file:///hermes/warehouse/raw/events")


@dag(
    dag_id="hermes_triggers",
    schedule=CronDataIntervalTimetable("*/15 * * * *", timezone="UTC"),
    # Any logical date may be run by hand (real logs can be decades old, e.g. MovieLens 1997-98); catchup is off,
    # so the scheduler never backfills from here.
    start_date=pendulum.datetime(1970, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hermes", "triggers", "delivery"],
    doc_md=__doc__,
    # every failed task (after its retries) and every failed run is an alert (core/alerts.py, $HERMES_ALERT_WEBHOOK)
    on_failure_callback=HermesNotifier("run_failed"),
    default_args={"owner": "hermes", "on_failure_callback": HermesNotifier("task_failed"),
                  "retries": 2, "retry_delay": timedelta(seconds=30),
                  "execution_timeout": timedelta(minutes=14)},
)
def hermes_triggers():
    @task.short_circuit()
    def stream_health() -> bool:
        from jobs.tasks import triggers_by_batch

        return triggers_by_batch()

    @task(inlets=[EVENTS])
    def run_window() -> dict:
        from jobs.tasks import trigger_window

        ctx = get_current_context()
        # by hand without a logical date: the window ending at the last window boundary before now
        end = ctx.get("data_interval_end") or ctx["dag_run"].run_after
        return trigger_window(end)

    stream_health() >> run_window()


hermes_triggers()
