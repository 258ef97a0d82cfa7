"""The streaming engine's decisions (jobs/stream.py) on a crafted context: the model decides (a low-value trigger is
suppressed with its p(open) logged), quiet hours defer and release, the budget shared with the nightly plan and the
user x item gap hold, a restart neither repeats nor loses a decision. A stand-in estimator (predict_proba of the
features) replaces MLflow's model; the stream, the trigger log and the ledger are the real SQLite tables."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from core.config.loader import load_config
from core.settings import REPO_ROOT, Settings
from delivery.stream import EventStream
from delivery.trigger_log import TriggerState
from features.live_features import ITEM_COLUMNS, USER_SUMS, Sides
from features.pairs import FEATURES
from jobs.stream import Context, Engine, Model

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc).timestamp()       # 12:00 UTC: 21:00 in Tokyo, 23:00 quiet in Sydney


class DropModel:
    """p(open) = 0.02 + the item's price drop: a deep drop is worth a push, a shallow one is not."""
    def predict_proba(self, X):
        p = 0.02 + np.asarray(X)[:, FEATURES.index("i_drop_pct")]
        return np.column_stack([1 - p, p])


def context() -> Context:
    users = pd.DataFrame({"user_id": [1, 2, 3, 4], "tz": ["Asia/Tokyo", "Asia/Tokyo", "Asia/Tokyo", "Australia/Sydney"],
                          "platform": "ios", "opt_in": True,
                          "device_token": [f"tok-{i}" for i in range(1, 5)]}).set_index("user_id")
    sides_users = pd.DataFrame({"user_id": [1, 2, 3, 4], **{c: 1.0 for c in USER_SUMS}}).set_index("user_id")
    sides_users["_w_by_category"] = [{} for _ in range(4)]
    sides_users["_h_by_hour"] = [{} for _ in range(4)]
    items = pd.DataFrame({"item_id": [10, 11, 12], "category_id": [1, 1, 1], "i_price_rel": 0.0, "i_drop_pct": 0.0,
                          "i_age_log": 1.0, "iv_7d": 0.0, "if__7d": 0.0, "listing_price": 100.0,
                          "cat_median": 100.0}).set_index("item_id")[list(ITEM_COLUMNS)]
    sides = Sides("2026-11-01", sides_users, items, np.full(24, 1 / 24))
    catalogue = pd.DataFrame({"item_id": [10, 11, 12], "seller_id": [90, 91, 92], "category_id": [1, 1, 1],
                              "title": ["lamp", "chair", "desk"], "price": [100.0, 100.0, 100.0]}).set_index("item_id")
    return Context("2026-11-01", users, pd.DataFrame({"n_app_open_28d": [5, 5, 5, 5]}, index=[1, 2, 3, 4]), sides,
                   Model("7", DropModel(), {"price_drop_fav": 3}), plan_mean_p=0.10, dead=set(), items=catalogue)


@pytest.fixture
def setup(tmp_path):
    settings = Settings.from_env({"HERMES_HOME": str(tmp_path)})
    loaded = load_config(REPO_ROOT / "conf")
    clock = {"t": NOW}
    stream = EventStream(settings.ledger_url)

    def engine():
        return Engine(settings, loaded, clock=lambda: clock["t"], context=context())

    return settings, stream, clock, engine


def publish(stream, t, events=(), changes=()):
    if events:
        assert not stream.publish("events", [dict(ts=t, **e) for e in events], now=t)["rejected"]
    if changes:
        assert not stream.publish("item_changes", [dict(ts=t, **c) for c in changes], now=t)["rejected"]


def decisions(settings) -> dict:
    log = TriggerState(settings.ledger_url)
    import sqlalchemy as sa

    with log.engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(sa.select(log.log))]
    return {(r["user_id"], r["item_id"]): r for r in rows}


