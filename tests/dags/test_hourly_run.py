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


def test_hourly_run_delivers_its_hour_and_the_previous_plans_late_hour_and_a_rerun_sends_nothing_again(
        s3_server, tmp_path):
    """UTC 05:00 of 2026-11-05 is hour 05 of that send day and hour 29 of the previous one (issue 24.1: a plan's
    hours 24-35 are the next UTC day's 00-11, for users west of UTC whose local plan day reaches into it)."""
    day, prev, hour, n, m = "2026-11-05", "2026-11-04", 5, 300, 120
    gw = start_gateway(tmp_path / "gw", {"p503": 0.05, "seed": 2})
    env = {**os.environ, **s3_server, **{k: v for k, v in gw.items() if k != "db"},
           "HERMES_HOME": str(tmp_path / "home"), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db", "HERMES_RECEIPT_TIME": "planned"}
    try:
        settings = Settings.from_env(env)
        write_day(settings, prev, batch(m, hour + 24, prev), {"plan_ds": "2026-11-03", "policy": "hermes"})
        write_day(settings, day, batch(n, hour, day), {"plan_ds": "2026-11-04", "policy": "hermes"})
        first = run_dag(env, "hermes_hourly", f"{day}T{hour:02d}:00:00", {"ramp": False})
        second = run_dag(env, "hermes_hourly", f"{day}T{hour:02d}:00:00", {"ramp": False})
        noted = _note_and_read_back(env, f"{day}T{hour:02d}:00:00", tmp_path / "hourly.log")
        db = sqlite3.connect(gw["db"])
        receipts = db.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM receipts").fetchone()
    finally:
        stop_gateway(gw)
    assert first["state"].endswith("success") and second["state"].endswith("success"), (first, second)
    # issue 22.5: the in-process run says in the UI what it was and where its log is, on the run and every task
    assert noted["run"].startswith("In-process run by `make run`") and str(tmp_path / "hourly.log") in noted["run"]
    assert noted["tasks"] and set(noted["tasks"].values()) == {noted["run"]}, noted
    assert set(noted["tasks"]) == {k.split("[")[0] for k in first["tasks"]}
    out = first["xcom"]["deliver"]
    assert out[f"{day}/h05"]["states"] == {"acked": n} and out[f"{day}/h05"]["hour"] == hour
    assert out[f"{prev}/h29"]["states"] == {"acked": m} and out[f"{prev}/h29"]["hour"] == 29
    assert {k: v["sent_this_run"] for k, v in second["xcom"]["deliver"].items()} == {f"{day}/h05": 0, f"{prev}/h29": 0}
    assert receipts == (n + m, n + m)
    # the late hour's receipts are dated on the UTC day they went out, filed under their plan's send day
    from core.warehouse import Warehouse

    log = Warehouse(settings.warehouse).raw("push_log")
    assert sorted(f.name for f in (log / f"ds={day}").glob("*.parquet")) == [f"receipts-{prev}-h29.parquet",
                                                                              f"receipts-{day}-h05.parquet"]


def _note_and_read_back(env: dict, logical_date: str, log_path) -> dict:
    """infra/airflow_note.py on the run, then the notes as Airflow's metadata holds them (a fresh interpreter: Airflow
    reads its configuration at import)."""
    import json
    import subprocess
    import sys

    from core.settings import REPO_ROOT

    out = subprocess.run([sys.executable, str(REPO_ROOT / "infra" / "airflow_note.py"), "hermes_hourly", logical_date,
                          str(log_path), "--seconds", "7"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "task instances" in out.stdout, (out.stdout, out.stderr[-2000:])
    code = """
import json
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
with create_session() as s:
    runs = s.query(DagRun).filter(DagRun.dag_id == "hermes_hourly").all()
    notes = {r.note for r in runs}
    print("NOTES " + json.dumps({"run": notes.pop() if len(notes) == 1 else sorted(map(str, notes)), "runs": len(runs),
                                 "tasks": {ti.task_id: ti.note for r in runs for ti in r.get_task_instances(session=s)}}))
"""
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in got.stdout.splitlines() if ln.startswith("NOTES ")]
    assert lines, got.stderr[-2000:]
    return json.loads(lines[-1][len("NOTES "):])
