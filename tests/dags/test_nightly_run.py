"""The nightly DAG runs end to end through Airflow (`dag.test()`) on a small simulated world."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from jobs.warehouse import Warehouse

pytestmark = pytest.mark.slow


def test_nightly_dag_runs_to_success_and_writes_its_partition(world, settings):
    ds = world["spec"].last_ds
    env = {**os.environ, "HERMES_HOME": str(settings.home), "HERMES_SPARK_DRIVER_MEMORY": "2g",
           "HERMES_SPARK_SHUFFLE_PARTITIONS": "4", "PYSPARK_PYTHON": sys.executable}
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    code = f"""
import json
from datetime import datetime, timezone
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder={str(os.environ['AIRFLOW__CORE__DAGS_FOLDER'])!r}).dags["hermes_nightly"]
run = dag.test(logical_date=datetime.fromisoformat({ds!r}).replace(tzinfo=timezone.utc))
print("RESULT " + json.dumps({{"state": str(run.state), "tasks": {{f"{{ti.task_id}}[{{ti.map_index}}]": str(ti.state) for ti in run.get_task_instances()}}}}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, (out.stdout[-3000:], out.stderr[-3000:])
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["state"].endswith("success"), result
    assert len(result["tasks"]) == 6 and all(s.endswith("success") for s in result["tasks"].values()), result

    wh = Warehouse(settings.warehouse)
    part = wh.partition("features/user_features", ds)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in part.glob("*.parquet"))
    assert rows == world["counts"]["users"]
    for table in ("users", "items", "item_changes", "events", "push_log"):
        report = json.loads(wh.report("validation", ds, f"raw_{table}").read_text())
        assert report["success"] and report["rows"] > 0