def test_the_model_decides_and_quiet_hours_defer(setup):
    settings, stream, clock, engine = setup
    e = engine()
    publish(stream, NOW - 60, events=[{"user_id": u, "event_type": "fav", "item_id": i}
                                      for u, i in ((1, 10), (2, 11), (4, 10))])
    publish(stream, NOW - 30, changes=[{"item_id": 10, "change": "listed", "price": 100.0},
                                       {"item_id": 11, "change": "listed", "price": 100.0}])
    publish(stream, NOW, changes=[{"item_id": 10, "change": "price_drop", "price": 50.0},     # -50 %: p 0.52
                                  {"item_id": 11, "change": "price_drop", "price": 94.0}])    # -6 %: p 0.08 < 0.10
    n, msgs = e.step()
    assert n == 7
    d = decisions(settings)
    assert d[(1, 10)]["state"] == "emitted" and d[(1, 10)]["p_open"] == pytest.approx(0.52, abs=0.01)
    assert d[(2, 11)]["state"] == "suppressed" and d[(2, 11)]["p_open"] == pytest.approx(0.08, abs=0.01)
    assert d[(2, 11)]["reason"].startswith("below_value: p=0.080 < 0.100")
    # Tokyo is at 21:00: sent now; Sydney is at 23:00, quiet until 08:00 local (21:00 UTC) + the release spread
    assert [(m["user_id"], m["policy"], m["window"]) for m in msgs] == [(1, "trigger:fav_price_drop", "stream")]
    sydney = d[(4, 10)]
    assert (sydney["state"], sydney["reason"]) == ("emitted", "quiet_hours")
    assert d[(1, 10)]["reason"] is None
    quiet_end = datetime(2026, 11, 2, 21, 0, tzinfo=timezone.utc).timestamp() * 1e6
    assert quiet_end <= sydney["send_at"] < quiet_end + 60 * 60e6
    clock["t"] = sydney["send_at"] / 1e6
    assert [m["user_id"] for m in e.step()[1]] == [4]


def test_a_push_held_by_quiet_hours_is_cancelled_at_its_release_when_its_item_sold_meanwhile(setup):
    settings, stream, clock, engine = setup
    e = engine()
    publish(stream, NOW - 60, events=[{"user_id": u, "event_type": "fav", "item_id": i} for u, i in ((4, 10), (4, 11))])
    publish(stream, NOW - 30, changes=[{"item_id": i, "change": "listed", "price": 100.0} for i in (10, 11)])
    publish(stream, NOW, changes=[{"item_id": i, "change": "price_drop", "price": 50.0} for i in (10, 11)])
    assert e.step()[1] == []                                        # Sydney is at 23:00: both held
    d = decisions(settings)
    assert {d[(4, i)]["reason"] for i in (10, 11)} == {"quiet_hours"}
    publish(stream, NOW + 3600, changes=[{"item_id": 10, "change": "sold", "price": 50.0}])   # 00:00 in Sydney
    clock["t"] = max(d[(4, i)]["send_at"] for i in (10, 11)) / 1e6
    sent = e.step()[1]
    # 11 goes out at its release; 10 sold overnight: cancelled by the rule's `unless`, never sent
    assert [(m["user_id"], m["item_ids"]) for m in sent] == [(4, [11])]
    d = decisions(settings)
    assert (d[(4, 10)]["state"], d[(4, 10)]["reason"]) == ("cancelled", "item_sold")
    assert d[(4, 11)]["state"] == "emitted" and e.stats["decided"]["released_cancelled"] == 1
    # the cancelled push gave its slot of the user's day back (daily cap 2: 10 and 11 had used both): a drop of
    # another favourite that morning is pushed, not refused by the cap
    t = clock["t"]
    publish(stream, t - 60, events=[{"user_id": 4, "event_type": "fav", "item_id": 12}])
    publish(stream, t - 30, changes=[{"item_id": 12, "change": "listed", "price": 100.0}])
    publish(stream, t, changes=[{"item_id": 12, "change": "price_drop", "price": 50.0}])
    assert [(m["user_id"], m["item_ids"]) for m in e.step()[1]] == [(4, [12])]
    d = decisions(settings)
    assert (d[(4, 12)]["state"], d[(4, 12)]["local_day"]) == ("emitted", d[(4, 11)]["local_day"])


