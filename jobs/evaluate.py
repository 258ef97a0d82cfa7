"""Closed-loop evaluation: Push 1.0 (the baseline policy) and Hermes side by side on the same simulated world.

    hermes evaluate --days 5 --seed 7 [--users 4000]        (infra/evaluate.sh / `make evaluate` start the servers)

1. One world is simulated: `history_days` of Push 1.0 (its logged push_log with propensities is the history
   both policies start from), then `days` with organic events only. Organic behaviour never depends on pushes,
   so both arms face the same users and the same events.
2. Each arm gets its own warehouse (hard links of the shared raw data), MLflow registry, delivery ledger and
   bucket, and lives the evaluation days in a closed loop, one night at a time:
   nightly stages (features, audiences, fatigue, train + gate, score, select) -> send windows -> push batches in
   S3 -> delivery of all 24 hours through the real gateway process -> opens and clicks drawn from the
   simulator's ground truth for what the gateway acknowledged -> the arm's push_log and events -> next night.
   The two arms run the same code; only `policy` (whose plan becomes the batches) differs. Capacity, fatigue
   and the holdout are the same. Outcome draws use common random numbers per (user, day): a user who would
   open a push of probability p opens it in both arms if p is high enough, so arm differences are the
   policies', not the dice's.
3. Metrics per arm and as ratios with paired bootstrap confidence intervals (users resampled), the holdout
   comparison for incremental activation, an off-policy (IPS / SNIPS) estimate of Hermes' open rate from the
   baseline arm's log, and plots; everything is logged to MLflow (experiment `hermes-evaluation`) as one run
   and written to <out>/report.json and report.md.

Trigger rules are not part of either arm: Push 1.0 had none, and the comparison is of the nightly policies.
"""
from __future__ import annotations

import importlib
import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from jobs.settings import Settings
from jobs.warehouse import Warehouse

log = logging.getLogger(__name__)
EXPERIMENT = "hermes-evaluation"
ARMS = ("baseline", "hermes")
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
SCENE_COVERAGE_SHARE = 0.01     # a scene "reaches users" when it carries >= 1 % of an arm's sends
INACTIVE_PROFILE = 0.5 / 24     # a local hour is inactive for a user when P(active there) < half the uniform share


@dataclass(frozen=True)
class EvalSpec:
    users: int = 4000
    days: int = 3
    seed: int = 7
    history_days: int = 28
    holdout_share: float = 0.10
    rate_per_second: float = 5000.0     # delivery speed: throttling is tested elsewhere, not the subject here
    bootstrap: int = 1000


@dataclass
class Arm:
    name: str
    settings: Settings
    loaded: object

    @property
    def wh(self) -> Warehouse:
        return Warehouse(self.settings.warehouse)


# ---------------------------------------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------------------------------------
def eval_config(loaded, spec: EvalSpec):
    """The configuration both arms run under: conf/ as it is, with the evaluation's holdout share and delivery
    rate (the version says so)."""
    from jobs.config.loader import LoadedConfig

    p = loaded.config.platform
    gw = p.gateway.model_copy(update={"rate_per_second": spec.rate_per_second,
                                      "burst": int(max(p.gateway.burst, spec.rate_per_second))})
    platform = p.model_copy(update={"gateway": gw, "holdout_share": spec.holdout_share})
    config = loaded.config.model_copy(update={"platform": platform})
    return LoadedConfig(config=config, version=f"{loaded.version}-eval", files=loaded.files)


def world_spec(spec: EvalSpec):
    from jobs.simulator.market import WorldSpec

    return WorldSpec(users=spec.users, items=2 * spec.users, days=spec.history_days + spec.days, seed=spec.seed)


def send_days_of(spec: EvalSpec) -> list[str]:
    """The closed-loop days: the world's days after the Push 1.0 history."""
    ws = world_spec(spec)
    return [(ws.start + timedelta(days=spec.history_days + i)).isoformat() for i in range(spec.days)]


