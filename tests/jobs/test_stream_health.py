"""hermes_triggers' first task decides which engine decides the triggers: the batch when the stream was never used,
nobody else while the streaming engine reports, and a failure naming the fix when the stream is in use and its
engine is silent."""
from __future__ import annotations

import time

import pytest
from airflow.exceptions import AirflowFailException

from delivery.stream import EventStream
from jobs.tasks import triggers_by_batch


def test_one_engine_decides(tmp_path, monkeypatch):
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    monkeypatch.delenv("HERMES_LEDGER_URL", raising=False)
    from core.settings import Settings

    stream = EventStream(Settings.from_env().ledger_url)
    assert triggers_by_batch() is True                                  # files only: the batch decides
    stream.publish("events", [{"ts": time.time(), "user_id": 1, "event_type": "app_open"}])
    with pytest.raises(AirflowFailException, match=r"the streaming engine is down: the streaming engine has never run; "
                                                   r"1 events wait in the stream"):
        triggers_by_batch()
    stream.commit_offset("stream", 1, {"decided": {"emitted": 3}})      # what the engine does every few seconds
    assert triggers_by_batch() is False
    import sqlalchemy as sa

    with stream.engine.begin() as c:                                     # ... until it went silent a minute ago
        c.execute(sa.update(stream.offsets).values(updated_at=time.time() - 60))
    with pytest.raises(AirflowFailException, match=r"no report for 60 s \(more than 30 s\); 0 events wait"):
        triggers_by_batch()
