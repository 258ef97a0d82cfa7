"""Nightly stage: the send window of every planned push, for Hermes and for the Push 1.0 baseline.

Reads plan/selected, plan/baseline, plan/eligible and features/user_features for ds; writes plan/windows
(one row per policy x user: the UTC hour slot of the send day ds+1, its local hour, the open probability
there, exploration flag and the propensities of its hour and scene, or why no slot was given) and reports/windows/ds=<ds>/windows.json
(hourly load against capacity, expected opens, loss against the unconstrained optimum).

Single process (pyarrow + numpy): 1M users x 24 slots fit in memory and the optimiser is vectorised, so a
Spark session would only add start-up time. No pushes are lost: every selected user gets a slot or a reason.
"""
from __future__ import annotations

import json
import logging
from datetime import date, timedelta

import numpy as np

from core.settings import Settings
from core.warehouse import Warehouse

log = logging.getLogger(__name__)
WINDOWS = "plan/windows"
FIT_USERS = 200_000    # users the day-type strength is fitted on (a fixed hash sample of the planned ones)
SHIFT_FIT_USERS = 50_000    # ... and the population's move between day types (9 numbers)


def send_day(ds: str) -> str:
    """The UTC day whose hours the nightly run for ds fills: the day after ds."""
    return (date.fromisoformat(ds) + timedelta(days=1)).isoformat()


def _us(col) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(col, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)


def eligible_frame(wh: Warehouse, ds: str):
    """plan/eligible's (user, scene) rows with what a window needs: tz, platform, earliest send time, end of plan day
    (read once for both policies)."""
    import pandas as pd

    el = wh.read_arrow("plan/eligible", ds, ["user_id", "scene_id", "tz", "platform", "plan_date", "earliest_send_at",
                                             "plan_day_end"])
    return pd.DataFrame({"user_id": el["user_id"].to_numpy(), "scene_id": el["scene_id"].to_numpy(zero_copy_only=False),
                         "plan_date": el["plan_date"].cast("string").to_numpy(zero_copy_only=False),
                         "tz": el["tz"].to_numpy(zero_copy_only=False),
                         "platform": el["platform"].to_numpy(zero_copy_only=False),
                         "earliest": _us(el["earliest_send_at"]), "end": _us(el["plan_day_end"])})


def _people(wh: Warehouse, ds: str, users: np.ndarray, scenes: np.ndarray, el_df=None):
    """Per planned (user, scene): tz, platform, earliest send time and end of plan day from plan/eligible (el_df:
    eligible_frame, when the caller has read it)."""
    import pandas as pd

    el_df = eligible_frame(wh, ds) if el_df is None else el_df
    plan = pd.DataFrame({"user_id": users, "scene_id": scenes})
    out = plan.merge(el_df, on=["user_id", "scene_id"], how="left", validate="one_to_one")
    missing = int(out["tz"].isna().sum())
    if missing:
        raise ValueError(f"plan/windows: {missing} planned (user_id, scene_id) pairs are not in plan/eligible for "
                         f"ds={ds} (rule: every planned push must have survived fatigue)")
    return out


def _hours(table, column: str) -> np.ndarray:
    return np.asarray(table[column].combine_chunks().flatten().to_numpy(), dtype=np.int32).reshape(-1, 24)


def plan_days(el_df, users: np.ndarray, ds: str) -> np.ndarray:
    """Each user's local plan day (ISO date) from plan/eligible (fatigue's: the send day, or the day after it in
    zones far east); the send day for a user without a row."""
    import pandas as pd

    by_user = el_df.drop_duplicates("user_id").set_index("user_id")["plan_date"]
    return pd.Series(users).map(by_user).fillna(send_day(ds)).to_numpy(object)


