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