def arm_settings(base: Settings, out: Path, name: str) -> Settings:
    """An arm's own warehouse, MLflow registry, ledger and bucket under out/<name>."""
    home = out / name
    return replace(base, home=home, warehouse=home / "warehouse",
                   mlflow_tracking_uri=f"sqlite:///{home}/mlflow/mlflow.db",
                   ledger_url=f"sqlite:///{home}/state/delivery_ledger.sqlite",
                   s3_bucket=f"{base.s3_bucket}-eval-{name}", receipt_time="planned")


def prepare(base: Settings, spec: EvalSpec, out: Path) -> tuple[dict[str, Arm], list[str]]:
    """Simulate the world once and give each arm its own copy (hard links) of it. Returns arms and send days."""
    from jobs.config.loader import load_config
    from jobs.simulator.market import simulate

    ws = world_spec(spec)
    world = out / "world"
    shutil.rmtree(out, ignore_errors=True)
    counts = simulate(ws, world, push_days=spec.history_days)
    log.info("world: %s", counts)
    loaded = eval_config(load_config(base.conf_dir), spec)
    arms = {}
    for name in ARMS:
        settings = arm_settings(base, out, name)
        settings.warehouse.mkdir(parents=True)
        subprocess.run(["cp", "-al", str(world / "raw"), str(settings.warehouse / "raw")], check=True)
        (settings.home / "mlflow").mkdir()
        (settings.home / "state").mkdir()
        arms[name] = Arm(name, settings, loaded)
    return arms, send_days_of(spec)


