"""The session factory's driver listens on loopback only (issue 25.7: it listened on the machine's address)."""
from __future__ import annotations

import psutil


def test_the_spark_driver_and_its_jvm_listen_on_loopback_only(spark):
    assert spark.range(3).count() == 3                  # the session is up and has run a job
    me = psutil.Process()
    listening = [(p.pid, c.laddr.ip, c.laddr.port) for p in [me, *me.children(recursive=True)]
                 for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert listening, "the JVM listens for the driver's RPC and block manager"
    assert {ip for _, ip, _ in listening} <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, listening
    assert spark.conf.get("spark.driver.bindAddress") == "127.0.0.1"


def test_the_drivers_jvm_runs_with_the_configured_options_beside_the_log_config(spark, settings):
    """HERMES_SPARK_DRIVER_JAVA_OPTIONS reaches the JVM's command line; the log4j2 file the factory sets stays."""
    import os

    options = os.environ["HERMES_SPARK_DRIVER_JAVA_OPTIONS"].split()   # the suite's (tests/conftest.py)
    assert options and settings.spark_driver_java_options.split() == options
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert set(options) <= set(args), args
    assert any(a.startswith("-Dlog4j2.configurationFile=") and a.endswith("log4j2.properties") for a in args), args


def test_a_submitted_stage_passes_the_driver_options_only_when_set(tmp_path):
    from core.settings import Settings
    from jobs.submit import submit_command

    def conf(env):
        hook = submit_command(Settings.from_env({"HERMES_HOME": str(tmp_path), "HERMES_SPARK_SUBMIT_CONN": "spark_default",
                                                 **env}), "score", "2026-10-30", "snap.json", tmp_path / "r.json")
        return hook._conf

    assert conf({"HERMES_SPARK_DRIVER_JAVA_OPTIONS": "-XX:TieredStopAtLevel=1"})["spark.driver.extraJavaOptions"] == \
        "-XX:TieredStopAtLevel=1"
    assert "spark.driver.extraJavaOptions" not in conf({})


def test_spark_log_lines_go_to_stdout_not_to_stderr(settings, tmp_path):
    """Airflow 3 logs a task's stderr at ERROR: Spark's own WARN lines must reach stdout (core/log4j2.properties).
    The JVM is a process of its own, so a fresh interpreter starts one and its two streams are read apart."""
    import os
    import subprocess
    import sys

    from core.settings import REPO_ROOT

    code = """
from core.settings import Settings
from core.spark import build_spark
s = build_spark(Settings.from_env(), "logtest")
log = s.sparkContext._jvm.org.apache.log4j.LogManager.getLogger("hermes.logtest")
log.warn("a JVM warning for the test")
log.info("an info line stays out")
s.stop()
"""
    env = {**os.environ, "HERMES_HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "WARN logtest: a JVM warning for the test" in out.stdout
    assert "a JVM warning" not in out.stderr and "an info line" not in out.stdout + out.stderr
    assert " WARN " not in out.stderr, out.stderr[-2000:]
