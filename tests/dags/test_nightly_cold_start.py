"""Cold start through Airflow (`dag.test()`): a fresh deployment without push history plans with the prior.
Its own file so that the test runners (pytest-xdist, --dist loadfile) can run it beside the other nightly runs."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pyarrow.parquet as pq
import pytest

from core.warehouse import Warehouse
from tests.dags.test_nightly_run import run_nightly

pytestmark = pytest.mark.slow


def test_a_fresh_deployment_without_push_history_plans_with_the_prior(settings, s3_server, tmp_path):
    """Cold start through Airflow: no push_log at all, a day without item changes (missing partition) and one that
    is delivered empty. The night succeeds, the prior policy is registered and promoted, and it plans pushes with
    the larger exploration share; the summary and the plan report say which policy planned and why."""
    import pyarrow as pa

    from core.contract import RAW_SCHEMAS
    from jobs.validate_raw import EMPTY_DAY
    from lab.simulator.market import WorldSpec, simulate

    home = tmp_path / "home"
    spec = WorldSpec(users=800, items=1600, days=8, seed=11)
    simulate(spec, home / "warehouse", push_days=0)
    wh = Warehouse(home / "warehouse")
    ds = spec.last_ds
    assert not wh.raw("push_log").exists()
    shutil.rmtree(wh.raw_partition("item_changes", ds))                   # nothing changed that day
    empty_day = wh.raw_days("item_changes")[-2]
    shutil.rmtree(wh.raw_partition("item_changes", empty_day))
    wh.raw_partition("item_changes", empty_day).mkdir()
    pq.write_table(pa.Table.from_pylist([], schema=RAW_SCHEMAS["item_changes"]),
                   wh.raw_partition("item_changes", empty_day) / "part-0.parquet")
    env = {**os.environ, **s3_server, "HERMES_HOME": str(home), "HERMES_SPARK_DRIVER_MEMORY": "2g",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
           "HERMES_SPARK_SHUFFLE_PARTITIONS": "4", "PYSPARK_PYTHON": sys.executable}
    result = run_nightly(env, ds)
    assert result["state"].endswith("success"), {t: s for t, s in result["tasks"].items() if not s.endswith("success")}
    assert all(s.endswith("success") for s in result["tasks"].values()), result["tasks"]
    # the missing days became explicit empty days, validated with 0 rows
    assert (wh.raw_partition("push_log", ds) / EMPTY_DAY).exists()
    assert (wh.raw_partition("item_changes", ds) / EMPTY_DAY).exists()
    for table in ("raw_push_log", "raw_item_changes"):
        report = json.loads(wh.report("validation", ds, table).read_text())
        assert report["success"] and report["rows_in"] == 0 == report["rows_quarantined"], table
    train = json.loads(wh.report("training", ds, "train").read_text())
    assert train["policy"] == "prior" and "0 opens" in train["reason"]
    gate = json.loads(wh.report("training", ds, "gate").read_text())
    assert gate["decision"] == "promoted" and gate["reason"].startswith("no champion yet: the prior policy plans")
    windows = pq.read_table(wh.partition("plan/windows", ds)).to_pandas()
    hermes = windows[(windows.policy == "hermes") & (windows.slot >= 0)]
    assert len(hermes) > 300
    assert 0.12 < hermes.explored.mean() < 0.3                             # cold_start_explore_share 0.2
    selected = pq.read_table(wh.partition("plan/selected", ds)).to_pandas()
    # the chosen scene's logged propensity is (1 - 0.2) + 0.2 / k for most users: well below feed.explore_share's
    assert len(selected) > 300 and selected.scene_propensity.median() < 0.9
    plan = json.loads(wh.report("plan", ds, "plan").read_text())
    assert plan["model_policy"] == "prior" and "no champion yet" in plan["why_this_policy"]
    assert plan["policies"]["hermes"]["pushes"] == len(hermes)
    from core.settings import Settings
    from jobs.summary import summary

    text = "\n".join(summary(Settings.from_env({**s3_server, "HERMES_HOME": str(home)}), ds))
    assert "is the PRIOR policy" in text and "planned by: hermes-ctr v1, the prior policy" in text
    # no push history at all: what a feed of several items adds is unknown, and the summary says the estimate is a floor
    assert plan["feed_estimate"]["expected_is_floor"] and f"expected opens of feeds: {plan['feed_estimate']['note']}" in text
    # the prior gives no scene an effect of its own, whatever the history held (here: nothing)
    assert plan["scene_estimate"] == {"unseen_scenes": None, "unseen_share": None, "note": "the prior policy gives no "
                                      "scene an effect of its own: every scene is estimated alike"}
