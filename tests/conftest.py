"""Shared fixtures: one SparkSession per test session, one small simulated world per session."""
from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

import pytest

from jobs.settings import Settings
from jobs.simulator.market import WorldSpec, simulate

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Airflow reads its configuration at import: point it at a throw-away home before any test imports it,
    so tests never touch the developer's var/airflow."""
    home = Path(tempfile.mkdtemp(prefix="hermes-test-airflow-"))
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    })


SMALL_WORLD = WorldSpec(users=400, items=800, days=10, seed=3, start=date(2026, 10, 1))


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("hermes_home")
    return Settings.from_env({"HERMES_HOME": str(home), "HERMES_SPARK_SHUFFLE_PARTITIONS": "1",
                              "HERMES_SPARK_DRIVER_MEMORY": "2g"})


@pytest.fixture(scope="session")
def world(settings) -> dict:
    """A small simulated marketplace written to the session's warehouse (raw contract + ground truth)."""
    counts = simulate(SMALL_WORLD, settings.warehouse)
    return {"spec": SMALL_WORLD, "counts": counts, "warehouse": Path(settings.warehouse)}


@pytest.fixture(scope="session")
def spark(settings):
    from jobs.spark import build_spark

    session = build_spark(settings, "hermes-tests")
    yield session
    session.stop()
