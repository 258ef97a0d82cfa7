"""The pair features of a live trigger, in pandas: the nightly's plan-day sides (jobs/score.py writes them) plus the
live context, so the streaming engine asks the @champion model the same question the nightly asks, without Spark.

`features.pairs._feature_columns` is the definition; this is its pandas twin over the same sides
(tests/features/test_live_features.py compares the two on the same pairs). The live context moves the item's price
(a fresh price drop: i_drop_pct and i_price_rel from the new price, as the next nightly will see it) and gives a
new listing its age; everything else is as of the plan day's start.

Pure: frames in, frames out; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.pairs import FEATURES, HOUR_PRIOR_OPENS, PUSH_PRIOR_RATE, PUSH_PRIOR_SENDS

USER_SUMS = ("opens_7d", "views_7d", "favs_28d", "pushes_7d", "push_opens_seen_28d", "pushes_recent_1d",
             "opens_long_28d", "pushes_long_28d", "w_all_28d")
INTEREST_SETS = ("_liked_items", "_followed_sellers")
ITEM_COLUMNS = ("category_id", "i_price_rel", "i_drop_pct", "i_age_log", "iv_7d", "if__7d", "listing_price",
                "cat_median")


@dataclass
class Sides:
    """One plan day's sides, indexed for lookups: users (USER_SUMS + `_w_by_category`, `_h_by_hour` dicts and the
    INTEREST_SETS as frozensets), items (ITEM_COLUMNS and seller_id), the population's share of opens per local hour,
    the category price medians."""
    ds: str
    users: pd.DataFrame
    items: pd.DataFrame
    pop_share: np.ndarray
    cat_median: dict = field(default_factory=dict)

    @classmethod
    def from_arrow(cls, ds: str, users, items, hours) -> "Sides":
        u = users.select([c for c in ("user_id", *USER_SUMS, "_w_by_category", "_h_by_hour", *INTEREST_SETS)
                          if c in users.column_names])
        cols = {c: u.column(c).to_numpy(zero_copy_only=False) for c in u.column_names if not c.startswith("_")}
        frame = pd.DataFrame(cols).set_index("user_id")
        for m in ("_w_by_category", "_h_by_hour"):
            frame[m] = [dict(x) if x is not None else {} for x in u.column(m).to_pylist()]
        for m in INTEREST_SETS:          # sides written before them have none: no interest known
            frame[m] = ([frozenset(x or ()) for x in u.column(m).to_pylist()] if m in u.column_names
                        else [frozenset()] * len(frame))
        it = items.select(["item_id", *ITEM_COLUMNS, *(["seller_id"] if "seller_id" in items.column_names else [])]) \
            .to_pandas().drop_duplicates("item_id").set_index("item_id")
        pop = np.full(24, 0.01 / 24)
        h = hours.to_pandas()
        pop[h["local_hour"].astype(int).to_numpy()] = h["pop_share"].to_numpy()
        med = it.dropna(subset=["category_id", "cat_median"]).groupby("category_id")["cat_median"].first()
        return cls(ds, frame, it, pop, {int(k): float(v) for k, v in med.items()})


def live_features(pairs: pd.DataFrame, sides: Sides, scene_codes: dict[str, int]) -> pd.DataFrame:
    """pairs: user_id, item_id, scene_id, local_hour and optionally the live item context — price_now (the price
    after a fresh drop), category_id, age_hours (for an item the sides do not hold). Returns FEATURES, in order."""
    n = len(pairs)
    u = sides.users.reindex(pairs["user_id"].to_numpy())
    it = sides.items.reindex(pairs["item_id"].to_numpy())

    def col(frame, name):
        return np.nan_to_num(frame[name].to_numpy(dtype=np.float64), nan=0.0) if name in frame else np.zeros(n)

    hour = pairs["local_hour"].to_numpy(dtype=np.int64) % 24
    category = it["category_id"].to_numpy(dtype=np.float64)
    if "category_id" in pairs:
        live_cat = pairs["category_id"].to_numpy(dtype=np.float64)
        category = np.where(np.isnan(category), live_cat, category)
    w_maps = u["_w_by_category"].to_numpy() if "_w_by_category" in u else np.full(n, None)
    h_maps = u["_h_by_hour"].to_numpy() if "_h_by_hour" in u else np.full(n, None)
    w = np.array([m.get(int(c), 0.0) if isinstance(m, dict) and c == c else 0.0 for m, c in zip(w_maps, category)],
                 dtype=np.float64)
    h = np.array([m.get(int(k), 0.0) if isinstance(m, dict) else 0.0 for m, k in zip(h_maps, hour)], dtype=np.float64)
    w_all = col(u, "w_all_28d")
    opens_long = col(u, "opens_long_28d")
    drop, price_rel, age = col(it, "i_drop_pct"), col(it, "i_price_rel"), col(it, "i_age_log")
    if "price_now" in pairs:
        now = pairs["price_now"].to_numpy(dtype=np.float64)
        listing = it["listing_price"].to_numpy(dtype=np.float64)
        median = it["cat_median"].to_numpy(dtype=np.float64)
        median = np.where(np.isnan(median), [sides.cat_median.get(int(c), np.nan) if c == c else np.nan
                                             for c in category], median)
        live = ~np.isnan(now)
        with np.errstate(divide="ignore", invalid="ignore"):
            drop = np.where(live & (listing > 0), 1 - now / listing, drop)
            price_rel = np.where(live & (median > 0), np.log(now / median), price_rel)
    if "age_hours" in pairs:
        a = pairs["age_hours"].to_numpy(dtype=np.float64)
        age = np.where(np.isnan(a), age, np.log1p(np.maximum(a, 0.0)))
    iv, if_ = col(it, "iv_7d"), col(it, "if__7d")
    out = pd.DataFrame({
        "u_opens_7d": col(u, "opens_7d"), "u_opens_28d": opens_long, "u_views_7d": col(u, "views_7d"),
        "u_favs_28d": col(u, "favs_28d"), "u_pushes_1d": col(u, "pushes_recent_1d"), "u_pushes_7d": col(u, "pushes_7d"),
        "u_push_open_rate": (col(u, "push_opens_seen_28d") + PUSH_PRIOR_SENDS * PUSH_PRIOR_RATE)
        / (col(u, "pushes_long_28d") + PUSH_PRIOR_SENDS),
        "aff_share": np.where(w_all > 0, w / np.where(w_all > 0, w_all, 1.0), 0.0),
        "hour_share_log": np.log(24.0 * (h + HOUR_PRIOR_OPENS * sides.pop_share[hour]) / (opens_long + HOUR_PRIOR_OPENS)),
        "i_drop_pct": drop, "i_age_log": age, "i_views_7d_log": np.log1p(iv), "i_favs_7d_log": np.log1p(if_),
        "i_fav_rate": (if_ + 1.0) / (iv + 10.0), "i_price_rel": price_rel,
        "scene_code": pairs["scene_id"].map(lambda s: scene_codes.get(s, -1)).to_numpy(dtype=np.float64),
    }, index=pairs.index)
    return out[list(FEATURES)]


def shrunk(p: np.ndarray, p_neutral: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """features.selection.shrink_to_support on single pairs: the model's scene effect weighed by the history's
    support for the scene, logit(p') = logit(p_neutral) + w (logit(p) - logit(p_neutral))."""
    eps = 1e-6
    lp = np.log(np.clip(p, eps, 1 - eps) / (1 - np.clip(p, eps, 1 - eps)))
    ln = np.log(np.clip(p_neutral, eps, 1 - eps) / (1 - np.clip(p_neutral, eps, 1 - eps)))
    return 1 / (1 + np.exp(-(ln + weight * (lp - ln))))


def live_interest(pairs: pd.DataFrame, sides: Sides) -> np.ndarray:
    """1.0 where the pair's user had favourited or carted its item or followed its seller by the plan day (the
    sides' interest sets: features/pairs.py's `interest`), else 0.0; pairs: user_id, item_id and optionally seller_id
    (for an item the sides do not hold) and interest (what the trigger itself says: e.g. a fav made since)."""
    n = len(pairs)
    u = sides.users.reindex(pairs["user_id"].to_numpy())
    liked = u["_liked_items"].to_numpy() if "_liked_items" in u else np.full(n, None)
    follows = u["_followed_sellers"].to_numpy() if "_followed_sellers" in u else np.full(n, None)
    sellers = (sides.items["seller_id"].reindex(pairs["item_id"].to_numpy()).to_numpy(dtype=np.float64)
               if "seller_id" in sides.items else np.full(n, np.nan))
    if "seller_id" in pairs:
        sellers = np.where(np.isnan(sellers), pairs["seller_id"].to_numpy(dtype=np.float64), sellers)
    out = np.array([(isinstance(li, frozenset) and int(i) in li) or (isinstance(fo, frozenset) and s == s and int(s) in fo)
                    for li, fo, i, s in zip(liked, follows, pairs["item_id"].to_numpy(), sellers)], dtype=np.float64)
    if "interest" in pairs:
        out = np.maximum(out, pairs["interest"].to_numpy(dtype=np.float64))
    return out
