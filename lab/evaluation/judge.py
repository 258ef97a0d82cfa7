"""`hermes judge --ds D`: score a night's plan under the simulated world's truth, against Push 1.0, a random hour and
an oracle, and say where the gap to the oracle is lost.

Every what-if is scored on the same users (those both Hermes and Push 1.0 push on the send day), with the same
true response model, fatigue and context, so only what differs between two rows moves the open rate:

| row | scene | items | hour |
|---|---|---|---|
| Push 1.0 | its global scene | its item | its fixed local hour |
| random hour | Hermes' | Hermes' | a uniformly drawn allowed local hour |
| **Hermes' plan** | Hermes' | Hermes' | Hermes' |
| best hour | Hermes' | Hermes' | the user's true best allowed hour |
| best category | Hermes' | as many items as Hermes shows: the best live ones of the user's top true category | Hermes' |
| best quality | Hermes' | per shown item, the best live item of its category (2nd best for a second one, ...) | Hermes' |
| oracle | Hermes' | the better of "best category" and Hermes' own feed | the user's true best allowed hour |
| ... *visible* | best category, best quality, oracle: the same, items ranked by the quality behaviour shows | | |

The **share of the oracle's lift** is (plan - Push 1.0) / (oracle - Push 1.0). The gaps "best hour - plan", "best
category - plan" and "best quality - plan" say how much timing, matching and item quality each leave on the table.
The oracle picks items by their latent quality, which a listing a day or two old has barely shown: the *visible*
rows pick them (among the same items, with the same true category, hour and knowledge of which stay on sale) by the
best estimate the events allow (`visible_appeal`, which knows the simulator's laws), so "the share of the visible
oracle's lift" and the visible item-quality gap say what is left to find in the data, the rest being quality no
behaviour had shown yet. A visible gap below 0: Hermes' items are truly better than the best that behaviour points
to. Diagnostics: the true activity at the chosen hour against the user's best allowed hour (users with >= 5 app
opens in the 28 days before), the true affinity of the best shown item's category against the user's top one, the
latent quality of the shown items, and calibration: the plan's own expected opens against the truth's, overall and
per scene, next to the truth of each push holding only its first item (a feed is estimated by its best item, from a
history of one-item pushes: where the truth values a long feed above its lead item, the estimate cannot see it, and
the scene choice, which compares the estimates, sends users to short feeds).

As delivered (`as_delivered`): the same pushes as the delivery runs would send them — each send hour drops the items
sold or removed by its start, tops a feed up from its reserves and withdraws a feed left empty — for the plan, the
plan without its reserves, and Push 1.0: what the check for sold items and the reserves are worth under the truth.

Lives in the lab: it needs a simulated world's ground truth (raw/_ground_truth).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from core.warehouse import Warehouse

log = logging.getLogger(__name__)
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
ACTIVE_OPENS = 5          # users with at least this many app opens in 28 days have hours to follow


@dataclass
class Pushes:
    users: np.ndarray         # int64 [n]
    scenes: np.ndarray        # object [n]
    offsets: np.ndarray       # int64 [n + 1]
    items: np.ndarray         # int64 flat
    send_at: np.ndarray       # int64 us [n]

    def with_(self, **kw) -> "Pushes":
        return Pushes(**{**self.__dict__, **kw})


def _flat(lists) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if len(lists) else np.zeros(0, np.int64)
    return offsets, items


class Truth:
    """The world's true open probability of any set of pushes, with the users' real fatigue and context."""

    def __init__(self, wh: Warehouse, send_day: str, gt=None):
        """gt: the world's GroundTruth when already loaded (another warehouse of the same world)."""
        from lab.evaluation.outcomes import _recent_pushes
        from lab.simulator.ground_truth import GroundTruth

        self.wh, self.send_day = wh, send_day
        self.gt = gt if gt is not None else GroundTruth.load(wh.ground_truth)
        self.hist_users, self.hist_at = _recent_pushes(wh, send_day)

    def p_open(self, p: Pushes, context: bool = True) -> np.ndarray:
        """context=False leaves out the relevance and timeliness terms, which the simulator's own Push 1.0 history
        was drawn without (a diagnostic of calibration: what no model trained on that history could have seen)."""
        from lab.evaluation.outcomes import _count_before
        from lab.simulator.ground_truth import push_context

        p24 = _count_before(p.users, p.send_at, self.hist_users, self.hist_at, 24 * US_PER_HOUR)
        p7 = _count_before(p.users, p.send_at, self.hist_users, self.hist_at, 7 * US_PER_DAY)
        ctx = push_context(self.wh.root, p.users, p.offsets, p.items, p.send_at) if context else None
        return self.gt.open_probability(p.users, p.scenes, p.offsets, p.items, p.send_at, pushes_24h=p24,
                                        pushes_7d=p7, context=ctx)