def test_the_shared_budget_the_gap_and_a_restart(setup):
    settings, stream, clock, engine = setup
    # the nightly plan of 2026-11-01 gives user 3 two pushes on 2026-11-02 (Tokyo): the daily cap is 2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.warehouse import Warehouse

    folder = Warehouse(settings.warehouse).partition("plan/windows", "2026-11-01")
    folder.mkdir(parents=True)
    at = [datetime(2026, 11, 2, h, tzinfo=timezone.utc) for h in (3, 5)]
    pq.write_table(pa.table({"user_id": [3, 3], "policy": ["hermes", "hermes"], "slot": [3, 5], "send_at": at,
                             "item_ids": [[20], [21]], "scene_id": ["s1", "s2"]}), folder / "part-0.parquet")
    e = engine()
    publish(stream, NOW - 60, events=[{"user_id": u, "event_type": "fav", "item_id": 10} for u in (1, 3)])
    publish(stream, NOW - 30, changes=[{"item_id": 10, "change": "listed", "price": 100.0}])
    publish(stream, NOW, changes=[{"item_id": 10, "change": "price_drop", "price": 60.0}])
    e.step()
    d = decisions(settings)
    assert (d[(1, 10)]["state"], d[(3, 10)]["state"], d[(3, 10)]["reason"]) == ("emitted", "suppressed", "daily_cap")
    e.checkpoint()
    # another drop of the same item half an hour later (21:30 in Tokyo): inside the rule's 72 h user x item gap
    clock["t"] = NOW + 1800
    publish(stream, NOW + 1800, changes=[{"item_id": 10, "change": "price_drop", "price": 40.0}])
    # the engine dies before its next checkpoint; the new one replays the drop from the stream
    e.close()
    again = engine()
    assert again.offset == e.offset
    again.step()
    log = TriggerState(settings.ledger_url)
    em = log.emitted_since(0)
    assert list(em["user_id"]) == [1]                                   # the first push, once
    import sqlalchemy as sa

    with log.engine.connect() as c:
        second = [dict(r._mapping) for r in c.execute(sa.select(log.log).where(log.log.c.event_ts == int((NOW + 1800) * 1e6)))]
    assert {(r["user_id"], r["state"], r["reason"]) for r in second} == {(1, "suppressed", "regap"),
                                                                         (3, "suppressed", "daily_cap")}
    # a third engine replaying the whole stream decides nothing twice; what was emitted is handed to the ledger
    # again (its claim never sends an acked key twice)
    again.close()
    third = engine()
    third.offset = 0
    assert [m["idempotency_key"] for m in third.step()[1]] == list(em["trigger_key"])
    with log.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(log.log)).scalar_one() == 4


def test_a_checkpoint_of_another_stream_is_not_resumed(setup, tmp_path):
    """The state database was replaced (a new deployment, a benchmark's fresh run): its offsets mean nothing to the
    old checkpoint, which would otherwise skip the new stream's first events."""
    settings, stream, clock, engine = setup
    publish(stream, NOW - 60, events=[{"user_id": u, "event_type": "app_open"} for u in (1, 2, 3)])
    e = engine()
    e.step()
    e.checkpoint()
    assert e.offset == 3
    e.close()
    stream.dispose()
    e.stream.dispose()
    e.log.dispose()
    db = tmp_path / "state" / "delivery_ledger.sqlite"
    for f in db.parent.glob("delivery_ledger.sqlite*"):
        f.unlink()
    fresh = EventStream(settings.ledger_url)
    publish(fresh, NOW, events=[{"user_id": 4, "event_type": "app_open"}])
    assert engine().offset == 0


