"""The one settings object: everything Hermes reads from the environment, read once.

Call `Settings.from_env()` at the edge (CLI, DAG task) and pass the result down; no other module
reads `os.environ`, and nothing here touches disk at import time.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]

# (attribute, environment variable, default, meaning) — the README's settings table is made from this.
_SPEC: list[tuple[str, str, str | None, str]] = [
    ("home", "HERMES_HOME", "<repo>/var", "state folder: warehouse, Airflow, MLflow, object store, logs"),
    ("warehouse", "HERMES_WAREHOUSE", "$HERMES_HOME/warehouse", "root of the Parquet warehouse (raw/, features/, ...)"),
    ("conf_dir", "HERMES_CONF", "<repo>/conf", "Configuration Center folder (platform.yaml, scenes/)"),
    ("spark_master", "HERMES_SPARK_MASTER", "local[*]", "Spark master URL (local[*], spark://host:7077, yarn, k8s://...)"),
    ("spark_submit_conn", "HERMES_SPARK_SUBMIT_CONN", "",
     "Airflow connection id of a Spark master: when set, Spark stages go through spark-submit (the Spark "
     "provider's hook) instead of a session inside the task process"),
    ("spark_driver_memory", "HERMES_SPARK_DRIVER_MEMORY", "6g", "driver memory (in local mode the executors live in the driver)"),
    ("spark_shuffle_partitions", "HERMES_SPARK_SHUFFLE_PARTITIONS", "0",
     "shuffle partitions; 0 = 4 x cores (AQE coalesces further)"),
    ("spark_driver_java_options", "HERMES_SPARK_DRIVER_JAVA_OPTIONS", "",
     "extra JVM options of the Spark driver (in local mode the whole of Spark), e.g. `-XX:TieredStopAtLevel=1` "
     "for many short jobs on little data (the test suite sets it): the JVM skips its slow optimising compiler"),
    ("mlflow_tracking_uri", "MLFLOW_TRACKING_URI", "sqlite:///$HERMES_HOME/mlflow/mlflow.db", "MLflow tracking + registry"),
    ("s3_endpoint", "HERMES_S3_ENDPOINT", "http://127.0.0.1:8333", "S3 endpoint for push batches"),
    ("s3_bucket", "HERMES_S3_BUCKET", "hermes", "bucket for push batches"),
    ("s3_access_key", "AWS_ACCESS_KEY_ID", None, "S3 access key (local: generated into $HERMES_HOME/secrets.env)"),
    ("s3_secret_key", "AWS_SECRET_ACCESS_KEY", None, "S3 secret key (never logged)"),
    ("gateway_url", "HERMES_GATEWAY_URL", "http://127.0.0.1:8480", "push gateway base URL"),
    ("gateway_token", "HERMES_GATEWAY_TOKEN", None, "push gateway bearer token (never logged)"),
    ("ledger_url", "HERMES_LEDGER_URL", "sqlite:///$HERMES_HOME/state/delivery_ledger.sqlite",
     "delivery ledger (SQLAlchemy URL: sqlite:///... or postgresql+psycopg://...)"),
    ("receipt_time", "HERMES_RECEIPT_TIME", "accepted",
     "sent_at written to push_log: `accepted` (gateway acceptance, wall clock) or `planned` (the slot's "
     "planned release time: for replaying a simulated world)"),
    ("alert_webhook", "HERMES_ALERT_WEBHOOK", None,
     "where alerts are POSTed as JSON (failures of every DAG and task, a late nightly plan, a delivery behind; "
     "core/alerts.py); unset: $HERMES_HOME/alerts/alerts.jsonl and the log only (never logged: it holds a secret)"),
]
_SECRET = {"s3_secret_key", "gateway_token", "s3_access_key", "alert_webhook"}


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse: Path
    conf_dir: Path
    spark_master: str
    spark_submit_conn: str
    spark_driver_memory: str
    spark_shuffle_partitions: int
    spark_driver_java_options: str
    mlflow_tracking_uri: str
    s3_endpoint: str
    s3_bucket: str
    s3_access_key: str | None = field(repr=False)
    s3_secret_key: str | None = field(repr=False)
    gateway_url: str
    gateway_token: str | None = field(repr=False)
    ledger_url: str
    receipt_time: str
    alert_webhook: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read every setting from `env` (default: the process environment), defaults from _SPEC."""
        env = os.environ if env is None else env
        home = Path(env.get("HERMES_HOME") or REPO_ROOT / "var").resolve()
        derived = {"home": str(home), "warehouse": str(home / "warehouse"), "conf_dir": str(REPO_ROOT / "conf"),
                   "mlflow_tracking_uri": f"sqlite:///{home}/mlflow/mlflow.db",
                   "ledger_url": f"sqlite:///{home}/state/delivery_ledger.sqlite"}
        values: dict = {}
        for attr, var, default, _ in _SPEC:
            values[attr] = env.get(var) or derived.get(attr, default)
        values["home"] = home
        values["warehouse"] = Path(values["warehouse"]).resolve()
        values["conf_dir"] = Path(values["conf_dir"]).resolve()
        raw_parts = values["spark_shuffle_partitions"]
        try:
            values["spark_shuffle_partitions"] = int(raw_parts)
        except ValueError:
            raise ValueError(
                f"HERMES_SPARK_SHUFFLE_PARTITIONS must be an integer (0 = automatic), got {raw_parts!r}"
            ) from None
        if values["receipt_time"] not in ("accepted", "planned"):
            raise ValueError(f"HERMES_RECEIPT_TIME must be 'accepted' or 'planned', got {values['receipt_time']!r}")
        return cls(**values)

    def describe(self) -> dict[str, str]:
        """Settings as printable strings, secrets masked."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET:
                value = "<set>" if value else "<unset>"
            elif isinstance(value, str) and "://" in value and "@" in value:   # a password inside a URL
                value = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", value)
            out[f.name] = str(value)
        return out


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) rows for documentation."""
    return [(var, default or "(none)", meaning) for _, var, default, meaning in _SPEC]
