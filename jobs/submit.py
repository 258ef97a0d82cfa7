"""Spark stages through spark-submit, launched by the Airflow Spark provider's `SparkSubmitHook`.

With `HERMES_SPARK_SUBMIT_CONN=<conn id>` (an Airflow connection such as `spark://spark-master:7077`, or
`AIRFLOW_CONN_<ID>` in the environment) a nightly stage task does not build a session itself: it submits
`infra/spark_job.py <stage> --ds D --config SNAPSHOT --result FILE` with the project's packages as
`--py-files` (the zip `core/spark.py` builds) and reads the stage's result back from FILE. The job code is
the same `jobs.<stage>.run` either way; only who starts the driver differs. Client deploy mode: the driver
runs where the task runs, so the result file and the warehouse path are local to it.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from core.settings import REPO_ROOT, Settings

APP = REPO_ROOT / "infra" / "spark_job.py"


def submit_command(settings: Settings, stage: str, ds: str, snapshot: str, result: Path):
    """The provider's hook for one stage (not yet run): its command line is `hook._build_spark_submit_command`."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from core.spark import code_zip, shuffle_partitions

    return SparkSubmitHook(
        conn_id=settings.spark_submit_conn,
        name=f"hermes-{stage}-{ds}",
        py_files=str(code_zip(settings.home / "spark-py")),
        driver_memory=settings.spark_driver_memory,
        conf={"spark.sql.shuffle.partitions": str(shuffle_partitions(settings)),
              **({"spark.driver.extraJavaOptions": settings.spark_driver_java_options}
                 if settings.spark_driver_java_options else {})},
        application_args=[stage, "--ds", ds, "--config", str(snapshot), "--result", str(result)],
    )


def submit_stage(settings: Settings, stage: str, ds: str, snapshot: str) -> dict:
    """Run `jobs.<stage>` through spark-submit; its result JSON, as the in-process path returns it."""
    with tempfile.TemporaryDirectory(prefix=f"hermes-{stage}-") as tmp:
        result = Path(tmp) / "result.json"
        submit_command(settings, stage, ds, snapshot, result).submit(str(APP))   # raises on a non-zero exit
        if not result.exists():
            raise RuntimeError(f"spark-submit of {stage} for ds={ds} exited 0 but wrote no result ({result})")
        return json.loads(result.read_text())
