"""A delivery run never ends silently with messages unsent: pending keys after the run fail it (exit != 0)."""
from __future__ import annotations

import pytest

from core.config.loader import load_config
from core.settings import REPO_ROOT, Settings
from delivery.ledger import Ledger
from jobs import deliver


def test_a_run_that_leaves_messages_pending_fails(tmp_path, monkeypatch):
    import delivery.gateway
    import delivery.sender

    class Client:                    # the run below sends nothing: no request may reach it
        async def close(self):
            pass

    async def aborted(todo, *args, **kwargs):     # a sender that returns without sending (an aborted run)
        return None

    monkeypatch.setattr(delivery.gateway, "gateway_client", lambda *a, **k: Client())
    monkeypatch.setattr(delivery.sender, "deliver", aborted)
    settings = Settings.from_env({"HERMES_HOME": str(tmp_path)})
    (tmp_path / "state").mkdir()
    rows = [{"idempotency_key": f"k{i}", "send_day": "2026-10-31", "hour": 9, "window": "nightly", "user_id": i,
             "scene_id": "s", "item_ids": [i], "policy": "hermes", "propensity": 1.0, "device_token": f"t-{i}",
             "planned_at": 1.0} for i in range(3)]
    gw = load_config(REPO_ROOT / "conf").config.platform.gateway
    with pytest.raises(deliver.DeliveryIncomplete, match=r"ds=2026-10-31 hour=09: 3 of 3 messages are still pending"):
        deliver.send_rows(settings, gw, rows, "2026-10-31", 9, "run-1", ramp=False)
    assert Ledger(settings.ledger_url).pending_keys("2026-10-31", 9) == {"k0", "k1", "k2"}


def test_a_rerun_that_dates_receipts_otherwise_moves_them_never_copies_them(tmp_path):
    """Issue 22.2: an hour delivered with HERMES_RECEIPT_TIME=planned (receipts in ds=2026-10-31) and re-run by hand
    with the wall clock wrote the same receipts again into ds=<today>, and both stayed."""
    import pyarrow.parquet as pq

    from core.warehouse import Warehouse
    from delivery.ledger import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.sqlite")
    rows = [{"idempotency_key": f"k{i}", "send_day": "2026-10-31", "hour": 12, "window": "nightly", "user_id": i,
             "scene_id": "s", "item_ids": [i], "policy": "hermes", "propensity": 1.0, "device_token": f"t-{i}",
             "planned_at": 1793448000.0 + i} for i in range(5)]                  # 2026-10-31 12:00 UTC
    ledger.load(rows, "run-1")
    ledger.record([{"key": f"k{i}", "state": "acked", "attempts": 1, "last_status": 200, "message_name": f"m/{i}",
                    "acked_at": 1796000000.0 + i} for i in range(5)])          # acknowledged on 2026-11-30
    wh = Warehouse(tmp_path / "wh")
    assert deliver.write_receipts(wh, ledger, "2026-10-31", 12, "planned")["push_log_rows"] == {"2026-10-31": 5}
    assert deliver.write_receipts(wh, ledger, "2026-10-31", 12, "acked")["push_log_rows"] == {"2026-11-30": 5}
    files = sorted(p.relative_to(wh.raw("push_log")).as_posix() for p in wh.raw("push_log").rglob("*.parquet"))
    assert files == ["ds=2026-11-30/receipts-2026-10-31-h12.parquet"]
    assert sorted(pq.read_table(wh.raw("push_log"))["push_id"].to_pylist()) == [f"k{i}" for i in range(5)]
    ledger.dispose()
    # a ledger that knows none of them (a new ledger database) writes nothing and deletes nothing
    empty = Ledger(f"sqlite:///{tmp_path}/other-ledger.sqlite")
    assert deliver.write_receipts(wh, empty, "2026-10-31", 12, "planned")["push_log_rows"] == {}
    assert pq.read_table(wh.raw("push_log")).num_rows == 5
    empty.dispose()
