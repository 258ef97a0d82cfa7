"""Point-in-time features of user x material pairs, for training and scoring alike.

A pair is keyed by (user_id, item_id, scene_id, day, local_hour). Every feature is an aggregate of whole
UTC days strictly *before* `day` — so a push sent on day D at any hour only sees data from before D 00:00,
and the plan for day D is scored exactly as the pushes of day D were trained. One code path for both.

Beside the FEATURES every pair gets `interest` (0/1): in the INTEREST_DAYS before its day the user favourited or
carted the item, or followed its seller. It is not a model feature: a history of pushes chosen without it (Push 1.0's
popular items) cannot say what it is worth. Training's recalibration learns that from the pushes' outcomes (Hermes'
own, once there are enough: features.windows.Recalibration's term e), and the selection and the plan carry it
(features/selection.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from features.rollups import Activity, activity_of, day_num, opens_by_local_hour

FEATURES = ("u_opens_7d", "u_opens_28d", "u_views_7d", "u_favs_28d", "u_pushes_1d", "u_pushes_7d",
            "u_push_open_rate", "aff_share", "hour_share_log", "i_drop_pct", "i_age_log", "i_views_7d_log",
            "i_favs_7d_log", "i_fav_rate", "i_price_rel", "scene_code")
LOOKBACK = 28
INTEREST_DAYS = LOOKBACK
PUSH_PRIOR_SENDS = 5.0
PUSH_PRIOR_RATE = 0.05
# A user's share of app opens in the send hour, estimated from a month of opens (a handful per hour at best):
# each open is spread over its neighbouring hours (a Gaussian of sd 1 h: habits are bumps, not single hours)
# and the user's counts are pulled toward the population's local-hour profile by HOUR_PRIOR_OPENS pseudo-opens.
# On the simulated worlds this takes the estimate's correlation with the true activity from 0.68 (raw counts,
# flat prior) to 0.88.
HOUR_KERNEL = tuple((k, math.exp(-0.5 * k * k) / sum(math.exp(-0.5 * j * j) for j in range(-2, 3)))
                    for k in range(-2, 3))
HOUR_PRIOR_OPENS = 6.0


def _as_of_sums(keys: DataFrame, daily: DataFrame, entity: list[str], values: dict[str, int],
                key_day: int | None = None) -> DataFrame:
    """For each distinct (entity, day) in keys, sum each daily value over the `window` days before day.

    values: column -> window in days. Rows at the key's own day are excluded (rangeBetween(-w, -1)).
    key_day: when every key has this one day (scoring a plan), a filtered aggregate per entity gives the same
    sums without the union + window over all history: entities without activity get no row (callers left-join
    and fill 0)."""
    if key_day is not None:
        longest = max(values.values())
        recent = daily.where((F.col("day") >= key_day - longest) & (F.col("day") <= key_day - 1))
        sums = [F.sum(F.when(F.col("day") >= key_day - w, F.col(col)).otherwise(0)).alias(f"{col}_{w}d")
                for col, w in values.items()]
        return recent.groupBy(*entity).agg(*sums).withColumn("day", F.lit(key_day))
    k = keys.select(*entity, "day").distinct().withColumn("_key", F.lit(True))
    # Only the history of entities some key asks about enters the windows: a training set sampled to a fraction
    # of the users (training.max_examples) then pays for that fraction. Exact: other entities yield no key row.
    d = (daily.select(*entity, "day", *values).join(k.select(*entity).distinct(), entity, "left_semi")
         .withColumn("_key", F.lit(False)))
    rows = d.unionByName(k, allowMissingColumns=True)
    out = rows
    for col, w in values.items():
        win = Window.partitionBy(*entity).orderBy("day").rangeBetween(-w, -1)
        out = out.withColumn(f"{col}_{w}d", F.coalesce(F.sum(col).over(win), F.lit(0)))
    return out.where("_key").select(*entity, "day", *[f"{c}_{w}d" for c, w in values.items()])


U_WINDOWS = {"opens": 7, "views": 7, "favs": 28, "pushes": 7, "push_opens_seen": 28, "pushes_recent": 1,
             "opens_long": 28, "pushes_long": 28}


def _user_daily(act: Activity, push_log: DataFrame) -> DataFrame:
    """(user_id, day) -> the day's opens, views, favs, pushes and push opens seen (one row per active day)."""
    user_daily = act.user_day.select("user_id", "day", F.col("n_app_open").alias("opens"),
                                     F.col("n_view").alias("views"), F.col("n_fav").alias("favs"))
    push_daily = (push_log.withColumn("day", day_num("sent_at")).groupBy("user_id", "day")
                  .agg(F.count("*").alias("pushes"),
                       F.sum(F.col("opened_at").isNotNull().cast("int")).alias("push_opens")))
    # An open is only known once it happened: count opens by the day they happened on.
    open_daily = (push_log.where(F.col("opened_at").isNotNull()).withColumn("day", day_num("opened_at"))
                  .groupBy("user_id", "day").agg(F.count("*").alias("push_opens_seen")))
    # one pass for every window (the same column under two windows goes by an alias)
    return (user_daily.join(push_daily.drop("push_opens"), ["user_id", "day"], "full")
            .join(open_daily, ["user_id", "day"], "full").na.fill(0)
            .select("*", F.col("pushes").alias("pushes_recent"), F.col("opens").alias("opens_long"),
                    F.col("pushes").alias("pushes_long")))