def _hour_choices(gt, users: np.ndarray, send_at: np.ndarray, quiet: tuple[int, int]):
    """For each push, the 24 instants send_at + k h (k = -12..11): whether each is outside quiet hours and the
    user's true activity there. Returns (shifts_us [24], allowed [n, 24], activity [n, 24])."""
    idx = gt.user_index(users)
    ks = np.arange(-12, 12)
    at = send_at[:, None] + ks[None, :] * US_PER_HOUR
    flat_u = np.repeat(idx, len(ks))
    lh = gt.local_hour(flat_u, at.ravel()).reshape(at.shape)
    from features.windows import is_quiet

    allowed = ~is_quiet(lh, quiet)
    act = gt.activity_at(flat_u, at.ravel()).reshape(at.shape)
    return ks * US_PER_HOUR, allowed, act


def _best_items(gt, day_start_us: int, k: int, appeal: np.ndarray | None = None):
    """[n_categories + 1, k]: per category, its k live items (listed before the send day and still on sale at the
    end of the day after it, so at any hour the oracle may choose: up to 11 h after a send late in the send day;
    the oracle knows which sell) with the best item score, best first; -1 where the category has fewer. The score is
    `appeal` (per item, indexed like gt.item_quality), by default the true one (quality and price attractiveness under
    the world's own coefficients)."""
    live = (gt.item_listed_at <= day_start_us) & (gt.item_end_at > day_start_us + 2 * US_PER_DAY)
    idx = np.flatnonzero(live)
    score = gt.item_appeal(idx) if appeal is None else appeal[idx]
    cat = gt.item_category[idx]
    order = np.lexsort((-score, cat))
    cat, idx = cat[order], idx[order]
    start = np.searchsorted(cat, cat, side="left")
    rank = np.arange(len(cat)) - start
    best = np.full((int(gt.item_category.max()) + 1, k), -1, dtype=np.int64)
    keep = rank < k
    best[cat[keep], rank[keep]] = idx[keep] + 1
    return best


QUALITY_GRID = np.linspace(-5.0, 5.0, 201)