def _profiles(wh: Warehouse, ds: str, users: np.ndarray, w, days: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Per planned user: the hour profile of their plan day's type [n, 24] (days: each user's plan day, `plan_days`;
    default the send day for all), the all-days profile [n, 24] (what scoring's reference hour assumed), the peak
    local hour, and which profile times the day (said in the report). The population's part (the prior the profiles
    are smoothed toward, each day type's move and strength) is fitted on `users`: `run` passes the night's planned
    users of both policies, so Hermes and Push 1.0 are timed by one model of the market's habits, fitted once (at 1M
    users the fits took ~15 s a policy), and once more for the other day type when some users' plan day is of it."""
    import pandas as pd

    from features.windows import (
        day_type_profiles,
        fit_day_shift,
        fit_day_type_strength,
        hour_profiles,
        is_day_off,
        moved_profiles,
        user_hash,
    )
    from jobs.score import DEFAULT_LOCAL_HOUR

    cols = ["user_id", "app_open_hours", "push_open_hours", "peak_local_hour"]
    by_day = bool(w.weekend_days) and "app_open_hours_weekend" in wh.schema("features/user_features", ds).names
    uf = wh.read_arrow("features/user_features", ds, cols + (["app_open_hours_weekend"] if by_day else []))
    pos = pd.Index(uf["user_id"].to_numpy()).get_indexer(users)
    if (pos < 0).any():
        raise ValueError(f"plan/windows: {(pos < 0).sum()} planned users have no row in features/user_features "
                         f"ds={ds}")
    app, push = _hours(uf, "app_open_hours")[pos], _hours(uf, "push_open_hours")[pos]
    q_all, _ = hour_profiles(app, push, w.push_open_weight, w.prior_strength)
    peak = uf["peak_local_hour"].to_numpy(zero_copy_only=False)
    peak = np.where(pd.isna(peak), DEFAULT_LOCAL_HOUR, peak).astype(np.int64)
    if not by_day:
        why = ("one profile for all days (platform.windows.weekend_days is empty)" if not w.weekend_days else
               f"one profile for all days (features/user_features ds={ds} predates app_open_hours_weekend)")
        return q_all, q_all, peak[pos], why
    weekend = _hours(uf, "app_open_hours_weekend")[pos]
    days = np.full(len(users), send_day(ds), dtype=object) if days is None else days
    off_of = {d: is_day_off(d, w.weekend_days) for d in set(days.tolist())}
    off_u = pd.Series(days).map(off_of).to_numpy(dtype=bool)
    order = np.argsort(user_hash(users, "hermes-day-type"), kind="stable")     # fixed hash samples: seconds at 1M
    sample, few = np.sort(order[:FIT_USERS]), np.sort(order[:SHIFT_FIT_USERS])
    q_day = np.empty_like(q_all)
    said = []
    for off in (True, False):
        rows = off_u == off
        if not rows.any():
            continue
        day_type = weekend if off else app - weekend
        q_other, _ = hour_profiles(app - day_type, push, w.push_open_weight, w.prior_strength)
        shifts, weights, move = fit_day_shift(day_type[few], q_other[few])
        strength, fit = w.day_type_strength, None
        if strength is None:
            strength, fit = fit_day_type_strength(day_type[sample], moved_profiles(q_other[sample], shifts, weights))
        q_day[rows] = day_type_profiles(moved_profiles(q_other[rows], shifts, weights), day_type[rows], strength)
        del q_other
        how = ("fitted on the users' opens (empirical Bayes: " + json.dumps(fit) + ")") if fit else \
            "platform.windows.day_type_strength"
        said.append(f"{int(rows.sum()):,} users by their {'days-off' if off else 'working-day'} hours (plan days "
                    f"{sorted({d for d, o in off_of.items() if o == off})}): their opens on such days, pulled toward "
                    f"their other days' hours moved as the population's move {json.dumps(move)}, with {strength:g} "
                    f"pseudo-opens, {how}")
    return q_day, q_all, peak[pos], f"weekend days {list(w.weekend_days)}; " + "; ".join(said)