# ---------------------------------------------------------------------------------------------------------
# one night and day of one arm
# ---------------------------------------------------------------------------------------------------------
def live_day(spark, arm: Arm, send_day: str, spec: EvalSpec) -> dict:
    """Plan send_day from the night before, deliver it through the gateway, draw its outcomes."""
    from jobs import batches, deliver, windows
    from jobs.tasks import STAGES
    from jobs.train import gate

    ds = (date.fromisoformat(send_day) - timedelta(days=1)).isoformat()
    s, loaded = arm.settings, arm.loaded
    times = {}
    t0 = time.monotonic()
    for stage in STAGES:
        t = time.monotonic()
        importlib.import_module(f"jobs.{stage}").run(spark, s, ds, loaded)
        if stage == "train":
            gate(s, ds, loaded)
        times[stage] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    windows.run(s, ds, loaded)
    planned = batches.run(s, ds, loaded, policy=arm.name)
    times["windows+batches"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    states: dict[str, int] = {}
    for hour in range(24):
        r = deliver.run(s, send_day, hour, loaded, ramp=False)
        for k, v in r.get("states", {}).items():
            states[k] = states.get(k, 0) + v
    times["deliver"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    outcome = draw_outcomes(arm, send_day, spec)
    times["outcomes"] = round(time.monotonic() - t, 1)
    if outcome["sent"] != states.get("acked", 0):
        raise AssertionError(f"{arm.name} {send_day}: {states.get('acked', 0)} acknowledged but {outcome['sent']} "
                             "receipts in push_log")
    log.info("%s %s: planned %s, delivered %s, opens %d / %d in %.0f s %s", arm.name, send_day,
             planned.get("messages"), states, outcome["opened"], outcome["sent"], time.monotonic() - t0, times)
    return {"send_day": send_day, "states": states, **outcome, "seconds": times}


def _read_receipts(wh: Warehouse, send_day: str):
    import pyarrow.parquet as pq

    folder = wh.raw_partition("push_log", send_day)
    files = sorted(folder.glob(f"receipts-{send_day}-h*.parquet")) if folder.exists() else []
    return files, [pq.read_table(f) for f in files]


def _recent_pushes(wh: Warehouse, send_day: str) -> tuple[np.ndarray, np.ndarray]:
    """user_id, sent_at (us) of the arm's pushes in the 8 days before send_day (for the true fatigue terms)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    first = (date.fromisoformat(send_day) - timedelta(days=8)).isoformat()
    ds = pads.dataset(str(wh.raw("push_log")), format="parquet", partitioning="hive")
    t = ds.to_table(columns=["user_id", "sent_at"], filter=(pc.field("ds") >= first) & (pc.field("ds") < send_day))
    return t["user_id"].to_numpy(), t["sent_at"].cast("int64").to_numpy()


def _count_before(users, at, hist_users, hist_at, window_us) -> np.ndarray:
    """Per push: the user's pushes in [at - window, at) from history."""
    import pandas as pd

    h = pd.DataFrame({"user_id": hist_users, "t": hist_at}).sort_values(["user_id", "t"])
    out = np.zeros(len(users), dtype=np.int64)
    groups = {u: g["t"].to_numpy() for u, g in h.groupby("user_id")}
    for i, (u, a) in enumerate(zip(users, at)):
        ts = groups.get(u)
        if ts is not None:
            out[i] = np.searchsorted(ts, a, "left") - np.searchsorted(ts, a - window_us, "left")
    return out


def crn(seed: int, send_day: str, purpose: int) -> np.random.Generator:
    """Common random numbers: one stream per (seed, day, purpose), indexed by user — the same in both arms."""
    day = (date.fromisoformat(send_day) - date(1970, 1, 1)).days
    return np.random.default_rng([seed, 9001, day, purpose])


def draw_outcomes(arm: Arm, send_day: str, spec: EvalSpec) -> dict:
    """Opens and clicks of the day's acknowledged pushes from the ground truth; the receipts in push_log get
    them (what the app's open tracking would report) and the opens become app_open / view events."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from jobs.contract import RAW_SCHEMAS
    from jobs.simulator.ground_truth import GroundTruth, push_context
    from jobs.simulator.market import _events, events_table

    wh = arm.wh
    files, tables = _read_receipts(wh, send_day)
    if not tables:
        return {"sent": 0, "opened": 0, "clicked": 0}
    t = pa.concat_tables(tables)
    truth = GroundTruth.load(wh.ground_truth)
    users = t["user_id"].to_numpy()
    sent_at = t["sent_at"].cast("int64").to_numpy()
    feeds = t["item_ids"]
    items = np.asarray(pa.concat_arrays([c.flatten() for c in feeds.chunks]).to_numpy(), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(pc.list_value_length(feeds).to_numpy())]).astype(np.int64)
    hu, ht = _recent_pushes(wh, send_day)
    p24 = _count_before(users, sent_at, hu, ht, 24 * US_PER_HOUR)
    p7 = _count_before(users, sent_at, hu, ht, 7 * US_PER_DAY)
    scenes = t["scene_id"].to_numpy(zero_copy_only=False)
    ctx = push_context(wh.root, users, offsets, items, sent_at)
    p = truth.open_probability(users, scenes, offsets, items, sent_at, pushes_24h=p24, pushes_7d=p7, context=ctx)
    n_users = len(truth.user_tz)
    idx = truth.user_index(users)
    u_open = crn(spec.seed, send_day, 1).random(n_users)[idx]
    delay_s = np.minimum(crn(spec.seed, send_day, 2).exponential(25 * 60, n_users)[idx], 6 * 3600)
    opened = u_open < p
    opened_at = np.where(opened, sent_at + (delay_s * 1e6).astype(np.int64), -1)
    click_rng = np.random.default_rng([spec.seed, 9002, ARMS.index(arm.name), int(send_day.replace("-", ""))])
    clicked = truth.draw_clicks(click_rng, users, offsets, items, sent_at, opened)

    # receipts: the same rows with their outcome, each hour's file rewritten whole
    start = 0
    for f, part in zip(files, tables):
        n = part.num_rows
        o = opened_at[start:start + n]
        c = clicked[start:start + n]
        cols = {name: part[name] for name in part.column_names}
        cols["opened_at"] = pa.array(o, pa.int64(), mask=o < 0).cast(pa.timestamp("us", tz="UTC"))
        cols["clicked_item_id"] = pa.array(c, pa.int64(), mask=c < 0)
        tmp = f.with_name(f".{f.name}.tmp")
        pq.write_table(pa.table(cols).cast(RAW_SCHEMAS["push_log"]), tmp)
        tmp.replace(f)
        start += n
    # the opens as events, in the partition of the day they happen on (an open can spill past midnight)
    o, c = opened, clicked >= 0
    item_ids = wh.raw("items")
    meta = pq.read_table(item_ids, columns=["item_id", "seller_id", "category_id"]).to_pandas().set_index("item_id")
    ck = clicked[c]
    chunks = [_events(opened_at[o], users[o], "app_open"),
              _events(opened_at[c] + 5_000_000, users[c], "view", ck, meta.loc[ck, "seller_id"].to_numpy(),
                      meta.loc[ck, "category_id"].to_numpy())]
    ev = events_table(chunks)
    days = pc.strftime(ev["ts"], format="%Y-%m-%d")
    for day in sorted(set(days.to_pylist())):
        part = ev.filter(pc.equal(days, day))
        folder = wh.raw_partition("events", day)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".push-responses-{send_day}.tmp"
        pq.write_table(part, tmp)
        tmp.replace(folder / f"push-responses-{send_day}.parquet")
    return {"sent": int(len(users)), "opened": int(opened.sum()), "clicked": int(c.sum()),
            "expected_opens": float(p.sum())}


# ---------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------
def arm_log(arm: Arm, send_days: list[str]):
    """The arm's pushes on the evaluation days (pandas): user, scene, sent_at, opened, propensity, local hour."""
    import pandas as pd
    import pyarrow as pa

    parts = []
    for d in send_days:
        _, tables = _read_receipts(arm.wh, d)
        if tables:
            t = pa.concat_tables(tables).select(["user_id", "scene_id", "sent_at", "opened_at", "propensity",
                                                 "item_ids"])
            df = t.to_pandas()
            df["send_day"] = d
            parts.append(df)
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["user_id", "scene_id", "sent_at", "opened_at", "propensity", "item_ids", "send_day"])
    df["opened"] = df["opened_at"].notna()
    # microseconds whatever unit pandas chose for the column
    df["sent_us"] = pd.to_datetime(df["sent_at"], utc=True).dt.as_unit("us").astype("int64")
    return df


def active_days(wh: Warehouse, users: np.ndarray, send_days: list[str]) -> np.ndarray:
    """[n_users, n_days] bool: the user opened the app (organically or from a push) on that UTC day."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    pos = {u: i for i, u in enumerate(users)}
    out = np.zeros((len(users), len(send_days)), dtype=bool)
    for j, d in enumerate(send_days):
        ds = pads.dataset(str(wh.raw_partition("events", d)), format="parquet")
        t = ds.to_table(columns=["user_id"], filter=pc.field("event_type") == "app_open")
        ids = np.unique(t["user_id"].to_numpy())
        out[[pos[u] for u in ids if u in pos], j] = True
    return out


def _boot_weights(n: int, b: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 9003]).poisson(1.0, size=(b, n)).astype(np.float64)


def _ci(samples: np.ndarray) -> list[float]:
    lo, hi = np.nanpercentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def compare(arms: dict[str, Arm], send_days: list[str], spec: EvalSpec, hermes_plans) -> dict:
    """The comparison table: per arm, the ratio hermes / baseline, 95 % paired bootstrap intervals."""
    import pyarrow.parquet as pq

    from features.holdout import in_holdout
    from jobs.simulator.ground_truth import GroundTruth

    any_arm = next(iter(arms.values()))
    users_t = pq.read_table(any_arm.wh.raw("users"), columns=["user_id", "tz"])
    users = users_t["user_id"].to_numpy()
    held = in_holdout(users, spec.holdout_share)
    truth = GroundTruth.load(any_arm.wh.ground_truth)
    logs = {name: arm_log(arm, send_days) for name, arm in arms.items()}
    pos = {u: i for i, u in enumerate(users)}
    n, ndays = len(users), len(send_days)
    W = _boot_weights(n, spec.bootstrap, spec.seed)
    treated = ~held
    per_user, point, boot = {}, {}, {}
    for name, df in logs.items():
        if df["user_id"].map(lambda u: held[pos[u]]).any():
            raise AssertionError(f"{name}: a holdout user was pushed")
        ui = df["user_id"].map(pos).to_numpy()
        sends = np.bincount(ui, minlength=n).astype(float)
        opens = np.bincount(ui, weights=df["opened"].to_numpy().astype(float), minlength=n)
        # disturbance: pushes landing in an hour the user is rarely active in (ground-truth activity profile)
        tidx = truth.user_index(df["user_id"].to_numpy())
        local = truth.local_hour(tidx, df["sent_us"].to_numpy())
        inactive = truth.user_hour_profile[tidx, local] < INACTIVE_PROFILE
        disturb = np.bincount(ui, weights=inactive.astype(float), minlength=n)
        act = active_days(arms[name].wh, users, send_days).sum(axis=1).astype(float)
        per_user[name] = {"sends": sends, "opens": opens, "disturb": disturb, "active": act}
        t = treated.astype(float)
        h = held.astype(float)
        stats = {
            "open_rate": (W @ opens) / (W @ sends),
            "opens_per_user_day": (W @ (opens * t)) / (W @ t) / ndays,
            "sends_per_user_day": (W @ (sends * t)) / (W @ t) / ndays,
            "user_coverage": (W @ ((sends > 0) * t)) / (W @ t),
            "disturbance_share": (W @ disturb) / (W @ sends),
            "activation": (W @ (act * t)) / (W @ t) / ndays,
            "activation_holdout": (W @ (act * h)) / (W @ h) / ndays,
        }
        stats["incremental_activation"] = stats["activation"] - stats["activation_holdout"]
        boot[name] = stats
        point[name] = {
            "open_rate": float(opens.sum() / max(sends.sum(), 1)),
            "opens_per_user_day": float((opens * t).sum() / t.sum() / ndays),
            "sends_per_user_day": float((sends * t).sum() / t.sum() / ndays),
            "user_coverage": float(((sends > 0) * t).sum() / t.sum()),
            "disturbance_share": float(disturb.sum() / max(sends.sum(), 1)),
            "activation": float((act * t).sum() / t.sum() / ndays),
            "activation_holdout": float((act * h).sum() / max(h.sum(), 1) / ndays),
            "sends": int(sends.sum()), "opens": int(opens.sum()), "users": int(n), "holdout_users": int(h.sum()),
        }
        point[name]["incremental_activation"] = point[name]["activation"] - point[name]["activation_holdout"]
        mix = df["scene_id"].value_counts(normalize=True)
        point[name]["scene_mix"] = {k: round(float(v), 4) for k, v in mix.items()}
        point[name]["scene_coverage"] = int((mix >= SCENE_COVERAGE_SHARE).sum())
    table = {}
    for metric in ("open_rate", "opens_per_user_day", "sends_per_user_day", "user_coverage", "disturbance_share",
                   "activation", "activation_holdout", "incremental_activation"):
        row = {}
        for name in arms:
            row[name] = point[name][metric]
            row[f"{name}_ci"] = _ci(boot[name][metric])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = boot["hermes"][metric] / boot["baseline"][metric]
        row["ratio"] = point["hermes"][metric] / point["baseline"][metric] if point["baseline"][metric] else None
        row["ratio_ci"] = _ci(ratio) if np.isfinite(ratio).any() else None
        row["diff"] = point["hermes"][metric] - point["baseline"][metric]
        row["diff_ci"] = _ci(boot["hermes"][metric] - boot["baseline"][metric])
        table[metric] = row
    table["scene_coverage"] = {name: point[name]["scene_coverage"] for name in arms}
    table["scene_coverage"]["ratio"] = (point["hermes"]["scene_coverage"] / point["baseline"]["scene_coverage"]
                                        if point["baseline"]["scene_coverage"] else None)
    ope = off_policy(logs["baseline"], hermes_plans, point["hermes"]["open_rate"])
    daily = {name: df.groupby("send_day").agg(sends=("opened", "size"), opens=("opened", "sum")).reset_index()
             .to_dict("records") for name, df in logs.items()}
    load = {name: np.bincount(((df["sent_us"].to_numpy() // US_PER_HOUR) % 24).astype(int), minlength=24).tolist()
            for name, df in logs.items()}
    return {"table": table, "arms": point, "off_policy": ope, "daily": daily, "hourly_load": load}


def off_policy(baseline_log, hermes_plans, measured: float) -> dict:
    """IPS and SNIPS estimates of Hermes' open rate from the baseline arm's logged pushes.

    Action = the scene (the only thing Push 1.0 randomises, with its logged propensity). Hermes' action for a
    logged (user, day) is the scene its own arm planned for that user that day; a logged push counts when the
    scenes agree, weighted 1 / propensity. The estimate holds the material and the hour at Push 1.0's (one
    popular item, one fixed hour): it measures Hermes' scene choice, not its feed or timing."""
    df = baseline_log.merge(hermes_plans, on=["user_id", "send_day"], how="left", suffixes=("", "_hermes"))
    match = (df["scene_id"] == df["scene_id_hermes"]).to_numpy().astype(float)
    w = match / df["propensity"].to_numpy()
    r = df["opened"].to_numpy().astype(float)
    n = len(df)
    ips = float((w * r).sum() / n) if n else None
    # IPS above averages over every logged push, counting those Hermes would not have sent as 0 opens; the
    # open rate among what Hermes sends is its value over the share Hermes would send, i.e. SNIPS.
    snips = float((w * r).sum() / w.sum()) if w.sum() > 0 else None
    ess = float(w.sum() ** 2 / (w ** 2).sum()) if w.sum() > 0 else 0.0
    return {"logged_pushes": int(n), "matching_pushes": int(match.sum()), "ips_value_per_logged_push": ips,
            "snips_open_rate": snips, "effective_sample_size": round(ess, 1),
            "baseline_logged_open_rate": float(r.mean()) if n else None, "closed_loop_hermes_open_rate": measured}


