"""Preview of a scene edit on the latest nightly outputs: who the audience rule selects, how many fatigue
would drop and why, and the expected opens — before anything is saved.

- Audience: the rule (same language, same AST, evaluated on pandas three-valued like the Spark compiler)
  on the latest `features/user_features` — what the next nightly's `audiences` stage selects for the scene
  if it ran on the same features.
- Suppressed: one reason per user, in fatigue's order (features/fatigue.REASONS): the user-state reasons
  (holdout, opted_out, no_device_token, dead_token) computed as fatigue does; history reasons (platform_quota,
  daily_cap, scene_cap, min_spacing) as the latest nightly judged them for this scene's users (labelled as such:
  they move with the next day's pushes). audience = sum(suppressed) + eligible.
- Expected opens: for eligible users the latest nightly scored for this scene, the sum of their best item's
  p(open) (the feed's expected open); users it did not score (the scorer's shortlist keeps the best few scenes
  per user) count at the scene's mean — both reported, and the page says how many were scored.
"""
from __future__ import annotations

import hashlib

import pandas as pd

from core.warehouse import Warehouse
from features.fatigue import REASONS
from features.triggers import matches

USER_STATE = REASONS[:4]          # holdout, opted_out, no_device_token, dead_token
HISTORY = REASONS[4:]


def latest_ds(wh: Warehouse, table: str) -> str | None:
    parts = wh.days(table)
    return parts[-1] if parts else None


def preview(wh: Warehouse, scene_id: str, audience_rule: str, holdout_share: float = 0.0) -> dict:
    ds = latest_ds(wh, "features/user_features")
    if ds is None:
        return {"available": False, "why": "no nightly run yet: run `make run` (or hermes_nightly) first"}
    uf = wh.read_arrow("features/user_features", ds).to_pandas()
    aud = uf.loc[matches(audience_rule, uf), ["user_id"]]
    users = pd.read_parquet(wh.raw("users"), columns=["user_id", "opt_in", "device_token"])
    x = aud.merge(users, on="user_id", how="left")
    token = x["device_token"].fillna("")
    x["token_sha256"] = [hashlib.sha256(t.encode()).hexdigest() if t else None for t in token]
    dead = set()
    if wh.dead_tokens.exists():
        d = pd.read_parquet(wh.dead_tokens, columns=["user_id", "token_sha256"])
        dead = set(zip(d["user_id"], d["token_sha256"]))
    reason = pd.Series([None] * len(x), index=x.index, dtype="object")
    if holdout_share > 0:
        from features.holdout import in_holdout

        reason[in_holdout(x["user_id"].to_numpy(), holdout_share)] = "holdout"
    reason[reason.isna() & ~x["opt_in"].fillna(False).astype(bool)] = "opted_out"
    reason[reason.isna() & (token == "")] = "no_device_token"
    is_dead = pd.Series([(u, t) in dead for u, t in zip(x["user_id"], x["token_sha256"])], index=x.index)
    reason[reason.isna() & is_dead] = "dead_token"
    if wh.partition("plan/suppressed", ds).exists():
        sup = wh.read_arrow("plan/suppressed", ds, ["user_id", "scene_id", "reason"]).to_pandas()
        sup = sup[(sup["scene_id"] == scene_id) & sup["reason"].isin(HISTORY)]
        # one reason per user, the first in fatigue's order, for users no user-state reason holds already
        sup = sup.assign(order=sup["reason"].map(HISTORY.index)).sort_values("order").drop_duplicates("user_id")
        by_user = dict(zip(sup["user_id"], sup["reason"]))
        open_ = reason.isna()
        reason[open_] = x.loc[open_, "user_id"].map(by_user)
    eligible = x.loc[reason.isna(), "user_id"]
    opens, scored_users, mean_p = 0.0, 0, None
    if wh.partition("plan/scored", ds).exists():
        sc = wh.read_arrow("plan/scored", ds, ["user_id", "scene_id", "p_open"]).to_pandas()
        sc = sc[sc["scene_id"] == scene_id].groupby("user_id")["p_open"].max()
        if len(sc):
            mean_p = float(sc.mean())
            hit = sc.reindex(eligible).dropna()
            scored_users = int(len(hit))
            opens = float(hit.sum()) + mean_p * (len(eligible) - scored_users)
    counts = reason.value_counts().to_dict()
    return {"available": True, "features_ds": ds, "audience": int(len(x)),
            "suppressed": {k: int(counts.get(k, 0)) for k in USER_STATE} | {k: int(counts[k]) for k in HISTORY
                                                                            if k in counts},
            "eligible": int(len(eligible)), "expected_opens": round(opens, 1), "scored_users": scored_users,
            "scene_mean_p_open": None if mean_p is None else round(mean_p, 4)}
