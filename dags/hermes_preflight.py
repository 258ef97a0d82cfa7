"""
### hermes_preflight — the night's push batches, checked when they land

Scheduled on the **`hermes_push_batches` asset**: it runs when the nightly's `batches` task has written a send
day's batches to the object store, hours before their first send hour, and reads the asset event's extra
(`ds`, `send_day`, `run_id`, `policy`, `messages`).

| task | what it does | writes |
|---|---|---|
| `preflight` | reads the day back from the object store as the hourly delivery will: the manifest, every hour's object against it (SHA-256, bytes, count, hour), no idempotency key in two hours, a device token on every message; the counts reconcile (hours = manifest = the asset event = the night's assigned windows in `plan/windows`); hours already over when the plan landed are an alert (`deadline_missed`), a problem is an alert (`batches_invalid`) and fails at once (the objects do not change by retrying) | `reports/preflight/ds=<ds>/preflight.json` |

Run by hand (no asset event): the newest `hermes_push_batches` event is checked, or `--conf '{"ds": "2026-10-30"}'`
names the night; `hermes preflight --ds 2026-10-30` does the same outside Airflow.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from core.alerts import HermesNotifier

BATCHES = Asset(name="hermes_push_batches", uri="s3://hermes/batches")


def announced_event(ctx) -> dict:
    """The extra of the asset event this run is about: the one that triggered it, else (a run by hand) the newest."""
    for events in (ctx.get("triggering_asset_events") or {}).values():
        if events:
            return dict(events[-1].extra or {})
    try:
        newest = ctx["inlet_events"][BATCHES][-1]
    except (IndexError, KeyError):
        return {}
    return dict(newest.extra or {})


@dag(
    dag_id="hermes_preflight",
    schedule=[BATCHES],
    start_date=pendulum.datetime(1970, 1, 1, tz="UTC"),
    catchup=False,
    # active from its first parse: it only reads and alerts (the nightly and the hourly send, and start paused)
    is_paused_upon_creation=False,
    max_active_runs=1,
    tags=["hermes", "delivery", "checks"],
    doc_md=__doc__,
    params={"ds": Param(None, type=["null", "string"], format="date",
                        description="the night whose batches to check (default: the asset event's ds)")},
    on_failure_callback=HermesNotifier("run_failed"),
    default_args={"owner": "hermes", "on_failure_callback": HermesNotifier("task_failed"),
                  "retries": 2, "retry_delay": timedelta(minutes=1),
                  "execution_timeout": timedelta(minutes=30)},
)
def hermes_preflight():
    @task(inlets=[BATCHES])
    def preflight() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from jobs.preflight import PreflightError
        from jobs.tasks import preflight as run

        ctx = get_current_context()
        event = announced_event(ctx)
        ds = ctx["params"].get("ds") or event.get("ds")
        if not ds:
            raise AirflowFailException("no hermes_push_batches event to check and no ds given: run the nightly "
                                       "first, or trigger with --conf '{\"ds\": \"YYYY-MM-DD\"}'")
        try:
            return run(ds, event if event.get("ds") == ds else None)
        except PreflightError as e:          # the objects do not change by retrying: fail now, once
            raise AirflowFailException(str(e)) from None

    preflight()


hermes_preflight()
