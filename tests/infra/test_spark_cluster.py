"""A real Spark standalone cluster (master + 2 workers from the pyspark distribution, infra/spark-cluster.sh)
runs a real Hermes job: same code, another master URL; the project's code reaches the executors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jobs.settings import REPO_ROOT
from tests.conftest import free_port_block

pytestmark = pytest.mark.slow


def test_a_nightly_stage_runs_on_a_standalone_cluster(world, settings, tmp_path):
    port = free_port_block((0, 1000, 1001, 1002))
    env = {**os.environ, "HERMES_HOME": str(tmp_path / "home"), "HERMES_WAREHOUSE": str(settings.warehouse),
           "SPARK_MASTER_PORT": str(port), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    script = str(REPO_ROOT / "infra" / "spark-cluster.sh")
    up = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        run = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "infra" / "cluster_job.py"), world["spec"].last_ds],
                             env={**env, "HERMES_SPARK_MASTER": f"spark://127.0.0.1:{port}",
                                  "HERMES_SPARK_DRIVER_MEMORY": "1g", "HERMES_SPARK_SHUFFLE_PARTITIONS": "2"},
                             capture_output=True, text=True, timeout=600)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
        assert lines, run.stderr[-3000:]
        r = json.loads(lines[-1][7:])
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
    assert r["master"] == f"spark://127.0.0.1:{port}" and r["executors"] == 2
    assert r["executor_pids"] == 2 and r["slots"] == [24]          # two executor processes imported our code
    assert r["rows"] == world["counts"]["users"]
