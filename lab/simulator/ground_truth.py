"""The simulator's ground truth: latent users and items and the true push-response model.

Saved beside the raw data so later stages can compute the best achievable AUC (oracle) and
simulate the outcome of any plan: `GroundTruth.load(dir).open_probability(...)`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR

TIMEZONES = ("Asia/Shanghai", "Asia/Tokyo", "Asia/Singapore", "Europe/London",
             "America/Los_Angeles", "Australia/Sydney")
TIMEZONE_SHARES = (0.78, 0.05, 0.05, 0.04, 0.04, 0.04)


@dataclass(frozen=True)
class ResponseParams:
    """Coefficients of the true open model (logit scale). Documented, not learned."""

    intercept: float = -4.4
    affinity: float = 3.0          # x the user's preference weight (0..1) for the item's category
    quality: float = 0.35          # x latent item quality (N(0,1))
    value: float = 0.3             # x price attractiveness: -log(price / category median)
    hour: float = 0.5              # x log(24 * P(user active at local send hour))
    fatigue_24h: float = -0.45     # per push in the previous 24 h
    fatigue_7d: float = -0.12      # per push in the previous 7 days
    feed_breadth: float = 0.35     # x log(number of relevant live items shown)
    dead_feed: float = -1.5        # feed strength when no shown item is still on sale
    scene_effect: dict[str, float] = field(default_factory=lambda: {
        "chat_reply": 1.0, "price_drop": 0.6, "price_drop_fav": 0.7, "followed_seller_new": 0.5,
        "sell_out_soon": 0.4, "seller_stats": 0.3, "guess_you_like": 0.1, "similar_to_bought": 0.1,
        "new_listings": 0.0, "hot_items": -0.1, "reactivation": -0.2,
    })
    # Relevance and timeliness (used when the caller passes the push's context, see `push_context`): a feed
    # item the user favourited/carted, whose seller the user follows, or that is the user's own listing
    # makes the push more attractive, the more so when that item just changed (listed / price dropped).
    interest: float = 0.8          # if any shown item is relevant to the user
    timely: float = 1.0            # x max over relevant items of exp(-hours since the item's last change / 6)
    click_intercept: float = -0.3
    click_affinity: float = 2.0
    click_quality: float = 0.3
    weekend_hour_shift: int = 0    # weekend activity is this many hours later: profile[(h - shift) % 24] on Sat/Sun


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@lru_cache(maxsize=4096)
def utc_offset_minutes(tz: str, day: int) -> int:
    """Offset of `tz` at noon UTC of epoch day `day` (DST-aware, per day)."""
    at = datetime.fromtimestamp(day * 86400 + 43200, tz=timezone.utc).astimezone(ZoneInfo(tz))
    return int(at.utcoffset().total_seconds() // 60)


@lru_cache(maxsize=1 << 17)
def utc_offset_minutes_at_hour(tz: str, hour: int) -> int:
    """Offset of `tz` during UTC hour `hour` (hours since the epoch). Exact for every zone whose clocks change on a
    whole UTC hour (all the worlds' zones): DST starts and ends at its local hour, not at a UTC midnight."""
    at = datetime.fromtimestamp(hour * 3600, tz=timezone.utc).astimezone(ZoneInfo(tz))
    return int(at.utcoffset().total_seconds() // 60)


def local_minutes(timezones, tz_idx: np.ndarray, at_us: np.ndarray) -> np.ndarray:
    """Minutes since the epoch on each user's local clock at the UTC instants `at_us` (tz_idx indexes timezones)."""
    at_us = np.asarray(at_us, dtype=np.int64)
    key = np.asarray(tz_idx, dtype=np.int64) * 100_000_000 + at_us // US_PER_HOUR
    uniq, inv = np.unique(key, return_inverse=True)
    offs = np.array([utc_offset_minutes_at_hour(timezones[k // 100_000_000], int(k % 100_000_000)) for k in uniq],
                    dtype=np.int64)
    return (at_us // 60_000_000) + offs[inv]


def is_weekend(local_minute: np.ndarray) -> np.ndarray:
    """Local minutes since the epoch (local_minutes) that fall on a Saturday or Sunday (epoch day 0 was a Thursday)."""
    return ((np.asarray(local_minute) // 1440) + 3) % 7 >= 5


@dataclass
class GroundTruth:
    """Latent state of a simulated world. Times are int64 microseconds since the epoch (UTC)."""

    user_tz: np.ndarray            # int8 index into `timezones`
    user_hour_profile: np.ndarray  # float32 [n_users, 24], P(active at local hour), rows sum to 1
    user_pref_cats: np.ndarray     # int32 [n_users, 3] preferred category ids
    user_pref_weights: np.ndarray  # float32 [n_users, 3] preference weights, rows sum to 1
    user_push_bias: np.ndarray     # float32 personal propensity to open pushes
    item_category: np.ndarray      # int32
    item_quality: np.ndarray       # float32
    item_value: np.ndarray         # float32, price attractiveness
    item_listed_at: np.ndarray     # int64 us
    item_end_at: np.ndarray        # int64 us: sold or removed (int64 max if never)
    params: ResponseParams = field(default_factory=ResponseParams)
    timezones: tuple[str, ...] = TIMEZONES   # what user_tz indexes (the world variant's zones)

    # ---- ids ----------------------------------------------------------------------------------
    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        idx = np.asarray(user_ids, dtype=np.int64) - 1
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.user_tz)):
            raise ValueError(f"user_id outside the simulated world (1..{len(self.user_tz)})")
        return idx

    def item_index(self, item_ids: np.ndarray) -> np.ndarray:
        idx = np.asarray(item_ids, dtype=np.int64) - 1
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.item_category)):
            raise ValueError(f"item_id outside the simulated world (1..{len(self.item_category)})")
        return idx

    # ---- time ---------------------------------------------------------------------------------
    def _local_minute(self, user_idx: np.ndarray, at_us: np.ndarray) -> np.ndarray:
        return local_minutes(self.timezones, self.user_tz[user_idx], at_us)

    def local_hour(self, user_idx: np.ndarray, at_us: np.ndarray) -> np.ndarray:
        """Hour of day in each user's own time zone at the given UTC instants."""
        return ((self._local_minute(user_idx, at_us) // 60) % 24).astype(np.int64)

    def profile_hour(self, user_idx: np.ndarray, at_us: np.ndarray) -> np.ndarray:
        """The column of user_hour_profile that holds the user's activity at these instants: the local hour, or on a
        local Saturday or Sunday the hour `weekend_hour_shift` earlier (weekends run later)."""
        minute = self._local_minute(user_idx, at_us)
        hour = (minute // 60) % 24
        shift = self.params.weekend_hour_shift
        if shift:
            weekend = is_weekend(minute)
            hour = np.where(weekend, (hour - shift) % 24, hour)
        return hour.astype(np.int64)

    def activity_at(self, user_idx: np.ndarray, at_us: np.ndarray) -> np.ndarray:
        return self.user_hour_profile[user_idx, self.profile_hour(user_idx, at_us)]

    # ---- response model -----------------------------------------------------------------------
    def affinity(self, user_idx: np.ndarray, category: np.ndarray) -> np.ndarray:
        cats = self.user_pref_cats[user_idx]
        return ((cats == category[:, None]) * self.user_pref_weights[user_idx]).sum(axis=1)

    def item_appeal(self, item_idx: np.ndarray) -> np.ndarray:
        """The user-independent part of an item's score: its quality and price attractiveness under this world's
        coefficients (what the judge's best items and bench/item_signals.py rank by)."""
        p = self.params
        return p.quality * self.item_quality[item_idx] + p.value * self.item_value[item_idx]

    def _item_scores(self, user_idx, scene_ids, feed_offsets, feed_items, send_at):
        p = self.params
        lengths = np.diff(feed_offsets)
        row = np.repeat(np.arange(len(user_idx)), lengths)
        it = self.item_index(feed_items)
        aff = self.affinity(user_idx[row], self.item_category[it])
        live = (self.item_listed_at[it] <= send_at[row]) & (send_at[row] < self.item_end_at[it])
        score = p.affinity * aff + self.item_appeal(it)
        return row, it, aff, live, score

    def open_logit(self, user_ids, scene_ids, feed_offsets, feed_items, send_at,
                   pushes_24h=None, pushes_7d=None, context=None) -> np.ndarray:
        p = self.params
        u = self.user_index(user_ids)
        n = len(u)
        send_at = np.asarray(send_at, dtype=np.int64)
        feed_offsets = np.asarray(feed_offsets, dtype=np.int64)
        row, it, aff, live, score = self._item_scores(u, scene_ids, feed_offsets, feed_items, send_at)
        best = np.full(n, -np.inf)
        np.maximum.at(best, row[live], score[live])
        relevant = np.bincount(row[live & (aff > 0)], minlength=n)
        strength = np.where(np.isfinite(best), best, p.dead_feed)
        strength = strength + p.feed_breadth * np.log(np.maximum(relevant, 1))
        activity = np.maximum(self.activity_at(u, send_at), 1e-4)
        scene = np.asarray(scene_ids)
        uniq, inv = np.unique(scene, return_inverse=True)
        scene_eff = np.array([p.scene_effect.get(str(s), 0.0) for s in uniq])[inv]
        z = (p.intercept + self.user_push_bias[u] + strength + p.hour * np.log(24.0 * activity) + scene_eff)
        if context is not None:                 # (relevant, age_h) per shown item, flat like feed_items
            relevant, age_h = (np.asarray(a) for a in context)
            rel = np.zeros(n)
            np.maximum.at(rel, row, relevant.astype(np.float64))
            fresh = np.zeros(n)
            np.maximum.at(fresh, row, relevant * np.exp(-np.asarray(age_h, dtype=np.float64) / 6.0))
            z = z + p.interest * rel + p.timely * fresh
        if pushes_24h is not None:
            z = z + p.fatigue_24h * np.asarray(pushes_24h, dtype=np.float64)
        if pushes_7d is not None:
            z = z + p.fatigue_7d * np.asarray(pushes_7d, dtype=np.float64)
        return z

    def open_probability(self, user_ids, scene_ids, feed_offsets, feed_items, send_at,
                         pushes_24h=None, pushes_7d=None, context=None) -> np.ndarray:
        """True P(open) of each push. A feed is given flat: items of push i are
        feed_items[feed_offsets[i]:feed_offsets[i+1]]; send_at in epoch microseconds (UTC). `context`:
        (relevant, age_h) per shown item from `push_context` (None: no relevance/timeliness terms — the
        simulator's own Push 1.0 history is drawn that way)."""
        return _sigmoid(self.open_logit(user_ids, scene_ids, feed_offsets, feed_items, send_at,
                                        pushes_24h, pushes_7d, context))

    def draw_clicks(self, rng: np.random.Generator, user_ids, feed_offsets, feed_items, send_at,
                    opened: np.ndarray) -> np.ndarray:
        """Clicked item per push (-1 when none): P(click | open) from the best shown live item."""
        p = self.params
        u = self.user_index(user_ids)
        n = len(u)
        send_at = np.asarray(send_at, dtype=np.int64)
        feed_items = np.asarray(feed_items, dtype=np.int64)
        row, it, aff, live, score = self._item_scores(u, None, np.asarray(feed_offsets), feed_items, send_at)
        noisy = np.where(live, score + rng.gumbel(size=len(score)), -np.inf)
        best = np.full(n, -np.inf)
        np.maximum.at(best, row, noisy)
        is_best = (noisy == best[row]) & np.isfinite(noisy)
        chosen = np.full(n, -1, dtype=np.int64)
        chosen[row[is_best]] = feed_items[is_best]
        best_aff = np.zeros(n)
        np.maximum.at(best_aff, row[is_best], aff[is_best])
        best_q = np.zeros(n)
        best_q[row[is_best]] = self.item_quality[it[is_best]]
        p_click = _sigmoid(p.click_intercept + p.click_affinity * best_aff + p.click_quality * best_q)
        clicked = opened & (chosen >= 0) & (rng.random(n) < p_click)
        return np.where(clicked, chosen, -1)

    # ---- persistence --------------------------------------------------------------------------
    _ARRAYS = ("user_tz", "user_hour_profile", "user_pref_cats", "user_pref_weights", "user_push_bias",
               "item_category", "item_quality", "item_value", "item_listed_at", "item_end_at")

    def save(self, folder: Path, world: dict) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "latent.npz", **{k: getattr(self, k) for k in self._ARRAYS})
        doc = {"world": world, "timezones": list(self.timezones), "response": asdict(self.params),
               "how_to_use": "lab.simulator.ground_truth.GroundTruth.load(<this folder>).open_probability(...)"}
        (folder / "params.json").write_text(json.dumps(doc, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> "GroundTruth":
        folder = Path(folder)
        if not (folder / "latent.npz").exists():
            raise FileNotFoundError(f"no simulator ground truth in {folder}: run `hermes simulate` first")
        doc = json.loads((folder / "params.json").read_text())
        with np.load(folder / "latent.npz") as data:
            arrays = {k: data[k] for k in cls._ARRAYS}
        return cls(**arrays, params=ResponseParams(**doc["response"]), timezones=tuple(doc.get("timezones", TIMEZONES)))

    @staticmethod
    def world(folder: Path) -> dict:
        return json.loads((Path(folder) / "params.json").read_text())["world"]


def push_context(warehouse, user_ids, feed_offsets, feed_items, send_at) -> tuple[np.ndarray, np.ndarray]:
    """What the world knows about each shown item for its user at the send time, from the raw tables:
    relevant = the user favourited/carted it, follows its seller, or is its seller (before send_at);
    age_h = hours since the item's last listing or price drop before send_at (inf if none)."""
    import pandas as pd
    import pyarrow.dataset as pads

    root = Path(warehouse)
    lengths = np.diff(np.asarray(feed_offsets, dtype=np.int64))
    row_user = np.repeat(np.asarray(user_ids, dtype=np.int64), lengths)
    row_at = np.repeat(np.asarray(send_at, dtype=np.int64), lengths)
    items = np.asarray(feed_items, dtype=np.int64)
    shown = pd.DataFrame({"user_id": row_user, "item_id": items, "at": row_at, "k": np.arange(len(items))})
    ev = pads.dataset(str(root / "raw" / "events"), format="parquet").to_table(
        columns=["ts", "user_id", "event_type", "item_id", "seller_id"]).to_pandas()
    ev["ts"] = ev["ts"].astype("int64") // (1000 if ev["ts"].dtype.unit == "ns" else 1)
    meta = pads.dataset(str(root / "raw" / "items"), format="parquet").to_table(
        columns=["item_id", "seller_id"]).to_pandas()
    shown = shown.merge(meta, on="item_id", how="left")
    interest = ev[ev["event_type"].isin(["fav", "cart"])].groupby(["user_id", "item_id"])["ts"].min().rename("first_interest")
    follows = ev[ev["event_type"] == "follow_seller"].groupby(["user_id", "seller_id"])["ts"].min().rename("first_follow")
    shown = shown.join(interest, on=["user_id", "item_id"]).join(follows, on=["user_id", "seller_id"])
    relevant = ((shown["first_interest"] < shown["at"]) | (shown["first_follow"] < shown["at"])
                | (shown["seller_id"] == shown["user_id"])).to_numpy()
    ch = pads.dataset(str(root / "raw" / "item_changes"), format="parquet").to_table(
        columns=["item_id", "ts", "change"]).to_pandas()
    ch = ch[ch["change"].isin(["listed", "price_drop"])]
    ch["ts"] = ch["ts"].astype("int64") // (1000 if ch["ts"].dtype.unit == "ns" else 1)
    ch = ch[ch["item_id"].isin(shown["item_id"])].sort_values("ts")
    last = pd.merge_asof(shown.sort_values("at")[["k", "item_id", "at"]], ch[["item_id", "ts"]],
                         left_on="at", right_on="ts", by="item_id", allow_exact_matches=False).set_index("k")
    age_h = ((shown["at"].to_numpy() - last.loc[shown["k"], "ts"].to_numpy()) / US_PER_HOUR)
    age_h = np.where(np.isnan(age_h), np.inf, age_h)
    order = np.argsort(shown["k"].to_numpy())
    return relevant[order], age_h[order]
