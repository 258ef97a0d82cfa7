"""The delivery ledger and the trigger log behave the same on SQLite and on a real PostgreSQL server."""
from __future__ import annotations

import pytest

from delivery.ledger import ACKED, DEAD, PENDING, SENDING, DeliveryBusy, Ledger
from delivery.trigger_log import EMITTED, TriggerState
from tests.conftest import fresh_state_db

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path, pg_url):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.sqlite"
    return fresh_state_db(pg_url)           # a fresh schema state per test: drop what an earlier test left


def rows(keys, hour=9):
    return [{"idempotency_key": k, "send_day": "2026-10-31", "hour": hour, "window": "nightly", "user_id": i,
             "scene_id": "s", "item_ids": [i, i + 1], "policy": "hermes", "propensity": 1.0,
             "device_token": f"token-{i}", "planned_at": 1.0} for i, k in enumerate(keys, 1)]


def test_the_ledger_keeps_each_keys_state_across_reloads(url):
    ledger = Ledger(url)
    assert ledger.load(rows(["a", "b", "c"]), "run-1") == 3
    assert ledger.load(rows(["a", "b", "c", "d"]), "run-2") == 1          # existing keys keep their state
    assert ledger.pending_keys("2026-10-31", 9) == {"a", "b", "c", "d"}
    ledger.record([{"key": "a", "state": ACKED, "attempts": 1, "last_status": 200, "message_name": "m/1",
                    "acked_at": 5.0},
                   {"key": "b", "state": DEAD, "attempts": 1, "last_status": 404, "reason": "unregistered"}])
    # a late answer for an acknowledged key cannot undo the ack
    ledger.record([{"key": "a", "state": PENDING, "attempts": 2, "last_status": 0, "reason": "timeout"}])
    assert ledger.pending_keys("2026-10-31", 9) == {"c", "d"}
    assert dict(ledger.states("2026-10-31")) == {ACKED: 1, DEAD: 1, PENDING: 2}
    assert dict(ledger.key_states(["a", "b"])) == {ACKED: 1, DEAD: 1}
    assert ledger.acked_at(["a", "b", "c"]) == {"a": 5.0}
    assert dict(ledger.dead_letter_reasons("2026-10-31")) == {"unregistered": 1}
    assert [r["idempotency_key"] for r in ledger.rows("2026-10-31", 9, ACKED)] == ["a"]
    ledger.dispose()


def test_a_pending_key_replanned_to_another_hour_goes_out_with_that_hour_an_acked_one_stays(url):
    """A killed hour re-planned elsewhere: its pending keys are filed under the hour that holds them now, or they
    would never be sent (issue 25: 643 of 2,359 pushes lost)."""
    ledger = Ledger(url)
    ledger.load(rows(["a", "b", "c"], hour=12), "run-1")
    ledger.record([{"key": "a", "state": ACKED, "attempts": 1, "last_status": 200, "message_name": "m/1",
                    "acked_at": 5.0}])
    assert ledger.load(rows(["a", "b", "c"], hour=14), "replan") == 0
    assert ledger.pending_keys("2026-10-31", 14) == {"b", "c"} and ledger.pending_keys("2026-10-31", 12) == set()
    assert [r["idempotency_key"] for r in ledger.rows("2026-10-31", 12, ACKED)] == ["a"]     # sent: stays put
    ledger.dispose()


def test_one_run_per_scope_and_a_claimed_key_is_sent_by_one_run_only(url):
    """Issue 25.2: two runs of one hour both sent everything. The lease refuses the second run; a claim (the send
    intent, committed before the request) gives a key to one live run only, and a dead run's claims are in doubt."""
    ledger = Ledger(url)
    ledger.load(rows(["a", "b", "c"], hour=12), "run-1")
    first = ledger.acquire("nightly/2026-10-31/h12")
    with pytest.raises(DeliveryBusy, match=r"nightly/2026-10-31/h12 is being delivered by run .*heartbeat"):
        ledger.acquire("nightly/2026-10-31/h12")
    assert ledger.claim(["a", "b"], first) == {"a", "b"}
    other = ledger.acquire("nightly/2026-10-31/h13")             # another scope that holds the same keys
    assert ledger.claim(["a", "b", "c"], other) == {"c"}          # a and b are the first run's while it lives
    assert ledger.in_doubt(["a", "b", "c"]) == set() and ledger.pending_keys("2026-10-31", 12) == set()
    ledger.record([{"key": "a", "state": ACKED, "attempts": 1, "last_status": 200, "message_name": "m/1",
                    "acked_at": 5.0}])
    ledger.release(first)                                          # the first run is gone, b was never recorded
    assert ledger.in_doubt(["a", "b", "c"]) == {"b"} and ledger.pending_keys("2026-10-31", 12) == {"b"}
    assert ledger.claim(["a", "b"], other) == {"b"}               # in doubt: sent again, never lost
    assert dict(ledger.key_states(["a", "b", "c"])) == {ACKED: 1, SENDING: 2}
    # the first run, late, gives b back to pending: refused, the other run holds it now; a late ack still counts
    ledger.record([{"key": "b", "state": PENDING, "attempts": 1, "last_status": 0, "reason": "aborted"}], first)
    assert dict(ledger.key_states(["b"])) == {SENDING: 1}
    again = ledger.acquire("nightly/2026-10-31/h12")              # the released scope is free again
    assert again != first and ledger.heartbeat(again) and not ledger.heartbeat(first)
    ledger.dispose()


