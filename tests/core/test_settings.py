"""Settings come from the environment once, with documented defaults; imports have no side effects."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import REPO_ROOT, Settings, settings_table
from core.spark import shuffle_partitions


def test_defaults_hang_off_the_home_folder(tmp_path):
    s = Settings.from_env({"HERMES_HOME": str(tmp_path)})
    assert s.warehouse == tmp_path / "warehouse"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert s.spark_master == "local[*]"
    assert Settings.from_env({}).home == REPO_ROOT / "var"


def test_every_variable_is_documented_in_the_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    for var, _, _ in settings_table():
        assert f"`{var}`" in readme, f"{var} missing from README's settings table"


def test_secrets_never_print(tmp_path):
    s = Settings.from_env({"HERMES_HOME": str(tmp_path), "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
                           "HERMES_GATEWAY_TOKEN": "tok-value"})
    assert "s3cr3t-value" not in repr(s) and "tok-value" not in repr(s)
    assert "s3cr3t-value" not in str(s.describe()) and s.describe()["gateway_token"] == "<set>"


def test_bad_values_name_the_variable(tmp_path):
    with pytest.raises(ValueError, match="HERMES_SPARK_SHUFFLE_PARTITIONS must be an integer"):
        Settings.from_env({"HERMES_HOME": str(tmp_path), "HERMES_SPARK_SHUFFLE_PARTITIONS": "lots"})


def test_shuffle_partitions_are_sized_for_the_machine_not_200(tmp_path):
    auto = shuffle_partitions(Settings.from_env({"HERMES_HOME": str(tmp_path)}))
    assert auto == 4 * (os.cpu_count() or 2) and auto < 200
    assert shuffle_partitions(Settings.from_env({"HERMES_HOME": str(tmp_path),
                                                 "HERMES_SPARK_SHUFFLE_PARTITIONS": "3"})) == 3


def test_importing_the_code_touches_no_disk(tmp_path):
    home = tmp_path / "must-not-exist"
    modules = ["jobs.cli", "core.settings", "core.spark", "core.warehouse", "lab.simulate", "jobs.tasks",
               "jobs.validate_raw", "jobs.user_features", "jobs.summary", "lab.simulator.market",
               "features.user_features", "expectations.gate", "expectations.suites"]
    code = "import importlib\nfor m in %r: importlib.import_module(m)" % modules
    env = {**os.environ, "HERMES_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not home.exists()
    assert not Path(REPO_ROOT / "spark-warehouse").exists()