def push_load(wh: Warehouse, ds: str, users: np.ndarray, recal) -> tuple[np.ndarray, np.ndarray] | None:
    """(pushes the day before, pushes in the 7 days before) of each planned user [n, 1], as scoring saw them
    (features/sides_user: the features u_pushes_1d and u_pushes_7d), for the recalibration's fatigue terms; None when
    the recalibration has none. A user without a row had no activity: 0."""
    from jobs.score import SIDES_USER

    if recal.fatigue_1d == 0.0 and recal.fatigue_7d == 0.0:
        return None
    if not wh.partition(SIDES_USER, ds).exists():
        raise ValueError(f"plan/windows: {SIDES_USER} ds={ds} is missing (rule: the recalibration's fatigue terms need "
                         f"each planned user's pushes before the plan day, which the score stage writes)")
    t = wh.read_arrow(SIDES_USER, ds, ["user_id", "pushes_recent_1d", "pushes_7d"]).to_pandas()
    t = t.drop_duplicates("user_id").set_index("user_id").reindex(users).fillna(0.0)
    return (t["pushes_recent_1d"].to_numpy(np.float64)[:, None], t["pushes_7d"].to_numpy(np.float64)[:, None])


def recalibrated(raw_value: np.ndarray, table, wh: Warehouse, ds: str, recal) -> np.ndarray:
    """The plan's values [users, slots] through the model version's recalibration (training fitted it on its
    holdout's pushes; identity without enough of them), each push with its feed's length, its scene, its user's push
    load (`push_load`) and whether it holds an item of the user's interest (`feed_interest`). It is the model's
    calibration, so both policies' estimates get it and the plan report compares like with like. recal None: the raw
    values."""
    import pyarrow.compute as pc

    if recal is None:
        return raw_value
    users = table["user_id"].to_numpy()
    scenes = table["scene_id"].to_numpy(zero_copy_only=False).astype(object)
    n_items = pc.fill_null(pc.list_value_length(table["item_ids"]), 1).to_numpy().astype(np.float64)[:, None]
    return recal.apply(raw_value, n_items, scenes[:, None], pushes=push_load(wh, ds, users, recal),
                       interest=feed_interest(table)[:, None])


def feed_interest(table) -> np.ndarray:
    """1.0 for each feed holding an item of its user's interest (item_interest, one 0/1 per item of the feed:
    features/selection.py), else 0.0; a plan selected before it has no such column (all 0)."""
    import pyarrow.compute as pc

    out = np.zeros(table.num_rows, dtype=np.float64)
    if "item_interest" not in table.column_names or table.num_rows == 0:
        return out
    col = table["item_interest"].combine_chunks()
    flat = pc.fill_null(pc.list_flatten(col), 0).to_numpy(zero_copy_only=False).astype(np.float64)
    np.maximum.at(out, pc.list_parent_indices(col).to_numpy(), (flat > 0).astype(np.float64))
    return out


def carried_load(wh: Warehouse, ds: str, policy: str, slots: int) -> np.ndarray:
    """Pushes per slot that the previous night's plan already holds: its slots 24-35 are this plan's UTC hours
    0-11 (users west of UTC). They go out with this send day's hours, so they use up its capacity first."""
    from datetime import date, timedelta

    from features.windows import DAY_SLOTS

    load = np.zeros(slots, dtype=np.int64)
    prev = (date.fromisoformat(ds) - timedelta(days=1)).isoformat()
    if not wh.partition(WINDOWS, prev).exists():
        return load
    t = wh.read_arrow(WINDOWS, prev, ["policy", "slot"]).to_pandas()
    over = t.loc[(t["policy"] == policy) & (t["slot"] >= DAY_SLOTS), "slot"].to_numpy().astype(np.int64) - DAY_SLOTS
    np.add.at(load, over[over < slots], 1)
    return load


