"""What the DAG tasks call: one function per task, each reading settings itself and returning small JSON
(paths, counts, the config version) for XCom — never data.

Keeps `dags/` free of logic and heavy imports.
"""
from __future__ import annotations

import importlib
import logging

from core.quiet import quiet_third_party
from core.settings import Settings

quiet_third_party()
log = logging.getLogger(__name__)
STAGES = ("rollups", "user_features", "material_features", "audiences", "fatigue", "train", "score", "select")


def validate_config(ds: str) -> dict:
    """Validate conf/ and freeze it for this run: every later task reads the snapshot, not conf/."""
    from core.config.loader import load_config, write_snapshot
    from core.warehouse import Warehouse

    if not ds:
        raise ValueError("hermes_nightly needs a logical date (the day whose data it plans from): give one in the "
                         "trigger form or `airflow dags trigger hermes_nightly --logical-date YYYY-MM-DD`")
    settings = Settings.from_env()
    loaded = load_config(settings.conf_dir)
    path = write_snapshot(loaded, Warehouse(settings.warehouse).config_snapshot(ds))
    log.info("config %s (%d scenes, %d enabled) frozen at %s", loaded.version, len(loaded.config.scenes),
             len(loaded.config.enabled_scenes), path)
    return {"version": loaded.version, "snapshot": str(path)}


def validate_raw(table: str, ds: str, config: dict | None = None) -> dict:
    """Validate one raw table under the run's frozen config (its `validation` thresholds): bad rows quarantined,
    a table-level failure raised."""
    from core.warehouse import Warehouse
    from jobs.entry import load_run_config
    from jobs.validate_raw import validate_raw_table

    settings = Settings.from_env()
    rules = load_run_config(settings, (config or {}).get("snapshot")).config.platform.validation
    report = validate_raw_table(Warehouse(settings.warehouse), table, ds, rules)
    return {"table": f"raw/{table}", "ds": ds, "rows": report.rows, "rows_in": report.rows_in,
            "quarantined": report.quarantined, "quarantined_by_rule": report.by_rule, "warnings": report.warnings,
            "expectations": report.checked}


def run_stage(stage: str, ds: str, config: dict) -> dict:
    """Run one Spark stage (`jobs.<stage>.run`) for ds under the run's frozen config: in this process, or through
    spark-submit when HERMES_SPARK_SUBMIT_CONN names a Spark connection (same job code either way)."""
    from jobs.entry import load_run_config, spark_session

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    settings = Settings.from_env()
    if settings.spark_submit_conn:
        from jobs.submit import submit_stage

        return submit_stage(settings, stage, ds, config["snapshot"])
    loaded = load_run_config(settings, config["snapshot"])
    job = importlib.import_module(f"jobs.{stage}")
    with spark_session(settings, f"hermes-{stage}-{ds}") as spark:
        return job.run(spark, settings, ds, loaded)


# Stages that run in one Python process (pyarrow + numpy, or the object store): no Spark session.
LOCAL_STAGES = ("windows", "plan_report")


def run_local(stage: str, ds: str, config: dict) -> dict:
    """Run one single-process stage (`jobs.<stage>.run(settings, ds, loaded)`) under the frozen config."""
    from jobs.entry import load_run_config

    if stage not in LOCAL_STAGES:
        raise ValueError(f"unknown local stage {stage!r}; local stages are {LOCAL_STAGES}")
    settings = Settings.from_env()
    loaded = load_run_config(settings, config["snapshot"])
    return importlib.import_module(f"jobs.{stage}").run(settings, ds, loaded)


def gate(ds: str, config: dict) -> dict:
    """Promote the version this run trained to @champion, or hold it as @challenger."""
    from jobs.entry import load_run_config
    from jobs.train import gate as run

    settings = Settings.from_env()
    return run(settings, ds, load_run_config(settings, config["snapshot"]))


def check_output(table: str, ds: str, config: dict) -> dict:
    from core.config.loader import read_snapshot
    from core.warehouse import Warehouse
    from jobs.validate_output import validate_output_table

    settings = Settings.from_env()
    report = validate_output_table(Warehouse(settings.warehouse), table, ds, read_snapshot(config["snapshot"]))
    return {"table": table, "ds": ds, "rows": report.rows, "expectations": report.checked}


def deliver_hour(send_day: str, hour: int, ramp: bool = True) -> dict:
    """hermes_hourly: deliver one send hour under the configuration the plan of that day froze."""
    from datetime import date, timedelta

    from core.warehouse import Warehouse
    from jobs.deliver import run
    from jobs.entry import load_run_config

    settings = Settings.from_env()
    plan_ds = (date.fromisoformat(send_day) - timedelta(days=1)).isoformat()
    snapshot = Warehouse(settings.warehouse).config_snapshot(plan_ds)
    loaded = load_run_config(settings, snapshot if snapshot.exists() else None)
    return run(settings, send_day, hour, loaded, ramp=ramp)


