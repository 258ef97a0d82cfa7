"""The marketplace simulator: a deterministic world of users, unique items, behaviour and Push 1.0 history.

Writes the five raw-contract tables plus the ground truth; vectorised with numpy, one simulated day at
a time, so memory is bounded by one day of events (1M users fit in a few GB).
"""
from __future__ import annotations

import binascii
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contract import EVENT_TYPES, PLATFORMS, RAW_SCHEMAS
from core.warehouse import Warehouse
from lab.simulator.ground_truth import (
    US_PER_DAY,
    US_PER_HOUR,
    GroundTruth,
    ResponseParams,
    is_weekend,
    local_minutes,
    utc_offset_minutes,
)
from lab.simulator.variants import Variant, variant

log = logging.getLogger(__name__)

N_CATEGORIES = 40
CATEGORY_NAMES = (
    "Phone", "Laptop", "Tablet", "Camera", "Headphones", "Game console", "Smartwatch", "Sneakers",
    "Handbag", "Jacket", "Dress", "Watch", "Jewellery", "Perfume", "Skincare", "Book", "Comic",
    "Vinyl", "Guitar", "Bicycle", "Scooter", "Stroller", "Toy", "Lego", "Figure", "Furniture", "Lamp",
    "Kitchenware", "Coffee machine", "Plant", "Pet supplies", "Tent", "Fishing rod", "Golf club",
    "Ski gear", "Car part", "Drone", "Monitor", "Keyboard", "Collectible card",
)
PLATFORM_SHARES = (0.22, 0.24, 0.16, 0.14, 0.13, 0.11)
# Scenes Push 1.0 could send; the baseline sends the one with the best global CTR so far.
HISTORY_SCENES = ("hot_items", "guess_you_like", "new_listings", "price_drop")
BASELINE_HOUR_UTC = 12          # 20:00 in Asia/Shanghai
BASELINE_EPSILON = 0.10         # share of pushes whose scene is drawn uniformly (logged propensity)
EVENT_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}
NEVER = np.iinfo(np.int64).max
PRE_DAYS = 7
# How an item's latent quality shows in behaviour (the judge's `visible_appeal` reads the same laws):
# each view of it is followed by each of these events with P = base x (0.5 + 2 x the viewer's affinity for its
# category) x (1 + ENGAGEMENT_QUALITY x quality), `lag` seconds later ...
ENGAGEMENT = (("fav", 0.10, 8), ("cart", 0.03, 20), ("chat", 0.04, 30))
ENGAGEMENT_QUALITY = 0.3
# ... and it sells after an exponential time of mean SELL_DAYS x exp(-SELL_QUALITY x quality - SELL_VALUE x value)
# days: good and cheap items go fast.
SELL_DAYS, SELL_QUALITY, SELL_VALUE = 5.0, 0.5, 0.5


@dataclass(frozen=True)
class WorldSpec:
    users: int = 10_000
    items: int = 20_000
    days: int = 30
    seed: int = 7
    start: date = date(2026, 10, 1)
    variant: str = "base"            # lab/simulator/variants.py: the kind of marketplace

    @property
    def start_us(self) -> int:
        return int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc)
                   .timestamp()) * 1_000_000

    @property
    def end_us(self) -> int:
        return self.start_us + self.days * US_PER_DAY

    @property
    def last_ds(self) -> str:
        return (self.start + timedelta(days=self.days - 1)).isoformat()


@dataclass
class World:
    spec: WorldSpec
    truth: GroundTruth
    user_ids: np.ndarray
    user_platform: np.ndarray
    user_opt_in: np.ndarray
    user_token: np.ndarray
    user_registered_at: np.ndarray
    user_rate: np.ndarray            # organic sessions per day
    item_ids: np.ndarray
    item_seller: np.ndarray
    item_price: np.ndarray           # listing price
    item_drop_at: np.ndarray         # int64 us or NEVER
    item_drop_price: np.ndarray
    item_sold_at: np.ndarray
    item_removed_at: np.ndarray
    variant: Variant = Variant()

    @property
    def n_categories(self) -> int:
        return self.variant.categories


