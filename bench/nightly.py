"""The whole nightly DAG at several world sizes: wall time and peak memory per task, and how they grow.

    make bench-nightly                                   # 50k, 200k and 1M users (infra/bench-nightly.sh)
    .venv/bin/python bench/nightly.py --users 50000 200000 1000000   # SeaweedFS must be up (batches)

Every task of `hermes_nightly` runs, in the DAG's own dependency order (read from the DAG file, so the bench
cannot drift from it), through the same function the Airflow task calls (`jobs.tasks.*`), each in a fresh
Python process as the LocalExecutor runs it: a Spark task starts its own session and JVM, and the process
tree's RSS (Python + JVM + Python workers) is sampled every 0.2 s. Mapped tasks (GX suites per table) run
once per table; their times add up and their peak is the largest. Tasks run one after another (on 2 cores
the DAG's parallel branches would only share them); the Airflow scheduler's own overhead is not included.

Results accumulate in $HERMES_HOME/bench/nightly.json per world size (`--table` prints them again).
Each world is simulated once into $HERMES_HOME/bench/nightly-<users>/ (kept for re-runs; the simulator is
not part of the DAG and is reported apart); every derived table, the MLflow store and the ledger are wiped
before the run, so the model is trained and gated from scratch.

A steady night, by default: the raw partitions of the previous nights are validated (validate_raw for ds - 1: the
dimensions, then every fact partition up to ds - 1, their bad rows quarantined) and their daily rollups made
(jobs/rollups.py, the `rollups` stage for ds - 1) before the DAG, timed apart ("previous nights' validation",
"previous nights' rollups"), so the DAG's own validate_facts checks the one new partition and its `rollups` task
rolls up the one new day, as every night after the first does (validating first matters: quarantining rewrites a
partition, and a rewritten partition's rollup is stale). `--cold` skips both: the DAG's
validate_facts then checks every partition delivered so far and its `rollups` task rolls up every day of the
lookback, as on the very first night.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# run as a script, bench/ comes first on sys.path and bench/delivery.py would shadow the delivery package
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
SPEC_FILE = "bench-world.json"


class PeakRSS:
    """Samples the RSS of a process and all its descendants every 0.2 s; keeps the peak."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while True:
            total = 0
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            if self._stop.wait(0.2):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def dag_order() -> tuple[list[str], dict]:
    """hermes_nightly's task ids in a dependency order (Kahn, ties by task id) and its table lists."""
    sys.path.insert(0, str(REPO / "dags"))
    import hermes_nightly as module

    dag = module.hermes_nightly()   # the @dag function builds the DAG object the scheduler would parse
    upstream = {tid: set(t.upstream_task_ids) for tid, t in dag.task_dict.items()}
    order: list[str] = []
    while upstream:
        ready = sorted(t for t, ups in upstream.items() if not ups)
        if not ready:
            raise RuntimeError(f"hermes_nightly has a cycle among {sorted(upstream)}")
        order.append(ready[0])
        del upstream[ready[0]]
        for ups in upstream.values():
            ups.discard(ready[0])
    tables = {"validate_dimensions": module.DIMENSIONS, "validate_facts": module.FACTS, "check_features": module.FEATURE_TABLES,
              "check_plan": module.PLAN_TABLES, "check_selection": module.SELECTION_TABLES,
              "check_windows": ["plan/windows"]}
    return order, tables


def calls_for(task_id: str, tables: dict) -> list[tuple[str, list]]:
    """What the Airflow task `task_id` calls: (jobs.tasks function, arguments after ds/config) per map index."""
    from jobs.tasks import LOCAL_STAGES, STAGES

    if task_id == "validate_config":
        return [("validate_config", [])]
    if task_id in ("validate_dimensions", "validate_facts"):
        return [("validate_raw", [t]) for t in tables[task_id]]
    if task_id in STAGES:
        return [("run_stage", [task_id])]
    if task_id in LOCAL_STAGES:
        return [("run_local", [task_id])]
    if task_id == "gate":
        return [("gate", [])]
    if task_id.startswith("check_"):
        return [("check_output", [t]) for t in tables[task_id]]
    if task_id == "batches":
        return [("write_batches", [])]
    if task_id == "publish_model":          # Airflow only: announces the model asset when the gate promoted
        return []
    raise RuntimeError(f"bench/nightly.py does not know the DAG task {task_id!r}: teach calls_for() what it calls")


