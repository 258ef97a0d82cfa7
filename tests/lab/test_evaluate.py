"""The closed-loop evaluation on a small world against the real S3 server and gateway: both arms live the same
day from the same world, every acknowledged push gets an outcome, the holdout is never pushed, the baseline
logs its scene propensities, and the comparison lands in MLflow."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from core.settings import Settings
from core.warehouse import Warehouse
from lab import evaluation as evaluate
from lab.evaluation.outcomes import read_receipts
from tests.conftest import start_gateway, stop_gateway

pytestmark = pytest.mark.slow


def test_closed_loop_evaluation_of_both_policies(s3_server, spark, tmp_path):
    gw = start_gateway(tmp_path / "gw")
    home = tmp_path / "home"
    base = Settings.from_env({**os.environ, **s3_server, "HERMES_HOME": str(home),
                              "HERMES_GATEWAY_URL": gw["HERMES_GATEWAY_URL"],
                              "HERMES_GATEWAY_TOKEN": gw["HERMES_GATEWAY_TOKEN"]})
    spec = evaluate.EvalSpec(users=800, days=1, seed=5, history_days=27, holdout_share=0.2, bootstrap=200,
                             realtime=True)
    try:
        result = evaluate.run(base, spec, home / "evaluation", spark=spark)
    finally:
        stop_gateway(gw)
    out = home / "evaluation"
    day = result["days"]["hermes"][0]["send_day"]
    for arm in evaluate.ARMS:
        d = result["days"][arm][0]
        # every planned push was acknowledged, or withdrawn because all its items sold before its hour
        assert d["sent"] > 100 and d["states"]["acked"] == d["sent"] and set(d["states"]) <= {"acked", "dead_letter"}, d
        from delivery.ledger import Ledger
        ledger = Ledger(f"sqlite:///{out / arm}/state/delivery_ledger.sqlite")
        reasons = ledger.dead_letter_reasons(day)
        ledger.dispose()
        assert sum(reasons.values()) == d["states"].get("dead_letter", 0) and set(reasons) <= {"items_gone"}, reasons
        assert d["planned"] == d["sent"] + d["withdrawn_items_gone"] == sum(d["states"].values()), d
        wh = out / arm / "warehouse" / "raw"
        # the day's receipts: its hours 24-35 (users west of UTC) are in the next day's partition
        log = pa.concat_tables(read_receipts(Warehouse(out / arm / "warehouse"), day)[1]).to_pandas()
        assert len(log) == d["sent"] and log["push_id"].is_unique
        assert set(log["policy"]) == {arm}
        opened = log["opened_at"].notna()
        assert opened.sum() == d["opened"] and (log.loc[opened, "opened_at"] > log.loc[opened, "sent_at"]).all()
        # every open came back as an app_open event
        ev = pads.dataset(str(wh / "events"), format="parquet").to_table(
            filter=pads.field("event_type") == "app_open").to_pandas()
        from_pushes = ev.merge(log.loc[opened, ["user_id", "opened_at"]], left_on=["user_id", "ts"],
                               right_on=["user_id", "opened_at"])
        assert len(from_pushes) == d["opened"]
        # the holdout (20 %) gets nothing
        from features.holdout import in_holdout
        assert not in_holdout(log["user_id"].to_numpy(), 0.2).any()
    # both arms lived the same organic day: the simulated partition is the very same file
    organic = [out / arm / "warehouse" / "raw" / "events" / f"ds={day}" / "part-00000.parquet" for arm in evaluate.ARMS]
    assert os.path.samefile(*organic)
    base_log = pa.concat_tables(read_receipts(Warehouse(out / "baseline" / "warehouse"), day)[1]).to_pandas()
    assert (base_log["propensity"] > 0).all() and (base_log["propensity"] <= 1).all()
    main = base_log[base_log["propensity"] > 0.5]["scene_id"].unique()
    assert len(main) == 1, "unexplored baseline pushes all carry the one global scene"

    # the third arm: Hermes' plan plus the streaming engine over the day's events, through the same ledger and gateway
    rt = result["days"]["hermes_rt"][0]
    assert rt["states"]["acked"] == rt["sent"] and rt["realtime"]["events"] > 1000
    decided = rt["realtime"]["decided"]
    # what quiet hours hold past the day's end goes out the next day: sent today are at most the emitted ones
    assert sum(decided.values()) > 0 and 0 < rt["realtime"]["messages"] <= decided.get("emitted", 0)
    rt_log = pa.concat_tables(read_receipts(Warehouse(out / "hermes_rt" / "warehouse"), day)[1]).to_pandas()
    assert len(rt_log) == rt["sent"] and rt_log["push_id"].is_unique
    assert {p for p in rt_log["policy"] if not p.startswith("trigger:")} == {"hermes"}
    import sqlite3
    db = sqlite3.connect(out / "hermes_rt" / "state" / "delivery_ledger.sqlite")
    gone = db.execute("SELECT count(*) FROM delivery_ledger WHERE state = 'dead_letter' AND policy LIKE 'trigger:%' "
                      "AND reason LIKE 'items_gone:%'").fetchone()[0]
    db.close()
    # every triggered push went out, or was withdrawn because its item sold before it was due
    assert (rt_log["policy"].str.startswith("trigger:")).sum() + gone == rt["realtime"]["messages"]
    from features.holdout import in_holdout
    assert not in_holdout(rt_log["user_id"].to_numpy(), 0.2).any()
    # one budget: no user gets more pushes in a local day than the cap, nightly and triggered together
    assert rt_log.groupby("user_id").size().max() <= 2
    report_md = (out / "report.md").read_text()
    assert "## Hermes + real-time" in report_md and "Triggered pushes:" in report_md
    b, h = result["days"]["baseline"][0], result["days"]["hermes"][0]
    assert (f"withdrawn at the send because every item (and every reserve) had sold or been removed: Push 1.0 "
            f"{b['withdrawn_items_gone']:,} of {b['planned']:,}") in report_md
    assert f"Hermes {h['withdrawn_items_gone']:,} of {h['planned']:,}" in report_md
    # Push 1.0 holds no reserves; Hermes' feeds do, and the report counts what they replaced
    assert b["reserve_items_sent"] == 0
    assert f"replaced by their feed's reserves: Push 1.0 0; Hermes {h['reserve_items_sent']:,}" in report_md
    assert result["arms"]["hermes_rt"]["triggered"]["pushes"] == rt["realtime"]["messages"]

    t = result["table"]
    assert t["activation_holdout"]["baseline"] == t["activation_holdout"]["hermes"], "same holdout, same events"
    assert t["sends_per_user_day"]["hermes"] > 0 and t["open_rate"]["baseline"] > 0
    lo, hi = t["open_rate"]["ratio_ci"]
    assert lo <= t["open_rate"]["ratio"] <= hi
    o = result["off_policy"]
    assert o["logged_pushes"] == result["days"]["baseline"][0]["sent"]
    assert 0 < o["matching_pushes"] <= o["logged_pushes"] and 0 <= o["snips_open_rate"] <= 1

    import mlflow
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["ratio.open_rate"] == pytest.approx(t["open_rate"]["ratio"])
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"daily_open_rate.png", "hourly_load.png", "scene_mix.png", "report.md", "report.json"} <= arts
    assert "| open rate |" in (out / "report.md").read_text()
    # every night's Hermes plan was judged under the truth, and the report has the per-night table
    judged = [d["judge"] for d in result["days"]["hermes"]]
    assert all(j["users_judged"] > 50 and 0 < j["open_rate"]["push_1_0"] < j["open_rate"]["oracle"] for j in judged)
    assert "| night (send day) | planned by |" in (out / "report.md").read_text()
    # ... against the plan the Push 1.0 arm sent, not Push 1.0 re-planned on Hermes' own history
    assert all(j["push_1_0_from"] == str(out / "baseline" / "warehouse") for j in judged), judged[0]["push_1_0_from"]
    assert "Judged Push 1.0: the plan the Push 1.0 arm sends, under its own push history." in (out / "report.md").read_text()
