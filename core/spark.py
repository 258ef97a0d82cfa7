"""The one SparkSession factory: jobs receive the session it builds, transforms receive DataFrames.

Same code for `local[*]` and a cluster: only the master URL (from settings) changes; for a remote master the
factory ships the project's packages to the executors as a zip (what `spark-submit --py-files` does).
Launched by spark-submit (`jobs/submit.py`), the session takes the master and the code from spark-submit.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from core.settings import Settings

LOG4J2 = Path(__file__).with_name("log4j2.properties")


def shuffle_partitions(settings: Settings) -> int:
    """Sized for this data and machine, not Spark's 200: 4 x cores; AQE coalesces small ones further."""
    if settings.spark_shuffle_partitions > 0:
        return settings.spark_shuffle_partitions
    return 4 * (os.cpu_count() or 2)


def build_spark(settings: Settings, app_name: str):
    from pyspark.sql import SparkSession

    # Workers must run the same interpreter (and so the same pandas/pyarrow) as the driver. Local-mode
    # workers only honour the environment variable, not spark.pyspark.python.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # spark-submit starts the JVM first and hands its port to the Python driver: its --master and --py-files rule
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    # The driver's RPC and block manager listen on loopback, not on the machine's network address: a driver
    # that executors on other hosts must reach gets SPARK_LOCAL_IP (Spark's own variable) from the operator.
    local_ip = os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder if submitted else SparkSession.builder.master(settings.spark_master)
    builder = (
        builder.appName(app_name)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions(settings)))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # ds=YYYY-MM-DD stays a string: the same type in every table and every filter.
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.local.dir", str(settings.home / "spark-tmp"))
        .config("spark.driver.bindAddress", local_ip)
        .config("spark.driver.host", local_ip)
    )
    if not submitted:               # Spark's log lines to stdout: Airflow logs a task's stderr at ERROR
        builder = builder.config("spark.driver.extraJavaOptions",
                                 f"-Dlog4j2.configurationFile={LOG4J2} {settings.spark_driver_java_options}".strip())
    # py4j logs every connection close at INFO, including from __del__ at interpreter exit.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if not submitted and not settings.spark_master.startswith("local"):
        # executors elsewhere import the project's modules: ship them as one zip (what --py-files does)
        spark.sparkContext.addPyFile(str(code_zip(settings.home / "spark-py")))
    return spark


def code_zip(folder) -> Path:
    """The project's packages as a zip for remote executors, rebuilt when any source changed."""
    import hashlib
    import zipfile

    from core.settings import REPO_ROOT

    sources = sorted(p for pkg in ("core", "jobs", "features", "training", "delivery", "expectations")
                     for p in (REPO_ROOT / pkg).rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    target = Path(folder) / f"hermes-{digest}.zip"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sources:
                z.write(p, p.relative_to(REPO_ROOT))
        tmp.replace(target)
    return target