def run_call(fn: str, args: list, ds: str, config: dict | None, env: dict, log) -> tuple[dict, float, int]:
    """One task call in a fresh interpreter: (its JSON result, wall seconds, peak RSS bytes of its tree)."""
    payload = json.dumps({"fn": fn, "args": args, "ds": ds, "config": config})
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--call", payload], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    with PeakRSS(proc.pid) as mem:
        out, _ = proc.communicate()
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{fn}{tuple(args)} failed (exit {proc.returncode}); see {log.name}")
    result = json.loads(out.strip().splitlines()[-1])
    return result, seconds, mem.peak


def _rows(result: dict) -> int:
    if "tables" in result and result["tables"]:
        return sum(t.get("rows", 0) for t in result["tables"].values())
    for key in ("rows", "messages", "train_rows"):
        if isinstance(result.get(key), int):
            return result[key]
    if "training" in result:
        return result["training"].get("train_rows", 0)
    return 0


def world(users: int, days: int, seed: int, base_home: Path) -> tuple[Path, str, float | None]:
    """Simulate the world once (kept across runs); wipe everything the nightly derives from it."""
    from lab.simulator.market import WorldSpec, simulate

    home = base_home / "bench" / f"nightly-{users}"
    spec = WorldSpec(users=users, items=2 * users, days=days, seed=seed)
    marker = home / SPEC_FILE
    want = {"users": users, "items": 2 * users, "days": days, "seed": seed}
    sim_seconds = None
    if not marker.exists() or json.loads(marker.read_text()) != want:
        shutil.rmtree(home, ignore_errors=True)
        t0 = time.monotonic()
        simulate(spec, home / "warehouse")
        sim_seconds = time.monotonic() - t0
        marker.write_text(json.dumps(want))
    for sub in home.iterdir():
        if sub.name not in (SPEC_FILE, "warehouse"):
            shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
    for sub in (home / "warehouse").iterdir():
        if sub.name not in ("raw", "truth"):
            shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
    return home, spec.last_ds, sim_seconds


def bench_world(users: int, days: int, seed: int, base_home: Path, order: list[str], tables: dict,
                cold: bool = False) -> dict:
    from datetime import date, timedelta

    home, ds, sim_seconds = world(users, days, seed, base_home)
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_WAREHOUSE": str(home / "warehouse"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow/mlflow.db",
           "HERMES_LEDGER_URL": f"sqlite:///{home}/state/delivery_ledger.sqlite",
           "HERMES_S3_BUCKET": f"hermes-bench-{users}"}
    (home / "mlflow").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    rows, config, before = [], None, None
    with open(home / "logs" / "bench-nightly.log", "w") as log:
        if not cold:
            prev = (date.fromisoformat(ds) - timedelta(days=1)).isoformat()
            prev_config, _, _ = run_call("validate_config", [], prev, None, env, log)
            # the previous nights' raw partitions were validated on their own nights (and their bad rows quarantined,
            # which rewrites a partition): validation first, or the DAG's validate_facts would check the whole
            # backlog and its rollups task roll up every rewritten day again
            v_seconds = v_peak = 0.0
            for table in tables["validate_dimensions"] + tables["validate_facts"]:
                _, s, p = run_call("validate_raw", [table], prev, prev_config, env, log)
                v_seconds, v_peak = v_seconds + s, max(v_peak, p)
            result, s, p = run_call("run_stage", ["rollups"], prev, prev_config, env, log)
            before = {"task": "rollups of the previous nights", "seconds": round(s, 1), "peak_gb": round(p / 2**30, 2),
                      "partitions": len(result["rolled_up"]),
                      "validation": {"seconds": round(v_seconds, 1), "peak_gb": round(v_peak / 2**30, 2)}}
            print(f"  {users:>9,} (before the DAG: the previous nights' validation, {v_seconds:.1f} s, "
                  f"{v_peak / 2**30:.2f} GB; their rollups, {before['partitions']} days: {s:.1f} s, "
                  f"{p / 2**30:.2f} GB)", flush=True)
        started = time.monotonic()
        for task_id in order:
            seconds = peak = n = 0
            for fn, args in calls_for(task_id, tables):
                result, s, p = run_call(fn, args, ds, config, env, log)
                if fn == "validate_config":
                    config = result
                seconds, peak, n = seconds + s, max(peak, p), n + _rows(result)
            rows.append({"task": task_id, "seconds": round(seconds, 1), "peak_gb": round(peak / 2**30, 2),
                         "rows": n})
            print(f"  {users:>9,} {task_id:<18}{seconds:>8.1f} s {peak / 2**30:>6.2f} GB {n:>13,} rows", flush=True)
    total = time.monotonic() - started
    return {"users": users, "ds": ds, "simulate_seconds": sim_seconds, "total_seconds": round(total, 1),
            "peak_gb": max(r["peak_gb"] for r in rows), "night": "cold" if cold else "steady",
            "before_dag": before, "tasks": rows}


