"""Delivery against the real gateway process: faults, crashes, the rate limit — exactly once, nothing lost."""
from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config.loader import load_config
from core.settings import REPO_ROOT, Settings
from core.warehouse import Warehouse
from delivery.batches import idempotency_key, write_day
from delivery.ledger import Ledger
from jobs import deliver
from tests.conftest import start_gateway, stop_gateway

pytestmark = pytest.mark.slow
DAY = "2026-10-31"


def batch(n: int, hour: int, day: str = DAY) -> pa.Table:
    users = list(range(1, n + 1))
    return pa.table({
        "idempotency_key": [idempotency_key(u, "guess_you_like", day, "nightly") for u in users],
        "user_id": pa.array(users, pa.int64()), "device_token": [f"device-token-{u:08d}" for u in users],
        "platform": ["android_huawei" if u % 2 else "ios" for u in users], "tz": ["Asia/Shanghai"] * n,
        "scene_id": ["guess_you_like"] * n, "title": ["Fresh in category 3"] * n, "body": ["A lamp for ¥30"] * n,
        "item_ids": pa.array([[u, u + 1] for u in users], pa.list_(pa.int64())),
        "hour": pa.array([hour] * n, pa.int8()), "policy": ["hermes"] * n, "propensity": [0.95] * n,
        "window": ["nightly"] * n})


def loaded_with(**gateway) -> SimpleNamespace:
    cfg = load_config(REPO_ROOT / "conf").config
    gw = cfg.platform.gateway.model_copy(update=gateway)
    return SimpleNamespace(config=cfg.model_copy(update={"platform": cfg.platform.model_copy(update={"gateway": gw})}),
                           version="cfg-test")


def _count(db: str, sql: str) -> int:
    c = sqlite3.connect(db)
    try:
        return c.execute(sql).fetchone()[0]
    finally:
        c.close()


def receipt_count(db: str) -> int:
    return _count(db, "SELECT count(*) FROM receipts")


def delivery_count(db: str) -> int:
    """sum(gateway_counts(db)["deliveries"].values()) in one cheap query: what a polling loop should read."""
    return _count(db, "SELECT count(*) FROM requests WHERE status = 200 AND (reason IS NULL OR reason = 'hung')")


def gateway_counts(db: str) -> dict:
    c = sqlite3.connect(db)
    deliveries = dict(c.execute("SELECT idempotency_key, count(*) FROM requests WHERE status = 200 AND "
                                "(reason IS NULL OR reason = 'hung') GROUP BY 1"))
    receipts = c.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM receipts").fetchone()
    statuses = dict(c.execute("SELECT status, count(*) FROM requests GROUP BY 1"))
    return {"deliveries": deliveries, "receipts": receipts, "statuses": statuses,
            "times": [t for (t,) in c.execute("SELECT at FROM requests ORDER BY at")]}


@pytest.fixture()
def env(s3_server, tmp_path):
    return {**s3_server, "HERMES_HOME": str(tmp_path / "home"),
            "HERMES_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.sqlite"}


