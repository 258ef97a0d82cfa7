"""What the DAG tasks call: one function per task, each building its own settings (and Spark session).

Keeps `dags/` free of logic and heavy imports; every function returns small JSON (paths and counts),
never data, for XCom.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

from jobs.settings import Settings

log = logging.getLogger(__name__)


@contextmanager
def spark_session(settings: Settings, app: str):
    from jobs.spark import build_spark

    spark = build_spark(settings, app)
    try:
        yield spark
    finally:
        spark.stop()


def validate_raw(table: str, ds: str) -> dict:
    from jobs.validate_raw import validate_raw_table
    from jobs.warehouse import Warehouse

    settings = Settings.from_env()
    report = validate_raw_table(Warehouse(settings.warehouse), table, ds)
    return {"table": f"raw/{table}", "ds": ds, "rows": report.rows, "expectations": report.checked}


def user_features(ds: str) -> dict:
    from jobs import user_features as job

    settings = Settings.from_env()
    with spark_session(settings, f"hermes-user-features-{ds}") as spark:
        return job.run(spark, settings, ds)
