"""Candidate generation (recall): for each eligible user x scene, the materials its source proposes.

One function per materials source of the Configuration Center; each returns (user_id, scene_id, item_id)
for items on sale at the plan's as-of time, at most `max_candidates` per user and scene, most popular first.
"""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from features.user_features import within_days


def _recent(events: DataFrame, as_of: datetime, days: int, *types: str) -> DataFrame:
    return events.where(within_days(F.col("ts"), as_of, days) & F.col("event_type").isin(*types))


def _top_per(items: DataFrame, key: str, n: int | None) -> DataFrame:
    """The `n` most popular items per `key` value, in the candidates' own order (views_7d desc, item_id).
    A user's top n over several keys (categories, sellers) is always among the union of each key's top n, so
    trimming before the user join is exact and keeps the join small."""
    if n is None:
        return items
    w = Window.partitionBy(key).orderBy(F.col("views_7d").desc(), F.col("item_id"))
    return items.withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= n).drop("_r")


def _in_top_categories(users: DataFrame, on_sale: DataFrame, fresh_hours: float | None,
                       limit: int | None = None) -> DataFrame:
    cats = users.select("user_id", F.explode("top_categories").alias("category_id"))
    items = on_sale if fresh_hours is None else on_sale.where(F.col("hours_since_listed") <= fresh_hours)
    return cats.join(_top_per(items, "category_id", limit), "category_id").select("user_id", "item_id")


def recall(source: str, lookback_days: int, min_drop_pct: float, *, users: DataFrame, events: DataFrame,
           on_sale: DataFrame, as_of: datetime, limit: int | None = None) -> DataFrame:
    """(user_id, item_id) proposed by one materials source. users: user_features rows (user_id,
    top_categories); on_sale: material_features rows. limit: the scene's max_candidates — sources that fan
    out over a category or a seller propose only that key's `limit` most popular items (exact, see _top_per)."""
    items = on_sale.select("item_id", "seller_id", "category_id", "hours_since_listed", "hours_since_drop",
                           "price_drop_pct", "views_7d", "viewers_7d")
    hours = 24.0 * lookback_days
    if source == "favourited_price_drop":
        liked = _recent(events, as_of, 28, "fav", "cart").select("user_id", "item_id").distinct()
        dropped = items.where((F.col("hours_since_drop") <= hours) & (F.col("price_drop_pct") * 100 >= min_drop_pct))
        return liked.join(dropped, "item_id").select("user_id", "item_id")
    if source == "followed_seller_new":
        follows = _recent(events, as_of, 28, "follow_seller").select("user_id", "seller_id").distinct()
        fresh = _top_per(items.where(F.col("hours_since_listed") <= hours), "seller_id", limit)
        return follows.join(fresh, "seller_id").select("user_id", "item_id")
    if source == "top_category_new":
        return _in_top_categories(users, items, hours, limit)
    if source == "viewed_selling_out":
        viewed = (_recent(events, as_of, lookback_days, "view").groupBy("user_id", "item_id").count()
                  .where("count >= 2").select("user_id", "item_id"))
        return viewed.join(items.where(F.col("viewers_7d") >= 3), "item_id").select("user_id", "item_id")
    if source == "own_listing_stats":
        return (items.where(F.col("views_7d") > 0)
                .select(F.col("seller_id").alias("user_id"), "item_id"))
    if source == "popular_in_category":
        return _in_top_categories(users, items.where(F.col("views_7d") > 0), None, limit)
    if source == "similar_to_bought":
        bought = _recent(events, as_of, max(lookback_days, 28), "buy").select("user_id", "category_id").distinct()
        return bought.join(_top_per(items, "category_id", limit), "category_id").select("user_id", "item_id")
    if source == "hot_items":
        top = items.orderBy(F.col("views_7d").desc(), F.col("item_id")).limit(min(50, limit or 50)).select("item_id")
        return users.select("user_id").crossJoin(top)
    if source == "chat_waiting":
        # Real-time only: the hourly trigger run proposes the listing with the waiting chat.
        return users.select("user_id", F.lit(None).cast("long").alias("item_id")).where(F.lit(False))
    raise ValueError(f"unknown materials source {source!r}")


def candidates(eligible: DataFrame, scenes: list, users: DataFrame, events: DataFrame, on_sale: DataFrame,
               as_of: datetime) -> DataFrame:
    """(user_id, scene_id, item_id) for every eligible pair, capped per pair at the scene's max_candidates."""
    parts = []
    for s in scenes:
        m = s.materials
        pairs = eligible.where(F.col("scene_id") == s.id).select("user_id")
        proposed = (recall(m.source, m.lookback_days, m.min_drop_pct, users=users.join(pairs, "user_id"),
                           events=events.join(pairs, "user_id"), on_sale=on_sale, as_of=as_of,
                           limit=m.max_candidates)
                    .join(pairs, "user_id").distinct()
                    .withColumn("scene_id", F.lit(s.id)))
        parts.append(proposed.withColumn("_limit", F.lit(m.max_candidates)))
    if not parts:
        raise ValueError("no scenes to generate candidates for")
    allc = parts[0]
    for p in parts[1:]:
        allc = allc.unionByName(p)
    pop = on_sale.select("item_id", "views_7d")
    w = Window.partitionBy("user_id", "scene_id").orderBy(F.col("views_7d").desc(), F.col("item_id"))
    return (allc.join(pop, "item_id").withColumn("rank", F.row_number().over(w))
            .where(F.col("rank") <= F.col("_limit")).select("user_id", "scene_id", "item_id", "rank"))
