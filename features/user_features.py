"""User features as of a run date: activity, local-time habits, category affinity, push history.

Pure transforms: DataFrames in, DataFrame out, no I/O and no session. Point-in-time: only rows with a
timestamp strictly before `as_of` are used, so a re-run of an old date sees what that night saw.
"""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.contract import EVENT_TYPES
from features.rollups import Activity, activity_of, in_days, opens_by_local_hour, whole_day

WINDOWS_DAYS = (1, 7, 28)
LOOKBACK_DAYS = max(WINDOWS_DAYS)
TOP_CATEGORIES = 3
HOUR_PRIOR = 1.0  # pseudo-count per hour: users with few events fall back to a flat profile
WEEKEND_DAYS = (6, 7)  # ISO weekdays off (Saturday, Sunday): platform.windows.weekend_days


def within_days(ts: Column, as_of: datetime, days: int) -> Column:
    return (ts < F.lit(as_of)) & (ts >= F.lit(as_of) - F.expr(f"INTERVAL {days} DAYS"))


def activity(act: Activity, users: DataFrame, as_of: datetime, weekend_days: tuple[int, ...] = WEEKEND_DAYS) -> DataFrame:
    """n_<event_type>_<w>d for every type and window, the last app open, and the share of app opens per hour
    of the user's *local* day (24 values, smoothed, sums to 1); the app opens per local hour, all days and on the
    market's weekend days only (`weekend_days`, ISO weekdays in the user's local time): habits on days off differ.

    From the daily rollups (features/rollups.py): the counts are sums of the user's days, and only the app
    opens' 15-minute slots travel to the users' time zones for the hour profile."""
    end = whole_day(as_of)
    recent = act.user_day.where(in_days(end, LOOKBACK_DAYS))
    counts = [F.sum(F.when(in_days(end, w), F.col(f"n_{et}")).otherwise(0)).alias(f"n_{et}_{w}d")
              for et in EVENT_TYPES for w in WINDOWS_DAYS]
    by_type = recent.groupBy("user_id").agg(*counts, F.max("last_open_at").alias("last_open_at"))
    off = F.col("local_weekday").isin(*[int(d) for d in weekend_days]) if weekend_days else F.lit(False)
    by_hour = (opens_by_local_hour(act.open_slots.where(in_days(end, LOOKBACK_DAYS)), users)
               .groupBy("user_id").agg(*[F.sum(F.when(F.col("local_hour") == h, F.col("n")).otherwise(0))
                                         .alias(f"_h{h}") for h in range(24)],
                                       *[F.sum(F.when(off & (F.col("local_hour") == h), F.col("n")).otherwise(0))
                                         .alias(f"_w{h}") for h in range(24)]))
    # rows of user ids the users table does not know are dropped by user_features' join from the users
    agg = by_type.join(by_hour, "user_id", "left").na.fill(0, [f"_{k}{h}" for k in "hw" for h in range(24)])
    hour_cols = [F.col(f"_h{h}") for h in range(24)]
    total = sum(hour_cols) + F.lit(24 * HOUR_PRIOR)
    return agg.select(
        "user_id", *[f"n_{et}_{w}d" for et in EVENT_TYPES for w in WINDOWS_DAYS], "last_open_at",
        F.array(*[((c + F.lit(HOUR_PRIOR)) / total).cast("double") for c in hour_cols]).alias("open_hour_profile"),
        F.array(*hour_cols).cast("array<int>").alias("app_open_hours"),
        F.array(*[F.col(f"_w{h}") for h in range(24)]).cast("array<int>").alias("app_open_hours_weekend"),
        F.when(F.greatest(*hour_cols) > 0,
               F.array_position(F.array(*hour_cols), F.greatest(*hour_cols)).cast("int") - 1)
        .alias("peak_local_hour"),
    )


def category_affinity(act: Activity, as_of: datetime) -> DataFrame:
    """Top categories by weighted interest over the lookback, with their share of the user's interest."""
    scored = (act.user_category_day.where(in_days(whole_day(as_of), LOOKBACK_DAYS))
              .groupBy("user_id", "category_id").agg(F.sum("w").alias("w")))
    ranked = scored.groupBy("user_id").agg(
        F.sum("w").alias("total"),
        F.slice(F.sort_array(F.collect_list(F.struct(F.col("w"), F.col("category_id"))), asc=False),
                1, TOP_CATEGORIES).alias("top"),
    )
    return ranked.select(
        "user_id",
        F.transform("top", lambda s: s["category_id"]).alias("top_categories"),
        F.transform("top", lambda s: s["w"] / F.col("total")).alias("top_category_shares"),
    )


def seller_side(items_on_sale: DataFrame, act: Activity, as_of: datetime) -> DataFrame:
    """For users who sell: listings on sale at `as_of`, and buyer chats about them in the last 24 h."""
    listings = items_on_sale.groupBy(F.col("seller_id").alias("user_id")).agg(F.count("*").alias("n_listings_on_sale"))
    chats = (act.seller_day.where(in_days(whole_day(as_of), 1))
             .groupBy(F.col("seller_id").alias("user_id")).agg(F.sum("n_chat").alias("n_chats_waiting")))
    return listings.join(chats, "user_id", "full")


