"""The nightly DAG runs end to end through Airflow (`dag.test()`) on a small simulated world."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys

import pyarrow.parquet as pq
import pytest

from core.config.loader import load_config
from core.settings import REPO_ROOT
from core.warehouse import DERIVED_TABLES, Warehouse
from tests.dags.airflow_run import run_dag

pytestmark = pytest.mark.slow


def run_nightly(env: dict, ds: str) -> dict:
    return run_dag(env, "hermes_nightly", ds)


def test_an_invalid_config_stops_the_run_before_any_stage(world, settings, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "broken_conf" / "audience_sql", conf, dirs_exist_ok=True)
    home = tmp_path / "home"
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_WAREHOUSE": str(settings.warehouse),
           "HERMES_CONF": str(conf), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db"}
    result = run_nightly(env, world["spec"].last_ds)
    assert result["state"].endswith("failed"), result
    states = result["tasks"]
    assert states["validate_config[-1]"].endswith("failed")
    assert all(not s.endswith(("success", "running")) for t, s in states.items() if t != "validate_config[-1]"), states


def test_nightly_dag_runs_to_success_and_writes_its_partition(world, settings, s3_server, tmp_path):
    ds = world["spec"].last_ds
    # Its own model registry, whatever other tests registered: the gate must meet "no champion yet".
    # The real S3 server for the batches; a capacity small enough to bind at this world's size.
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    platform = (conf / "platform.yaml").read_text().replace("max_per_hour: 100000", "max_per_hour: 60")
    # the small world's 10 days hold 12 opens: lower the cold-start bar so this run trains (the prior's own DAG
    # run is test_a_fresh_deployment_without_push_history_plans_with_the_prior)
    platform = platform.replace("min_train_opens: 200", "min_train_opens: 5").replace(
        "min_holdout_opens: 50", "min_holdout_opens: 3")
    assert "min_train_opens: 5" in platform and "min_holdout_opens: 3" in platform
    (conf / "platform.yaml").write_text(platform)
    env = {**os.environ, **s3_server, "HERMES_CONF": str(conf),
           "HERMES_HOME": str(settings.home), "HERMES_SPARK_DRIVER_MEMORY": "2g",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "HERMES_SPARK_SHUFFLE_PARTITIONS": "4", "PYSPARK_PYTHON": sys.executable}
    result = run_nightly(env, ds)
    assert result["state"].endswith("success"), result
    # config 1 + dimensions 2 + facts 3 + rollups 1 + features 2 + checks 4 + audiences 1 + fatigue 1 + checks 3
    # + train 1 + gate 1 + publish_model 1 + score 1 + select 1 + checks 3 + windows 1 + check 1 + plan_report 1
    # + batches 1
    assert len(result["tasks"]) == 30 and all(s.endswith("success") for s in result["tasks"].values()), result

    wh = Warehouse(settings.warehouse)
    # every raw events partition of the world has a fresh rollup (the features read nothing stale)
    from jobs.rollups import stale_partitions
    assert result["tasks"]["rollups[-1]"].endswith("success")
    assert stale_partitions(wh, world["spec"].start.isoformat(), ds) == ([], [])
    assert len(list((wh.table("rollups/_sources")).glob("ds=*.json"))) == world["spec"].days
    rows = {name: sum(pq.ParquetFile(f).metadata.num_rows for f in wh.partition(name, ds).glob("*.parquet"))
            for name in DERIVED_TABLES}
    assert rows["features/user_features"] == world["counts"]["users"]
    assert rows["plan/audiences"] > 0 and rows["plan/eligible"] > 0
    assert rows["plan/audiences"] == rows["plan/eligible"] + rows["plan/suppressed"]
    # Every eligible user with at least one candidate gets exactly one selected scene and feed.
    selected = pq.read_table(wh.partition("plan/selected", ds)).to_pandas()
    scored_users = set(pq.read_table(wh.partition("plan/scored", ds), columns=["user_id"]).column(0).to_pylist())
    assert len(selected) > 0 and set(selected.user_id) == scored_users and selected.user_id.is_unique
    assert selected.item_ids.map(len).between(1, 6).all() and selected.model_version.notna().all()
    gate = json.loads(wh.report("training", ds, "gate").read_text())
    assert gate["decision"] == "promoted" and gate["reason"] == "no champion yet"
    assert json.loads(wh.report("training", ds, "train").read_text())["policy"] == "trained"
    version = json.loads(wh.config_snapshot(ds).read_text())["version"]
    for name in DERIVED_TABLES:
        stamped = pq.read_table(wh.partition(name, ds), columns=["config_version"]).column(0).unique().to_pylist()
        assert stamped == [version], name
    for table in ("raw_users", "raw_items", "raw_item_changes", "raw_events", "raw_push_log",
                  *(n.replace("/", "_") for n in DERIVED_TABLES)):
        report = json.loads(wh.report("validation", ds, table).read_text())
        assert report["success"] and report["rows"] > 0, table
        if table.startswith("raw_"):    # nothing to quarantine in the simulated world, and the counts add up
            assert report["rows_in"] == report["rows_kept"] == report["rows"] and report["rows_quarantined"] == 0
        else:                           # every expectation with its verdict (the validation docs show them)
            assert len(report["results"]) == report["expectations"] and all(r["success"] for r in report["results"])
    docs = (wh.report("validation", ds, "x").parent / "index.html").read_text()
    assert f"{5 + len(DERIVED_TABLES)} tables: {5 + len(DERIVED_TABLES)} passed" in docs and "FAILED" not in docs

    # send windows: every selected user has a slot or a reason, capacity holds in every hour
    windows = pq.read_table(wh.partition("plan/windows", ds)).to_pandas()
    hermes = windows[windows.policy == "hermes"]
    assert set(hermes.user_id) == set(selected.user_id)
    assert ((hermes.slot >= 0) == hermes.reason.isna()).all()
    assert hermes[hermes.slot >= 0].groupby("slot").size().max() <= 60
    assert (windows[windows.slot >= 0].groupby(["policy", "slot"]).size() <= 60).all()
    # the batches in S3 reconcile with the plan: the manifest's count = the assigned windows, no duplicates
    from core.settings import Settings
    from delivery.batches import PLAN_HOURS, read_batch, read_manifest
    from jobs.windows import send_day

    s3 = Settings.from_env({**s3_server, "HERMES_HOME": str(settings.home)})
    manifest = read_manifest(s3, send_day(ds))
    assigned = hermes[hermes.slot >= 0]
    assert manifest["messages"] == len(assigned) > 0 and manifest["config_version"] == version
    sent = [t for h in range(PLAN_HOURS) if (t := read_batch(s3, send_day(ds), h)[0]) is not None]
    keys = [k for t in sent for k in t["idempotency_key"].to_pylist()]
    assert len(keys) == len(set(keys)) == len(assigned)
    assert sorted(u for t in sent for u in t["user_id"].to_pylist()) == sorted(assigned.user_id)
    # each message carries what delivery re-renders it from when items sell: the scene's templates, each item's fields
    rows = [r for t in sent for r in t.to_pylist()]
    assert all(r["title_template"] and r["body_template"] for r in rows)
    assert all([f["item_id"] for f in r["feed"]] == r["item_ids"] + r["reserve_ids"] and all(f["title"] for f in r["feed"])
               for r in rows)
    # and the feed's reserves (platform.feed.reserves), the scene's next candidates (after an explored feed's
    # trimmed items, at most a feed's length), none of them in the feed
    loaded = load_config(conf)
    longest = max(s.feed_size for s in loaded.config.scenes)
    assert sum(len(r["reserve_ids"]) for r in rows) > 0
    assert all(len(r["reserve_ids"]) <= loaded.config.platform.feed.reserves + longest - 1 for r in rows)
    assert all(not set(r["reserve_ids"]) & set(r["item_ids"]) for r in rows)
    # nobody is offered their own listing (recall proposes some: a seller's listings are in their own categories),
    # except by the scene about them (seller_stats)
    seller = dict(zip(*pq.read_table(wh.raw("items"), columns=["item_id", "seller_id"]).to_pydict().values()))
    pairs = pq.read_table(wh.partition("plan/scored", ds), columns=["user_id", "scene_id", "item_id"]).to_pandas()
    recalled_own = pairs[pairs.item_id.map(seller) == pairs.user_id]
    assert (recalled_own.scene_id != "seller_stats").any()
    own = [r for r in rows if any(seller.get(i) == r["user_id"] for i in r["item_ids"] + r["reserve_ids"])]
    assert all(r["scene_id"] == "seller_stats" for r in own)
    plan = json.loads(wh.report("plan", ds, "plan").read_text())
    assert plan["policies"]["hermes"]["pushes"] == len(assigned)
    # the listings the pushes lead with, counted from the plan itself
    leads = assigned.item_ids.map(lambda x: x[0]).value_counts()
    assert plan["lead_listings"]["pushes"] == len(assigned) and plan["lead_listings"]["distinct_leads"] == len(leads)
    item, pushes = plan["lead_listings"]["top"][0]
    assert pushes == leads.max() and leads[item] == pushes
    # each feed says which of its items are of the user's interest (a fav, a cart, a followed seller), one flag per
    # item; the report's share is of the pushes holding one (price_drop_fav's feeds are favourited items by recall)
    assert (assigned.item_interest.map(len) == assigned.item_ids.map(len)).all()
    wanted = assigned.item_interest.map(lambda f: max(f) > 0)
    assert plan["policies"]["hermes"]["interest_share"] == pytest.approx(float(wanted.mean()))
    assert wanted[assigned.scene_id == "price_drop_fav"].all()
    # and the pairs' flag itself: price_drop_fav recalls favourited items, so each of its scored pairs is of interest
    scored = pq.read_table(wh.partition("plan/scored", ds), columns=["scene_id", "interest"]).to_pandas()
    fav = scored[scored.scene_id == "price_drop_fav"]
    assert len(fav) > 0 and (fav.interest == 1).all() and (scored.interest == 0).sum() > 0
    # a history of one-item pushes says nothing of what a longer feed adds: the report calls its estimate a floor
    multi = float((assigned.item_ids.map(len) > 1).mean())
    assert multi > 0 and plan["feed_estimate"] == {**plan["feed_estimate"], "expected_is_floor": True,
                                                   "multi_item_share": round(multi, 4), "length_term": 0.0}
    # the scenes the trained model's fit saw (the version's tag, through the windows' report) are the simulated
    # history's; the planned scenes outside them are named, with their share of the pushes
    seen = json.loads(wh.report("windows", ds, "windows").read_text())["history_scenes"]
    history = set(pq.read_table(wh.raw("push_log"), columns=["scene_id"]).column("scene_id").to_pylist())
    planned = {sc: v["pushes"] for sc, v in plan["scenes"].items() if v["pushes"]}
    unseen = sorted(set(planned) - set(seen))
    assert seen and set(seen) <= history and all(n > 0 for n in seen.values()) and unseen
    assert plan["scene_estimate"]["unseen_scenes"] == unseen
    assert plan["scene_estimate"]["unseen_share"] == round(sum(planned[sc] for sc in unseen) / sum(planned.values()), 4)
    assert plan["scene_estimate"]["note"].startswith(f"{plan['scene_estimate']['unseen_share']:.0%} of Hermes' pushes")
    from jobs.summary import summary

    assert f"  scenes: {plan['scene_estimate']['note']}" in summary(s3, ds)
    assert wh.report("plan", ds, "plan").with_suffix(".html").exists()

    # the batches asset event carries the night and queues its consumer, hermes_preflight; run, it checks that event
    meta = sqlite3.connect(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
    [(extra,)] = meta.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE "
                              "a.name = 'hermes_push_batches' ORDER BY e.id DESC LIMIT 1").fetchall()
    extra = json.loads(extra)
    assert extra["ds"] == ds and extra["messages"] == len(assigned) and extra["run_id"] == manifest["run_id"]
    assert extra["model_version"] == manifest["model_version"] == "1" and extra["config_version"] == version
    [(plan_extra,)] = meta.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE "
                                   "a.name = 'hermes_selected_plan' ORDER BY e.id DESC LIMIT 1").fetchall()
    plan_extra = json.loads(plan_extra)
    assert (plan_extra["ds"], plan_extra["rows"], plan_extra["model_version"]) == (
        ds, len(selected) + pq.read_table(wh.partition("plan/baseline", ds)).num_rows, "1")
    assert meta.execute("SELECT count(*) FROM asset_dag_run_queue WHERE target_dag_id = 'hermes_preflight'"
                        ).fetchone()[0] == 1
    checked = run_dag(env, "hermes_preflight", f"{send_day(ds)}T00:00:00")
    assert checked["state"].endswith("success"), checked
    preflight = json.loads(wh.report("preflight", ds, "preflight").read_text())
    assert preflight["ok"] and preflight["announced"]["run_id"] == manifest["run_id"]
    assert preflight["messages"] == preflight["planned"] == len(assigned)


def test_a_date_without_data_fails_fast_in_validation_it_does_not_succeed_with_no_task(world, settings, tmp_path):
    """A logical date long before the DAG's old start date (MovieLens-era) runs its tasks, and a snapshot whose users
    all registered after that date is a table-level failure that retrying cannot fix: it fails once, at once."""
    from tests.core.receiver import Receiver

    home = tmp_path / "home"
    with Receiver() as hook:
        env = {**os.environ, "HERMES_HOME": str(home), "HERMES_WAREHOUSE": str(settings.warehouse),
               "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/a.db",
               "HERMES_ALERT_WEBHOOK": hook.url}
        result = run_nightly(env, "1998-04-22")
    assert result["state"].endswith("failed"), result
    # each failed task and the failed run reached the on-call receiver, through Airflow's failure callbacks
    failed = {(a["kind"], a["details"].get("task_id")) for a in hook.got}
    assert ("task_failed", "validate_dimensions") in failed and all(a["details"]["dag_id"] == "hermes_nightly"
                                                                     for a in hook.got), hook.got
    assert any("registered_at" in (a["details"].get("error") or "") for a in hook.got), hook.got
    states = result["tasks"]
    assert states["validate_config[-1]"].endswith("success")
    dims = {t: s for t, s in states.items() if t.startswith("validate_dimensions[")}
    assert len(dims) == 2 and all(s.endswith("failed") for s in dims.values()), states
    assert not any(s.endswith("success") for t, s in states.items() if t != "validate_config[-1]"), states
    report = json.loads(Warehouse(settings.warehouse).report("validation", "1998-04-22", "raw_users").read_text())
    assert not report["success"] and "registered_at: expect_column_values_to_be_between" in report["failures"][0]
