"""Run a DAG through Airflow (`dag.test()`) in a fresh interpreter; Airflow reads its config at import."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def run_dag(env: dict, dag_id: str, logical_date: str, conf: dict | None = None) -> dict:
    """Migrate the metadata DB, run `dag_id` for `logical_date` (ISO date or datetime, UTC); returns the run's
    state and every task instance's state."""
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    code = f"""
import json
from datetime import datetime, timezone
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder={str(os.environ['AIRFLOW__CORE__DAGS_FOLDER'])!r}).dags[{dag_id!r}]
run = dag.test(logical_date=datetime.fromisoformat({logical_date!r}).replace(tzinfo=timezone.utc),
               run_conf={conf or {}!r})
states = {{f"{{ti.task_id}}[{{ti.map_index}}]": str(ti.state) for ti in run.get_task_instances()}}
xcom = {{ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances() if ti.map_index < 0}}
print("RESULT " + json.dumps({{"state": str(run.state), "tasks": states, "xcom": xcom}}, default=str))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, (out.stdout[-3000:], out.stderr[-3000:])
    result = json.loads(lines[-1][len("RESULT "):])
    if not str(result["state"]).endswith("success"):
        # dag.test() runs the tasks in this subprocess: their logs are its output, shown by a failed assertion
        result["log_tail"] = out.stderr[-6000:]
    return result
