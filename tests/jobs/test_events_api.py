"""The live event API: bad rows are rejected with table, column and rule and kept in the stream's quarantine; a retry
is stored once; a producer without the token is refused; a day already handed to raw/ takes no more rows, and the
hand-over writes each row once."""
from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from core.warehouse import Warehouse
from delivery.stream import EventStream
from jobs.events_api import create_app


def test_bad_events_are_quarantined_with_reasons_and_retries_stored_once(tmp_path):
    settings = Settings.from_env({"HERMES_HOME": str(tmp_path)})
    api = TestClient(create_app(settings, token="s3cret"))
    auth = {"Authorization": "Bearer s3cret"}
    now = time.time()
    good = {"ts": now, "user_id": 7, "event_type": "fav", "item_id": 42, "event_id": "app-1"}
    body = {"events": [good, {"ts": now, "user_id": 7, "event_type": "teleport"},
                       {"ts": "2026-10-30T12:00:00", "user_id": 7, "event_type": "view", "item_id": 1},
                       {"ts": now, "user_id": "seven", "event_type": "view", "item_id": 1},
                       {"ts": now, "user_id": 7, "event_type": "view"},
                       {"ts": now + 3600, "user_id": 7, "event_type": "app_open"}]}
    assert api.post("/v1/events", json=body).status_code == 401
    r = api.post("/v1/events", json=body, headers=auth)
    assert r.status_code == 200
    out = r.json()
    assert out["accepted"] == 1 and out["duplicates"] == 0
    assert [(b["index"], b["reason"].split(":")[0] + ":" + b["reason"].split(":")[1]) for b in out["rejected"]] == [
        (1, "events.event_type: rule=in_set"), (2, "events.ts: rule=timezone_required"),
        (3, "events.user_id: rule=parse_int64"), (4, "events.item_id: rule=required"),
        (5, "events.ts: rule=not_in_future")]
    again = api.post("/v1/events", json={"events": [good]}, headers=auth).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    everything_bad = api.post("/v1/item_changes", json=[{"ts": now, "item_id": 1, "change": "price_drop", "price": -3}],
                              headers=auth)
    assert everything_bad.status_code == 422
    assert everything_bad.json()["rejected"][0]["reason"].startswith("item_changes.price: rule=positive_price")
    stream = EventStream(settings.ledger_url)
    q = stream.quarantined()
    assert len(q) == 6 and all(r["reason"] for r in q)                  # 5 events + 1 item change, nothing dropped
    assert stream.counts() == {"accepted": {"events": 1}, "quarantined": {"events": 5, "item_changes": 1}}
    assert api.get("/v1/stats", headers=auth).json()["engine"]["healthy"] is False   # no engine ran


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_day_is_handed_to_raw_once_and_then_closed(tmp_path, backend, request):
    from tests.conftest import fresh_state_db

    settings = Settings.from_env({"HERMES_HOME": str(tmp_path)})
    stream = EventStream(settings.ledger_url if backend == "sqlite" else fresh_state_db(request.getfixturevalue("pg_url")))
    retry = {"ts": 1_793_620_800.0, "user_id": 1, "event_type": "app_open", "event_id": "x-1"}
    assert [stream.publish("events", [retry], now=1_793_620_810.0)["accepted"] for _ in range(2)] == [1, 0]
    assert [r["seq"] for r in stream.read(0)] == [1]
    stream.commit_offset("stream", 1, {"lag": 0})
    assert stream.offset("stream")["status"] == {"lag": 0}
    day_ts = 1_793_620_800.0                                             # 2026-11-02 12:00 UTC
    rows = [{"ts": day_ts + k, "user_id": k, "event_type": "view", "item_id": 5} for k in range(3)]
    assert stream.publish("events", rows, now=day_ts + 10)["accepted"] == 3
    seqs = [r["seq"] for r in stream.read(1)]          # increasing; PostgreSQL's sequence may leave gaps
    assert len(seqs) == 3 and seqs == sorted(seqs) and seqs[0] > 1
    assert stream.open_days("2026-11-03") == [("events", "2026-11-02")]
    wh = Warehouse(settings.warehouse)
    for _ in range(2):                                                   # a second hand-over rewrites the same file
        assert stream.flush_day(wh, "events", "2026-11-02")["rows"] == 4
    files = list(wh.raw_partition("events", "2026-11-02").glob("*.parquet"))
    assert [f.name for f in files] == ["part-stream.parquet"] and pq.read_table(files[0]).num_rows == 4
    late = stream.publish("events", [{"ts": day_ts + 99, "user_id": 9, "event_type": "view", "item_id": 5}],
                          now=day_ts + 100)
    assert late["accepted"] == 0 and "rule=day_closed: ds=2026-11-02" in late["rejected"][0]["reason"]
    assert stream.open_days("2026-11-03") == []