def test_a_stale_lease_is_taken_over_and_its_holder_learns_it_lost_it(url):
    ledger = Ledger(url, lease_ttl_s=30)
    old = ledger.acquire("nightly/2026-10-31/h09")
    import sqlalchemy as sa

    with ledger.engine.begin() as c:                               # the holder (on another host) went silent
        c.execute(sa.update(ledger.lease).values(run_id="elsewhere:1:dead", heartbeat_at=0.0))
    new = ledger.acquire("nightly/2026-10-31/h09")
    assert new != old and not ledger.heartbeat("elsewhere:1:dead") and ledger.heartbeat(new)
    ledger.dispose()


def test_a_replan_never_gives_a_user_a_second_nightly_push_that_day(url):
    """Issue 25.4: a re-plan's new key for a user already pushed that day is superseded, never sent; a new key for
    a user whose old key is still pending replaces that one (else neither would go out)."""
    ledger = Ledger(url)
    ledger.load(rows(["a", "b", "c"]), "plan-1")                  # users 1, 2, 3
    ledger.record([{"key": "a", "state": ACKED, "attempts": 1, "last_status": 200, "message_name": "m/1",
                    "acked_at": 5.0}])
    assert ledger.load(rows(["a2", "b2", "c", "d"], hour=10), "plan-2") == 3     # users 1, 2, 3, 4
    assert dict(ledger.key_states(["a2"])) == {DEAD: 1}                          # user 1 was pushed: superseded
    assert dict(ledger.key_states(["b"])) == {DEAD: 1}                           # user 2's pending key: replaced
    assert ledger.pending_keys("2026-10-31", 10) == {"b2", "c", "d"} and ledger.pending_keys("2026-10-31", 9) == set()
    assert dict(ledger.dead_letter_reasons("2026-10-31")) == {"superseded": 1, "replanned": 1}
    trig = rows(["t1"])                                                          # a trigger push is not nightly
    trig[0]["window"] = "0930"
    assert ledger.load(trig, "trigger-0930") == 1 and ledger.pending_keys("2026-10-31", 9) == {"t1"}
    ledger.dispose()


def test_the_trigger_log_decides_a_key_once_and_the_watermark_only_moves_forward(url):
    state = TriggerState(url)
    row = {"trigger_key": "k1", "rule_id": "r", "user_id": 1, "item_id": 2, "scene_id": "s", "event_ts": 10,
           "fire_at": 20, "send_at": 20, "local_day": "2026-10-31", "due_window": 30, "state": EMITTED,
           "reason": None, "detail": "x", "decided_by": 30, "decided_at": 1.0}
    state.record([row])
    state.record([{**row, "state": "suppressed", "reason": "daily_cap"}])  # a second decision is ignored
    assert state.decided(["k1", "k2"]) == {"k1"}
    assert state.due(30)["trigger_key"].tolist() == ["k1"]
    assert state.advance(100) == 100 and state.advance(50) == 100 and state.watermark() == 100
    state.dispose()


def test_a_ledger_written_before_claims_existed_is_migrated_in_place(url):
    import sqlalchemy as sa

    old = Ledger(url)
    old.load(rows(["a", "b"]), "run-1")
    with old.engine.begin() as c:                     # what an earlier version left: no claim columns, no index
        c.exec_driver_sql("DROP INDEX IF EXISTS ix_ledger_day_user")
        for col in ("claimed_by", "claimed_at"):
            c.exec_driver_sql(f"ALTER TABLE delivery_ledger DROP COLUMN {col}")
    old.dispose()
    ledger = Ledger(url)
    run = ledger.acquire("nightly/2026-10-31/h09")
    assert ledger.claim(["a", "b"], run) == {"a", "b"}
    assert "ix_ledger_day_user" in {i["name"] for i in sa.inspect(ledger.engine).get_indexes("delivery_ledger")}
    ledger.dispose()