def _category_daily(act: Activity) -> tuple[DataFrame, DataFrame]:
    """Category affinity: the user's weighted interest per (category, day) and in all categories per day."""
    cat_daily = act.user_category_day.select("user_id", "category_id", "day", "w")
    return cat_daily, cat_daily.groupBy("user_id", "day").agg(F.sum("w").alias("w_all"))


def _item_daily(all_act: Activity) -> DataFrame:
    return all_act.item_day.select("item_id", "day", F.col("n_view").alias("iv"), F.col("n_fav").alias("if_"))


def _item_state(key_items: DataFrame, item_changes: DataFrame, items: DataFrame, first_key_day: int) -> DataFrame:
    """(item_id, day) of key_items -> price relative to its category, drop since listing, age: as of the day (and
    the prices they come from: listing_price, price_as_of, cat_median — the live trigger path moves them)."""
    ch = item_changes.withColumn("day", day_num("ts"))
    listed = ch.where(F.col("change") == "listed").groupBy("item_id").agg(
        F.min("ts").alias("listed_at"), F.first("price").alias("listing_price"))
    drops = ch.where(F.col("change") == "price_drop").select("item_id", F.col("day").alias("drop_day"),
                                                             F.col("price").alias("drop_price"))
    last_drop = (key_items.join(drops, "item_id").where(F.col("drop_day") < F.col("day"))
                 .groupBy("item_id", "day").agg(F.min("drop_price").alias("drop_price")))
    # Category price level from listings before the earliest key day (point-in-time for every key).
    cat_median = (ch.where((F.col("change") == "listed") & (F.col("day") < F.lit(first_key_day)))
                  .join(items.select("item_id", "category_id"), "item_id")
                  .groupBy("category_id").agg(F.percentile_approx("price", 0.5).alias("cat_median")))
    return (key_items.join(listed, "item_id", "left").join(last_drop, ["item_id", "day"], "left")
            .join(items.select("item_id", "category_id"), "item_id", "left")
            .join(cat_median, "category_id", "left")
            .select("item_id", "day", "listing_price", "cat_median",
                    F.coalesce("drop_price", "listing_price").alias("price_as_of"),
                    F.coalesce(F.log(F.coalesce("drop_price", "listing_price") / F.col("cat_median")),
                               F.lit(0.0)).alias("i_price_rel"),
                    F.when(F.col("drop_price").isNotNull() & (F.col("listing_price") > 0),
                           1 - F.col("drop_price") / F.col("listing_price")).otherwise(0.0).alias("i_drop_pct"),
                    F.log1p(F.greatest(F.lit(0.0), (F.col("day") * 86400 - F.unix_timestamp("listed_at"))
                                       / 3600.0)).alias("i_age_log")))