def table(results: list[dict]) -> str:
    sizes = [r["users"] for r in results]
    head = "| task | " + " | ".join(f"{n:,} users: s / peak GB" for n in sizes)
    if len(sizes) > 1:
        head += f" | growth {sizes[0]:,}→{sizes[-1]:,} (users ×{sizes[-1] / sizes[0]:.0f})"
    lines = [head + " |", "|" + "---|" * (len(sizes) + 1 + (len(sizes) > 1))]
    # by task name: results measured before a task existed show "-" in its row
    by_name = [{t["task"]: t for t in r["tasks"]} for r in results]
    names = list(dict.fromkeys(t["task"] for r in reversed(results) for t in r["tasks"]))
    for name in names:
        cells = [f"{m[name]['seconds']:.1f} / {m[name]['peak_gb']:.2f}" if name in m else "-" for m in by_name]
        line = f"| {name} | " + " | ".join(cells)
        if len(sizes) > 1:
            first, last = (m.get(name, {}).get("seconds", 0) for m in (by_name[0], by_name[-1]))
            line += f" | ×{last / first:.1f}" if first > 0 and last > 0 else " | -"
        lines.append(line + " |")
    total = "| **DAG total** | " + " | ".join(f"**{r['total_seconds']:.0f} / {r['peak_gb']:.2f}**" for r in results)
    if len(sizes) > 1:
        total += f" | ×{results[-1]['total_seconds'] / results[0]['total_seconds']:.1f}"
    lines.append(total + " |")
    before = [r.get("before_dag") for r in results]
    if any(b and b.get("validation") for b in before):
        lines.append("| (before the DAG: the previous nights' validation) | "
                     + " | ".join(f"{b['validation']['seconds']:.1f} / {b['validation']['peak_gb']:.2f}"
                                  if b and b.get("validation") else "-" for b in before)
                     + (" | |" if len(sizes) > 1 else " |"))
    if any(before):
        lines.append("| (before the DAG: the previous nights' rollups) | "
                     + " | ".join(f"{b['seconds']:.1f} / {b['peak_gb']:.2f}" if b else "-" for b in before)
                     + (" | |" if len(sizes) > 1 else " |"))
    return "\n".join(lines)


def _call(payload: str) -> None:
    """--call: run one jobs.tasks function (what one Airflow task instance runs) and print its JSON."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from jobs import tasks

    c = json.loads(payload)
    fn = getattr(tasks, c["fn"])
    if c["fn"] == "validate_config":
        result = fn(c["ds"])
    elif c["fn"] in ("validate_raw",):
        result = fn(*c["args"], c["ds"], c["config"])
    elif c["fn"] in ("run_stage", "run_local", "check_output"):
        result = fn(*c["args"], c["ds"], c["config"])
    else:  # gate, write_batches
        result = fn(c["ds"], c["config"])
    print(json.dumps(result, default=str))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cold", action="store_true", help="the first night: no earlier night was validated or rolled up")
    p.add_argument("--table", action="store_true", help="only print the table of the results measured so far")
    p.add_argument("--call", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.call:
        return _call(args.call)
    from core.settings import Settings

    base_home = Settings.from_env().home
    out = base_home / "bench" / "nightly.json"
    # results accumulate per world size: a run at 1M adds to (or replaces) what earlier runs measured
    results = {r["users"]: r for r in (json.loads(out.read_text()) if out.exists() else [])}
    if not args.table:
        order, tables = dag_order()
        print(f"hermes_nightly tasks in order: {', '.join(order)}", flush=True)
        for n in args.users:
            r = results[n] = bench_world(n, args.days, args.seed, base_home, order, tables, args.cold)
            sim = f"{r['simulate_seconds']:.0f} s" if r["simulate_seconds"] else "kept from an earlier run"
            print(f"  {n:,} users: DAG {r['total_seconds']:.0f} s, peak {r['peak_gb']:.2f} GB (simulator: {sim})",
                  flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps([results[k] for k in sorted(results)], indent=2))
    if not results:
        raise SystemExit(f"no results in {out}: run the benchmark first")
    print()
    print(table([results[k] for k in sorted(results)]))
    print(f"\n(results: {out})")


if __name__ == "__main__":
    main()
