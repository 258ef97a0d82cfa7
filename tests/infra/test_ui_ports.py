"""`make ui` with every port moved (issue 22.3, 22.4): a DAG run triggered through the Airflow REST API — what the
UI's trigger button calls — runs its tasks to success (they reach the execution API on the moved port), and every
listening socket of every process `infra/ui.sh` started binds 127.0.0.1 (`airflow standalone`'s log servers bound
0.0.0.0:8793/8794)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from core.settings import REPO_ROOT, Settings
from delivery.batches import write_day
from tests.conftest import free_port_block, start_gateway, stop_gateway
from tests.delivery.test_delivery import batch

pytestmark = pytest.mark.slow


def listeners_of(home: Path) -> list[tuple[str, str]]:
    """(local address, process) of every listening TCP socket of the process groups whose PIDs are in run/."""
    groups = {int(p.read_text()) for p in (home / "run").glob("*.pid")}
    ps = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=True).stdout.split("\n")
    pids = {int(a) for a, b in (ln.split() for ln in ps if ln.strip()) if int(b) in groups}
    out = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        cols = line.split()
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            out.append((cols[3], re.findall(r'"([^"]+)"', line)[0]))
    return out


def api(base: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_make_ui_on_moved_ports_runs_tasks_and_binds_only_localhost(s3_server):
    home = Path(tempfile.mkdtemp(prefix="hermes-ui-test-"))
    day, hour, n = "2026-11-06", 5, 20
    gw = start_gateway(home / "gw")
    ports = {k: str(free_port_block((0,))) for k in ("AIRFLOW__API__PORT", "MLFLOW_PORT", "HERMES_UI_PORT")}
    env = {**os.environ, **s3_server, **{k: v for k, v in gw.items() if k != "db"}, "HERMES_HOME": str(home), **ports}
    for k in ("AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
              "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    script = str(REPO_ROOT / "infra" / "ui.sh")
    try:
        up = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=400)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        settings_env = {**env, "HERMES_HOME": str(home)}
        write_day(Settings.from_env(settings_env), day, batch(n, hour, day), {"plan_ds": "2026-11-05", "policy": "hermes"})
        base = f"http://127.0.0.1:{ports['AIRFLOW__API__PORT']}"
        users = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        user, password = next(iter(users.items()))
        token = api(base, "/auth/token", body={"username": user, "password": password})["access_token"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:          # the DAG processor parses the files a few seconds after start
            dags = api(base, "/api/v2/dags?dag_id_pattern=hermes_hourly", token)["dags"]
            if dags:
                break
            time.sleep(1)
        api_req = urllib.request.Request(f"{base}/api/v2/dags/hermes_hourly", method="PATCH",
                                         data=json.dumps({"is_paused": False}).encode(),
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        urllib.request.urlopen(api_req, timeout=30).read()
        api(base, "/api/v2/dags/hermes_hourly/dagRuns", token,
            {"dag_run_id": "ui-moved-ports", "logical_date": None,
             "conf": {"send_day": day, "hour": hour, "ramp": False}})
        state = None
        while time.monotonic() < deadline:
            state = api(base, "/api/v2/dags/hermes_hourly/dagRuns/ui-moved-ports", token)["state"]
            if state in ("success", "failed"):
                break
            time.sleep(1)
        listening = listeners_of(home)
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=180)
        stop_gateway(gw)
    assert state == "success"
    ours = {addr.rsplit(":", 1)[1] for addr, _ in listening}
    assert set(ports.values()) <= ours                                  # the moved ports, and they are what we found
    assert [(a, p) for a, p in listening if not a.startswith("127.0.0.1:")] == []
    shutil.rmtree(home, ignore_errors=True)  # ~50 MB; kept when an assertion fails, for its logs
