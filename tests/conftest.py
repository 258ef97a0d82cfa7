"""Shared fixtures: one SparkSession per test session, one small simulated world per session."""
from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

import pytest

from core.settings import Settings
from lab.simulator.market import WorldSpec, simulate

REPO = Path(__file__).resolve().parents[1]
# C1 only (TieredStopAtLevel=1) also shrinks the JVM's default code cache from 240 MB to 48 MB: the nightly DAG's
# dag.test() runs every task's Spark work in one driver, which filled it ("Out of space in CodeCache for method handle
# intrinsic", user_features failed, 2026-12-05); the cache is given back its tiered size.
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"


def pytest_configure(config):
    """Airflow reads its configuration at import: point it at a throw-away home before any test imports it,
    so tests never touch the developer's var/airflow. Removed when the session ends (pytest_unconfigure)."""
    home = Path(tempfile.mkdtemp(prefix="hermes-test-airflow-"))
    config._hermes_airflow_home = home
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    })
    # Every Spark driver of the session, this process's and the DAG tasks' it starts, runs many short jobs on
    # small data: the JVM's optimising compiler (C2) burns CPU it never pays back (test_fatigue.py: 83 s -> 75 s).
    os.environ.setdefault("HERMES_SPARK_DRIVER_JAVA_OPTIONS", JAVA_OPTIONS)


# The files that take longest (seconds summed over their tests in a two-worker run, 2026-12-05), longest first.
# The suite runs them first (`make test` passes --no-loadscope-reorder: xdist would otherwise order files by
# their number of tests, which sends these few-test files last and leaves one worker running a DAG test alone).
LONG_POLES = ("dags/test_nightly_run.py", "dags/test_nightly_cold_start.py", "infra/test_prod_profile.py",
              "lab/test_evaluate.py", "infra/test_spark_cluster.py", "infra/test_ui_ports.py",
              "features/test_fatigue.py", "delivery/test_exactly_once.py", "features/test_pairs.py",
              "features/test_candidates.py", "training/test_model_and_gate.py", "features/test_user_features.py",
              "jobs/test_rollups.py", "jobs/test_score_shortlist.py")


def pytest_collection_modifyitems(session, config, items):
    """Longest files first, each file's tests kept together and in their order (a stable sort)."""
    rank = {f"tests/{name}": i for i, name in enumerate(LONG_POLES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONG_POLES)))


def pytest_unconfigure(config):
    import shutil

    home = getattr(config, "_hermes_airflow_home", None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


SMALL_WORLD = WorldSpec(users=400, items=800, days=10, seed=3, start=date(2026, 10, 1))


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("hermes_home")
    return Settings.from_env({"HERMES_HOME": str(home), "HERMES_SPARK_SHUFFLE_PARTITIONS": "1",
                              "HERMES_SPARK_DRIVER_MEMORY": "2g",
                              "HERMES_SPARK_DRIVER_JAVA_OPTIONS": os.environ["HERMES_SPARK_DRIVER_JAVA_OPTIONS"]})


@pytest.fixture(scope="session")
def world(settings) -> dict:
    """A small simulated marketplace written to the session's warehouse (raw contract + ground truth)."""
    counts = simulate(SMALL_WORLD, settings.warehouse)
    return {"spec": SMALL_WORLD, "counts": counts, "warehouse": Path(settings.warehouse)}


@pytest.fixture(scope="session")
def spark(settings):
    from core.spark import build_spark

    session = build_spark(settings, "hermes-tests")
    # The unit tests' tables hold tens to thousands of rows: generating and compiling Java for each query, and
    # re-planning it adaptively, costs more than running it (test_fatigue.py: 75 s -> 64 s without them). The
    # results are the same either way; the DAG, scheduler and cluster tests run the jobs with the production
    # configuration in their own processes (core/spark.py), so both paths stay tested.
    session.conf.set("spark.sql.codegen.wholeStage", "false")
    session.conf.set("spark.sql.adaptive.enabled", "false")
    yield session
    session.stop()


def free_port_block(offsets=(0, 1, 2, 3, 10000, 10001, 10002, 10003)) -> int:
    """A base port p such that p + each offset is free on 127.0.0.1 (SeaweedFS derives its ports from p)."""
    import random
    import socket

    for _ in range(200):
        base = random.randint(20000, 29000)
        try:
            for off in offsets:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + off))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports for the S3 server")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The real embedded S3 server (SeaweedFS via infra/s3.sh) on a free port with its own credentials and
    data folder; stopped by its PID at the end of the session. Yields the environment that reaches it."""
    import subprocess

    home = tmp_path_factory.mktemp("s3_home")
    port = free_port_block()
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_S3_ENDPOINT": f"http://127.0.0.1:{port}",
           "AWS_ACCESS_KEY_ID": "hermestest", "AWS_SECRET_ACCESS_KEY": "hermes-test-secret-0123456789",
           "HERMES_S3_BUCKET": "hermes-test"}
    out = subprocess.run(["bash", str(REPO / "infra" / "s3.sh"), "start"], env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    yield {k: env[k] for k in ("HERMES_HOME", "HERMES_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                               "HERMES_S3_BUCKET")}
    subprocess.run(["bash", str(REPO / "infra" / "s3.sh"), "stop"], env=env, capture_output=True, timeout=120)


def start_gateway(home: Path, faults: dict | None = None, token: str = "gw-test-token-0123456789") -> dict:
    """The real local gateway process (infra/gateway.sh) in `home` on a free port, with fault injection.
    Returns the environment that reaches it; stop it with stop_gateway(env)."""
    import json
    import subprocess

    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_GATEWAY_URL": f"http://127.0.0.1:{free_port_block((0,))}",
           "HERMES_GATEWAY_TOKEN": token, "AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"}
    if faults:
        (home / "faults.json").write_text(json.dumps(faults))
        env["HERMES_GATEWAY_FAULTS"] = str(home / "faults.json")
    out = subprocess.run(["bash", str(REPO / "infra" / "gateway.sh"), "start"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return {"HERMES_HOME": str(home), "HERMES_GATEWAY_URL": env["HERMES_GATEWAY_URL"], "HERMES_GATEWAY_TOKEN": token,
            "db": str(home / "gateway" / "receipts.sqlite")}


def stop_gateway(gw: dict) -> None:
    import subprocess

    subprocess.run(["bash", str(REPO / "infra" / "gateway.sh"), "stop"], capture_output=True, timeout=60,
                   env={**os.environ, "HERMES_HOME": gw["HERMES_HOME"], "HERMES_GATEWAY_URL": gw["HERMES_GATEWAY_URL"],
                        "AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"})


STATE_TABLES = ("delivery_ledger", "delivery_lease", "trigger_log", "trigger_watermark", "stream_events",
                "stream_quarantine", "stream_offsets", "stream_days")


def fresh_state_db(url: str) -> str:
    """Drop the delivery state tables (ledger, leases, trigger log) an earlier test left in this database."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as c:
        for table in STATE_TABLES:
            c.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def pg_url():
    """Debian's PostgreSQL, started by infra/postgres.sh in a temporary home on a free port; stopped after.
    The home is outside pytest's private tmp tree: the server runs as the `postgres` user when we are root."""
    import shutil
    import subprocess

    home = Path(tempfile.mkdtemp(prefix="hermes-pg-test-"))
    home.chmod(0o755)
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_PG_PORT": str(free_port_block((0,))),
           "HERMES_PG_PASSWORD": "pg-test-password-0123", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    script = str(REPO / "infra" / "postgres.sh")
    out = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    url = subprocess.run(["bash", script, "url"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    yield url
    subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(home, ignore_errors=True)