# ---------------------------------------------------------------------------------------------
# world
# ---------------------------------------------------------------------------------------------
def _hour_profiles(rng: np.random.Generator, n: int, v: Variant = Variant()) -> np.ndarray:
    hours = np.arange(24)

    def bump(peak, width):
        d = np.abs(hours[None, :] - peak[:, None])
        d = np.minimum(d, 24 - d)
        return np.exp(-0.5 * (d / width) ** 2)

    if v.hour_shape == "multi_peak":          # one to three habits anywhere in the waking day
        k = rng.integers(1, 4, size=n)
        prof = np.full((n, 24), 0.01)
        for j in range(3):
            peak = rng.integers(6, 24, size=n)
            w = rng.uniform(0.6, 2.0, size=n)[:, None]
            a = np.where(j < k, rng.uniform(0.4, 1.0, size=n), 0.0)[:, None]
            prof += a * bump(peak, w)
        prof[:, 2:6] *= 0.1
        return (prof / prof.sum(axis=1, keepdims=True)).astype(np.float32)
    peaks1 = rng.choice([8, 12, 13, 18, 19, 20, 21, 22, 23], size=n,
                        p=[.08, .12, .06, .08, .12, .16, .18, .12, .08])
    peaks2 = rng.integers(7, 24, size=n)
    w1 = rng.uniform(0.8, 2.2, size=n)[:, None]
    w2 = rng.uniform(0.8, 2.5, size=n)[:, None]
    a2 = rng.uniform(0.1, 0.8, size=n)[:, None]
    owl = np.zeros(n, dtype=bool)
    if v.hour_shape == "night_owl":           # peaks between 22:00 and 03:00, awake then, asleep in the morning
        owl = rng.random(n) < v.night_owl_share
        peaks1 = np.where(owl, rng.choice([22, 23, 0, 1, 2], size=n), peaks1)
        peaks2 = np.where(owl, rng.integers(12, 24, size=n), peaks2)
    prof = 0.01 + bump(peaks1, w1) + a2 * bump(peaks2, w2)
    prof[~owl, 1:7] *= 0.1                    # people sleep
    prof[owl, 6:12] *= 0.1                    # owls sleep in the morning
    return (prof / prof.sum(axis=1, keepdims=True)).astype(np.float32)


