"""infra/env.sh: every port a user moves is followed by whatever talks to it."""
from __future__ import annotations

import os
import subprocess

from core.settings import REPO_ROOT


def _env(**overrides) -> dict:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "MLFLOW_", "HERMES_"))} | {"HERMES_HOME": "/tmp/hermes-env-test"}
    out = subprocess.run(["bash", "-c", f"source {REPO_ROOT}/infra/env.sh && env"], env=base | overrides,
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_task_runners_follow_the_api_port():
    assert _env()["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    moved = _env(AIRFLOW__API__PORT="38080")
    assert moved["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:38080/execution/"
    assert _env(MLFLOW_PORT="35000")["MLFLOW_PORT"] == "35000" and _env()["MLFLOW_PORT"] == "5000"
