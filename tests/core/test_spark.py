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