def build_world(spec: WorldSpec) -> World:
    if spec.users < 1 or spec.items < 1 or spec.days < 1:
        raise ValueError(f"users, items and days must be positive, got {spec}")
    v = variant(spec.variant, spec.seed)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1]))
    n, m = spec.users, spec.items
    user_ids = np.arange(1, n + 1, dtype=np.int64)
    shares = np.asarray(v.timezone_shares) / np.sum(v.timezone_shares)
    user_tz = rng.choice(len(v.timezones), size=n, p=shares).astype(np.int8)
    platform = rng.choice(len(PLATFORMS), size=n, p=PLATFORM_SHARES).astype(np.int8)
    opt_in = rng.random(n) < 0.86
    token = np.frombuffer(binascii.hexlify(rng.bytes(32 * n)), dtype="S64").astype(object)
    token[rng.random(n) < 0.03] = None       # never granted push permission: no device token
    registered = spec.start_us - (rng.uniform(1, 900, size=n) * US_PER_DAY).astype(np.int64)
    # Heavy-tailed activity; a sixth of the base is (nearly) dormant: reactivation material.
    rate = np.exp(rng.normal(np.log(v.activity_median), 0.8, size=n))
    dormant = rng.random(n) < v.dormant_share
    rate[dormant] = rng.uniform(0.01, 0.08, size=dormant.sum())
    rate = np.clip(rate, 0.01, 10.0)

    n_cat = v.categories
    cat_pop = 1.0 / np.arange(1, n_cat + 1) ** v.category_tail
    cat_pop = rng.permutation(cat_pop / cat_pop.sum())
    pref = np.stack([rng.choice(n_cat, size=n, p=cat_pop) for _ in range(3)], axis=1)
    # Resolve repeats so each user has three distinct categories.
    for k in (1, 2):
        clash = (pref[:, k, None] == pref[:, :k]).any(axis=1)
        while clash.any():
            pref[clash, k] = rng.choice(n_cat, size=clash.sum(), p=cat_pop)
            clash = (pref[:, k, None] == pref[:, :k]).any(axis=1)
    weights = -np.sort(-rng.dirichlet([3.0, 1.5, 0.8], size=n), axis=1)

    item_cat = rng.choice(n_cat, size=m, p=cat_pop).astype(np.int32)
    n_sellers = max(1, n // 5)
    sellers = rng.choice(user_ids, size=n_sellers, replace=False)
    seller_w = rng.pareto(v.seller_shape, size=n_sellers) + 1
    item_seller = sellers[rng.choice(n_sellers, size=m, p=seller_w / seller_w.sum())]
    cat_median = np.exp(rng.uniform(np.log(30), np.log(3000), size=n_cat))
    price = np.round(cat_median[item_cat] * np.exp(rng.normal(0, 0.6, size=m)), 0) + 1.0
    quality = rng.normal(0, 1, size=m).astype(np.float32)
    value = np.clip(-np.log(price / cat_median[item_cat]), -2, 2).astype(np.float32)
    listed = spec.start_us - 20 * US_PER_DAY + (rng.random(m) * (spec.days + 20) * US_PER_DAY).astype(np.int64)
    # Unique inventory sells out: good and cheap items go fast.
    sell_scale = SELL_DAYS * np.exp(-SELL_QUALITY * quality - SELL_VALUE * value)
    sold = listed + (rng.exponential(sell_scale) * US_PER_DAY).astype(np.int64)
    removed = np.where(rng.random(m) < 0.06, listed + (rng.exponential(8.0, size=m) * US_PER_DAY).astype(np.int64),
                       NEVER)
    removed_first = removed < sold          # an item leaves the market once: sold or removed
    sold = np.where(removed_first, NEVER, sold)
    removed = np.where(removed_first, removed, NEVER)
    end = np.minimum(sold, removed)
    # A third of items get one price drop while still on sale, before the simulated end.
    life_end = np.minimum(end, spec.end_us)
    drop_at = listed + (rng.uniform(0.15, 0.85, size=m) * (life_end - listed)).astype(np.int64)
    has_drop = (rng.random(m) < 0.35) & (drop_at > listed) & (drop_at < life_end)
    drop_at = np.where(has_drop, drop_at, NEVER)
    drop_price = np.round(price * (1 - rng.uniform(0.05, 0.35, size=m)), 0)

    truth = GroundTruth(
        user_tz=user_tz, user_hour_profile=_hour_profiles(rng, n, v), timezones=tuple(v.timezones),
        user_pref_cats=(pref + 1).astype(np.int32), user_pref_weights=weights.astype(np.float32),
        user_push_bias=rng.normal(0, 0.5, size=n).astype(np.float32),
        item_category=(item_cat + 1).astype(np.int32), item_quality=quality, item_value=value,
        item_listed_at=listed, item_end_at=end,
        params=ResponseParams(**v.response()),
    )
    return World(spec=spec, truth=truth, user_ids=user_ids, user_platform=platform, user_opt_in=opt_in,
                 user_token=token, user_registered_at=registered, user_rate=rate,
                 item_ids=np.arange(1, m + 1, dtype=np.int64), item_seller=item_seller, item_price=price,
                 item_drop_at=drop_at, item_drop_price=drop_price, item_sold_at=sold, item_removed_at=removed,
                 variant=v)


# ---------------------------------------------------------------------------------------------
# one day of behaviour
# ---------------------------------------------------------------------------------------------
class _CategoryIndex:
    """Items (or users) grouped by category for O(1) uniform sampling within a category."""

    def __init__(self, members: np.ndarray, category: np.ndarray, n_categories: int = N_CATEGORIES):
        order = np.argsort(category, kind="stable")
        self.members = members[order]
        self.counts = np.bincount(category, minlength=n_categories + 1)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])

    def sample(self, rng, category: np.ndarray) -> np.ndarray:
        """One member per requested category; -1 where the category is empty."""
        cnt = self.counts[category]
        pick = self.offsets[category] + (rng.random(len(category)) * np.maximum(cnt, 1)).astype(np.int64)
        out = np.full(len(category), -1, dtype=np.int64)
        ok = cnt > 0
        out[ok] = self.members[pick[ok]]
        return out


