"""
### hermes_nightly — the nightly Hermes plan

For the logical date `ds` (a UTC day; the run fires when the day is over):

1. **validate_raw** — one mapped task per raw-contract table (`users`, `items`, `item_changes`,
   `events`, `push_log`): exact schema, then the Great Expectations suite from `expectations/`.
   Fact tables are checked on their `ds=<ds>` partition. A broken table fails the run with a message
   naming table, column and rule; a JSON report lands in `warehouse/reports/validation/ds=<ds>/`.
2. **user_features** — Spark job `jobs.user_features`: activity counts (1/7/28 d), local-time open
   profile, category affinity, recency and push history as of the end of `ds`, written to
   `warehouse/features/user_features/ds=<ds>/` (the partition is overwritten, never appended).

Re-running a date replaces its outputs. Tasks pass paths and counts through XCom, never data.
Run by hand: `make run` (whole thing) or `airflow dags test hermes_nightly 2026-10-30`.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

RAW_TABLES = ["users", "items", "item_changes", "events", "push_log"]
USER_FEATURES = Asset(name="hermes_user_features", uri="file:///hermes/warehouse/features/user_features")


@dag(
    dag_id="hermes_nightly",
    # Interval timetable: the run for day D covers [D 00:00, D+1 00:00) UTC and starts when D is over.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hermes", "nightly"],
    doc_md=__doc__,
    default_args={"owner": "hermes", "retries": 2, "retry_delay": timedelta(minutes=2),
                  "retry_exponential_backoff": True},
)
def hermes_nightly():
    @task(map_index_template="{{ task.op_kwargs['table'] }}")
    def validate_raw(table: str, ds: str | None = None) -> dict:
        from jobs.tasks import validate_raw as run

        return run(table, ds)

    @task(outlets=[USER_FEATURES])
    def user_features(ds: str | None = None) -> dict:
        from jobs.tasks import user_features as run

        return run(ds)

    validate_raw.expand(table=RAW_TABLES) >> user_features()


hermes_nightly()