def pair_features(keys: DataFrame, users: DataFrame, events: DataFrame | Activity, push_log: DataFrame,
                  item_changes: DataFrame, items: DataFrame, scene_codes: dict[str, int],
                  key_day: int | None = None, item_events: DataFrame | Activity | None = None) -> DataFrame:
    """keys: user_id, item_id, scene_id, day (int, days since epoch), local_hour (0-23), plus any passthrough
    columns. events: the daily rollups (features/rollups.py) or raw events (rolled up here);
    events/push_log/item_changes must cover at least LOOKBACK days before the earliest key day.
    key_day: set when every key has that day (scoring one plan day): the same features through one_day_sides()
    and one_day_features(). item_events: every user's events, when `events` and `push_log` hold only the keys'
    users (a sampled training set): item popularity and the population's hour profile come from them, so the
    features stay exactly what the full tables give; by default `events`."""
    if key_day is not None:
        if item_events is not None:
            raise ValueError("key_day aggregates every user's events: pass them as `events`, not item_events")
        sides = one_day_sides(users, events, push_log, item_changes, items, key_day, keys.select("item_id"))
        return one_day_features(keys, sides, scene_codes)
    ev = activity_of(events, push_log)
    # raw item_events are rolled up without receipts (push_log holds only the keys' users): pass the Activity
    all_ev = ev if item_events is None else activity_of(item_events)
    u = _as_of_sums(keys, _user_daily(ev, push_log), ["user_id"], U_WINDOWS)
    cat_daily, tot_daily = _category_daily(ev)
    keyed = keys.join(items.select("item_id", "category_id"), "item_id", "left")
    aff = _as_of_sums(keyed, cat_daily, ["user_id", "category_id"], {"w": LOOKBACK})
    tot = _as_of_sums(keys, tot_daily, ["user_id"], {"w_all": LOOKBACK})
    hour_daily = _hour_daily(ev, users)
    hours = _as_of_sums(keys, hour_daily, ["user_id", "local_hour"], {"h": LOOKBACK})
    population = _population_hours(keys, _hour_daily(all_ev, users, by_user=False), None)
    item_pop = _as_of_sums(keys, _item_daily(all_ev), ["item_id"], {"iv": 7, "if_": 7})
    first_key_day = keys.agg(F.min("day")).collect()[0][0]
    item_state = _item_state(keys.select("item_id", "day").distinct(), item_changes, items, first_key_day)
    out = (keyed.join(u, ["user_id", "day"], "left").join(aff, ["user_id", "category_id", "day"], "left")
           .join(tot, ["user_id", "day"], "left").join(hours, ["user_id", "local_hour", "day"], "left")
           .join(item_pop, ["item_id", "day"], "left").join(item_state, ["item_id", "day"], "left")
           .join(F.broadcast(population), ["local_hour", "day"], "left"))
    return _feature_columns(_with_interest(out, ev.interest_day, items), keys.columns, scene_codes)


def _with_interest(pairs: DataFrame, interest_day: DataFrame, items: DataFrame) -> DataFrame:
    """pairs (user_id, item_id, day, ...) + `interest` (bool): a fav or cart of the item, or a follow of its seller, by
    the pair's user in the INTEREST_DAYS days before the pair's day. The days of each (user, item) and (user, seller)
    are gathered once (a handful each), so the pairs join them without multiplying."""
    def days_of(key: str) -> DataFrame:
        return (interest_day.where(F.col(key).isNotNull()).groupBy("user_id", key)
                .agg(F.collect_set("day").alias(f"_days_{key}")))

    def within(col: str):
        return F.coalesce(F.exists(col, lambda d: (d >= F.col("day") - INTEREST_DAYS) & (d < F.col("day"))),
                          F.lit(False))
    added = "seller_id" not in pairs.columns
    x = pairs.join(items.select("item_id", "seller_id"), "item_id", "left") if added else pairs
    x = (x.join(days_of("item_id"), ["user_id", "item_id"], "left").join(days_of("seller_id"), ["user_id", "seller_id"], "left")
         .withColumn("interest", within("_days_item_id") | within("_days_seller_id")))
    return x.drop("_days_item_id", "_days_seller_id", *(["seller_id"] if added else []))


