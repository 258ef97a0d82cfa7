"""Daily rollups of the events: everything the user and pair features read of them, one row per entity and
UTC day.

A night reads 28 days of events for the user features and the plan's pair features, and 28 + train_days for
the training set, though only one day is new. jobs/rollups.py rolls each raw events partition up once and
keeps it; the features then read these rollups instead, each far narrower than the events and together about
60 % of their rows (at 1M users one day is 5.9M events against 0.55M user-days, 1.7M user-category-days,
1.2M open slots and 0.25M item-days), and only the grains each feature needs. Tests and ad-hoc callers may
pass raw events (and the receipts) instead: `activity_of` rolls them up on the fly, so there is one code path for
the features either way.

Exactly the same features as from the events:
- every windowed feature is a sum of whole UTC days (`as_of` is a UTC midnight, `whole_day`), and each
  count is the sum of the day's;
- app opens are kept per 15-minute UTC slot, and the local hour is applied when they are read, with the
  user's time zone: a slot never straddles a local hour for any offset that is a multiple of 15 minutes
  (every IANA zone in use), so the rollups do not depend on the users table and never go stale when a
  user's time zone changes;
- the category weights are sums of small integers (CATEGORY_WEIGHTS), exact in any order.

Push-driven events are kept out of what describes the users' and the items' own behaviour. A push that is opened
is logged twice: as its receipt (`push_log.opened_at`, `clicked_item_id`) and as the app's own events — the app
open and the views of the pushed items that follow. Counted as behaviour, they feed the plan back into itself: an
item pushed to a thousand users comes back the next night with several times the views it drew on its own (a more
popular candidate, the model's popularity features higher), and the hour and the category a user was pushed at
become more of their habit. What a push does is learnt from push_log; the features of habit and popularity are organic:
`push_driven` marks an app open within PUSH_OPEN_MATCH_S of a receipt's opened_at and a view of one of the push's
items within PUSH_VIEW_WINDOW_S after it, by the push's user, and `open_slots`, `user_category_day` and `item_day`
leave them out. `user_day` counts every event (engagement is engagement, and the counts add up to the raw rows)
and counts the push-driven ones again in `n_via_push`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.contract import EVENT_TYPES

# How much one event says about a user's interest in its category.
CATEGORY_WEIGHTS = {"view": 1.0, "search": 1.0, "fav": 3.0, "chat": 3.0, "cart": 4.0, "buy": 5.0}
SLOT_SECONDS = 15 * 60
# The rollups' definition: stored partitions rolled up under another version are recomputed (jobs/rollups.py).
ROLLUP_VERSION = 3
# The events that say a user wants a particular item (favourited or carted it) or a particular seller's items
# (follows them): interest_day keeps who and what, so a push can be told apart by whether it carries such an item.
INTEREST_ITEM_EVENTS = ("fav", "cart")
INTEREST_SELLER_EVENTS = ("follow_seller",)
# A push's own app open: the app logs it when the push is opened, the receipt's opened_at the same moment (give or
# take the two clocks); the views it leads to: the pushed items, viewed by its user within half an hour of opening it.
PUSH_OPEN_MATCH_S = 120
PUSH_VIEW_WINDOW_S = 30 * 60
EPOCH_DAY = datetime(1970, 1, 1, tzinfo=timezone.utc)


def day_num(ts_col: str) -> Column:
    """The UTC day of a timestamp column as days since 1970-01-01 (int)."""
    return F.datediff(F.to_date(F.col(ts_col)), F.lit("1970-01-01").cast("date"))


def whole_day(as_of: datetime) -> int:
    """as_of as a day number; it must be a UTC midnight, since the rollups only know whole days."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError(f"as_of {as_of} has no time zone: give a UTC midnight (jobs.entry.as_of_end)")
    delta = as_of - EPOCH_DAY
    if delta.seconds or delta.microseconds:
        raise ValueError(f"as_of {as_of.isoformat()} is not a UTC midnight: the daily rollups only give features "
                         "over whole UTC days")
    return delta.days


def in_days(end_day: int, days: int, col: str = "day") -> Column:
    """The `days` whole days before end_day (exclusive): what within_days(ts, as_of, days) keeps."""
    return (F.col(col) >= F.lit(end_day - days)) & (F.col(col) < F.lit(end_day))


@dataclass(frozen=True)
class Activity:
    """The events, rolled up per UTC day (`day`: days since the epoch) at the grains the features read.
    Stored under rollups/<name> (partition ds = the raw events partition they come from), see TABLES."""
    user_day: DataFrame           # user_id, day, n_<event type> for every EVENT_TYPE (long), n_via_push, last_open_at
    user_category_day: DataFrame  # user_id, category_id, day, w (sum of CATEGORY_WEIGHTS; rows with w > 0): organic
    open_slots: DataFrame         # user_id, day, slot (start of a 15-minute UTC slot), n: organic app opens
    item_day: DataFrame           # item_id, day, n_view, n_fav, n_chat: organic
    seller_day: DataFrame         # seller_id, day, n_chat: chats about the seller's items
    interest_day: DataFrame       # user_id, day, item_id, seller_id: a fav or cart of the item (seller_id null), or a
                                  # follow of the seller (item_id null); one row per distinct one, push-driven or not

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(Activity))

    def frames(self) -> dict[str, DataFrame]:
        return {name: getattr(self, name) for name in self.names()}

    def for_users(self, keep: Column) -> "Activity":
        """Only the user-level rollups of the users `keep` (a condition on user_id) selects; the item and
        seller rollups stay whole (item popularity sees every user)."""
        return Activity(self.user_day.where(keep), self.user_category_day.where(keep), self.open_slots.where(keep),
                        self.item_day, self.seller_day, self.interest_day.where(keep))


