"""Benchmark: the streaming trigger engine under a replayed event stream, with the event API, the gateway and the
ledger live (real processes), on the state `make run` leaves.

    make bench-streaming     (= source infra/env.sh; python bench/streaming.py [--speeds 1 100 300] [--minutes 10])

For each speed S, on a fresh state database: the engine (`hermes stream --replay-from T --speed S`) runs its clock
from the replay start T at S times the wall clock, and a publisher POSTs the simulated world's raw events and item
changes from T on to the event API as that clock reaches their times (batches every 50 ms) — S = 1 is the world's
own rate; the simulator's event rate grows with its users, so the 10k world at S = 100 is the 1M world's rate and
S = 300 its 3x (the state the rules hold is the 10k world's, not the 1M world's). Printed per minute: events/s
published and processed, the engine's lag (events), its RSS and the CPU share of the engine and the API (of one core;
the machine has 2). At the end: decisions by state and reason, due -> gateway acceptance (p50/p95, delay-0 rules and
delayed rules apart, in wall seconds), and the ground truth's open rate of the pushes the stream sent against the
same days' Push 1.0 pushes and the Hermes nightly plan (the simulator's truth, as bench/triggers.py reports for the
15-minute batch).

The replay starts at the busiest hour of `--from-day` (default: 2 days before the nightly's ds); that day's earlier
events are published before the clock starts, and the rules' state is bootstrapped from raw/ before the day. The
sides and model are the nightly's of ds (the plan day after the replay: its features have seen the replayed days —
a benchmark shortcut; decisions in production use the previous night's).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
US = 1_000_000


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


def rss_mb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def post(port: int, token: str, table: str, rows: list[dict]) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/{table}", data=json.dumps({table: rows}).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def load_replay(wh, first: float, end: float) -> list[tuple]:
    """[(ts seconds, table, doc)] of the raw events and item changes with first <= ts < end, in time order (the same
    rows the closed loop's real-time arm publishes: lab.evaluation.realtime.day_rows)."""
    from lab.evaluation.realtime import day_rows

    out = []
    d = datetime.fromtimestamp(first, tz=timezone.utc).date()
    while datetime.combine(d, datetime.min.time(), tzinfo=timezone.utc).timestamp() < end:
        for table, rows in day_rows(wh, d.isoformat(), (first, end)).items():
            out += [(r["ts"], table, r) for r in rows]
        d += timedelta(days=1)
    out.sort(key=lambda x: x[0])
    return out


def busiest_hour(wh, day: str) -> tuple[float, int]:
    """The start (epoch seconds) and row count of the UTC hour of `day` with the most events and item changes."""
    import pyarrow.dataset as pads

    day0 = datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()
    hours = np.zeros(24, dtype=np.int64)
    for table in ("events", "item_changes"):
        path = wh.raw_partition(table, day)
        if path.exists():
            ts = pads.dataset(str(path), format="parquet").to_table(columns=["ts"])["ts"].to_pandas()
            us = ts.astype("int64") // (1000 if ts.dtype.unit == "ns" else 1)
            h = ((us.to_numpy() / US - day0) // 3600).astype(np.int64)
            hours += np.bincount(h[(h >= 0) & (h < 24)], minlength=24)
    return day0 + 3600 * int(np.argmax(hours)), int(hours.max())


def run_speed(args, env: dict, wh, replay: list, world_start: float, speed: float, loaded) -> dict:
    from delivery.stream import EventStream

    state = Path(env["HERMES_HOME"]) / "bench" / f"stream-x{speed:g}"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    env = {**env, "HERMES_LEDGER_URL": f"sqlite:///{state}/state.sqlite", "HERMES_EVENTS_PORT": str(args.port)}
    procs, logs = {}, {}

    def start(name: str, argv: list[str]) -> None:
        logs[name] = open(state / f"{name}.log", "w")
        procs[name] = subprocess.Popen([sys.executable, "-m", "jobs.cli", *argv], env=env, stdout=logs[name],
                                       stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)

    start("api", ["events-api", "--port", str(args.port)])
    token = env["HERMES_EVENTS_TOKEN"]
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    # the replayed day's events before the busiest hour first: the engine bootstraps from raw/ up to that day and
    # takes these in from the stream before its clock starts
    i, published = 0, 0
    warm = {"events": [], "item_changes": []}
    while i < len(replay) and replay[i][0] < world_start:
        warm[replay[i][1]].append(replay[i][2])
        i += 1
    for table, rows in warm.items():
        for k in range(0, len(rows), 5000):
            published += post(args.port, token, table, rows[k:k + 5000])["accepted"]
    # the engine loads the nightly and bootstraps the rule state (seconds at 10k users, minutes at 1M); its clock
    # starts a while after it is ready (it takes the warm-up in meanwhile) and it reports when
    settle = args.start_seconds + published / 5000
    start("engine", ["stream", "--replay-from", datetime.fromtimestamp(world_start, tz=timezone.utc).isoformat(),
                     "--speed", str(speed), "--replay-wall-start", str(-settle)])
    t_start = time.time()
    while True:
        if procs["engine"].poll() is not None:
            sys.exit(f"the engine exited while starting; see {state / 'engine.log'}")
        probe = EventStream(env["HERMES_LEDGER_URL"])
        o = probe.offset("stream")
        probe.dispose()
        if o is not None and o["status"].get("replay_wall_start"):
            wall_start = float(o["status"]["replay_wall_start"])
            print(f"  x{speed:g}: the engine is up after {time.time() - t_start:.0f} s (nightly loaded, rule state "
                  f"bootstrapped: see {state / 'engine.log'}); its clock starts {settle:.0f} s later", flush=True)
            break
        time.sleep(0.2)
    stream = EventStream(env["HERMES_LEDGER_URL"])
    while time.time() < wall_start:                     # the engine takes the warm-up in before the clock starts
        time.sleep(0.05)
    end_wall = wall_start + args.minutes * 60
    minute = []
    t_min, cpu0 = time.time(), {k: cpu_seconds(p.pid) for k, p in procs.items()}
    pub_min, off0 = 0, (stream.offset("stream") or {"seq": 0})["seq"]
    print(f"  x{speed:g}: replay from {datetime.fromtimestamp(world_start, tz=timezone.utc):%Y-%m-%d %H:%M} UTC "
          f"for {args.minutes} min of wall time ({args.minutes * speed / 60:.1f} h of the world)")
    print(f"    {'min':>4} {'published/s':>12} {'processed/s':>12} {'lag':>7} {'engine rss':>11} {'engine cpu':>11} "
          f"{'api cpu':>8}")
    while time.time() < end_wall:
        now_world = world_start + (time.time() - wall_start) * speed
        batch = {"events": [], "item_changes": []}
        while i < len(replay) and replay[i][0] <= now_world:
            batch[replay[i][1]].append(replay[i][2])
            i += 1
        for table, rows in batch.items():
            for k in range(0, len(rows), 5000):
                out = post(args.port, token, table, rows[k:k + 5000])
                published += out["accepted"] + out["duplicates"]
                pub_min += out["accepted"]
        if time.time() - t_min >= 60:
            o = stream.offset("stream") or {"seq": 0, "status": {}}
            head = stream.head()
            dt = time.time() - t_min
            cpu = {k: (cpu_seconds(p.pid) - cpu0[k]) / dt for k, p in procs.items()}
            row = {"minute": len(minute) + 1, "published_per_s": pub_min / dt, "processed_per_s": (o["seq"] - off0) / dt,
                   "lag": head - o["seq"], "rss_mb": rss_mb(procs["engine"].pid), "engine_cpu": cpu["engine"],
                   "api_cpu": cpu["api"]}
            minute.append(row)
            print(f"    {row['minute']:>4} {row['published_per_s']:>12.1f} {row['processed_per_s']:>12.1f} {row['lag']:>7} "
                  f"{row['rss_mb']:>8} MB {100 * row['engine_cpu']:>10.0f}% {100 * row['api_cpu']:>7.0f}%")
            t_min, cpu0, pub_min, off0 = time.time(), {k: cpu_seconds(p.pid) for k, p in procs.items()}, 0, o["seq"]
        time.sleep(0.05)
    # let the engine finish what is due, then stop it cleanly (it writes its receipts and checkpoint)
    for _ in range(200):
        o = stream.offset("stream")
        if o and o["seq"] >= stream.head():
            break
        time.sleep(0.1)
    time.sleep(3)
    for name in ("engine", "api"):
        os.killpg(procs[name].pid, signal.SIGTERM)
        procs[name].wait(timeout=120)
        logs[name].close()
    return summarise(env, wh, world_start, wall_start, speed, minute, published, loaded)


def summarise(env, wh, world_start, wall_start, speed, minute, published, loaded) -> dict:
    import sqlalchemy as sa

    eng = sa.create_engine(env["HERMES_LEDGER_URL"])
    with eng.connect() as c:
        log = pd.read_sql("SELECT trigger_key, rule_id, user_id, item_id, scene_id, fire_at, send_at, state, reason, "
                          "p_open FROM trigger_log", c)
        ledger = pd.read_sql("SELECT idempotency_key, acked_at, state FROM delivery_ledger", c)
    eng.dispose()
    rules = {t.id: t for t in loaded.config.triggers}
    sent = log[log["state"] == "emitted"].merge(ledger, left_on="trigger_key", right_on="idempotency_key")
    acked = sent[sent["state_y"] == "acked"].copy()
    # due: the event (+ the rule's delay), or for a push quiet hours held, its release
    # pushes due before the timed replay began came from the warm-up backlog: not the steady state measured here
    acked = acked[np.where(acked["reason"].fillna("").str.startswith("quiet_hours"), acked["send_at"],
                           acked["fire_at"]) >= world_start * US].copy()
    held = acked["reason"].fillna("").str.startswith("quiet_hours")
    due_wall = wall_start + (np.where(held, acked["send_at"], acked["fire_at"]) / US - world_start) / speed
    acked["latency"] = acked["acked_at"].to_numpy() - due_wall
    delay0 = acked["rule_id"].map(lambda r: rules[r].delay_minutes == 0 and rules[r].when.event != "chat_waiting")
    out = {"speed": speed, "published": published, "minutes": minute, "quiet_held": int(held.sum()),
           "decided": log["state"].value_counts().to_dict(),
           "reasons": log["reason"].fillna("").map(lambda r: r.split(":")[0]).value_counts().to_dict(),
           "sent": int(len(acked))}
    for name, part in (("delay0", acked[delay0]), ("delayed", acked[~delay0])):
        lat = part["latency"].to_numpy()
        out[f"latency_{name}"] = ({"n": int(lat.size), "p50": round(float(np.median(lat)), 3),
                                   "p95": round(float(np.percentile(lat, 95)), 3), "max": round(float(lat.max()), 3)}
                                  if lat.size else {"n": 0})
    out["pushes"] = acked[["user_id", "scene_id", "item_id", "send_at"]]
    return out


def open_rates(wh, pushes: pd.DataFrame, days: list[str], plan_ds: str) -> list[tuple[str, int, float]]:
    """The ground truth's mean P(open) of the stream's pushes, the same days' Push 1.0 pushes and the nightly plan."""
    import pyarrow.dataset as pads

    from bench.triggers import truth_rate
    from lab.simulator.ground_truth import GroundTruth

    truth = GroundTruth.load(wh.ground_truth)
    rows = []
    if len(pushes):
        rate, _ = truth_rate(truth, wh.root, pushes["user_id"].to_numpy(), pushes["scene_id"].to_numpy(),
                             [[int(i)] for i in pushes["item_id"]], pushes["send_at"].to_numpy())
        rows.append(("stream triggers (model-decided)", len(pushes), rate))
    logs = [pads.dataset(str(wh.raw_partition("push_log", d)), format="parquet").to_table().to_pandas()
            for d in days if wh.raw_partition("push_log", d).exists()]
    if logs:
        log = pd.concat(logs)
        base = log[~log["policy"].str.startswith(("trigger:", "hermes"))]
        us = base["sent_at"].astype("int64") // (1000 if base["sent_at"].dtype.unit == "ns" else 1)
        rate, _ = truth_rate(truth, wh.root, base["user_id"].to_numpy(), base["scene_id"].to_numpy(),
                             list(base["item_ids"]), us.to_numpy())
        rows.append(("Push 1.0, the same days", len(base), rate))
    if wh.partition("plan/windows", plan_ds).exists():
        w = wh.read_arrow("plan/windows", plan_ds).to_pandas()
        w = w[(w["policy"] == "hermes") & (w["slot"] >= 0)]
        us = w["send_at"].astype("int64") // (1000 if w["send_at"].dtype.unit == "ns" else 1)
        rate, _ = truth_rate(truth, wh.root, w["user_id"].to_numpy(), w["scene_id"].to_numpy(), list(w["item_ids"]),
                             us.to_numpy())
        rows.append(("Hermes nightly plan, next day", len(w), rate))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speeds", type=float, nargs="+", default=[1, 100, 300])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--from-day", help="first replayed UTC day (default: ds - 2)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("HERMES_EVENTS_PORT", "8470")) + 1)
    ap.add_argument("--warmup-minutes", type=float, help="publish only this much of the day before the busiest hour "
                    "(default: all of it; the rule state is bootstrapped from raw/ up to the day's start either way)")
    ap.add_argument("--no-open-rates", action="store_true", help="skip the ground truth's open rates (at 1M users "
                    "they take ~16 GB for a few minutes)")
    ap.add_argument("--start-seconds", type=float, default=20, help="wall time between the engine being ready and "
                    "its clock starting, to take the warm-up in (plus 1 s per 5,000 warm-up rows)")
    args = ap.parse_args()
    from core.config.loader import load_config
    from core.settings import Settings
    from core.warehouse import Warehouse
    from jobs.score import SIDES_USER

    settings = Settings.from_env()
    wh = Warehouse(settings.warehouse)
    loaded = load_config(settings.conf_dir)
    ds = wh.latest_day(SIDES_USER, "9999-12-31")
    if ds is None:
        sys.exit("no nightly with its sides: run `make run` first")
    first = args.from_day or (date.fromisoformat(ds) - timedelta(days=2)).isoformat()
    env = dict(os.environ)
    out = subprocess.run(["bash", str(REPO / "infra" / "gateway.sh"), "start"], env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stdout + out.stderr)
    t = time.time()
    # the timed replay starts at the busiest hour of the first day; what came before it that day (or the last
    # --warmup-minutes of it) is published before the clock starts (the engine's warm-up)
    world_start, peak = busiest_hour(wh, first)
    day0 = datetime.fromisoformat(first).replace(tzinfo=timezone.utc).timestamp()
    warm_from = day0 if args.warmup_minutes is None else max(day0, world_start - 60 * args.warmup_minutes)
    world_end = world_start + 60 * args.minutes * max(args.speeds) + 3600          # + the delays' hour
    replay = load_replay(wh, warm_from, world_end)
    print(f"busiest hour of {first}: {datetime.fromtimestamp(world_start, tz=timezone.utc):%H}:00 UTC, {peak:,} rows "
          f"({peak / 3600:.2f}/s at 1x)")
    days = sorted({datetime.fromtimestamp(x, tz=timezone.utc).date().isoformat() for x in (warm_from, world_end)})
    print(f"replay: {len(replay):,} rows of {datetime.fromtimestamp(warm_from, tz=timezone.utc):%Y-%m-%d %H:%M}.."
          f"{datetime.fromtimestamp(world_end, tz=timezone.utc):%Y-%m-%d %H:%M} UTC loaded in {time.time() - t:.1f} s; "
          f"nightly {ds}")
    results = []
    for speed in args.speeds:
        results.append(run_speed(args, env, wh, replay, world_start, speed, loaded))
    print("\nsummary (due -> gateway acceptance in wall seconds; delay-0 rules are due at their event):")
    print(f"  {'speed':>6} {'events/s':>9} {'sent':>6} {'delay-0 p50/p95':>16} {'delayed p50/p95':>16} "
          f"{'max lag':>8} {'rss first/last':>15} {'engine cpu':>11}  decided")
    for r in results:
        m = r["minutes"]
        d0, dl = r["latency_delay0"], r["latency_delayed"]
        rate = np.mean([x["published_per_s"] for x in m]) if m else 0.0
        rss = f"{m[0]['rss_mb']}/{m[-1]['rss_mb']} MB" if m else "-"
        cpu = 100 * np.mean([x["engine_cpu"] for x in m]) if m else 0.0
        lag = max([x["lag"] for x in m] or [0])
        print(f"  {r['speed']:>5g}x {rate:>9.1f} {r['sent']:>6} {str(d0.get('p50')) + '/' + str(d0.get('p95')):>16} "
              f"{str(dl.get('p50')) + '/' + str(dl.get('p95')):>16} {lag:>8} {rss:>15} {cpu:>10.0f}%  "
              f"{r['decided']} {r['reasons']}")
    if args.no_open_rates:
        return
    print("\nground truth's open rate (mean true P(open) at the send time, with the relevance/timeliness context):")
    pushes = pd.concat([r["pushes"] for r in results if len(r["pushes"])]) if any(len(r["pushes"]) for r in results) \
        else pd.DataFrame(columns=["user_id", "scene_id", "item_id", "send_at"])
    for name, n, rate in open_rates(wh, pushes.drop_duplicates(["user_id", "item_id", "send_at"]), days, ds):
        print(f"  {name:<36}{n:>8,} pushes  {100 * rate:6.2f}%")


if __name__ == "__main__":
    main()
