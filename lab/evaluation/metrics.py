"""The comparison of the two arms: per-arm metrics, ratios with paired bootstrap intervals, the holdout's
incremental activation and the off-policy estimate of Hermes from the baseline's log."""
from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from core.warehouse import Warehouse
from lab.evaluation.arms import INACTIVE_PROFILE, REALTIME, SCENE_COVERAGE_SHARE, US_PER_HOUR, Arm, EvalSpec
from lab.evaluation.outcomes import read_receipts


def arm_log(arm: Arm, send_days: list[str]):
    """The arm's pushes on the evaluation days (pandas): user, scene, sent_at, opened, propensity, local hour."""
    import pandas as pd
    import pyarrow as pa

    parts = []
    for d in send_days:
        _, tables = read_receipts(arm.wh, d)
        if tables:
            t = pa.concat_tables(tables).select(["user_id", "scene_id", "sent_at", "opened_at", "propensity",
                                                 "item_ids", "policy"])
            df = t.to_pandas()
            df["send_day"] = d
            parts.append(df)
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["user_id", "scene_id", "sent_at", "opened_at", "propensity", "item_ids", "policy", "send_day"])
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
    from lab.simulator.ground_truth import GroundTruth

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
    if REALTIME in arms:          # Hermes + real-time against Hermes nightly (paired: the same users, the same dice)
        for metric, row in table.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                r = boot[REALTIME][metric] / boot["hermes"][metric]
            row["rt_vs_hermes"] = point[REALTIME][metric] / point["hermes"][metric] if point["hermes"][metric] else None
            row["rt_vs_hermes_ci"] = _ci(r) if np.isfinite(r).any() else None
            row["rt_minus_hermes"] = point[REALTIME][metric] - point["hermes"][metric]
            row["rt_minus_hermes_ci"] = _ci(boot[REALTIME][metric] - boot["hermes"][metric])
        point[REALTIME]["triggered"] = triggered(logs[REALTIME], point)
    table["scene_coverage"] = {name: point[name]["scene_coverage"] for name in arms}
    table["scene_coverage"]["ratio"] = (point["hermes"]["scene_coverage"] / point["baseline"]["scene_coverage"]
                                        if point["baseline"]["scene_coverage"] else None)
    ope = off_policy(logs["baseline"], hermes_plans, point["hermes"]["open_rate"])
    daily = {name: df.groupby("send_day").agg(sends=("opened", "size"), opens=("opened", "sum")).reset_index()
             .to_dict("records") for name, df in logs.items()}
    load = {name: np.bincount(((df["sent_us"].to_numpy() // US_PER_HOUR) % 24).astype(int), minlength=24).tolist()
            for name, df in logs.items()}
    return {"table": table, "arms": point, "off_policy": ope, "daily": daily, "hourly_load": load}


def triggered(rt_log, point: dict) -> dict:
    """The real-time arm's triggered pushes: how many, their open rate, against Push 1.0's and Hermes nightly's."""
    trig = rt_log[rt_log["policy"].fillna("").str.startswith("trigger:")]
    rate = float(trig["opened"].mean()) if len(trig) else None
    base, nightly = point["baseline"]["open_rate"], point["hermes"]["open_rate"]
    return {"pushes": int(len(trig)), "opens": int(trig["opened"].sum()), "open_rate": rate,
            "vs_push1": rate / base if rate is not None and base else None,
            "vs_hermes_nightly": rate / nightly if rate is not None and nightly else None,
            "by_rule": {k: {"pushes": int(len(g)), "open_rate": float(g["opened"].mean())}
                        for k, g in trig.groupby("policy")}}


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


