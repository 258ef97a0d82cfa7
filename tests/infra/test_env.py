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


def test_a_server_whose_port_another_process_holds_is_not_reported_up(tmp_path):
    """Issue 25.7: `make ui` said a server was up when another process held its port (it answered the check)."""
    import socket

    from tests.conftest import free_port_block

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    free = [free_port_block((0,)) for _ in range(2)]
    env = {**os.environ, "HERMES_HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    try:
        gw = subprocess.run(["bash", str(REPO_ROOT / "infra" / "gateway.sh"), "start"], capture_output=True, text=True,
                            env=env | {"HERMES_GATEWAY_URL": f"http://127.0.0.1:{port}"}, timeout=60)
        ui = subprocess.run(["bash", str(REPO_ROOT / "infra" / "ui.sh"), "start"], capture_output=True, text=True,
                            env=env | {"HERMES_UI_PORT": str(port), "AIRFLOW__API__PORT": str(free[0]),
                                       "MLFLOW_PORT": str(free[1])}, timeout=60)
    finally:
        holder.close()
    assert gw.returncode != 0 and f"port {port} on 127.0.0.1 is held by another process" in gw.stderr, gw.stderr
    assert ui.returncode != 0 and "cannot start configcenter" in ui.stderr and "HERMES_UI_PORT" in ui.stderr, ui.stderr
    assert "ready" not in gw.stdout and not (tmp_path / "run" / "gateway.pid").exists()
    assert not list((tmp_path / "run").glob("airflow-*.pid"))            # nothing started before the refusal