def scene_history(push_log: DataFrame, as_of: datetime) -> DataFrame:
    """Per user and scene: pushes sent and opened over 7/28 days and the last send. Scene ids are kept as
    logged, including scenes no longer (or never) in the configuration: history is history."""
    opened = F.col("opened_at").isNotNull() & (F.col("opened_at") < F.lit(as_of))
    aggs = []
    for w in (7, 28):
        inside = within_days(F.col("sent_at"), as_of, w)
        aggs += [F.sum(inside.cast("int")).alias(f"sent_{w}d"), F.sum((inside & opened).cast("int")).alias(f"opened_{w}d")]
    return (push_log.where(within_days(F.col("sent_at"), as_of, LOOKBACK_DAYS))
            .groupBy("user_id", "scene_id").agg(*aggs, F.max("sent_at").alias("last_sent_at")))


def push_history(push_log: DataFrame, as_of: datetime) -> DataFrame:
    """Pushes sent and opened over 7/28 days, all scenes together. An open counts only if seen by `as_of`."""
    return scene_history(push_log, as_of).groupBy("user_id").agg(
        *[F.sum(f"{k}_{w}d").alias(f"pushes_{k}_{w}d") for k in ("sent", "opened") for w in (7, 28)])


def push_open_hours(push_log: DataFrame, users: DataFrame, as_of: datetime) -> DataFrame:
    """Per user: pushes opened over the lookback by the *local* hour they were sent (24 counts). What the
    send-window stage learns each user's push-reading hours from, beside the app-open profile."""
    opened = (push_log.where(within_days(F.col("sent_at"), as_of, LOOKBACK_DAYS)
                             & F.col("opened_at").isNotNull() & (F.col("opened_at") < F.lit(as_of)))
              .join(users.select("user_id", "tz"), "user_id")
              .withColumn("local_hour", F.hour(F.from_utc_timestamp("sent_at", F.col("tz")))))
    agg = opened.groupBy("user_id").agg(
        *[F.sum((F.col("local_hour") == h).cast("int")).alias(f"_p{h}") for h in range(24)])
    return agg.select("user_id", F.array(*[F.col(f"_p{h}") for h in range(24)]).cast("array<int>")
                      .alias("push_open_hours"))


def user_features(users: DataFrame, events: DataFrame | Activity, push_log: DataFrame, as_of: datetime,
                  items_on_sale: DataFrame | None = None, weekend_days: tuple[int, ...] = WEEKEND_DAYS) -> DataFrame:
    """One row per user registered before `as_of` (a UTC midnight), every feature filled (zeros / flat profile
    when no data). events: the daily rollups (jobs/rollups.py), or raw events, rolled up here.
    `items_on_sale` (item_id, seller_id) as of `as_of` gives the seller-side features; `weekend_days` (ISO
    weekdays) which local days `app_open_hours_weekend` counts."""
    act = activity_of(events, push_log)
    base = users.where(F.col("registered_at") < F.lit(as_of)).select(
        "user_id", "tz", "platform", "opt_in",
        (F.col("device_token").isNotNull() & (F.length("device_token") > 0)).alias("has_device_token"),
        F.floor((F.unix_timestamp(F.lit(as_of)) - F.unix_timestamp("registered_at")) / 86400)
        .cast("int").alias("tenure_days"),
    )
    joined = (base.join(activity(act, users, as_of, weekend_days), "user_id", "left")
              .join(category_affinity(act, as_of), "user_id", "left")
              .join(push_history(push_log, as_of), "user_id", "left")
              .join(push_open_hours(push_log, users, as_of), "user_id", "left"))
    if items_on_sale is not None:
        joined = joined.join(seller_side(items_on_sale, act, as_of), "user_id", "left")
    else:
        joined = joined.withColumn("n_listings_on_sale", F.lit(0)).withColumn("n_chats_waiting", F.lit(0))
    count_cols = [f"n_{et}_{w}d" for et in EVENT_TYPES for w in WINDOWS_DAYS] + [
        f"pushes_{k}_{w}d" for k in ("sent", "opened") for w in (7, 28)] + ["n_listings_on_sale", "n_chats_waiting"]
    flat = F.array(*[F.lit(1.0 / 24)] * 24)
    zeros = F.array(*[F.lit(0)] * 24).cast("array<int>")
    return joined.select(
        "user_id", "tz", "platform", "opt_in", "has_device_token", "tenure_days",
        *[F.coalesce(F.col(c), F.lit(0)).cast("int").alias(c) for c in count_cols],
        F.coalesce("open_hour_profile", flat).alias("open_hour_profile"),
        "peak_local_hour",
        F.coalesce("app_open_hours", zeros).alias("app_open_hours"),
        F.coalesce("app_open_hours_weekend", zeros).alias("app_open_hours_weekend"),
        F.coalesce("push_open_hours", zeros).alias("push_open_hours"),
        F.coalesce("top_categories", F.array().cast("array<int>")).alias("top_categories"),
        F.coalesce("top_category_shares", F.array().cast("array<double>")).alias("top_category_shares"),
        "last_open_at",
        # Null when the user has not opened the app in the whole lookback: "dormant > 28 days".
        F.floor((F.unix_timestamp(F.lit(as_of)) - F.unix_timestamp("last_open_at")) / 86400)
        .cast("int").alias("days_since_last_open"),
    )