def deliver_utc_hour(utc_day: str, hour: int, ramp: bool = True, scheduled_at: float | None = None) -> dict:
    """hermes_hourly: everything due in one UTC hour — the send day's own hour, and for hours 0-11 the previous
    send day's plan hour 24 + hour (users west of UTC). Both are tried; a failure of either fails the task.
    Alerts (core/alerts.py): the send day's plan missing (`deadline_missed`, once per day), a scheduled run starting
    `alerts.delivery_late_minutes` after its hour (scheduled_at) or an hour left incomplete (`delivery_behind`)."""
    import time
    from datetime import date, timedelta

    from core.alerts import send_alert
    from core.config.loader import load_config
    from delivery.batches import PLAN_HOURS, NoBatch
    from delivery.ledger import DeliveryBusy
    from jobs.deliver import DeliveryIncomplete

    if scheduled_at is not None:
        late = (time.time() - scheduled_at) / 60
        if late >= load_config(Settings.from_env().conf_dir).config.platform.alerts.delivery_late_minutes:
            send_alert("delivery_behind", f"hermes_hourly of {utc_day} {hour:02d}:00 UTC started {late:.0f} min after "
                       "its hour began: the hourly schedule is behind (pushes of the hour go out late)",
                       dedupe=f"late|{utc_day}|{hour}", send_day=utc_day, hour=hour, minutes_late=round(late, 1))
    due = [(utc_day, hour)]
    if hour + 24 < PLAN_HOURS:
        due.append(((date.fromisoformat(utc_day) - timedelta(days=1)).isoformat(), hour + 24))
    out, failed = {}, []
    for day, plan_hour in due:
        try:
            out[f"{day}/h{plan_hour:02d}"] = deliver_hour(day, plan_hour, ramp=ramp)
        except NoBatch as e:                    # the previous day has no plan, or none with these hours (a first night)
            if (day, plan_hour) == due[0]:
                if "no manifest" in str(e):
                    plan_ds = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
                    send_alert("deadline_missed", f"the nightly plan of {plan_ds} (send day {day}) is not done at "
                               f"{hour:02d}:00 UTC, a send hour of its day: its pushes are not going out. See "
                               f"hermes_nightly's run of {plan_ds}", dedupe=f"plan|{day}", plan_ds=plan_ds,
                               send_day=day, hour=hour)
                raise
            out[f"{day}/h{plan_hour:02d}"] = {"skipped": str(e)}
        except (DeliveryIncomplete, DeliveryBusy) as e:
            failed.append(str(e))
    if failed:
        send_alert("delivery_behind", f"hermes_hourly of {utc_day} {hour:02d}:00 UTC is not delivered in full: "
                   + "; ".join(failed)[:800], dedupe=f"incomplete|{utc_day}|{hour}", send_day=utc_day, hour=hour)
        raise DeliveryIncomplete("; ".join(failed))
    return out


def triggers_by_batch(max_silence_s: float = 30.0) -> bool:
    """hermes_triggers' first task: which engine decides the triggers. True: this batch (events arrive as raw files,
    the streaming engine was never used). False: the streaming engine is running and decides them (the batch is
    skipped: one engine, never two). Fails, naming what to do, when the stream is in use and its engine is silent:
    the events wait in the stream (they are not in raw/ before the day is over) and only the engine can take them."""
    from airflow.exceptions import AirflowFailException

    from jobs.stream import health

    h = health(Settings.from_env(), max_silence_s)
    if h["healthy"]:
        log.info("the streaming engine decides the triggers (reported %.1f s ago; lag %s events; decided %s; "
                 "latency p50 %s s, p95 %s s): this window's batch is skipped", h["seconds_since_report"],
                 h["lag_events"], h.get("decided"), h.get("latency_p50_s"), h.get("latency_p95_s"))
        return False
    if h["head"] == 0 and "seconds_since_report" not in h:
        log.info("the event stream has never been used: the batch decides this window from raw/")
        return True
    raise AirflowFailException(f"the streaming engine is down: {h['why']}; {h['lag_events'] if 'lag_events' in h else h['head']} "
                               "events wait in the stream. Start it again (`bash infra/stream.sh start`); it resumes "
                               "from its checkpoint and decides each waiting trigger once.")


def trigger_window(window_end) -> dict:
    """hermes_triggers: decide and deliver the trigger window ending at `window_end` under conf/ as it is now
    (trigger rules change during the day; the run's config version is stamped on its batch)."""
    from datetime import datetime, timezone

    from jobs import triggers
    from jobs.entry import load_run_config

    settings = Settings.from_env()
    loaded = load_run_config(settings, None)
    tr = loaded.config.platform.trigger_run
    step = tr.window_minutes * 60
    # scheduled runs end on a window boundary already; a run by hand is floored to the last one
    end = datetime.fromtimestamp(window_end.timestamp() // step * step, tz=timezone.utc)
    return triggers.run(settings, end, loaded, tr.window_minutes, tr.lateness_minutes)


def preflight(ds: str, announced: dict | None = None) -> dict:
    """`hermes_preflight`: the batches of night `ds` read back and reconciled with the plan (jobs/preflight.py)."""
    from jobs import preflight as job

    return job.run(Settings.from_env(), ds, announced)


def write_batches(ds: str, config: dict, policy: str | None = None) -> dict:
    """The nightly `batches` task: the plan of `policy` (default: the config's windows.policy) to S3."""
    from jobs import batches
    from jobs.entry import load_run_config

    settings = Settings.from_env()
    return batches.run(settings, ds, load_run_config(settings, config["snapshot"]), policy=policy)
