"""Exactly-once trials against the real gateway process with its key dedup switched off (as FCM: every request is
delivered), every delivery counted in the gateway's own SQLite request log.

    .venv/bin/python bench/exactly_once.py [--code DIR] [--rates 25 100 200 1000 3000] [--ledger sqlite|postgresql]

Trials, each on a fresh gateway and ledger:
- kill -9: `hermes deliver` of one hour is killed (SIGKILL) once a share of the hour is delivered, then run again
  to the end; one trial per rate;
- stop and re-plan: the hour is stopped (SIGTERM) a quarter through, the day re-planned with a third of the users
  moved to other hours, and every hour delivered;
- two at once: two `hermes deliver` runs of the same hour started together.
Lost = planned messages never delivered; duplicated = deliveries beyond the first per message.

`--code DIR` runs the `hermes deliver` processes from another checkout (e.g. `git worktree add /tmp/before
<rev>`): the same trials on the code before a change. The gateway and the batches always come from this one.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import yaml  # noqa: E402

from core.settings import Settings  # noqa: E402
from delivery.batches import idempotency_key, write_day  # noqa: E402
from tests.conftest import free_port_block, fresh_state_db  # noqa: E402  (the tests' port and database helpers)

DAY = "2026-10-31"
TOKEN = "bench-token-0123456789abcdef"


def batch(n: int, hours) -> pa.Table:
    users = list(range(1, n + 1))
    return pa.table({
        "idempotency_key": [idempotency_key(u, "guess_you_like", DAY, "nightly") for u in users],
        "user_id": pa.array(users, pa.int64()), "device_token": [f"device-token-{u:08d}" for u in users],
        "platform": ["ios"] * n, "tz": ["Asia/Shanghai"] * n, "scene_id": ["guess_you_like"] * n,
        "title": ["Fresh in category 3"] * n, "body": ["A lamp for ¥30"] * n,
        "item_ids": pa.array([[u, u + 1] for u in users], pa.list_(pa.int64())),
        "hour": pa.array([hours(u) for u in users], pa.int8()), "policy": ["hermes"] * n, "propensity": [1.0] * n,
        "window": ["nightly"] * n})


class Trial:
    """A fresh gateway (dedup off), ledger and configuration; the deliver processes run from `code`."""

    def __init__(self, base: dict, code: Path, ledger_url: str | None, rate: float):
        self.home = Path(tempfile.mkdtemp(prefix="hermes-trial-"))
        if ledger_url:                       # one PostgreSQL server for all trials: each starts on empty tables
            fresh_state_db(ledger_url)
        self.code = code
        conf = self.home / "conf"
        shutil.copytree(code / "conf", conf)
        doc = yaml.safe_load((conf / "platform.yaml").read_text())
        doc["gateway"].update(rate_per_second=rate, burst=max(int(rate // 10), 10), concurrency=16,
                              backoff_base_s=0.05)
        (conf / "platform.yaml").write_text(yaml.safe_dump(doc))
        (self.home / "faults.json").write_text('{"dedup": false, "p503": 0.02, "seed": 5}')
        self.env = {**os.environ, **base, "HERMES_HOME": str(self.home / "hermes"), "HERMES_CONF": str(conf),
                    "HERMES_GATEWAY_URL": f"http://127.0.0.1:{free_port_block((0,))}", "HERMES_GATEWAY_TOKEN": TOKEN,
                    "HERMES_GATEWAY_FAULTS": str(self.home / "faults.json"),
                    "HERMES_LEDGER_URL": ledger_url or f"sqlite:///{self.home}/ledger.sqlite",
                    "PYTHONPATH": str(code)}
        self.db = self.home / "hermes" / "gateway" / "receipts.sqlite"
        out = subprocess.run(["bash", str(REPO / "infra" / "gateway.sh"), "start"], env={**self.env, "PYTHONPATH": str(REPO)},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr

    def write(self, table: pa.Table) -> None:
        write_day(Settings.from_env(self.env), DAY, table, {"plan_ds": "2026-10-30", "policy": "hermes"})

    def deliver(self, hour, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "jobs.cli", "deliver", "--day", DAY, "--hour", str(hour),
                                 "--no-ramp"], env=self.env, cwd=self.code, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, **kw)

    def delivered(self) -> dict:
        c = sqlite3.connect(str(self.db))
        try:
            return dict(c.execute("SELECT idempotency_key, count(*) FROM requests WHERE status = 200 AND "
                                  "(reason IS NULL OR reason = 'hung') GROUP BY 1"))
        finally:
            c.close()

    def wait_for(self, proc, target: int) -> None:
        while proc.poll() is None and sum(self.delivered().values()) < target:
            time.sleep(0.02)

    def count(self, keys: list[str]) -> tuple[int, int]:
        d = self.delivered()
        return sum(d.get(k, 0) == 0 for k in keys), sum(max(d.get(k, 0) - 1, 0) for k in keys)

    def close(self) -> None:
        subprocess.run(["bash", str(REPO / "infra" / "gateway.sh"), "stop"], env={**self.env, "PYTHONPATH": str(REPO)},
                       capture_output=True, timeout=60)
        shutil.rmtree(self.home, ignore_errors=True)


def finish(t: Trial, hour) -> int:
    """Run the hour to the end (a few tries: a run the old code left with pending keys exits 0 anyway)."""
    rc = 0
    for _ in range(3):
        p = t.deliver(hour)
        p.communicate(timeout=900)
        rc = p.returncode
        if rc == 0:
            break
    return rc


def kill9(base, code, ledger_url, rate: float, seed: int) -> dict:
    n = int(min(max(rate * 8, 400), 8000))
    t = Trial(base, code, ledger_url, rate)
    try:
        plan = batch(n, lambda u: 10)
        t.write(plan)
        p = t.deliver(10)
        t.wait_for(p, int(n * random.Random(seed).uniform(0.2, 0.6)))
        killed = p.poll() is None
        if killed:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
        rc = finish(t, 10)
        lost, dup = t.count(plan["idempotency_key"].to_pylist())
    finally:
        t.close()
    return {"trial": f"kill -9 at {rate:g} msg/s", "messages": n, "killed": killed, "rc": rc, "lost": lost, "dup": dup}


def replan(base, code, ledger_url) -> dict:
    n = 2400
    t = Trial(base, code, ledger_url, 300)
    try:
        plan = batch(n, lambda u: 12)
        t.write(plan)
        p = t.deliver(12)
        t.wait_for(p, n // 4)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=120)
        t.write(batch(n, lambda u: 12 if u % 3 == 0 else (13 if u % 3 == 1 else 15)))
        rc = finish(t, "all")
        lost, dup = t.count(plan["idempotency_key"].to_pylist())
    finally:
        t.close()
    return {"trial": "stop at 25 %, re-plan to hours 12/13/15", "messages": n, "killed": True, "rc": rc, "lost": lost,
            "dup": dup}


def two_at_once(base, code, ledger_url) -> dict:
    n = 2000
    t = Trial(base, code, ledger_url, 400)
    try:
        plan = batch(n, lambda u: 12)
        t.write(plan)
        procs = [t.deliver(12) for _ in range(2)]
        errs = [p.communicate(timeout=600)[1] for p in procs]
        rcs = [p.returncode for p in procs]
        lost, dup = t.count(plan["idempotency_key"].to_pylist())
    finally:
        t.close()
    why = "; ".join(e.strip().splitlines()[-1][:160] for e, rc in zip(errs, rcs) if rc and e.strip())
    return {"trial": "two runs of one hour at once", "messages": n, "killed": False, "rc": rcs, "lost": lost,
            "dup": dup, "why": why}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, default=REPO, help="checkout whose `hermes deliver` runs (default: this one)")
    ap.add_argument("--rates", type=float, nargs="+", default=[25, 100, 200, 1000, 3000])
    ap.add_argument("--ledger", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--trials", nargs="+", choices=["kill9", "replan", "two"], default=["kill9", "replan", "two"])
    args = ap.parse_args()
    s3_home = Path(tempfile.mkdtemp(prefix="hermes-trial-s3-"))
    s3_home.chmod(0o755)                     # PostgreSQL runs as the `postgres` user when we are root
    s3_port = free_port_block()
    base = {"HERMES_S3_ENDPOINT": f"http://127.0.0.1:{s3_port}", "AWS_ACCESS_KEY_ID": "hermestrial",
            "AWS_SECRET_ACCESS_KEY": "hermes-trial-secret-0123456789", "HERMES_S3_BUCKET": "hermes-trial"}
    s3_env = {**os.environ, **base, "HERMES_HOME": str(s3_home)}
    pg_env = {**os.environ, "HERMES_HOME": str(s3_home), "HERMES_PG_PORT": str(free_port_block((0,))),
              "HERMES_PG_PASSWORD": "pg-trial-password-0123", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    rows = []
    try:                                     # whatever fails, the servers this started are stopped
        subprocess.run(["bash", str(REPO / "infra" / "s3.sh"), "start"], env=s3_env, check=True, capture_output=True)
        ledger_url = None
        if args.ledger == "postgresql":
            subprocess.run(["bash", str(REPO / "infra" / "postgres.sh"), "start"], env=pg_env, check=True,
                           capture_output=True)
            ledger_url = subprocess.run(["bash", str(REPO / "infra" / "postgres.sh"), "url"], env=pg_env, check=True,
                                        capture_output=True, text=True).stdout.strip()
        for i, rate in enumerate(args.rates if "kill9" in args.trials else []):
            rows.append(kill9(base, args.code, ledger_url, rate, i))
            print(rows[-1], flush=True)
        for name, trial in (("replan", replan), ("two", two_at_once)):
            if name not in args.trials:
                continue
            rows.append(trial(base, args.code, ledger_url))
            print(rows[-1], flush=True)
    finally:
        subprocess.run(["bash", str(REPO / "infra" / "s3.sh"), "stop"], env=s3_env, capture_output=True)
        if args.ledger == "postgresql":
            subprocess.run(["bash", str(REPO / "infra" / "postgres.sh"), "stop"], env=pg_env, capture_output=True)
        shutil.rmtree(s3_home, ignore_errors=True)
    print(f"\ncode: {args.code}; ledger: {args.ledger}; gateway dedup off")
    print("| trial | messages | exit code(s) | lost | duplicated |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trial']} | {r['messages']:,} | {r['rc']} | {r['lost']} | {r['dup']} |")


if __name__ == "__main__":
    main()