@dataclass(frozen=True)
class OneDay:
    """Everything the pair features of one key day need, keyed by user and by item, independent of the pairs:
    computed once, it serves any set of (user, item) keys of that day (one_day_features)."""
    day: int
    user_side: DataFrame     # user_id, the windows' sums, _w_by_category, _h_by_hour (maps), _liked_items and
                             # _followed_sellers (arrays: the user's interest, features.pairs' module doc)
    item_side: DataFrame     # item_id, category_id, seller_id, i_price_rel, i_drop_pct, i_age_log, iv_7d, if__7d, prices
    population: DataFrame    # local_hour, day, pop_share (24 rows)

    def persist(self) -> "OneDay":
        """Materialised on local disk (not memory: at 1M users the user side is ~1M rows with two maps each),
        so several sets of keys read them without recomputing them from the events."""
        from pyspark import StorageLevel

        sides = [df.persist(StorageLevel.DISK_ONLY) for df in (self.user_side, self.item_side, self.population)]
        for df in sides:
            df.count()
        return OneDay(self.day, *sides)

    def unpersist(self) -> None:
        for df in (self.user_side, self.item_side, self.population):
            df.unpersist()


def one_day_sides(users: DataFrame, events: DataFrame | Activity, push_log: DataFrame, item_changes: DataFrame,
                  items: DataFrame, key_day: int, key_items: DataFrame) -> OneDay:
    """The per-user and per-item pieces of the pair features for day `key_day`, from every user's events (the
    LOOKBACK days before it) and for the items in key_items (item_id; duplicates are fine). Each user's windows
    are one filtered aggregate, affinity by category and opens by local hour folded into maps on the user's
    row, and the population's hour profile is the users' own sums totalled: no second pass over the opens."""
    ev = activity_of(events, push_log)
    u = _as_of_sums(None, _user_daily(ev, push_log), ["user_id"], U_WINDOWS, key_day)
    cat_daily, tot_daily = _category_daily(ev)
    aff = _as_of_sums(None, cat_daily, ["user_id", "category_id"], {"w": LOOKBACK}, key_day)
    tot = _as_of_sums(None, tot_daily, ["user_id"], {"w_all": LOOKBACK}, key_day)
    # the opens of the window summed per local hour, then spread: the spread is linear, so this is the sum of
    # the daily spreads (_hour_daily) with one spread per user and hour instead of one per user, hour and day
    window = ev.open_slots.where((F.col("day") >= key_day - LOOKBACK) & (F.col("day") <= key_day - 1))
    hours = (_spread(opens_by_local_hour(window, users).groupBy("user_id", "local_hour").agg(F.sum("n").alias("n")),
                     ["user_id"]).withColumnRenamed("h", "h_28d").withColumn("day", F.lit(key_day)))
    population = _hour_shares(hours.groupBy("local_hour").agg(F.sum("h_28d").alias("_h"))
                              .withColumn("day", F.lit(key_day)))
    by_category = aff.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("category_id", "w_28d"))).alias("_w_by_category"))
    by_hour = hours.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("local_hour", "h_28d"))).alias("_h_by_hour"))
    recent_interest = ev.interest_day.where((F.col("day") >= key_day - INTEREST_DAYS) & (F.col("day") <= key_day - 1))
    interest = recent_interest.groupBy("user_id").agg(     # collect_set leaves the nulls out
        F.collect_set("item_id").alias("_liked_items"), F.collect_set("seller_id").alias("_followed_sellers"))
    user_side = (u.drop("day").join(tot.drop("day"), "user_id", "left").join(by_category, "user_id", "left")
                 .join(by_hour, "user_id", "left").join(interest, "user_id", "left"))
    key_items = key_items.select("item_id").distinct().withColumn("day", F.lit(key_day))
    item_pop = _as_of_sums(None, _item_daily(ev), ["item_id"], {"iv": 7, "if_": 7}, key_day)
    item_side = (_item_state(key_items, item_changes, items, key_day).drop("day")
                 .join(item_pop.drop("day"), "item_id", "left")
                 .join(items.select("item_id", "category_id", "seller_id"), "item_id", "left"))
    return OneDay(key_day, user_side, item_side, population)