def version_recalibration(version: str, wh: Warehouse | None = None, ds: str | None = None):
    """The feed-level recalibration of this model version: refitted on ds's holdout when the gate of ds kept it as
    champion (reports/training/ds=<ds>/gate.json), else the one training fitted (its tags; identity without)."""
    from features.windows import Recalibration
    from training.registry import version_tags
    from training.train import BREADTH_TAG, FATIGUE_TAGS, INTEREST_TAG, RECAL_TAGS, SCENE_RECAL_TAG

    if wh is not None and ds is not None and wh.report("training", ds, "gate").exists():
        refit = json.loads(wh.report("training", ds, "gate").read_text()).get("champion_recalibration")
        if refit and str(refit["version"]) == str(version):
            return Recalibration.from_dict(refit, reason=f"version {version} kept as champion, refitted on ds={ds}'s "
                                                         f"holdout: {refit['reason']}")

    tags = version_tags(version)
    if not all(t in tags for t in RECAL_TAGS):
        return Recalibration(reason=f"version {version} has no recalibration tags")
    return Recalibration(a=float(tags[RECAL_TAGS[0]]), b=float(tags[RECAL_TAGS[1]]), c=float(tags.get(BREADTH_TAG, 0.0)),
                         scene={k: float(v) for k, v in json.loads(tags.get(SCENE_RECAL_TAG) or "{}").items()},
                         fatigue_1d=float(tags.get(FATIGUE_TAGS[0], 0.0)), fatigue_7d=float(tags.get(FATIGUE_TAGS[1], 0.0)),
                         interest=float(tags.get(INTEREST_TAG, 0.0)),
                         reason=f"version {version}'s holdout")


def version_history_scenes(version: str) -> dict[str, int] | None:
    """{scene_id: training pushes} the model version's fit saw (its tag; None for a version registered before it)."""
    from training.registry import version_tags
    from training.train import HISTORY_SCENES_TAG

    tags = version_tags(version)
    return json.loads(tags[HISTORY_SCENES_TAG]) if HISTORY_SCENES_TAG in tags else None


def plan_policy(policy: str, table, wh: Warehouse, ds: str, config, elasticity: float,
                explore_share: float | None = None, recal=None, profiles=None, el_df=None) -> tuple[dict, dict]:
    """Arrays of one policy's windows (column name -> array) and its stats. explore_share: users sent at a random
    allowed hour (default windows.exploration_share; larger while the prior policy plans). profiles: `_profiles` of
    these users, when the caller fitted them on a wider set (`run`: both policies' users); el_df: eligible_frame."""
    from features.windows import allowed_slots, assign, explorers, fixed_hour, local_hours, slot_starts, slot_values, user_hash

    p = config.platform
    w = p.windows
    day = send_day(ds)
    users = table["user_id"].to_numpy()
    scenes = table["scene_id"].to_numpy(zero_copy_only=False).astype(object)
    people = _people(wh, ds, users, scenes, el_df)
    q, q_all, ref_hour, timed_by = (_profiles(wh, ds, users, w, people["plan_date"].to_numpy(object))
                                    if profiles is None else profiles)
    starts = slot_starts(day)
    lh = local_hours(starts, people["tz"].to_numpy())
    allowed = allowed_slots(starts, lh, people["earliest"].to_numpy(), people["end"].to_numpy(),
                            (p.quiet_hours.start_hour, p.quiet_hours.end_hour), w.first_send_hour_utc)
    # scheduled scenes go out at their hour, or within the next few hours when capacity is short
    by_id = {s.id: s for s in config.scenes}
    for sid in np.unique(scenes):
        sc = by_id.get(sid)
        if sc is not None and sc.trigger == "scheduled":
            rows = scenes == sid
            hour = sc.send_hour_local if sc.send_hour_local is not None else p.baseline_hour_local
            off = (lh[rows].astype(np.int64) - hour) % 24
            allowed[rows] &= off < w.scheduled_window_hours
            ref_hour[rows] = hour           # jobs/score.py scored these pushes at their own hour
    p_ref = table["expected_open"].to_numpy(zero_copy_only=False).astype(np.float64)
    raw_value = slot_values(p_ref, q, ref_hour, lh, allowed, elasticity,
                            ref_share=q_all[np.arange(len(users)), ref_hour])
    del q_all
    value = recalibrated(raw_value, table, wh, ds, recal)
    capacity = np.maximum(np.full(len(starts), p.gateway.max_per_hour, dtype=np.int64)
                          - carried_load(wh, ds, w.policy, len(starts)), 0)
    if policy == "hermes":
        share = w.exploration_share if explore_share is None else explore_share
        explore = explorers(users, day, share)
        # an explored push's hour is drawn by the user's activity share at it (every allowed hour keeps a chance)
        weights = (np.take_along_axis(q.astype(np.float32), lh, axis=1)
                   if w.exploration_hours == "activity" else None)
        a = assign(value, capacity, explore, share, seed=int(day.replace("-", "")), explore_weights=weights)
        del weights
    else:
        order = np.argsort(user_hash(users, f"hermes-order-{day}"), kind="stable")
        a = fixed_hour(value, lh, p.baseline_hour_local, capacity, order)
    got = a.slot >= 0
    slot = np.maximum(a.slot, 0).astype(np.int64)
    start_us = np.array([int(s.timestamp() * 1_000_000) for s in starts], dtype=np.int64)
    cols = {
        "user_id": users, "policy": np.full(len(users), policy, dtype=object), "scene_id": scenes,
        "slot": np.where(got, a.slot, -1).astype(np.int16),
        "send_at_us": np.where(got, start_us[slot], -1),
        "local_hour": np.where(got, lh[np.arange(len(users)), slot], -1).astype(np.int16),
        "p_open": a.value.astype(np.float64), "p_open_ref": p_ref,
        "p_open_model": np.where(got, raw_value[np.arange(len(users)), slot], np.nan),
        "explored": a.explored, "hour_propensity": a.propensity, "reason": a.reason,
        "platform": people["platform"].to_numpy(), "tz": people["tz"].to_numpy(),
    }
    stats = a.stats | {"load": a.load.tolist(), "capacity": capacity.tolist(), "timed_by": timed_by}
    return cols, stats