def _utc_from_local(truth: GroundTruth, user_idx, day_us: int, local_minute: np.ndarray) -> np.ndarray:
    """UTC instant within day `day_us` whose local minute-of-day is `local_minute` for each user: placed with the
    zone's offset at noon, then once more with the offset at the instant placed (the clocks may change that day)."""
    tz = truth.user_tz[user_idx]
    offs = np.array([utc_offset_minutes(z, day_us // US_PER_DAY) for z in truth.timezones])[tz]
    at = day_us + ((local_minute - offs) % 1440).astype(np.int64) * 60_000_000
    exact = local_minutes(truth.timezones, tz, at) - at // 60_000_000
    return day_us + ((local_minute - exact) % 1440).astype(np.int64) * 60_000_000


def _local_weekend(truth: GroundTruth, user_idx, at_us: np.ndarray) -> np.ndarray:
    """The instants fall on a Saturday or Sunday of each user's own calendar."""
    return is_weekend(local_minutes(truth.timezones, truth.user_tz[user_idx], at_us))


def _events(ts, user, etype, item=None, seller=None, cat=None) -> dict:
    n = len(ts)
    none = np.full(n, -1, dtype=np.int64)
    return {"ts": np.asarray(ts, np.int64), "user_id": np.asarray(user, np.int64),
            "event_type": np.full(n, EVENT_CODE[etype], np.int8),
            "item_id": none if item is None else np.asarray(item, np.int64),
            "seller_id": none if seller is None else np.asarray(seller, np.int64),
            "category_id": none if cat is None else np.asarray(cat, np.int64)}


class Simulation:
    def __init__(self, world: World):
        self.w = world
        self.spec = world.spec
        n = len(world.user_ids)
        self.rng_root = np.random.SeedSequence([self.spec.seed, 2])
        self.ncat = world.n_categories
        self.view_counts = np.zeros((n, self.ncat + 1), dtype=np.int32)
        rng = np.random.default_rng(np.random.SeedSequence([self.spec.seed, 3]))
        # Before day 0: last open drawn from each user's own rate.
        self.last_open = self.spec.start_us - (rng.exponential(1.0 / world.user_rate) * US_PER_DAY).astype(np.int64)
        # Push 1.0 ran before day 0 too: a week of prior pushes, so fatigue starts in steady state.
        self.pushes_per_day = np.concatenate([(rng.random((PRE_DAYS, n)) < 0.4).astype(np.int8),
                                              np.zeros((self.spec.days, n), dtype=np.int8)])
        self.scene_sent = np.zeros(len(HISTORY_SCENES))
        self.scene_opened = np.zeros(len(HISTORY_SCENES))
        t = world.truth
        pref_users = np.repeat(np.arange(n), 3)
        self.fans = _CategoryIndex(pref_users, t.user_pref_cats.reshape(-1), self.ncat)

    def _live_index(self, at_us: int) -> _CategoryIndex:
        t = self.w.truth
        live = (t.item_listed_at <= at_us) & (t.item_end_at > at_us)
        idx = np.flatnonzero(live)
        return _CategoryIndex(idx, t.item_category[idx], self.ncat)

    def organic_day(self, d: int, rng: np.random.Generator) -> list[dict]:
        w, t = self.w, self.w.truth
        n = len(w.user_ids)
        day_us = self.spec.start_us + d * US_PER_DAY
        weekend = datetime.fromtimestamp(day_us / 1e6, tz=timezone.utc).weekday() >= 5
        sessions = rng.poisson(w.user_rate * (1.2 if weekend else 1.0))
        su = np.repeat(np.arange(n), sessions)
        # Local hour from the user's own profile, minute uniform.
        cdf = np.cumsum(t.user_hour_profile[su], axis=1)
        hour = (cdf < rng.random(len(su))[:, None] * cdf[:, -1:]).sum(axis=1)
        minute = rng.integers(0, 60, size=len(su))
        start = _utc_from_local(t, su, day_us, hour * 60 + minute)
        if t.params.weekend_hour_shift:      # weekends run later: on the user's own Saturday and Sunday
            late = _local_weekend(t, su, start)
            start[late] = _utc_from_local(t, su[late], day_us,
                                          ((hour[late] + t.params.weekend_hour_shift) % 24) * 60 + minute[late])
        start = start + rng.integers(0, 60_000_000, size=len(su))
        out = [_events(start, w.user_ids[su], "app_open")]
        self.last_open = np.maximum(self.last_open, self._max_by(su, start, n))

        # Views: category from preferences (80%) or anywhere (20%), item uniform among live ones.
        nv = rng.poisson(3.0, size=len(su))
        vu = np.repeat(su, nv)
        # k-th view of a session comes about k * 45 s after the open.
        nth = np.arange(len(vu)) - np.repeat(np.cumsum(nv) - nv, nv)
        vt = np.repeat(start, nv) + (rng.exponential(45.0, size=len(vu)) * (1 + nth) * 1e6).astype(np.int64)
        day_end = day_us + US_PER_DAY - 1      # every event stays in its own ds partition
        vt = np.minimum(vt, day_end)
        slot = (rng.random(len(vu))[:, None] > np.cumsum(t.user_pref_weights[vu], axis=1)).sum(axis=1)
        slot = np.minimum(slot, 2)
        cat = np.where(rng.random(len(vu)) < 0.8, t.user_pref_cats[vu, slot],
                       rng.integers(1, self.ncat + 1, size=len(vu)))
        live = self._live_index(day_us + US_PER_DAY // 2)
        item = live.sample(rng, cat)
        ok = item >= 0
        vu, vt, item = vu[ok], vt[ok], item[ok]
        icat = t.item_category[item]
        seller = w.item_seller[item]
        iid = w.item_ids[item]
        self.view_counts += np.bincount(vu * (self.ncat + 1) + icat,
                                        minlength=n * (self.ncat + 1)).reshape(n, -1).astype(np.int32)
        out.append(_events(vt, w.user_ids[vu], "view", iid, seller, icat))
        aff = t.affinity(vu, icat)
        for etype, base, lag in ENGAGEMENT:
            hit = rng.random(len(vu)) < base * (0.5 + 2 * aff) * (1 + ENGAGEMENT_QUALITY * t.item_quality[item])
            out.append(_events(np.minimum(vt[hit] + lag * 1_000_000, day_end), w.user_ids[vu[hit]], etype, iid[hit], seller[hit],
                               icat[hit]))
        follow = rng.random(len(vu)) < 0.012 * (0.5 + 2 * aff)
        out.append(_events(np.minimum(vt[follow] + 12_000_000, day_end), w.user_ids[vu[follow]], "follow_seller", None, seller[follow]))
        # Searches within sessions, in preferred categories.
        ns = rng.poisson(0.4, size=len(su))
        qu = np.repeat(su, ns)
        qcat = t.user_pref_cats[qu, rng.integers(0, 3, size=len(qu))]
        qt = np.minimum(np.repeat(start, ns) + (rng.exponential(60.0, size=len(qu)) * 1e6).astype(np.int64),
                        day_end)
        out.append(_events(qt, w.user_ids[qu], "search", cat=qcat))
        # Buys: every item sold today has exactly one buyer, a fan of its category (not its seller).
        sold = np.flatnonzero((w.item_sold_at >= day_us) & (w.item_sold_at < day_us + US_PER_DAY))
        buyer = self.fans.sample(rng, t.item_category[sold])
        buyer = np.where(buyer < 0, rng.integers(0, n, size=len(sold)), buyer)
        own = w.user_ids[buyer] == w.item_seller[sold]
        buyer[own] = (buyer[own] + 1) % n
        bt = w.item_sold_at[sold]
        out.append(_events(np.maximum(bt - 60_000_000, day_us), w.user_ids[buyer], "view", w.item_ids[sold],
                           w.item_seller[sold], t.item_category[sold]))
        out.append(_events(bt, w.user_ids[buyer], "buy", w.item_ids[sold], w.item_seller[sold],
                           t.item_category[sold]))
        return out

    @staticmethod
    def _max_by(group: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
        out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(out, group, value)
        return out

    # -----------------------------------------------------------------------------------------
    def baseline_pushes(self, d: int, rng: np.random.Generator) -> tuple[dict, list[dict]]:
        """Push 1.0: audience list, fatigue cap, one global best scene (epsilon-explored), one item,
        one fixed hour. Outcomes drawn from the ground truth; opens produce app_open events."""
        w, t, spec = self.w, self.w.truth, self.spec
        n = len(w.user_ids)
        day_us = spec.start_us + d * US_PER_DAY
        v = w.variant
        send_base = day_us + (BASELINE_HOUR_UTC if v.history_hour_utc is None else v.history_hour_utc) * US_PER_HOUR
        today = PRE_DAYS + d
        recent7 = self.pushes_per_day[today - 7:today].sum(axis=0)
        recent1 = self.pushes_per_day[today - 1]
        active30 = self.last_open >= day_us - 30 * US_PER_DAY
        audience = np.flatnonzero(w.user_opt_in & active30 & (recent7 < 3) & (rng.random(n) < 0.6))
        k = len(HISTORY_SCENES)
        ctr = np.where(self.scene_sent >= 100, self.scene_opened / np.maximum(self.scene_sent, 1), -1)
        best = int(np.argmax(ctr)) if (ctr >= 0).any() else 0
        explore = rng.random(len(audience)) < BASELINE_EPSILON
        scene = np.where(explore, rng.integers(0, k, size=len(audience)), best)
        propensity = np.where(scene == best, 1 - BASELINE_EPSILON + BASELINE_EPSILON / k, BASELINE_EPSILON / k)
        sent_at = send_base + rng.integers(0, 600, size=len(audience)) * 1_000_000
        if v.history_hour_utc is None:      # a random local hour 09-21 per push
            local = rng.integers(9, 22, size=len(audience)) * 60
            sent_at = _utc_from_local(t, audience, day_us, local) + rng.integers(0, 600, size=len(audience)) * 1_000_000

        live = self._live_index(send_base)
        live_items = live.members
        item = np.full(len(audience), -1, dtype=np.int64)
        # hot_items: one of the 200 most attractive live items.
        attract = t.item_quality[live_items] + t.item_value[live_items]
        hot = live_items[np.argsort(-attract)[:200]]
        m = scene == 0
        item[m] = hot[rng.integers(0, len(hot), size=m.sum())] if len(hot) else -1
        # guess_you_like: a live item in the user's most viewed category.
        m = scene == 1
        vc = self.view_counts[audience[m]]
        top = np.where(vc.max(axis=1) > 0, vc.argmax(axis=1), rng.integers(1, self.ncat + 1, size=m.sum()))
        item[m] = live.sample(rng, top)
        # new_listings: listed in the last 48 h.
        fresh = live_items[t.item_listed_at[live_items] >= send_base - 2 * US_PER_DAY]
        m = scene == 2
        item[m] = fresh[rng.integers(0, len(fresh), size=m.sum())] if len(fresh) else -1
        # price_drop: dropped in the last 7 days.
        dropped = live_items[(w.item_drop_at[live_items] <= send_base)
                             & (w.item_drop_at[live_items] >= send_base - 7 * US_PER_DAY)]
        m = scene == 3
        item[m] = dropped[rng.integers(0, len(dropped), size=m.sum())] if len(dropped) else -1

        ok = item >= 0
        audience, scene, propensity, sent_at, item = audience[ok], scene[ok], propensity[ok], sent_at[ok], item[ok]
        uid = w.user_ids[audience]
        iid = w.item_ids[item]
        offsets = np.arange(len(audience) + 1)
        scene_names = np.array(v.history_scenes)[scene]
        p_open = t.open_probability(uid, scene_names, offsets, iid, sent_at,
                                    pushes_24h=recent1[audience], pushes_7d=recent7[audience])
        opened = rng.random(len(uid)) < p_open
        delay = np.minimum(rng.exponential(25 * 60, size=len(uid)), 6 * 3600)
        opened_at = np.where(opened, sent_at + (delay * 1e6).astype(np.int64), -1)
        clicked = t.draw_clicks(rng, uid, offsets, iid, sent_at, opened)
        self.pushes_per_day[today, audience] = 1
        np.add.at(self.scene_sent, scene, 1)
        np.add.at(self.scene_opened, scene, opened)
        ds = (spec.start + timedelta(days=d)).strftime("%Y%m%d")
        push_id = np.char.add(f"bl-{ds}-", np.char.zfill(uid.astype(str), 9))
        pushes = {"push_id": push_id, "user_id": uid, "scene_id": scene_names, "item": iid,
                  "sent_at": sent_at, "opened_at": opened_at, "clicked_item_id": clicked,
                  "propensity": propensity}
        o = opened
        c = clicked >= 0
        ev = [_events(opened_at[o], uid[o], "app_open"),
              _events(opened_at[c] + 5_000_000, uid[c], "view", clicked[c], w.item_seller[clicked[c] - 1],
                      t.item_category[clicked[c] - 1])]
        self.last_open[audience[o]] = np.maximum(self.last_open[audience[o]], opened_at[o])
        return pushes, ev


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _ts(us: np.ndarray) -> pa.Array:
    us = np.asarray(us, dtype=np.int64)
    return pa.array(us, type=pa.int64(), mask=us < 0).cast(pa.timestamp("us", tz="UTC"))


def _nullable(x: np.ndarray, typ) -> pa.Array:
    x = np.asarray(x)
    return pa.array(x, mask=x < 0).cast(typ)


def events_table(chunks: list[dict]) -> pa.Table:
    cols = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    order = np.argsort(cols["ts"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    names = np.array(EVENT_TYPES)
    return pa.table({
        "ts": _ts(cols["ts"]), "user_id": pa.array(cols["user_id"], pa.int64()),
        "event_type": pa.array(names[cols["event_type"]], pa.string()),
        "item_id": _nullable(cols["item_id"], pa.int64()), "seller_id": _nullable(cols["seller_id"], pa.int64()),
        "category_id": _nullable(cols["category_id"], pa.int32()),
    }, schema=RAW_SCHEMAS["events"])


def push_table(p: dict) -> pa.Table:
    n = len(p["user_id"])
    items = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), pa.array(p["item"], pa.int64()))
    return pa.table({
        "push_id": pa.array(p["push_id"], pa.string()), "user_id": pa.array(p["user_id"], pa.int64()),
        "scene_id": pa.array(p["scene_id"], pa.string()), "item_ids": items,
        "sent_at": _ts(p["sent_at"]), "opened_at": _ts(p["opened_at"]),
        "clicked_item_id": _nullable(p["clicked_item_id"], pa.int64()),
        "policy": pa.array(np.full(n, "baseline"), pa.string()),
        "propensity": pa.array(p["propensity"], pa.float64()),
    }, schema=RAW_SCHEMAS["push_log"])


def item_changes_table(w: World) -> pa.Table:
    m = len(w.item_ids)
    end = w.spec.end_us
    parts = [(w.item_ids, w.truth.item_listed_at, "listed", w.item_price)]
    d = w.item_drop_at < end
    parts.append((w.item_ids[d], w.item_drop_at[d], "price_drop", w.item_drop_price[d]))
    final_price = np.where(w.item_drop_at < NEVER, w.item_drop_price, w.item_price)
    s = w.item_sold_at < end
    parts.append((w.item_ids[s], w.item_sold_at[s], "sold", final_price[s]))
    r = w.item_removed_at < end
    parts.append((w.item_ids[r], w.item_removed_at[r], "removed", final_price[r]))
    ids = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    change = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    price = np.concatenate([p[3] for p in parts])
    keep = ts < end
    order = np.lexsort((ids[keep], ts[keep]))
    assert m == len(w.item_ids)
    return pa.table({"item_id": pa.array(ids[keep][order], pa.int64()), "ts": _ts(ts[keep][order]),
                     "change": pa.array(change[keep][order], pa.string()),
                     "price": pa.array(price[keep][order].astype(np.float64))}, schema=RAW_SCHEMAS["item_changes"])


def users_table(w: World) -> pa.Table:
    return pa.table({
        "user_id": pa.array(w.user_ids, pa.int64()),
        "tz": pa.array(np.array(w.truth.timezones)[w.truth.user_tz], pa.string()),
        "platform": pa.array(np.array(PLATFORMS)[w.user_platform], pa.string()),
        "device_token": pa.array(w.user_token, pa.string(), from_pandas=True),
        "opt_in": pa.array(w.user_opt_in, pa.bool_()),
        "registered_at": _ts(w.user_registered_at),
    }, schema=RAW_SCHEMAS["users"])


def items_table(w: World) -> pa.Table:
    end = w.spec.end_us
    listed = w.truth.item_listed_at < end
    status = np.where(w.item_sold_at < end, "sold", np.where(w.item_removed_at < end, "removed", "on_sale"))
    price = np.where(w.item_drop_at < end, w.item_drop_price, w.item_price)
    cat = w.truth.item_category
    names = np.array(CATEGORY_NAMES + tuple(f"Category {c}" for c in range(len(CATEGORY_NAMES) + 1, w.n_categories + 1)))
    title = np.char.add(np.char.add(names[cat - 1], " #"), w.item_ids.astype(str))
    sel = listed
    return pa.table({
        "item_id": pa.array(w.item_ids[sel], pa.int64()), "seller_id": pa.array(w.item_seller[sel], pa.int64()),
        "category_id": pa.array(cat[sel], pa.int32()), "price": pa.array(price[sel].astype(np.float64)),
        "listed_at": _ts(w.truth.item_listed_at[sel]), "status": pa.array(status[sel], pa.string()),
        "title": pa.array(title[sel], pa.string()),
    }, schema=RAW_SCHEMAS["items"])


def _write_partitioned(table: pa.Table, folder: Path, time_col: str) -> None:
    days = pc.strftime(table[time_col], format="%Y-%m-%d")
    table = table.append_column("__ds", days)
    for ds in sorted(set(days.to_pylist())):
        part = table.filter(pc.equal(table["__ds"], ds)).drop_columns(["__ds"])
        _write(part, folder / f"ds={ds}")


def _write(table: pa.Table, folder: Path, name: str = "part-00000.parquet") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name, compression="zstd", row_group_size=1_000_000)


def simulate(spec: WorldSpec, warehouse: Path, push_days: int | None = None) -> dict:
    """Generate the world and write raw/ atomically (built aside, then swapped in). Returns counts.

    push_days: Push 1.0 runs on the first `push_days` days only (default: all). The days after carry organic
    events alone — the evaluation (lab/evaluation/) lets each policy push into them in a closed loop. Organic
    behaviour never depends on pushes, so both policies face the same users and the same events."""
    push_days = spec.days if push_days is None else push_days
    t0 = time.monotonic()
    warehouse = Path(warehouse)
    final = Warehouse(warehouse).raw("users").parent
    staging_root = warehouse / f".raw-staging-{spec.seed}"
    staging = staging_root / "raw"
    shutil.rmtree(staging_root, ignore_errors=True)
    world = build_world(spec)
    sim = Simulation(world)
    counts = {"events": 0, "push_log": 0}
    stage_raw = Warehouse(staging_root).raw
    day_rngs = [np.random.default_rng(s) for s in sim.rng_root.spawn(spec.days)]
    for d in range(spec.days):
        rng = day_rngs[d]
        ds = (spec.start + timedelta(days=d)).isoformat()
        chunks = sim.organic_day(d, rng)
        pushes, push_events = sim.baseline_pushes(d, rng) if d < push_days else (None, [])
        ev = events_table(chunks + push_events)
        _write(ev, stage_raw("events") / f"ds={ds}")
        counts["events"] += ev.num_rows
        if pushes is not None:
            pt = push_table(pushes)
            _write(pt, stage_raw("push_log") / f"ds={ds}")
            counts["push_log"] += pt.num_rows
        log.info("simulated %s: %d events, %d pushes", ds, ev.num_rows, 0 if pushes is None else len(pushes["user_id"]))
    changes = item_changes_table(world)
    _write_partitioned(changes, stage_raw("item_changes"), "ts")
    users, items = users_table(world), items_table(world)
    _write(users, stage_raw("users"))
    _write(items, stage_raw("items"))
    counts.update(users=users.num_rows, items=items.num_rows, item_changes=changes.num_rows)
    world_doc = {"users": spec.users, "items": spec.items, "days": spec.days, "seed": spec.seed,
                 "start": spec.start.isoformat(), "last_ds": spec.last_ds,
                 "baseline_hour_utc": world.variant.history_hour_utc, "baseline_epsilon": BASELINE_EPSILON,
                 "history_scenes": list(world.variant.history_scenes), "push_days": push_days, "counts": counts,
                 "variant": world.variant.as_dict()}
    world.truth.save(Warehouse(staging_root).ground_truth, world_doc)
    # Swap: a reader sees either the old world or the new one, never half of each.
    old = warehouse / ".raw-old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging_root, ignore_errors=True)
    counts["seconds"] = round(time.monotonic() - t0, 1)
    return counts