def test_the_bootstrap_measures_a_drop_from_the_price_before_it_not_the_snapshots(tmp_path):
    """Found replaying the 1M world: the items snapshot holds today's price, after every drop still to come, so a
    bootstrap that took it saw every replayed drop as 0 % and pushed no price drop at all. The price a drop is
    measured from is the item's last listed/price_drop price before the bootstrap's instant (as the batch rules
    take it) - over the whole history, not the rules' lookback (an item listed long ago and not changed since has
    its listing price: with the lookback alone, a world a month old had no priced item and `make run`'s live demo
    fired nothing); an item without any change in the history has the snapshot's price."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.contract import RAW_SCHEMAS
    from core.warehouse import Warehouse
    from features.stream_rules import RuleState
    from jobs.stream import bootstrap_rules
    from tests.features.test_stream_rules import ch, rule

    wh = Warehouse(tmp_path / "wh")
    day = datetime(2026, 10, 27, tzinfo=timezone.utc)
    until = int(datetime(2026, 10, 28, tzinfo=timezone.utc).timestamp() * 1e6)

    def write(table, ds, rows):
        folder = wh.raw_partition(table, ds)
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SCHEMAS[table]), folder / "part-0.parquet")

    write("item_changes", "2026-10-27", [
        {"item_id": 1, "ts": day.replace(hour=1), "change": "listed", "price": 100.0},
        {"item_id": 1, "ts": day.replace(hour=5), "change": "price_drop", "price": 80.0}])
    write("item_changes", "2026-09-15", [                # long before the rule's 7-day lookback
        {"item_id": 3, "ts": datetime(2026, 9, 15, 9, tzinfo=timezone.utc), "change": "listed", "price": 40.0}])
    write("events", "2026-10-27", [{"ts": day.replace(hour=2), "user_id": 7, "event_type": "fav", "item_id": 1,
                                    "seller_id": 50, "category_id": 3}])
    items = pd.DataFrame({"item_id": [1, 2, 3], "seller_id": [50, 51, 52], "category_id": [3, 4, 5],
                          "title": ["a", "b", "c"], "price": [50.0, 20.0, 30.0]}).set_index("item_id")
    # the snapshot: after tomorrow's drops
    r = rule("price_drop", when={"min_drop_pct": 10, "lookback_days": 7})
    state = bootstrap_rules(wh, {r.id: r}, until, items, tmp_path / "state.sqlite")
    info = state.item_info([1, 2, 3])
    assert info[1] == (80.0, 3, int(day.replace(hour=1).timestamp() * 1e6))
    assert info[2] == (20.0, 4, None)                   # no change in the history at all: the snapshot's price
    assert info[3] == (40.0, 5, int(datetime(2026, 9, 15, 9, tzinfo=timezone.utc).timestamp() * 1e6))
    state.on_event(ch(until + 3_600_000_000, 1, "price_drop", 50.0))          # -37.5 % from 80
    assert [(c.user_id, c.detail) for c in state.pop_due(until + 3_600_000_000)] == [(7, "drop 38%")]
    state.close()
    RuleState.remove(tmp_path / "state.sqlite")


def test_the_streams_estimate_keeps_the_models_fatigue_outside_the_recalibrations_slope():
    """Model.p_open applies the version's recalibration with each pair's own push load (u_pushes_1d / u_pushes_7d of
    the live features): two pairs alike but for a push the day before differ by the model's full fatigue effect."""
    from features.windows import Recalibration

    class Fatigued:                               # log-odds -1.5 - 0.4 per push the day before
        def predict_proba(self, X):
            z = -1.5 - 0.4 * np.asarray(X)[:, FEATURES.index("u_pushes_1d")]
            p = 1 / (1 + np.exp(-z))
            return np.column_stack([1 - p, p])

    X = pd.DataFrame(0.0, index=[0, 1], columns=list(FEATURES))
    X["u_pushes_1d"] = [0.0, 1.0]
    X["scene_code"] = 3.0
    model = Model("7", Fatigued(), {"price_drop_fav": 3}, recal=Recalibration(a=0.3, b=0.5, fatigue_1d=-0.4))
    q, p = model.p_open(X)
    z = np.log(q / (1 - q))
    assert z[1] - z[0] == pytest.approx(-0.4) and z[0] == pytest.approx(0.3 + 0.5 * -1.5)
