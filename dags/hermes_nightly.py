"""
### hermes_nightly — the nightly Hermes plan

For the logical date `ds` (a UTC day; the run fires when the day is over) Hermes plans the pushes of
the next local day (`plan_date = ds + 1` in each user's time zone; with `windows.plan_day: most_waking_hours`,
`ds + 2` from about UTC+9 east, whose day `ds + 1` morning is over before the plan is ready).

| task | what it does | writes |
|---|---|---|
| `validate_config` | validates `conf/` (scenes, audience rules, fatigue, quotas); **the run stops here on invalid config**; freezes it as a snapshot whose content hash is the *config version* | `config/ds=<ds>/config.json` |
| `validate_dimensions` (×2), then `validate_facts` (×3) | raw-contract schema + Great Expectations suite of each input (users, items; then item_changes, events, push_log on their `ds` partition). **Bad rows are quarantined with their reason and the night goes on** (the stages read only the clean rows; rows in = kept + quarantined); a missing/unreadable/empty partition, schema drift or a bad share above `validation.max_bad_share` stops the run | `reports/validation/ds=<ds>/`, `quarantine/<table>/` |
| `rollups` | each raw `events` partition the night's features read (the training set's lookback) rolled up per user, user × category, 15-minute open slot, item and seller and UTC day, once: only partitions never rolled up, whose raw files changed, or from another rollup version are (re)computed — a steady night rolls up one day | `rollups/*`, `rollups/_sources/ds=<p>.json` |
| `user_features` | activity 1/7/28 d per event type, local-hour open profile, top categories, recency, push history overall and per scene, seller-side counts | `features/user_features`, `features/user_scene_history` |
| `material_features` | items on sale at the end of `ds` (rebuilt from `item_changes`), price drop, freshness, popularity, seller activity; open/click rates by scene → category → material, Bayesian-smoothed toward the parent | `features/material_features`, `features/material_rates` |
| `check_features` (×4) | GX suite of each feature table | reports |
| `audiences` | user × scene from each nightly scene's audience rule (safe rule language, no SQL) | `plan/audiences` |
| `fatigue` | opt-out, device token, dead tokens, platform quota, daily cap, per-scene cap, min spacing — all in the user's local day; one reason per dropped pair; audiences = eligible + suppressed | `plan/eligible`, `plan/suppressed` |
| `check_plan` (×3) | GX suites of the plan tables + the reconciliation | reports |
| `train` | point-in-time training set from `push_log` (features as of each push's send day), logistic regression vs gradient boosting on a time-based holdout, logged to MLflow experiment `hermes-ctr` (metrics incl. oracle AUC, ROC/calibration/importance plots, signature), registered as `hermes-ctr` | MLflow, `reports/training/` |
| `gate` | the new version becomes `@champion` only if it beats the champion's AUC on the same holdout by the configured margin, else `@challenger`; decision and numbers logged on the run | MLflow aliases |
| `publish_model` | emits the `hermes_ctr_model` asset event (extra: ds, version, holdout AUC, the version it replaced) only when the gate promoted a version; skipped when it was held | Airflow asset |
| `score` | recall per scene materials source for every eligible pair, the shortlist (each user x scene x category's best by an item-level estimate, plus Push 1.0's draw), pair features, bulk scoring with `@champion` through a scalar Arrow UDF (`arrow_udf`), model version on every row | `plan/candidates`, `plan/item_scores`, `plan/scored` |
| `select` | feeds (top-k with one item per seller and a per-category cap) and one scene per user by expected opens then priority; the Push 1.0 baseline (one global best-CTR scene, one item) beside it | `plan/selected`, `plan/baseline` |
| `check_selection` (×3) | GX suites of the selection tables | reports |
| `windows` | per user, the open probability at each hour of the send day (`ds + 1`, UTC hours) from the user's app-open and push-open hours smoothed toward the population, moved by the model's timing elasticity; one hour per push maximising expected opens under the gateway's hourly capacity, quiet hours and spacing; a configured share explores a random allowed hour (propensity logged); the baseline at its fixed local hour under the same capacity | `plan/windows`, `reports/windows/` |
| `check_windows` | GX suite of `plan/windows` (a slot or a reason per push, propensities in [0, 1]) | reports |
| `plan_report` | the dry-run report: volume per scene, suppression reasons, hourly load vs capacity (chart), expected open rate per scene, Hermes vs baseline on the same users; HTML + JSON, logged to MLflow experiment `hermes-plan` | `reports/plan/ds=<ds>/plan.{html,json}` |
| `batches` | the active policy's pushes as one Parquet object per send hour in the object store + the day's manifest (written last; a re-run replaces the day atomically) | `s3://<bucket>/batches/ds=<ds+1>/` |

**Params** (Airflow's trigger form, or `airflow dags trigger hermes_nightly --conf '{"policy": "baseline"}'`):
`policy` = `hermes` | `baseline` — whose plan becomes the push batches (default: `windows.policy` in
`conf/platform.yaml`; both plans are always computed and reported); `dry_run` = `true` — everything up to
the plan report, no batches written (the report is the result).

All outputs live under `$HERMES_WAREHOUSE`, partition `ds=<ds>`, every row stamped with `config_version`.
Re-running a date overwrites its partitions. Tasks pass paths and counts through XCom, never data.
By hand: `make run`, or `airflow dags test hermes_nightly 2026-10-30`.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from core.alerts import HermesNotifier

DIMENSIONS = ["users", "items"]
FACTS = ["item_changes", "events", "push_log"]
RAW_TABLES = DIMENSIONS + FACTS
FEATURE_TABLES = ["features/user_features", "features/user_scene_history", "features/material_features",
                  "features/material_rates"]
PLAN_TABLES = ["plan/audiences", "plan/eligible", "plan/suppressed"]
FEATURES = Asset(name="hermes_features", uri="file:///hermes/warehouse/features")
SELECTION_TABLES = ["plan/scored", "plan/selected", "plan/baseline"]
PLAN = Asset(name="hermes_selected_plan", uri="file:///hermes/warehouse/plan/selected")
BATCHES = Asset(name="hermes_push_batches", uri="s3://hermes/batches")
MODEL = Asset(name="hermes_ctr_model", uri="file:///hermes/mlflow/models/hermes-ctr")


@dag(
    dag_id="hermes_nightly",
    # Interval timetable: the run for day D covers [D 00:00, D+1 00:00) UTC and starts when D is over.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # Any logical date may be run by hand (real logs can be decades old, e.g. MovieLens 1997-98); catchup is off,
    # so the scheduler never backfills from here.
    start_date=pendulum.datetime(1970, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hermes", "nightly"],
    doc_md=__doc__,
    params={
        "policy": Param(None, type=["null", "string"], enum=[None, "hermes", "baseline"],
                        description="whose plan becomes the push batches (default: windows.policy in conf)"),
        "dry_run": Param(False, type="boolean", description="stop at the plan report: no batches written"),
    },
    # every failed task (after its retries) and every failed run is an alert (core/alerts.py, $HERMES_ALERT_WEBHOOK)
    on_failure_callback=HermesNotifier("run_failed"),
    default_args={"owner": "hermes", "on_failure_callback": HermesNotifier("task_failed"),
                  "retries": 2, "retry_delay": timedelta(minutes=2),
                  "retry_exponential_backoff": True},
)
def hermes_nightly():
    @task
    def validate_config(ds: str | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from core.config.loader import ConfigError
        from jobs.tasks import validate_config as run

        try:
            return run(ds)
        except ConfigError as e:  # an invalid config does not fix itself: fail now, no retries
            raise AirflowFailException(str(e)) from None

    @task(map_index_template="{{ task.op_kwargs['table'] }}")
    def validate_raw(table: str, config: dict, ds: str | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from expectations.gate import DataQualityError
        from jobs.tasks import validate_raw as run

        try:
            return run(table, ds, config)
        except DataQualityError as e:  # the data as delivered does not change by retrying: fail now, once
            raise AirflowFailException(str(e)) from None

    def announce(outlets, result: dict, ds: str | None, **extra) -> None:
        """The asset events this task emits carry what a consumer needs: the night, the rows, the versions."""
        from airflow.sdk import get_current_context

        events = get_current_context()["outlet_events"]
        rows = sum(t.get("rows") or 0 for t in (result.get("tables") or {}).values() if isinstance(t, dict))
        for asset in outlets:
            events[asset].extra = {"ds": ds, "rows": rows, "config_version": result.get("config_version"),
                                   **{k: v for k, v in extra.items() if v is not None}}

    def stage(name: str, outlets=()):
        """A task running the Spark stage `jobs.<name>` for ds under the run's frozen config."""
        @task(task_id=name, outlets=list(outlets))
        def run_stage(config: dict, ds: str | None = None) -> dict:
            from jobs.tasks import run_stage as run

            result = run(name, ds, config)
            if outlets:
                announce(outlets, result, ds, model_version=result.get("model_version"),
                         model_policy=result.get("model_policy"))
            return result

        return run_stage

    def local_stage(name: str, outlets=()):
        """A task running the single-process stage `jobs.<name>` (no Spark) for ds under the frozen config."""
        @task(task_id=name, outlets=list(outlets))
        def run_local(config: dict, ds: str | None = None) -> dict:
            from jobs.tasks import run_local as run

            return run(name, ds, config)

        return run_local

    @task(task_id="batches", outlets=[BATCHES])
    def batches(config: dict, ds: str | None = None) -> dict:
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowSkipException

        from jobs.tasks import write_batches

        params = get_current_context()["params"]
        if params.get("dry_run"):
            raise AirflowSkipException("dry run: the plan report is the result; no batches written")
        result = write_batches(ds, config, params.get("policy"))
        get_current_context()["outlet_events"][BATCHES].extra = {
            "ds": ds, "send_day": result.get("send_day"), "messages": result.get("messages"),
            "run_id": result.get("run_id"), "model_version": result.get("model_version"),
            "policy": result.get("policy"), "config_version": result.get("config_version")}
        return result

    @task
    def gate(config: dict, ds: str | None = None) -> dict:
        from jobs.tasks import gate as run

        return run(ds, config)

    @task(outlets=[MODEL])
    def publish_model(decision: dict, ds: str | None = None) -> dict:
        """The model asset changes only when a version is promoted (@champion): a held one emits nothing."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowSkipException

        if decision.get("decision") != "promoted":
            raise AirflowSkipException(f"version {decision.get('candidate_version')} was held as "
                                       f"@{decision.get('alias')}: the @champion is unchanged")
        get_current_context()["outlet_events"][MODEL].extra = {
            "ds": ds, "version": decision.get("candidate_version"), "alias": decision.get("alias"),
            "holdout_auc": decision.get("candidate_auc"), "replaced": decision.get("champion_version")}
        return decision

    @task(map_index_template="{{ task.op_kwargs['table'] }}")
    def check_output(table: str, config: dict, ds: str | None = None) -> dict:
        from jobs.tasks import check_output as run

        return run(table, ds, config)

    config = validate_config()
    # dimensions first: the facts' ids must exist in them (rows naming an unknown id are quarantined)
    dims = validate_raw.override(task_id="validate_dimensions").partial(config=config).expand(table=DIMENSIONS)
    raw = validate_raw.override(task_id="validate_facts").partial(config=config).expand(table=FACTS)
    dims >> raw
    rollups = stage("rollups")(config)
    user_feats = stage("user_features")(config)
    feats = [user_feats, stage("material_features", [FEATURES])(config)]
    check_features = check_output.override(task_id="check_features").partial(config=config).expand(
        table=FEATURE_TABLES)
    aud = stage("audiences")(config)
    fat = stage("fatigue")(config)
    check_plan = check_output.override(task_id="check_plan").partial(config=config).expand(table=PLAN_TABLES)
    model = stage("train")(config)
    scored = stage("score")(config)
    chosen = stage("select", [PLAN])(config)
    check_selection = check_output.override(task_id="check_selection").partial(config=config).expand(
        table=SELECTION_TABLES)
    config >> raw >> feats >> check_features >> aud >> fat >> check_plan
    raw >> rollups >> [user_feats, model]
    decided = gate(config)
    raw >> model >> decided
    publish_model(decided)
    [check_plan, decided] >> scored >> chosen >> check_selection
    check_windows = check_output.override(task_id="check_windows")(table="plan/windows", config=config)
    check_selection >> local_stage("windows")(config) >> check_windows >> local_stage("plan_report")(config) \
        >> batches(config)


hermes_nightly()