def hermes_plan_scenes(arm: Arm, send_days: list[str]):
    """(user_id, send_day, scene_id) Hermes planned (a slot assigned) for each evaluation day."""
    import pandas as pd
    import pyarrow.compute as pc

    parts = []
    for d in send_days:
        ds = (date.fromisoformat(d) - timedelta(days=1)).isoformat()
        t = arm.wh.read_arrow("plan/windows", ds, ["user_id", "policy", "scene_id", "slot"])
        t = t.filter(pc.and_(pc.equal(t["policy"], "hermes"), pc.greater_equal(t["slot"], 0)))
        df = t.select(["user_id", "scene_id"]).to_pandas()
        df["send_day"] = d
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------
def _fmt(v, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:.2f} %" if pct else f"{v:.3f}"


def markdown(result: dict, spec: EvalSpec, seconds: float) -> str:
    t = result["table"]
    pct = {"open_rate", "user_coverage", "disturbance_share", "activation", "activation_holdout",
           "incremental_activation"}
    # a ratio of two small differences means nothing: those rows show Hermes - Push 1.0 instead
    as_diff = {"activation_holdout", "incremental_activation"}
    lines = [f"# Hermes vs Push 1.0 — seed {spec.seed}, {spec.users:,} users, {spec.days} days closed loop "
             f"({spec.history_days} days of Push 1.0 history), holdout {spec.holdout_share:.0%}", "",
             "| metric | Push 1.0 | Hermes | Hermes / Push 1.0 (95 % CI) |", "|---|---|---|---|"]
    for m, row in t.items():
        if m == "scene_coverage":
            lines.append(f"| scene coverage (scenes with >= 1 % of sends) | {row['baseline']} | {row['hermes']} | "
                         f"{row['ratio']:.2f}x |" if row["ratio"] else f"| scene coverage | {row['baseline']} | "
                         f"{row['hermes']} | - |")
            continue
        p = m in pct
        ci = row.get("ratio_ci")
        ratio = f"{row['ratio']:.2f}x ({ci[0]:.2f}–{ci[1]:.2f})" if row.get("ratio") is not None and ci else "-"
        if m in as_diff:
            d, dci = row["diff"], row["diff_ci"]
            ratio = f"{100 * d:+.2f} pp ({100 * dci[0]:+.2f}–{100 * dci[1]:+.2f}), difference"
        lines.append(f"| {m.replace('_', ' ')} | {_fmt(row['baseline'], p)} ({_fmt(row['baseline_ci'][0], p)}–"
                     f"{_fmt(row['baseline_ci'][1], p)}) | {_fmt(row['hermes'], p)} ({_fmt(row['hermes_ci'][0], p)}–"
                     f"{_fmt(row['hermes_ci'][1], p)}) | {ratio} |")
    o = result["off_policy"]
    lines += ["", f"Off-policy from Push 1.0's log: {o['logged_pushes']:,} logged pushes, {o['matching_pushes']:,} where "
              f"Hermes chose the same scene, SNIPS open rate {_fmt(o['snips_open_rate'], True)} (ESS "
              f"{o['effective_sample_size']:.0f}) vs closed-loop Hermes {_fmt(o['closed_loop_hermes_open_rate'], True)} "
              f"and Push 1.0 logged {_fmt(o['baseline_logged_open_rate'], True)}.",
              "", f"Scene mix: Push 1.0 {result['arms']['baseline']['scene_mix']}; Hermes "
              f"{result['arms']['hermes']['scene_mix']}", "", f"Run time: {seconds / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def plots(result: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in result["daily"].items():
        ax.plot([r["send_day"] for r in rows], [r["opens"] / max(r["sends"], 1) for r in rows], marker="o",
                label="Push 1.0" if name == "baseline" else "Hermes")
    ax.set_ylabel("push open rate"), ax.set_title("Daily open rate per policy (closed loop)"), ax.legend()
    fig.autofmt_xdate()
    out.append(folder / "daily_open_rate.png")
    fig.savefig(out[-1], dpi=100, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(7, 4))
    hours = np.arange(24)
    for k, (name, load) in enumerate(result["hourly_load"].items()):
        ax.bar(hours + (k - 0.5) * 0.4, load, width=0.4, label="Push 1.0" if name == "baseline" else "Hermes")
    ax.set_xlabel("UTC hour"), ax.set_ylabel("pushes over all days"), ax.set_title("Load per hour"), ax.legend()
    out.append(folder / "hourly_load.png")
    fig.savefig(out[-1], dpi=100, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(7, 4))
    scenes = sorted(set(result["arms"]["baseline"]["scene_mix"]) | set(result["arms"]["hermes"]["scene_mix"]))
    y = np.arange(len(scenes))
    for k, name in enumerate(ARMS):
        mix = result["arms"][name]["scene_mix"]
        ax.barh(y + (k - 0.5) * 0.4, [mix.get(s, 0) for s in scenes], height=0.4,
                label="Push 1.0" if name == "baseline" else "Hermes")
    ax.set_yticks(y, scenes), ax.set_xlabel("share of sends"), ax.set_title("Scene mix"), ax.legend()
    ax.axvline(SCENE_COVERAGE_SHARE, color="grey", linestyle=":")
    out.append(folder / "scene_mix.png")
    fig.savefig(out[-1], dpi=100, bbox_inches="tight")
    plt.close("all")
    return out


def log_mlflow(base: Settings, spec: EvalSpec, result: dict, files: list[Path], seconds: float) -> str:
    import mlflow

    from training.registry import configure_mlflow

    configure_mlflow(base.mlflow_tracking_uri, base.home / "mlflow" / "artifacts", EXPERIMENT)
    with mlflow.start_run(run_name=f"push1-vs-hermes-seed{spec.seed}") as run:
        mlflow.log_params({"users": spec.users, "days": spec.days, "seed": spec.seed,
                           "history_days": spec.history_days, "holdout_share": spec.holdout_share})
        for m, row in result["table"].items():
            for name in ARMS:
                mlflow.log_metric(f"{name}.{m}", float(row[name]))
            if row.get("ratio") is not None:
                mlflow.log_metric(f"ratio.{m}", float(row["ratio"]))
            if row.get("diff") is not None:
                mlflow.log_metric(f"diff.{m}", float(row["diff"]))
        for k, v in result["off_policy"].items():
            if isinstance(v, (int, float)) and v is not None:
                mlflow.log_metric(f"off_policy.{k}", float(v))
        for name, rows in result["daily"].items():
            for step, r in enumerate(rows):
                mlflow.log_metric(f"{name}.daily_open_rate", r["opens"] / max(r["sends"], 1), step=step)
        mlflow.log_metric("seconds", seconds)
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id


def report(base: Settings, spec: EvalSpec, out: Path, days: dict | None = None, seconds: float | None = None) -> dict:
    """Compare the two arms already lived under `out`, write report.json / report.md / plots, log one MLflow
    run. Also `hermes evaluate --report-only` (re-reports an evaluation without living it again)."""
    from jobs.config.loader import load_config

    loaded = eval_config(load_config(base.conf_dir), spec)
    arms = {name: Arm(name, arm_settings(base, out, name), loaded) for name in ARMS}
    send_days = send_days_of(spec)
    if days is None or seconds is None:
        old = json.loads((out / "report.json").read_text())
        days, seconds = old["days"], old["seconds"]
    result = compare(arms, send_days, spec, hermes_plan_scenes(arms["hermes"], send_days))
    result["days"] = days
    result["seconds"] = round(seconds, 1)
    result["spec"] = spec.__dict__
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    md = markdown(result, spec, seconds)
    (out / "report.md").write_text(md)
    files = [out / "report.json", out / "report.md", *plots(result, out)]
    result["mlflow_run_id"] = log_mlflow(base, spec, result, files, seconds)
    log.info("evaluation written to %s (MLflow run %s)", out, result["mlflow_run_id"])
    print(md)
    return result


def run(base: Settings, spec: EvalSpec, out: Path | None = None, spark=None) -> dict:
    """The whole evaluation; needs the object store and the gateway reachable (infra/evaluate.sh starts them).
    `spark`: a session to use (else one is started and stopped here)."""
    from contextlib import nullcontext

    from delivery.objectstore import ensure_bucket
    from jobs.entry import spark_session

    t0 = time.monotonic()
    out = Path(out or base.home / "evaluation" / f"seed={spec.seed}")
    arms, send_days = prepare(base, spec, out)
    for arm in arms.values():
        ensure_bucket(arm.settings)
    days = {name: [] for name in arms}
    with (nullcontext(spark) if spark is not None else spark_session(base, f"hermes-evaluate-{spec.seed}")) as spark:
        for d in send_days:
            for name, arm in arms.items():
                days[name].append(live_day(spark, arm, d, spec))
    return report(base, spec, out, days, time.monotonic() - t0)