def to_arrow(cols: dict, table):
    import pyarrow as pa

    send_at = pa.array(cols["send_at_us"], pa.int64(), mask=cols["send_at_us"] < 0).cast(pa.timestamp("us", tz="UTC"))
    return pa.table({
        "user_id": pa.array(cols["user_id"], pa.int64()), "policy": pa.array(cols["policy"], pa.string()),
        "scene_id": pa.array(cols["scene_id"], pa.string()),
        "item_ids": table["item_ids"], "item_p_open": table["item_p_open"],
        # a plan selected before feeds held reserves has none (delivery then only trims)
        "reserve_ids": (table["reserve_ids"] if "reserve_ids" in table.column_names
                        else pa.array([[]] * table.num_rows, pa.list_(pa.int64()))),
        "model_version": table["model_version"].cast(pa.string()),
        # one 0/1 per item: the user favourited or carted it or follows its seller (null for a plan selected before)
        "item_interest": (table["item_interest"].cast(pa.list_(pa.int32())) if "item_interest" in table.column_names
                          else pa.nulls(table.num_rows, pa.list_(pa.int32()))),
        "slot": pa.array(cols["slot"], pa.int16()), "send_at": send_at,
        "local_hour": pa.array(cols["local_hour"], pa.int16()),
        "p_open": pa.array(cols["p_open"], pa.float64()), "p_open_ref": pa.array(cols["p_open_ref"], pa.float64()),
        "p_open_model": pa.array(cols["p_open_model"], pa.float64(), from_pandas=True),
        "explored": pa.array(cols["explored"], pa.bool_()),
        "hour_propensity": pa.array(cols["hour_propensity"], pa.float64()),
        "scene_propensity": table["scene_propensity"].cast(pa.float64()),
        "reason": pa.array(cols["reason"], pa.string()),
        "platform": pa.array(cols["platform"], pa.string()), "tz": pa.array(cols["tz"], pa.string()),
    })