def visible_appeal(wh: Warehouse, gt, before_us: int, chunk: int = 20_000) -> np.ndarray:
    """Per item (indexed like gt.item_quality): its true price attractiveness, plus its quality as well as behaviour
    before `before_us` can show it — the posterior mean of the latent quality (prior N(0, 1), the world's) given the
    item's views (those a push led to left out: `_push_driven_views`), the favs, carts and chats that followed them,
    and that it has not sold yet, under the simulator's own laws (lab.simulator.market: ENGAGEMENT, SELL_DAYS, ...)
    and the viewers' true affinities.

    No platform can estimate quality better from these events, so "the best items behaviour shows" bounds what any
    behavioural quality signal can find: the oracle's best items are picked by latent quality, which a listing a day
    or two old has barely shown (a handful of views, about one fav)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from core.contract import TS
    from lab.simulator.market import ENGAGEMENT, ENGAGEMENT_QUALITY, SELL_DAYS, SELL_QUALITY, SELL_VALUE

    base = {name: rate for name, rate, _ in ENGAGEMENT}
    data = pads.dataset(str(wh.raw("events")), format="parquet", partitioning="hive")
    t = data.to_table(columns=["ts", "user_id", "event_type", "item_id"],
                      filter=pc.field("event_type").isin(["view", *base]) & pc.field("item_id").is_valid())
    ts = t["ts"].cast(TS).cast("int64").to_numpy()          # microseconds, whatever unit the files hold
    keep = (ts < before_us) & ~_push_driven_views(wh, t, ts)
    etype = t["event_type"].to_numpy(zero_copy_only=False)[keep]
    item = gt.item_index(t["item_id"].to_numpy()[keep])
    n = len(gt.item_quality)
    view = etype == "view"
    users = gt.user_index(t["user_id"].to_numpy()[keep][view])
    # engagement expected of each view at quality 0, and what each item got
    per_view = sum(base.values()) * (0.5 + 2 * gt.affinity(users, gt.item_category[item[view]]))
    expected0 = np.bincount(item[view], weights=per_view, minlength=n)
    engaged = np.bincount(item[~view], minlength=n).astype(np.float64)
    age_days = np.maximum(before_us - gt.item_listed_at, 0) / US_PER_DAY
    q = QUALITY_GRID[None, :]
    log_prior = -0.5 * QUALITY_GRID ** 2
    out = np.zeros(n)
    for lo in range(0, n, chunk):
        sl = slice(lo, min(lo + chunk, n))
        rate = expected0[sl, None] * np.maximum(1 + ENGAGEMENT_QUALITY * q, 1e-3)
        unsold = age_days[sl, None] / (SELL_DAYS * np.exp(-SELL_QUALITY * q - SELL_VALUE * gt.item_value[sl, None]))
        log_post = engaged[sl, None] * np.log(np.maximum(rate, 1e-300)) - rate - unsold + log_prior
        w = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        out[sl] = (w * q).sum(axis=1) / w.sum(axis=1)
    return gt.params.quality * out + gt.params.value * gt.item_value.astype(np.float64)


def _push_driven_views(wh: Warehouse, t, ts: np.ndarray) -> np.ndarray:
    """Per event row of t (ts, user_id, event_type, item_id): a view a push led to, by the platform's own rule
    (features.rollups.push_driven: one of the push's items, by its user, within PUSH_VIEW_WINDOW_S of the open).
    Such a view is the push's click, not a draw of the simulator's organic laws (no fav, cart or chat ever follows
    it), so counting it would tell the posterior the pushed items were looked at and passed over."""
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from core.contract import TS
    from features.rollups import PUSH_VIEW_WINDOW_S

    out = np.zeros(t.num_rows, dtype=bool)
    if not wh.raw("push_log").exists() or not any(wh.raw("push_log").rglob("*.parquet")):
        return out
    log = pads.dataset(str(wh.raw("push_log")), format="parquet", partitioning="hive").to_table(
        columns=["user_id", "item_ids", "opened_at"], filter=pc.field("opened_at").is_valid())
    if log.num_rows == 0:
        return out
    counts = pc.fill_null(pc.list_value_length(log["item_ids"]), 0).to_numpy(zero_copy_only=False)   # no feed: no views
    opens = pd.DataFrame({"user_id": np.repeat(log["user_id"].to_numpy(), counts),
                          "item_id": pc.list_flatten(log["item_ids"]).to_numpy(zero_copy_only=False),
                          "opened": np.repeat(log["opened_at"].cast(TS).cast("int64").to_numpy(), counts)})
    is_view = np.flatnonzero(t["event_type"].to_numpy(zero_copy_only=False) == "view")
    views = pd.DataFrame({"row": is_view, "user_id": t["user_id"].to_numpy()[is_view],
                          "item_id": t["item_id"].to_numpy()[is_view], "ts": ts[is_view]})
    m = views.merge(opens, on=["user_id", "item_id"])
    hit = m["row"][(m["ts"] >= m["opened"]) & (m["ts"] <= m["opened"] + PUSH_VIEW_WINDOW_S * 1_000_000)]
    out[hit.to_numpy()] = True
    return out


def _feeds(best: np.ndarray, cats: np.ndarray, sizes: np.ndarray, fallback_off, fallback_items):
    """Per push, the `size` best live items of category `cat` (fewer if it has fewer; the push's own feed if none)."""
    lists = []
    for i, (c, n) in enumerate(zip(cats, sizes)):
        got = best[c, :n]
        got = got[got > 0]
        lists.append(got if len(got) else fallback_items[fallback_off[i]:fallback_off[i + 1]])
    return _flat(lists)


OWN_PLAN = "this warehouse's plan"       # judge()'s push_1_0_from when Push 1.0 is the judged warehouse's own plan


def _assigned(wh: Warehouse, ds: str, policy: str):
    """The plan's pushes of one policy that got a send slot (plan/windows), with send_us (int64 us)."""
    import pandas as pd

    cols = ["user_id", "policy", "scene_id", "item_ids", "send_at", "slot", "p_open", "explored"]
    cols += [c for c in ("reserve_ids",) if c in wh.schema("plan/windows", ds).names]
    w = wh.read_arrow("plan/windows", ds, cols).to_pandas()
    w = w[(w["slot"] >= 0) & (w["policy"] == policy)].copy()
    if w.empty:
        raise ValueError(f"plan/windows ds={ds} in {wh.root}: no assigned pushes for {policy}: nothing to judge")
    w["send_us"] = pd.to_datetime(w["send_at"], utc=True).dt.as_unit("us").astype("int64")
    return w


def _plannable(wh: Warehouse, ds: str, day: str, rows, at: np.ndarray, first_slot: int) -> np.ndarray | None:
    """[n, k] whether each candidate instant `at` of each plan row (user_id, scene_id) is one the night's plan could
    have used: inside the plan's slots (from `first_slot` h of the send day to 12:00 UTC the day after) and inside the
    user's window from plan/eligible (earliest send under the spacing rule, end of their local plan day). None when
    plan/eligible is not there."""
    import pandas as pd

    from features.windows import SLOTS

    if not wh.partition("plan/eligible", ds).exists():
        return None
    el = wh.read_arrow("plan/eligible", ds, ["user_id", "scene_id", "earliest_send_at", "plan_day_end"]).to_pandas()
    m = rows[["user_id", "scene_id"]].merge(el, on=["user_id", "scene_id"], how="left", validate="one_to_one")
    us = lambda c: pd.to_datetime(m[c], utc=True).dt.as_unit("us").astype("int64").to_numpy()      # noqa: E731
    start = int(pd.Timestamp(day, tz="UTC").value // 1000)
    lo = np.maximum(us("earliest_send_at"), start + first_slot * US_PER_HOUR)
    hi = np.minimum(us("plan_day_end"), start + SLOTS * US_PER_HOUR)
    slot_start = at - at % US_PER_HOUR        # a send inside an hour counts as that hour's slot
    return (slot_start >= lo[:, None]) & (slot_start < hi[:, None])


def judge(wh: Warehouse, ds: str, quiet_hours: tuple[int, int] = (22, 8), seed: int = 0,
          baseline_wh: Warehouse | None = None, max_per_category: int | None = None, first_slot: int = 1) -> dict:
    """The judgement of the plan for ds (plan/windows of both policies) under the world's truth.

    baseline_wh: a warehouse of the same world whose Push 1.0 plan is the baseline, judged on its own push history
    (the closed loop's Push 1.0 arm: from the second night, Push 1.0 re-planned on Hermes' history picks its one
    global scene from Hermes' logged opens and is no longer the Push 1.0 the other arm sends). Default: wh's own.
    max_per_category: the feeds' diversity cap, which delivery keeps when a reserve stands in for a sold item.
    first_slot: the plan's first usable UTC hour of the send day (windows.first_send_hour_utc), for the timing's
    best plannable hour."""
    import pandas as pd

    from jobs.windows import send_day as send_day_of

    day = send_day_of(ds)
    h = _assigned(wh, ds, "hermes")
    b = _assigned(baseline_wh if baseline_wh is not None else wh, ds, "baseline")
    truth = Truth(wh, day)
    gt = truth.gt
    truth_b = Truth(baseline_wh, day, gt) if baseline_wh is not None else truth
    # the plan's calibration, on every Hermes push
    h_off, h_items = _flat(h["item_ids"].tolist())
    plan_all = Pushes(h["user_id"].to_numpy(np.int64), h["scene_id"].to_numpy(object), h_off, h_items,
                      h["send_us"].to_numpy(np.int64))
    p_plan_all = truth.p_open(plan_all)
    true_no_context = float(truth.p_open(plan_all, context=False).sum())
    expected_all = float(h["p_open"].sum())
    # the same pushes holding only their first item: what the estimate of a feed (its best item's) is the estimate of
    lead_only = truth.p_open(plan_all.with_(offsets=np.arange(len(h) + 1, dtype=np.int64), items=h_items[h_off[:-1]]))
    # unique second-hand items sell between the night's plan and the send: a sold lead leaves the feed to its others
    lead_idx = gt.item_index(h_items[h_off[:-1]])
    lead_on_sale = ((gt.item_listed_at[lead_idx] <= plan_all.send_at) & (plan_all.send_at < gt.item_end_at[lead_idx]))
    by_scene = (pd.DataFrame({"scene_id": h["scene_id"].to_numpy(object), "expected": h["p_open"].to_numpy(float),
                              "true": p_plan_all, "lead_item_alone": lead_only, "items": np.diff(h_off),
                              "lead_on_sale": lead_on_sale.astype(float)})
                .groupby("scene_id").agg(pushes=("true", "size"), items_per_feed=("items", "mean"),
                                         expected=("expected", "mean"), true=("true", "mean"),
                                         lead_item_alone=("lead_item_alone", "mean"),
                                         lead_on_sale=("lead_on_sale", "mean")))

    common = np.intersect1d(h["user_id"].to_numpy(), b["user_id"].to_numpy())
    if not len(common):
        raise ValueError(f"plan/windows ds={ds}: no user is pushed by both Hermes ({len(h):,} pushes) and Push 1.0 "
                         f"({len(b):,}): nothing to compare")
    hc = h.set_index("user_id").loc[common].reset_index()
    bc = b.set_index("user_id").loc[common].reset_index()
    users = common.astype(np.int64)
    off, items = _flat(hc["item_ids"].tolist())
    plan = Pushes(users, hc["scene_id"].to_numpy(object), off, items, hc["send_us"].to_numpy(np.int64))
    b_off, b_items = _flat(bc["item_ids"].tolist())
    push1 = Pushes(users, bc["scene_id"].to_numpy(object), b_off, b_items, bc["send_us"].to_numpy(np.int64))

    shifts, allowed, act = _hour_choices(gt, users, plan.send_at, quiet_hours)
    masked = np.where(allowed, act, -1.0)
    best_k = masked.argmax(axis=1)
    rng = np.random.default_rng([seed, 77])
    rand_k = np.array([rng.choice(np.flatnonzero(a)) if a.any() else 12 for a in allowed])
    at_best = plan.send_at + shifts[best_k]
    at_rand = plan.send_at + shifts[rand_k]

    day_start = int(pd.Timestamp(day, tz="UTC").value // 1000)
    sizes = np.diff(off)
    best = _best_items(gt, day_start, int(max(sizes.max(), 1)))
    uidx = gt.user_index(users)
    top_cat = gt.user_pref_cats[uidx, np.argmax(gt.user_pref_weights[uidx], axis=1)]
    cat_off, cat_items = _feeds(best, top_cat, sizes, off, items)     # as many items as Hermes shows
    shown_cat = gt.item_category[gt.item_index(items)]
    row = np.repeat(np.arange(len(users)), sizes)
    nth = np.arange(len(items)) - off[row]                              # the n-th shown item of its category
    nth_in_cat = np.array([np.sum(shown_cat[off[r]:off[r] + j] == shown_cat[off[r] + j]) for r, j in zip(row, nth)],
                          dtype=np.int64)
    swap = best[shown_cat, np.minimum(nth_in_cat, best.shape[1] - 1)]
    quality_items = np.where(swap > 0, swap, items)
    # the same picks (among the same items, which the oracle knows stay on sale) by the quality behaviour shows
    seen = _best_items(gt, day_start, int(max(sizes.max(), 1)), visible_appeal(wh, gt, day_start))
    seen_off, seen_items = _feeds(seen, top_cat, sizes, off, items)
    seen_swap = seen[shown_cat, np.minimum(nth_in_cat, seen.shape[1] - 1)]

    rows = {
        "push_1_0": push1,
        "random_hour": plan.with_(send_at=at_rand),
        "plan": plan,
        "best_hour": plan.with_(send_at=at_best),
        "best_category": plan.with_(offsets=cat_off, items=cat_items),
        "best_quality": plan.with_(items=quality_items),
        "best_category_visible": plan.with_(offsets=seen_off, items=seen_items),
        "best_quality_visible": plan.with_(items=np.where(seen_swap > 0, seen_swap, items)),
    }
    p = {k: (truth_b if k == "push_1_0" else truth).p_open(v) for k, v in rows.items()}
    # the oracle: at the user's best hour, the better of the top category's best items and Hermes' own feed (which
    # may hold what the user favourited, or a seller they follow: worth more than any generic good item)
    p["oracle"] = np.maximum(truth.p_open(plan.with_(offsets=cat_off, items=cat_items, send_at=at_best)),
                             p["best_hour"])
    p["oracle_visible"] = np.maximum(truth.p_open(plan.with_(offsets=seen_off, items=seen_items, send_at=at_best)),
                                     p["best_hour"])
    rates = {k: float(v.mean()) for k, v in p.items()}
    # the plan's calibration against what it opens as delivered: the pushes as delivery sends them (sold items
    # dropped, reserves in their place, empty feeds withdrawn), every Hermes push
    delivered_all = _as_delivered(truth, h, plan_all, reserves=True, max_per_category=max_per_category)
    true_delivered = delivered_all["open_rate"] * len(h)
    delivered = {"push_1_0": _as_delivered(truth_b, bc, push1, reserves=False),
                 "plan_without_reserves": _as_delivered(truth, hc, plan, reserves=False),
                 "plan": _as_delivered(truth, hc, plan, reserves=True, max_per_category=max_per_category)}
    lift = rates["oracle"] - rates["push_1_0"]
    share = (rates["plan"] - rates["push_1_0"]) / lift if lift > 0 else float("nan")
    lift_visible = rates["oracle_visible"] - rates["push_1_0"]
    share_visible = (rates["plan"] - rates["push_1_0"]) / lift_visible if lift_visible > 0 else float("nan")

    # diagnostics
    opens28 = _app_opens(wh, ds, users)
    active = opens28 >= ACTIVE_OPENS
    chosen_act = gt.activity_at(uidx, plan.send_at)
    best_act = masked[np.arange(len(users)), best_k]
    # the best hour the night's plan could have used (its slots, the user's window): what the hour model could reach
    can = _plannable(wh, ds, day, hc, plan.send_at[:, None] + shifts[None, :], first_slot)
    best_plannable = (np.where(allowed & can, act, 0.0).max(axis=1) if can is not None else None)
    aff = gt.affinity(uidx[row], shown_cat)
    best_aff = np.zeros(len(users))
    np.maximum.at(best_aff, row, aff)
    top_aff = gt.user_pref_weights[uidx].max(axis=1)
    live_q = gt.item_quality[(gt.item_listed_at <= day_start) & (gt.item_end_at > day_start)]
    scene_share = hc["scene_id"].value_counts(normalize=True).round(4).to_dict()
    return {
        "ds": ds, "send_day": day, "users_judged": int(len(users)), "hermes_pushes": int(len(h)),
        "push_1_0_from": OWN_PLAN if baseline_wh is None else str(baseline_wh.root),
        "open_rate": rates,
        "ratio_vs_push_1_0": rates["plan"] / rates["push_1_0"] if rates["push_1_0"] > 0 else float("nan"),
        "oracle_lift_share": share,
        # against an oracle that knows item quality only as well as behaviour shows it (visible_appeal)
        "visible_oracle_lift_share": share_visible,
        "gap_to_oracle": {"timing": rates["best_hour"] - rates["plan"],
                          "matching": rates["best_category"] - rates["plan"],
                          "item_quality": rates["best_quality"] - rates["plan"],
                          "item_quality_visible": rates["best_quality_visible"] - rates["plan"],
                          "total": rates["oracle"] - rates["plan"],
                          "total_visible": rates["oracle_visible"] - rates["plan"]},
        "timing": {"users_with_5_opens": int(active.sum()),
                   "activity_ratio_chosen_vs_best": float(chosen_act[active].mean() / best_act[active].mean())
                   if active.any() else float("nan"),
                   # how much of the best hour the plan's slots and the users' windows hold at all (1.0: the timing
                   # gap is the hour model's; below: the plan's horizon, e.g. a local morning before the first slot)
                   "activity_ratio_best_plannable_vs_best": float(best_plannable[active].mean() / best_act[active].mean())
                   if best_plannable is not None and active.any() else None,
                   "activity_vs_uniform_chosen": float(24 * chosen_act.mean()),
                   "activity_vs_uniform_best": float(24 * best_act.mean()),
                   "activity_vs_uniform_push_1_0": float(24 * gt.activity_at(uidx, push1.send_at).mean())},
        "matching": {"affinity_best_shown": float(best_aff.mean()), "affinity_top_category": float(top_aff.mean()),
                     "share_top_category_shown": float(np.mean([top_cat[i] in set(shown_cat[off[i]:off[i + 1]])
                                                                for i in range(len(users))]))},
        "quality": {"shown_mean": float(gt.item_quality[gt.item_index(items)].mean()),
                    "live_mean": float(live_q.mean()) if len(live_q) else float("nan")},
        "calibration": {"expected_opens": expected_all, "true_opens": float(p_plan_all.sum()),
                        "expected_over_true": expected_all / float(p_plan_all.sum()) if p_plan_all.sum() else float("nan"),
                        "true_opens_without_context": true_no_context,
                        "expected_over_true_without_context":
                            expected_all / true_no_context if true_no_context else float("nan"),
                        "true_opens_lead_item_alone": float(lead_only.sum()),
                        # what the estimate claims to estimate: a feed is estimated by its lead item until the
                        # recalibration knows what a longer feed adds (features/windows.py: Recalibration)
                        "expected_over_lead_item_truth":
                            expected_all / float(lead_only.sum()) if lead_only.sum() else float("nan"),
                        "lead_on_sale_at_send": float(lead_on_sale.mean()),
                        # what the plan does open: its feeds as delivery sends them (the truth above is the planned
                        # feed at the send, its sold items dead and no reserve in their place)
                        "true_opens_as_delivered": float(true_delivered),
                        "expected_over_true_as_delivered":
                            expected_all / true_delivered if true_delivered else float("nan"),
                        "by_scene": {sc: {k: float(v) for k, v in row.items()} for sc, row in by_scene.iterrows()}},
        "scene_share": scene_share,
        "as_delivered": delivered,
    }


def _as_delivered(truth: Truth, rows, pushes: Pushes, reserves: bool, max_per_category: int | None = None) -> dict:
    """The pushes as delivery sends them (delivery/availability.py): each send hour's run drops the items sold or
    removed by the hour's start, tops a feed up from its reserves still on sale (reserves=True; within
    max_per_category items of a category, as delivery does) and withdraws a feed left empty. Returns the true open
    rate over all planned pushes (a withdrawn one opens nothing), the withdrawn share and the reserve items sent."""
    from delivery.availability import prune

    gt = truth.gt
    hour_start = pushes.send_at - pushes.send_at % US_PER_HOUR
    msgs = [{"item_ids": list(pushes.items[pushes.offsets[i]:pushes.offsets[i + 1]]),
             "reserve_ids": list(r) if reserves and r is not None else []}
            for i, r in enumerate(rows["reserve_ids"] if "reserve_ids" in rows else [None] * len(rows))]
    if max_per_category:        # the items' categories, which delivery reads from the batch's item fields
        for m in msgs:
            ids = np.array([*m["item_ids"], *m["reserve_ids"]], np.int64)
            m["feed"] = [{"item_id": int(i), "category_id": int(c)}
                         for i, c in zip(ids, gt.item_category[gt.item_index(ids)])] if len(ids) else []
    for at in np.unique(hour_start):
        on = np.flatnonzero(hour_start == at)
        ids = np.array(sorted({int(i) for k in on for i in [*msgs[k]["item_ids"], *msgs[k]["reserve_ids"]]}), np.int64)
        gone = set(ids[gt.item_end_at[gt.item_index(ids)] <= at].tolist()) if len(ids) else set()
        prune([msgs[k] for k in on], gone, max_per_category)
    sent = np.array(["withdrawn_reason" not in m for m in msgs])
    p = np.zeros(len(msgs))
    k = np.flatnonzero(sent)
    if len(k):
        off, items = _flat([msgs[i]["item_ids"] for i in k])
        p[k] = truth.p_open(Pushes(pushes.users[k], pushes.scenes[k], off, items, pushes.send_at[k]))
    return {"open_rate": float(p.mean()) if len(p) else float("nan"), "withdrawn_share": float(1 - sent.mean()),
            "reserve_items_sent": int(sum(m.get("refilled", 0) for m in msgs))}


def _app_opens(wh: Warehouse, ds: str, users: np.ndarray) -> np.ndarray:
    """Each user's app opens in the 28 days up to ds (raw events)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    first = (date.fromisoformat(ds) - timedelta(days=27)).isoformat()
    data = pads.dataset(str(wh.raw("events")), format="parquet", partitioning="hive")
    t = data.to_table(columns=["user_id"], filter=(pc.field("event_type") == "app_open") & (pc.field("ds") >= first)
                      & (pc.field("ds") <= ds))
    ids, counts = np.unique(t["user_id"].to_numpy(), return_counts=True)
    pos = np.searchsorted(ids, users)
    pos = np.minimum(pos, max(len(ids) - 1, 0))
    return np.where((len(ids) > 0) & (ids[pos] == users), counts[pos], 0) if len(ids) else np.zeros(len(users), int)


def lines(r: dict) -> list[str]:
    """The judgement as the table `hermes judge` prints."""
    o = r["open_rate"]
    out = [f"judge: plan of ds={r['ds']} (send day {r['send_day']}), {r['users_judged']:,} users pushed by both "
           "Hermes and Push 1.0, scored under the world's true response model"]
    src = r.get("push_1_0_from", OWN_PLAN)
    out += ["Push 1.0: " + (src if src == OWN_PLAN else f"the plan in {src}, under that warehouse's push history"),
            "", f"  {'row':<34}{'true open rate':>16}"]
    names = {"push_1_0": "Push 1.0 (global scene, fixed hour)", "random_hour": "Hermes' items, random hour",
             "plan": "Hermes' plan", "best_hour": "Hermes' items, best hour",
             "best_category": "best category, Hermes' hours", "best_quality": "best items of Hermes' categories",
             "oracle": "oracle (best items+hour)",
             "best_quality_visible": "best items behaviour shows",
             "oracle_visible": "oracle of what behaviour shows"}
    out += [f"  {names[k]:<34}{100 * o[k]:>15.2f}%" for k in names if k in o]
    g, t, m, q, c = r["gap_to_oracle"], r["timing"], r["matching"], r["quality"], r["calibration"]
    out += ["", f"  share of the oracle's lift over Push 1.0: {100 * r['oracle_lift_share']:.1f} %   "
                f"(plan / Push 1.0 = {r['ratio_vs_push_1_0']:.2f}x)",
            f"  gap to oracle {100 * g['total']:.2f} pp: timing {100 * g['timing']:.2f}, matching "
            f"{100 * g['matching']:.2f}, item quality {100 * g['item_quality']:.2f} (pp each, alone)",
            *([f"  of what behaviour shows of item quality: share of that oracle's lift "
               f"{100 * r['visible_oracle_lift_share']:.1f} %, item quality gap {100 * g['item_quality_visible']:.2f} pp "
               "(the rest is quality no events had shown yet)"] if "visible_oracle_lift_share" in r else []),
            f"  timing: activity at the chosen hour / at the best allowed hour = {t['activity_ratio_chosen_vs_best']:.2f} "
            f"({t['users_with_5_opens']:,} users with >= 5 opens); x uniform: chosen {t['activity_vs_uniform_chosen']:.2f}, "
            f"best {t['activity_vs_uniform_best']:.2f}, Push 1.0 {t['activity_vs_uniform_push_1_0']:.2f}",
            *([f"  timing: the best hour the plan's slots and the users' windows hold = "
               f"{t['activity_ratio_best_plannable_vs_best']:.2f} of the best allowed (below 1: hours the plan "
               "cannot reach, not the hour model's)"] if t.get("activity_ratio_best_plannable_vs_best") is not None else []),
            f"  matching: affinity of the best shown category {m['affinity_best_shown']:.2f} vs top category "
            f"{m['affinity_top_category']:.2f}; top category shown to {100 * m['share_top_category_shown']:.0f} %",
            f"  quality: shown items {q['shown_mean']:+.2f} vs live average {q['live_mean']:+.2f} (latent, sd 1)",
            f"  calibration: expected opens {c['expected_opens']:,.1f} vs true {c['true_opens']:,.1f} "
            f"(x{c['expected_over_true']:.2f}); x{c['expected_over_true_without_context']:.2f} against a truth "
            "without the relevance / timeliness terms the simulated Push 1.0 history was drawn without; "
            f"x{c['expected_over_lead_item_truth']:.2f} against the truth of the lead items alone"
            + (f"; x{c['expected_over_true_as_delivered']:.2f} against what the plan opens as delivered (sold items "
               "replaced by reserves, empty feeds withdrawn)" if "expected_over_true_as_delivered" in c else ""),
            f"  scenes: {json.dumps(r['scene_share'])}"]
    d = r.get("as_delivered")
    if d:
        out += [f"  as delivered (items sold by the send hour dropped, feeds topped up from their reserves, empty ones "
                f"withdrawn): plan {100 * d['plan']['open_rate']:.2f} % ({100 * d['plan']['withdrawn_share']:.1f} % "
                f"withdrawn, {d['plan']['reserve_items_sent']:,} reserve items sent), without reserves "
                f"{100 * d['plan_without_reserves']['open_rate']:.2f} % "
                f"({100 * d['plan_without_reserves']['withdrawn_share']:.1f} % withdrawn), Push 1.0 "
                f"{100 * d['push_1_0']['open_rate']:.2f} % ({100 * d['push_1_0']['withdrawn_share']:.1f} % withdrawn)"]
    by_scene = c.get("by_scene", {})
    if by_scene:
        out += ["", "  calibration by scene (per push; 'lead item alone': the truth of the push holding only its first "
                "item, what a feed's estimate — its best item's — is an estimate of; 'lead on sale': the share of "
                "first items not sold or removed by the send)",
                f"  {'scene':<22}{'pushes':>8}{'items':>7}{'expected':>10}{'true':>8}{'lead item alone':>17}"
                f"{'lead on sale':>14}"]
        out += [f"  {sc:<22}{int(v['pushes']):>8,}{v['items_per_feed']:>7.1f}{v['expected']:>10.3f}{v['true']:>8.3f}"
                f"{v['lead_item_alone']:>17.3f}{100 * v.get('lead_on_sale', float('nan')):>13.0f}%"
                for sc, v in sorted(by_scene.items(), key=lambda kv: -kv[1]["pushes"])]
    return out


def run(settings, ds: str, loaded, baseline_warehouse: Path | None = None) -> dict:
    """baseline_warehouse: another warehouse of the same world whose Push 1.0 plan is the baseline (a closed loop's
    Push 1.0 arm, <evaluation>/baseline/warehouse)."""
    wh = Warehouse(settings.warehouse)
    if not (wh.ground_truth / "latent.npz").exists():
        raise FileNotFoundError(f"{wh.ground_truth}: no ground truth. `hermes judge` scores a plan under a simulated "
                                "world's truth (hermes simulate); real data has none")
    other = None
    if baseline_warehouse is not None:
        other = Warehouse(baseline_warehouse)
        if not other.partition("plan/windows", ds).exists():
            raise FileNotFoundError(f"--baseline-warehouse {baseline_warehouse}: no plan/windows ds={ds} there "
                                    "(a closed loop's Push 1.0 arm keeps it under <evaluation>/baseline/warehouse)")
    q = loaded.config.platform.quiet_hours
    r = judge(wh, ds, (q.start_hour, q.end_hour), baseline_wh=other,
              max_per_category=loaded.config.platform.feed.max_per_category,
              first_slot=loaded.config.platform.windows.first_send_hour_utc)
    path = wh.report("judge", ds, "judge")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2, default=float))
    return r | {"report": str(path)}
