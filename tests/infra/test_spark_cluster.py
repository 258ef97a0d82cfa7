"""A real Spark standalone cluster (master + 2 workers from the pyspark distribution, infra/spark-cluster.sh)
runs real Hermes jobs: same code, another master URL; the project's code reaches the executors, both from a
session the task builds and through spark-submit launched by the Airflow Spark provider's hook."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from core.settings import REPO_ROOT
from tests.conftest import free_port_block

pytestmark = pytest.mark.slow
SCRIPT = str(REPO_ROOT / "infra" / "spark-cluster.sh")


@pytest.fixture(scope="module")
def cluster(settings, tmp_path_factory):
    port = free_port_block((0, 1000, 1001, 1002))
    home = tmp_path_factory.mktemp("cluster-home")
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_WAREHOUSE": str(settings.warehouse),
           "SPARK_MASTER_PORT": str(port), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "HERMES_SPARK_DRIVER_MEMORY": "1g", "HERMES_SPARK_SHUFFLE_PARTITIONS": "2"}
    up = subprocess.run(["bash", SCRIPT, "start"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"env": env, "url": f"spark://127.0.0.1:{port}", "ui": f"http://127.0.0.1:{port + 1000}/json/"}
    finally:
        subprocess.run(["bash", SCRIPT, "stop"], env=env, capture_output=True, timeout=120)


def _result(run: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"exit {run.returncode}\n{run.stderr[-3000:]}"
    return json.loads(lines[-1][7:])


def test_a_nightly_stage_runs_on_a_standalone_cluster(cluster, world):
    run = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "infra" / "cluster_job.py"), world["spec"].last_ds],
                         env={**cluster["env"], "HERMES_SPARK_MASTER": cluster["url"]},
                         capture_output=True, text=True, timeout=600)
    r = _result(run)
    assert r["master"] == cluster["url"] and r["executors"] == 2
    from features.windows import SLOTS

    assert r["executor_pids"] == 2 and r["slots"] == [SLOTS]       # two executor processes imported our code
    assert r["rows"] == world["counts"]["users"]


SUBMIT = """
import json, sys
from pathlib import Path
from core.config.loader import load_config, write_snapshot
from core.settings import Settings
from jobs.tasks import run_stage
snapshot = write_snapshot(load_config(Settings.from_env().conf_dir), Path(sys.argv[2]))
print("RESULT " + json.dumps(run_stage("material_features", sys.argv[1], {"snapshot": str(snapshot)})))
"""


def test_a_stage_task_submits_through_the_spark_provider(cluster, world, tmp_path):
    """HERMES_SPARK_SUBMIT_CONN: the DAG's stage task (jobs.tasks.run_stage) hands the job to spark-submit via the
    provider's SparkSubmitHook; the cluster runs it as its own application and the task gets the same result."""
    ds = world["spec"].last_ds
    env = {**cluster["env"], "HERMES_SPARK_SUBMIT_CONN": "hermes_spark", "AIRFLOW_CONN_HERMES_SPARK": cluster["url"]}
    env.pop("HERMES_SPARK_MASTER", None)     # the master comes from the Airflow connection alone
    run = subprocess.run([sys.executable, "-c", SUBMIT, ds, str(tmp_path / "snapshot.json")], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    r = _result(run)
    table = r["tables"]["features/material_features"]
    assert r["ds"] == ds and table["rows"] > 0 and table["rows"] <= world["counts"]["items"]
    # the hook built the spark-submit command: the cluster's master and the project's code as --py-files
    cmd = next(ln for ln in (run.stdout + run.stderr).splitlines() if "Spark-Submit cmd:" in ln)
    assert f"--master {cluster['url']}" in cmd and "--py-files" in cmd and "/spark-py/hermes-" in cmd
    assert "infra/spark_job.py material_features" in cmd
    with urllib.request.urlopen(cluster["ui"], timeout=10) as resp:
        apps = json.load(resp)["completedapps"]
    mine = [a for a in apps if a["name"] == f"hermes-material_features-{ds}"]
    assert [a["state"] for a in mine] == ["FINISHED"], apps   # an application of the cluster, not a local driver