def test_faults_every_deliverable_message_exactly_once_dead_tokens_recorded(env, tmp_path):
    n, hour = 3000, 9
    faults = {"p503": 0.10, "p429": 0.05, "retry_after_s": 1, "p_hang": 0.01, "hang_s": 5, "dead_token_share": 0.02,
              "seed": 7}
    gw = start_gateway(tmp_path / "gw", faults)
    try:
        settings = Settings.from_env({**env, **gw})
        write_day(settings, DAY, batch(n, hour), {"plan_ds": "2026-10-30", "policy": "hermes"})
        out = deliver.run(settings, DAY, hour, loaded_with(rate_per_second=2000, burst=200, concurrency=64,
                                                            timeout_s=1.0, backoff_base_s=0.05, backoff_cap_s=1.0),
                          ramp=False)
        g = gateway_counts(gw["db"])
    finally:
        stop_gateway(gw)
    dead = out["states"].get("dead_letter", 0)
    print(f"\nfaults: {n} messages, {out['run']['requests']} requests, {out['run']['retries']} retries, gateway "
          f"statuses {g['statuses']}, acked {out['states'].get('acked')}, dead-lettered {dead}, pending "
          f"{out['run']['pending']}, deliveries per key {sorted(set(g['deliveries'].values()))}, "
          f"{out['run']['seconds']} s")
    assert out["states"] == {"acked": n - dead, "dead_letter": dead} and out["run"]["pending"] == 0
    assert 30 <= dead <= 100                                          # ~2% dead tokens, all recorded
    assert out["run"]["dead_letter"] == {"unregistered": dead} and out["dead_tokens"] == dead
    # the gateway delivered each acked key exactly once, though many were retried and some answered late
    assert len(g["deliveries"]) == n - dead and set(g["deliveries"].values()) == {1}
    assert g["receipts"] == (n - dead, n - dead)
    assert g["statuses"][503] > 150 and g["statuses"][429] > 60 and out["run"]["retries"] > 200
    # receipts in push_log: one row per acked key, the raw contract's schema
    wh = Warehouse(settings.warehouse)
    log = pa.concat_tables([pq.read_table(f) for f in wh.raw("push_log").rglob(f"receipts-{DAY}-h09.parquet")])
    assert log.num_rows == n - dead and len(set(log["push_id"].to_pylist())) == n - dead
    dead_file = pq.read_table(wh.dead_tokens / f"dead-{DAY}-h09.parquet")
    assert dead_file.num_rows == dead and "device_token" not in dead_file.column_names