def one_day_features(keys: DataFrame, sides: OneDay, scene_codes: dict[str, int],
                     scene_hours: dict[str, int] | None = None) -> DataFrame:
    """pair_features() of keys on the sides' day (keys: user_id, item_id, scene_id, day, local_hour + passthrough),
    with the pairs shuffled once: the item side is broadcast (one row per candidate item, bounded by the items on
    sale, not by the users: 205k rows at 1M users), the user side joins by user and the pair's own category and
    hour are looked up in its maps. At 1M users this plan scored in 1,696 s against 1,713 s for one with a join
    per piece (six shuffles of the pairs): the shuffles were not where the time goes. Exactly the general path's
    values (tests/features/test_pairs.py). Keys without local_hour take it from the user side (then it must
    have a row for every key's user). scene_hours: scenes sent at a fixed local hour (scheduled) are scored at that
    hour, whatever the key's or the user's hour: the estimate is of the push as it will be sent."""
    own_hour = "local_hour" in keys.columns
    key_columns = keys.columns if own_hour else [*keys.columns, "local_hour"]
    out = (keys.join(F.broadcast(sides.item_side), "item_id", "left")
           .join(sides.user_side, "user_id", "left" if own_hour else "inner"))
    if scene_hours:
        fixed = F.create_map(*[x for sc, h in sorted(scene_hours.items()) for x in (F.lit(sc), F.lit(int(h)))])
        out = out.withColumn("local_hour", F.coalesce(fixed[F.col("scene_id")], F.col("local_hour")))
    out = (out.withColumn("w_28d", F.try_element_at("_w_by_category", F.col("category_id")))
           .withColumn("h_28d", F.try_element_at("_h_by_hour", F.col("local_hour")))
           .withColumn("interest", F.coalesce(F.array_contains("_liked_items", F.col("item_id")), F.lit(False))
                       | F.coalesce(F.array_contains("_followed_sellers", F.col("seller_id")), F.lit(False)))
           .drop("_w_by_category", "_h_by_hour", "_liked_items", "_followed_sellers")
           .join(F.broadcast(sides.population), ["local_hour", "day"], "left"))
    return _feature_columns(out, key_columns, scene_codes)


def _feature_columns(out: DataFrame, key_columns: list[str], scene_codes: dict[str, int]) -> DataFrame:
    """The FEATURES (and category_id) from the joined sums: zeros where an entity had no activity."""
    out = out.na.fill(0, ["opens_7d", "views_7d", "favs_28d", "pushes_7d", "push_opens_seen_28d", "pushes_recent_1d",
                          "opens_long_28d", "pushes_long_28d", "w_28d", "w_all_28d", "h_28d", "iv_7d", "if__7d",
                          "i_drop_pct", "i_age_log", "i_price_rel"])
    codes = F.create_map(*[x for k, v in sorted(scene_codes.items()) for x in (F.lit(k), F.lit(v))])
    return out.select(
        *key_columns, "category_id", F.coalesce(F.col("interest"), F.lit(False)).cast("int").alias("interest"),
        F.col("opens_7d").cast("double").alias("u_opens_7d"),
        F.col("opens_long_28d").cast("double").alias("u_opens_28d"),
        F.col("views_7d").cast("double").alias("u_views_7d"),
        F.col("favs_28d").cast("double").alias("u_favs_28d"),
        F.col("pushes_recent_1d").cast("double").alias("u_pushes_1d"),
        F.col("pushes_7d").cast("double").alias("u_pushes_7d"),
        ((F.col("push_opens_seen_28d") + PUSH_PRIOR_SENDS * PUSH_PRIOR_RATE)
         / (F.col("pushes_long_28d") + PUSH_PRIOR_SENDS)).alias("u_push_open_rate"),
        F.when(F.col("w_all_28d") > 0, F.col("w_28d") / F.col("w_all_28d")).otherwise(0.0).alias("aff_share"),
        F.log(24.0 * (F.col("h_28d") + HOUR_PRIOR_OPENS * F.coalesce("pop_share", F.lit(0.01 / 24)))
              / (F.col("opens_long_28d") + HOUR_PRIOR_OPENS)).alias("hour_share_log"),
        F.col("i_drop_pct").cast("double"), F.col("i_age_log").cast("double"),
        F.log1p(F.col("iv_7d")).alias("i_views_7d_log"), F.log1p(F.col("if__7d")).alias("i_favs_7d_log"),
        ((F.col("if__7d") + 1.0) / (F.col("iv_7d") + 10.0)).alias("i_fav_rate"), F.col("i_price_rel").cast("double"),
        F.coalesce(codes[F.col("scene_id")], F.lit(-1)).cast("double").alias("scene_code"),
    )


