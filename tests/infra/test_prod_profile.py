"""The production-like profile: Airflow on PostgreSQL with scheduler, DAG processor and API server as
separate processes (infra/prod.sh); a DAG run triggered through the scheduler runs to success."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from core.settings import REPO_ROOT, Settings
from delivery.batches import write_day
from tests.conftest import free_port_block, start_gateway, stop_gateway
from tests.delivery.test_delivery import batch

pytestmark = pytest.mark.slow


def airflow(env, *args, timeout=120) -> str:
    out = subprocess.run(["airflow", *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_hourly_run_triggered_through_the_scheduler_on_postgresql(s3_server):
    home = Path(tempfile.mkdtemp(prefix="hermes-prod-test-"))
    home.chmod(0o755)                     # the postgres user must reach its data folder inside
    day, hour, n = "2026-11-06", 5, 50
    gw = start_gateway(home / "gw")
    env = {**os.environ, **s3_server, **{k: v for k, v in gw.items() if k != "db"}, "HERMES_HOME": str(home),
           "HERMES_PG_PORT": str(free_port_block((0,))), "HERMES_PROD_API_PORT": str(free_port_block((0,))),
           "HERMES_PG_PASSWORD": "prod-test-password-1"}
    for k in ("AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        env.pop(k, None)
    script = str(REPO_ROOT / "infra" / "prod.sh")
    try:
        up = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        for line in subprocess.run(["bash", script, "env"], env=env, capture_output=True, text=True,
                                   check=True).stdout.splitlines():
            k, _, v = line.removeprefix("export ").partition("=")
            env[k] = v.strip("'")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
        write_day(Settings.from_env(env), day, batch(n, hour, day), {"plan_ds": "2026-11-05", "policy": "hermes"})
        airflow(env, "dags", "reserialize")        # parse the DAG files into the database now, not eventually
        assert "hermes_hourly" in airflow(env, "dags", "list")
        airflow(env, "dags", "unpause", "hermes_hourly")
        out = airflow(env, "dags", "trigger", "hermes_hourly", "--run-id", "manual-prod-test", "--conf",
                      json.dumps({"send_day": day, "hour": hour, "ramp": False}), "-o", "json")
        assert "manual-prod-test" in out
        deadline = time.monotonic() + 300
        state = None
        while time.monotonic() < deadline:
            text = airflow(env, "dags", "list-runs", "hermes_hourly", "-o", "json")
            runs = json.loads(next((ln for ln in text.splitlines() if ln.startswith("[")), "[]"))
            state = next((r["state"] for r in runs if r["run_id"] == "manual-prod-test"), None)
            if state in ("success", "failed"):    # each CLI call takes seconds: it paces this loop itself
                break
        receipts = sqlite3.connect(gw["db"]).execute("SELECT count(*) FROM receipts").fetchone()[0]
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
        stop_gateway(gw)
    assert state == "success"
    assert receipts == n
    shutil.rmtree(home, ignore_errors=True)  # ~50 MB; kept when an assertion fails, for its logs
