"""The fatigue a trigger push shares with the nightly plan: quiet hours, then one budget per user per local day
(pushes already sent + the nightly plan's + triggers already emitted) and the user x item re-eligibility gap.

Pure pandas/numpy over tables the trigger job reads; no I/O.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

US = 1_000_000


def local_days(ts_us: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """Local date (ISO) of each (time, zone)."""
    return np.array([datetime.fromtimestamp(t / US, tz=ZoneInfo(z)).date().isoformat()
                     for t, z in zip(ts_us.tolist(), tz.tolist())], dtype=object)


def after_quiet(ts_us: int, tz: str, quiet) -> int:
    """ts, or the end of the user's quiet hours if ts falls inside them."""
    d = datetime.fromtimestamp(ts_us / US, tz=ZoneInfo(tz))
    if not quiet.is_quiet(d.hour):
        return ts_us
    end = d.replace(hour=quiet.end_hour, minute=0, second=0, microsecond=0)
    if end <= d:
        end += timedelta(days=1)
    return int(end.timestamp() * US)


def budget_reasons(todo: pd.DataFrame, history: dict, dead: set, rules: dict, quotas: dict,
                   max_per_user_per_day: int) -> list[tuple[object, str | None]]:
    """(row index, reason or None to emit) for each candidate in `todo`, decided in send order so earlier pushes
    use the budget first. todo: user_id, item_id, rule_id, trigger_key, send_at (us), local_day, held, opt_in,
    device_token, platform. history: {"day_keys": {(user, local day): {push keys}}, "pairs": {(user, item):
    [send times]}} (both updated in place with what is emitted: the streaming engine keeps one history for the day).
    dead: {(user, sha256 of the token)}."""
    used: dict[tuple[int, str], set] = history["day_keys"]
    pairs_sent = history["pairs"]                         # (user, item) -> list of send times (us)
    decisions = []
    for idx, r in todo.sort_values(["send_at", "trigger_key"]).iterrows():
        u = int(r["user_id"])
        token = r["device_token"] if isinstance(r["device_token"], str) else ""
        reason = None
        if r["held"]:
            reason = "holdout"
        elif r["opt_in"] is not True and r["opt_in"] != 1:
            reason = "opted_out"
        elif not token:
            reason = "no_device_token"
        elif (u, hashlib.sha256(token.encode()).hexdigest()) in dead:
            reason = "dead_token"
        else:
            day_used = used.setdefault((u, r["local_day"]), set())
            quota = quotas.get(r["platform"])
            gap = rules[r["rule_id"]].regap_hours * 3600 * US
            recent = [t for t in pairs_sent.get((u, int(r["item_id"])), []) if abs(int(r["send_at"]) - t) < gap]
            if quota is not None and len(day_used) >= quota:
                reason = "platform_quota"
            elif len(day_used) >= max_per_user_per_day:
                reason = "daily_cap"
            elif recent:
                reason = "regap"
            else:
                day_used.add(r["trigger_key"])
                pairs_sent.setdefault((u, int(r["item_id"])), []).append(int(r["send_at"]))
        decisions.append((idx, reason))
    return decisions