def run(settings: Settings, ds: str, loaded) -> dict:
    import pandas as pd
    import pyarrow as pa

    from features.windows import Recalibration
    from training.prior import PRIOR
    from training.registry import configure_mlflow, version_policy, version_tag
    from training.train import TIMING_TAG

    wh = Warehouse(settings.warehouse)
    config = loaded.config
    need = ["user_id", "scene_id", "item_ids", "item_p_open", "expected_open", "model_version", "scene_propensity"]
    tables = {p: wh.read_arrow(t, ds, need + [c for c in ("reserve_ids", "item_interest") if c in wh.schema(t, ds).names])
              for p, t in (("hermes", "plan/selected"), ("baseline", "plan/baseline"))}
    versions = set(tables["hermes"]["model_version"].unique().to_pylist())
    if len(versions) > 1:
        raise ValueError(f"plan/selected ds={ds}: rows from several model versions {sorted(versions)} "
                         "(rule: one plan, one model)")
    configure_mlflow(settings.mlflow_tracking_uri, settings.home / "mlflow" / "artifacts")
    elasticity = float(version_tag(next(iter(versions)), TIMING_TAG)) if versions else 0.0
    model_policy = version_policy(next(iter(versions))) if versions else None
    explore = config.platform.training.cold_start_explore_share if model_policy == PRIOR else None
    recal = version_recalibration(next(iter(versions)), wh, ds) if versions else Recalibration()
    history_scenes = version_history_scenes(next(iter(versions))) if versions else None
    log.info("windows %s: the model version's recalibration: a=%.3f b=%.3f c=%.3f, %d scene offsets, fatigue outside "
             "the slope %+.3f / %+.3f per push the day before / in 7 days, e=%+.3f for a feed of the user's interest "
             "(%s)", ds, recal.a, recal.b, recal.c, len(recal.scene), recal.fatigue_1d, recal.fatigue_7d, recal.interest,
             recal.reason)
    parts, stats = [], {}
    # one model of the users' hours for the night, fitted on everyone either policy plans; each policy takes its rows
    planned = {p: t["user_id"].to_numpy() for p, t in tables.items()}
    union = np.unique(np.concatenate([*planned.values(), np.zeros(0, dtype=np.int64)]))
    el_df = eligible_frame(wh, ds)
    days = plan_days(el_df, union, ds)
    q_day, q_all, peak, timed_by = _profiles(wh, ds, union, config.platform.windows, days)
    for policy, table in tables.items():
        at = pd.Index(union).get_indexer(planned[policy])
        cols, st = plan_policy(policy, table, wh, ds, config, elasticity, explore, recal,
                               profiles=(q_day[at], q_all[at], peak[at], timed_by), el_df=el_df)
        parts.append(to_arrow(cols, table))
        stats[policy] = st
        log.info("%s: %d users, %d assigned, %d explored, no window %d, no capacity %d, expected opens %.1f "
                 "(unconstrained %.1f), peak hour load %d / capacity %d; timed by %s", policy, st["users"],
                 st["assigned"], st["explored"], st["no_window"], st["no_capacity"], st["expected_opens"],
                 st.get("expected_opens_unconstrained", float("nan")), max(st["load"]), st["capacity"][0], st["timed_by"])
    out = pa.concat_tables(parts)
    path = wh.write_arrow(out, WINDOWS, ds, loaded.version)
    report = {"ds": ds, "send_day": send_day(ds), "config_version": loaded.version,
              "model_version": next(iter(versions)) if versions else None, "timing_elasticity": elasticity,
              "model_policy": model_policy, "recalibration": recal.as_dict(), "history_scenes": history_scenes,
              "hour_explore_share": config.platform.windows.exploration_share if explore is None else explore,
              "active_policy": config.platform.windows.policy, "policies": stats}
    rpath = wh.report("windows", ds, "windows")
    rpath.parent.mkdir(parents=True, exist_ok=True)
    rpath.write_text(json.dumps(report, indent=2))
    return {"ds": ds, "config_version": loaded.version, "report": str(rpath),
            "tables": {WINDOWS: {"path": str(path), "rows": out.num_rows}},
            "assigned": {k: v["assigned"] for k, v in stats.items()},
            "expected_opens": {k: round(v["expected_opens"], 2) for k, v in stats.items()}}