def test_sigkill_mid_batch_then_rerun_loses_nothing_and_duplicates_nothing(env, tmp_path):
    n, hour = 2500, 10
    gw = start_gateway(tmp_path / "gw", {"p503": 0.05, "seed": 3})
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    p = conf / "platform.yaml"
    # 600/s: a run needs >= 3 s for what is left after a kill, so each kill point (150-450 receipts past the run's start)
    # is reached while it still sends. At 1500/s with a full-table poll, a loaded CI machine saw two runs of four finish
    # between polls.
    p.write_text(p.read_text().replace("rate_per_second: 200", "rate_per_second: 600")
                 .replace("backoff_base_s: 0.5", "backoff_base_s: 0.05"))
    run_env = {**os.environ, **env, **gw, "HERMES_CONF": str(conf)}
    run_env.pop("db")
    try:
        settings = Settings.from_env(run_env)
        write_day(settings, DAY, batch(n, hour), {"plan_ds": "2026-10-30", "policy": "hermes"})
        cmd = [sys.executable, "-m", "jobs.cli", "deliver", "--day", DAY, "--hour", str(hour), "--no-ramp"]
        rng = random.Random(11)
        killed, ended = 0, []
        # three runs killed mid-batch; a run that still ends by itself before its kill point has its exit code and
        # stderr kept for the message, and another run starts, up to 8
        for _ in range(8):
            if killed == 3:
                break
            before = receipt_count(gw["db"])
            proc = subprocess.Popen(cmd, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            # kill once the gateway has taken some more deliveries from this run (progress, not a fixed sleep)
            target = before + rng.randint(150, 450)
            deadline = time.monotonic() + 180
            while proc.poll() is None and receipt_count(gw["db"]) < target:
                assert time.monotonic() < deadline, f"run made no progress to {target} receipts in 180 s"
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
                proc.wait()
            else:
                ended.append((proc.returncode, proc.stderr.read()[-300:]))
        final = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr[-3000:]
        g = gateway_counts(gw["db"])
    finally:
        stop_gateway(gw)
    print(f"\nSIGKILL: {killed} runs killed mid-batch, {len(ended)} ended by themselves {ended}; "
          f"after the final run {g['receipts'][0]} receipts for {n} "
          f"messages, {len(g['deliveries'])} keys delivered, deliveries per key {sorted(set(g['deliveries'].values()))}, "
          f"gateway answered {g['statuses'].get(200)} x 200 (the extra ones acknowledged resent keys)")
    assert killed == 3, ended
    assert g["receipts"] == (n, n) and len(g["deliveries"]) == n and set(g["deliveries"].values()) == {1}
    ledger = Ledger(env["HERMES_LEDGER_URL"])
    assert dict(ledger.states(DAY, hour)) == {"acked": n}
    # resends after the kills were acknowledged by key, not delivered again
    assert g["statuses"][200] >= n


def test_the_rate_limit_holds_in_every_one_second_window(env, tmp_path):
    n, hour, rate, burst = 1200, 11, 300, 50
    gw = start_gateway(tmp_path / "gw")
    try:
        settings = Settings.from_env({**env, **gw})
        write_day(settings, DAY, batch(n, hour), {"plan_ds": "2026-10-30", "policy": "hermes"})
        out = deliver.run(settings, DAY, hour, loaded_with(rate_per_second=rate, burst=burst, concurrency=32),
                          ramp=False)
        times = gateway_counts(gw["db"])["times"]
    finally:
        stop_gateway(gw)
    assert out["states"] == {"acked": n} and len(times) == n
    j = 0
    worst = 0
    for i in range(len(times)):
        while times[i] - times[j] >= 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    assert worst <= rate + burst
    assert worst >= rate * 0.8                                       # and it did not crawl either
    assert (times[-1] - times[0]) >= (n - burst) / rate * 0.95


def test_wrong_credentials_stop_the_run_and_leave_everything_pending(env, tmp_path):
    from delivery.sender import DeliveryAuthError

    n, hour = 50, 12
    gw = start_gateway(tmp_path / "gw")
    try:
        settings = Settings.from_env({**env, **gw, "HERMES_GATEWAY_TOKEN": "not-the-token"})
        write_day(settings, DAY, batch(n, hour), {"plan_ds": "2026-10-30", "policy": "hermes"})
        with pytest.raises(DeliveryAuthError, match="HTTP 403"):
            deliver.run(settings, DAY, hour, loaded_with(concurrency=4), ramp=False)
        assert dict(Ledger(env["HERMES_LEDGER_URL"]).states(DAY, hour)) == {"pending": n}
        # with the right token the same hour goes out in full
        good = Settings.from_env({**env, **gw})
        assert deliver.run(good, DAY, hour, loaded_with(concurrency=4), ramp=False)["states"] == {"acked": n}
    finally:
        stop_gateway(gw)


def test_the_aiohttp_transport_used_for_https_gateways_classifies_the_same_answers(tmp_path):
    """The FCM path (aiohttp) against the same gateway: ok, duplicate, dead token, throttled, rejected."""
    import asyncio

    from delivery.gateway import DEAD_TOKEN, OK, REJECTED, GatewayClient, LeanHttpClient

    gw = start_gateway(tmp_path / "gw", {"dead_tokens": ["device-token-00000002"]})
    rows = batch(3, 8).to_pylist()
    bad = {**rows[2], "title": ""}

    async def go(cls):
        c = cls(gw["HERMES_GATEWAY_URL"], "hermes-local", gw["HERMES_GATEWAY_TOKEN"], 4, 5.0)
        try:
            return [await c.send(m) for m in (rows[0], rows[0], rows[1], bad)]
        finally:
            await c.close()

    try:
        for cls in (GatewayClient, LeanHttpClient):
            ok, again, dead, rejected = asyncio.run(go(cls))
            assert ok.kind == OK and again.kind == OK and ok.name == again.name, cls
            assert dead.kind == DEAD_TOKEN and dead.error == "UNREGISTERED"
            assert rejected.kind == REJECTED and rejected.status == 400
    finally:
        stop_gateway(gw)


def test_delivery_with_the_ledger_on_postgresql(env, pg_url, tmp_path):
    """The same run with the ledger and trigger log on PostgreSQL: everything delivered once."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as c:
        c.exec_driver_sql("DROP TABLE IF EXISTS delivery_ledger")
    engine.dispose()
    n, hour = 400, 14
    gw = start_gateway(tmp_path / "gw", {"p503": 0.1, "seed": 5})
    try:
        settings = Settings.from_env({**env, **gw, "HERMES_LEDGER_URL": pg_url})
        write_day(settings, DAY, batch(n, hour), {"plan_ds": "2026-10-30", "policy": "hermes"})
        loaded = loaded_with(concurrency=16, backoff_base_s=0.05)
        first = deliver.run(settings, DAY, hour, loaded, ramp=False)
        again = deliver.run(settings, DAY, hour, loaded, ramp=False)
        g = gateway_counts(gw["db"])
    finally:
        stop_gateway(gw)
    assert first["states"] == {"acked": n} and again["sent_this_run"] == 0
    assert len(g["deliveries"]) == n and set(g["deliveries"].values()) == {1}
