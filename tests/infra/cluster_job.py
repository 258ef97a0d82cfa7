"""Run by tests/infra/test_spark_cluster.py in its own interpreter: one stage on the cluster + an executor import check."""
import json
import os
import sys

from core.config.loader import load_config
from core.settings import Settings
from core.spark import build_spark
from jobs import rollups, user_features

s = Settings.from_env()
spark = build_spark(s, "hermes-cluster-check")
loaded = load_config(s.conf_dir)
rollups.run(spark, s, sys.argv[1], loaded)
out = user_features.run(spark, s, sys.argv[1], loaded)
# executors import the project's code (shipped as a zip) and run in other processes than the driver
pids = spark.sparkContext.parallelize(range(8), 8).map(
    lambda _: (__import__("features.windows", fromlist=["SLOTS"]).SLOTS, __import__("os").getpid())).collect()
execs = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
print("RESULT " + json.dumps({"master": spark.sparkContext.master, "executors": execs,
                               "slots": sorted({p[0] for p in pids}), "executor_pids": len({p[1] for p in pids}),
                               "driver_pid": os.getpid(), "rows": out["tables"]["features/user_features"]["rows"]}))
spark.stop()