def push_driven(events: DataFrame, push_log: DataFrame | None) -> DataFrame:
    """The events with `via_push` (bool): the app open a push's opening logged, and the views of its items that
    followed (see the module's docstring). push_log: the receipts whose opens can fall among these events (the
    events' days and the day before); None or empty: nothing is push-driven."""
    if push_log is None:
        return events.withColumn("via_push", F.lit(False))
    opens = (push_log.where(F.col("opened_at").isNotNull())
             .select(F.col("user_id").alias("_p_user"), F.unix_micros(F.col("opened_at")).alias("_p_open"),
                     F.col("item_ids").alias("_p_items")))
    ts = F.unix_micros(F.col("ts"))
    match = (F.col("user_id") == F.col("_p_user")) & (
        ((F.col("event_type") == "app_open") & (F.abs(ts - F.col("_p_open")) <= F.lit(PUSH_OPEN_MATCH_S * 1_000_000)))
        | ((F.col("event_type") == "view") & (ts >= F.col("_p_open"))
           & (ts <= F.col("_p_open") + F.lit(PUSH_VIEW_WINDOW_S * 1_000_000))
           & F.coalesce(F.array_contains(F.col("_p_items"), F.col("item_id")), F.lit(False))))
    # every event is in exactly one of the two: a semi and an anti join on the same condition (events have no key)
    return (events.join(opens, match, "left_anti").withColumn("via_push", F.lit(False))
            .unionByName(events.join(opens, match, "left_semi").withColumn("via_push", F.lit(True))))


def roll_up(events: DataFrame, by: tuple[str, ...] = (), push_log: DataFrame | None = None,
            premarked: bool = False) -> Activity:
    """Roll raw events (the raw contract's columns) up per day; `by`: extra grouping columns kept on every
    rollup (the job keeps the source partition `ds`, so late events stay in the partition they came in).
    push_log: the receipts that mark push-driven events (`push_driven`), which only user_day counts.
    premarked: the events already carry `via_push` (push_driven's output, kept by a caller that writes all
    the rollups: the split is then made once, not once per rollup)."""
    ev = (events if premarked else push_driven(events, push_log)).withColumn("day", day_num("ts"))
    organic = ev.where(~F.col("via_push"))
    is_open = F.col("event_type") == "app_open"
    user_day = ev.groupBy(*by, "user_id", "day").agg(
        *[F.sum((F.col("event_type") == et).cast("long")).alias(f"n_{et}") for et in EVENT_TYPES],
        F.sum(F.col("via_push").cast("long")).alias("n_via_push"),
        F.max(F.when(is_open, F.col("ts"))).alias("last_open_at"))
    weight = F.lit(0.0)
    for et, w in CATEGORY_WEIGHTS.items():
        weight = F.when(F.col("event_type") == et, F.lit(w)).otherwise(weight)
    user_category_day = (organic.where(F.col("category_id").isNotNull()).withColumn("w", weight).where("w > 0")
                         .groupBy(*by, "user_id", "category_id", "day").agg(F.sum("w").alias("w")))
    slot = F.timestamp_seconds(F.floor(F.unix_seconds(F.col("ts")) / SLOT_SECONDS) * SLOT_SECONDS)
    open_slots = (organic.where(is_open).groupBy(*by, "user_id", "day", slot.alias("slot"))
                  .agg(F.count("*").alias("n")))
    item_day = organic.where(F.col("item_id").isNotNull()).groupBy(*by, "item_id", "day").agg(
        *[F.sum((F.col("event_type") == et).cast("long")).alias(f"n_{et}") for et in ("view", "fav", "chat")])
    seller_day = (ev.where((F.col("event_type") == "chat") & F.col("seller_id").isNotNull())
                  .groupBy(*by, "seller_id", "day").agg(F.count("*").alias("n_chat")))
    # interest is interest however the user came to the item: a fav after a push's click counts as any other
    liked = ev.where(F.col("event_type").isin(*INTEREST_ITEM_EVENTS) & F.col("item_id").isNotNull()).select(
        *by, "user_id", "day", "item_id", F.lit(None).cast("long").alias("seller_id"))
    followed = ev.where(F.col("event_type").isin(*INTEREST_SELLER_EVENTS) & F.col("seller_id").isNotNull()).select(
        *by, "user_id", "day", F.lit(None).cast("long").alias("item_id"), "seller_id")
    interest_day = liked.unionByName(followed).where(F.col("user_id").isNotNull()).distinct()
    return Activity(user_day, user_category_day, open_slots, item_day, seller_day, interest_day)


def activity_of(events: DataFrame | Activity, push_log: DataFrame | None = None) -> Activity:
    """Stored rollups as they are; raw events rolled up on the fly, push_log's receipts marking the push-driven
    ones as the stored rollups do."""
    return events if isinstance(events, Activity) else roll_up(events, push_log=push_log)


def opens_by_local_hour(slots: DataFrame, users: DataFrame) -> DataFrame:
    """open_slots + each user's local hour of the slot and its local ISO weekday (1 = Monday .. 7 = Sunday) (users:
    user_id, tz); users without a row drop out, as the events' join to the users did."""
    local = F.from_utc_timestamp(F.col("slot"), F.col("tz"))
    return (slots.join(users.select("user_id", "tz"), "user_id")
            .withColumn("local_hour", F.hour(local))
            .withColumn("local_weekday", ((F.dayofweek(local) + 5) % 7 + 1).cast("int")))
