"""hermes_hourly through Airflow against the real S3 server and gateway: it delivers its hour, and a re-run
delivers nothing twice."""
from __future__ import annotations

import os
import sqlite3

import pytest

from core.settings import Settings
from delivery.batches import write_day
from tests.conftest import start_gateway, stop_gateway
from tests.dags.airflow_run import run_dag
from tests.delivery.test_delivery import batch

pytestmark = pytest.mark.slow


def test_hourly_run_delivers_its_hour_and_a_rerun_sends_nothing_again(s3_server, tmp_path):
    day, hour, n = "2026-11-05", 13, 300
    gw = start_gateway(tmp_path / "gw", {"p503": 0.05, "seed": 2})
    env = {**os.environ, **s3_server, **{k: v for k, v in gw.items() if k != "db"},
           "HERMES_HOME": str(tmp_path / "home"), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db"}
    try:
        write_day(Settings.from_env(env), day, batch(n, hour, day), {"plan_ds": "2026-11-04", "policy": "hermes"})
        first = run_dag(env, "hermes_hourly", f"{day}T{hour:02d}:00:00", {"ramp": False})
        second = run_dag(env, "hermes_hourly", f"{day}T{hour:02d}:00:00", {"ramp": False})
        db = sqlite3.connect(gw["db"])
        receipts = db.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM receipts").fetchone()
    finally:
        stop_gateway(gw)
    assert first["state"].endswith("success") and second["state"].endswith("success"), (first, second)
    assert first["xcom"]["deliver"]["states"] == {"acked": n} and first["xcom"]["deliver"]["hour"] == hour
    assert second["xcom"]["deliver"]["sent_this_run"] == 0
    assert receipts == (n, n)