def _hour_daily(act: Activity, users: DataFrame, by_user: bool = True) -> DataFrame:
    """(user_id, local_hour, day, h): the user's app opens per local hour and UTC day, each spread over its
    neighbouring hours by HOUR_KERNEL. by_user=False: (local_hour, day, h) of everyone together — the sum of the
    users' rows (the spread is linear) without a row per user, for the population's profile."""
    who = ["user_id"] if by_user else []
    return _spread(opens_by_local_hour(act.open_slots, users).groupBy(*who, "local_hour", "day")
                   .agg(F.sum("n").alias("n")), [*who, "day"])


def _spread(opens: DataFrame, keys: list[str]) -> DataFrame:
    """(*keys, local_hour, n) -> (*keys, local_hour, h): each hour's opens spread over its neighbours by
    HOUR_KERNEL (wrapping around midnight)."""
    kernel = F.array(*[F.struct(F.lit(k).alias("k"), F.lit(w).alias("w")) for k, w in HOUR_KERNEL])
    return (opens.select(*keys, "local_hour", "n", F.explode(kernel).alias("_kw"))
            .groupBy(*keys, F.pmod(F.col("local_hour") + F.col("_kw.k"), F.lit(24)).alias("local_hour"))
            .agg(F.sum(F.col("n") * F.col("_kw.w")).alias("h")))


def _population_hours(keys: DataFrame, hour_daily: DataFrame, key_day: int | None) -> DataFrame:
    """Per key day and local hour, the population's share of (spread) app opens over the LOOKBACK days before
    it: (local_hour, day, pop_share), never exactly 0. Tiny: 24 rows per key day."""
    daily = hour_daily.groupBy("local_hour", F.col("day").alias("_d")).agg(F.sum("h").alias("_h"))
    days = (keys.select("day").distinct() if key_day is None
            else daily.select(F.lit(key_day).alias("day")).distinct())
    inside = (F.col("_d") >= F.col("day") - LOOKBACK) & (F.col("_d") < F.col("day"))
    return _hour_shares(F.broadcast(days).join(daily, inside).groupBy("day", "local_hour").agg(F.sum("_h").alias("_h")))


def _hour_shares(sums: DataFrame) -> DataFrame:
    """(day, local_hour, _h) -> (local_hour, day, pop_share): each hour's share of the day's total, floored.
    A join with the day's total, not a window over `day`: on the one-day path `day` is a literal, Spark drops a
    constant partition key and warns that it moves the data to a single partition (24 rows: harmless, but noise)."""
    total = sums.groupBy("day").agg(F.sum("_h").alias("_t"))
    return sums.join(F.broadcast(total), "day").select(
        "local_hour", "day", (0.99 * F.col("_h") / F.col("_t") + 0.01 / 24).alias("pop_share"))


def scene_codes(scene_ids) -> dict[str, int]:
    """A stable integer per scene id (categorical feature); unknown scenes score as -1."""
    return {s: i for i, s in enumerate(sorted(set(scene_ids)))}

