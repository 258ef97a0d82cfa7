"""Material (item) features as of a run date, and historical push rates smoothed down a hierarchy.

Pure transforms. An item's state at `as_of` is rebuilt from `item_changes` (point-in-time), not taken
from the items snapshot, which may already know about later sales.
"""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from features.rollups import push_driven
from features.user_features import within_days

# Pseudo-sends pulling a child's rate toward its parent's: a material with 20 sends is still mostly
# its category's rate, one with 2,000 is mostly its own.
PRIOR_SENDS = 50.0


def items_as_of(items: DataFrame, item_changes: DataFrame, as_of: datetime) -> DataFrame:
    """Every item listed before `as_of` with its price and status at that instant."""
    changes = item_changes.where(F.col("ts") < F.lit(as_of))
    w = Window.partitionBy("item_id").orderBy(F.col("ts").desc(), F.col("change").desc())
    last_price = (changes.withColumn("rn", F.row_number().over(w)).where("rn = 1")
                  .select("item_id", F.col("price").alias("price_now")))
    state = changes.groupBy("item_id").agg(
        F.max(F.when(F.col("change") == "listed", F.col("price"))).alias("listing_price"),
        F.max(F.when(F.col("change") == "price_drop", F.col("ts"))).alias("last_drop_at"),
        F.max(F.when(F.col("change").isin("sold", "removed"), F.col("ts"))).alias("ended_at"),
        F.max(F.when(F.col("change") == "sold", F.lit(1)).otherwise(F.lit(0))).alias("_sold"),
    )
    return (items.where(F.col("listed_at") < F.lit(as_of))
            .select("item_id", "seller_id", "category_id", "title", "listed_at", F.col("price").alias("_snap_price"))
            .join(state, "item_id", "left").join(last_price, "item_id", "left")
            .select("item_id", "seller_id", "category_id", "title", "listed_at",
                    F.coalesce("listing_price", "price_now", "_snap_price").alias("listing_price"),
                    F.coalesce("price_now", "_snap_price").alias("price"),
                    "last_drop_at",
                    F.when(F.col("ended_at").isNull(), F.lit("on_sale"))
                    .when(F.col("_sold") == 1, F.lit("sold")).otherwise(F.lit("removed")).alias("status")))


def material_features(items_now: DataFrame, events: DataFrame, as_of: datetime,
                      push_log: DataFrame | None = None) -> DataFrame:
    """One row per item on sale at `as_of`: price, price change, freshness, category, popularity, seller activity.
    Popularity is organic: the views a push led to (push_log's receipts, features.rollups.push_driven) are not
    the item's draw but the plan's, and would make last night's pushed items look more popular tonight."""
    on_sale = items_now.where(F.col("status") == "on_sale")
    recent = (push_driven(events.where(within_days(F.col("ts"), as_of, 7) & F.col("item_id").isNotNull()), push_log)
              .where(~F.col("via_push")))
    popularity = recent.groupBy("item_id").agg(
        F.sum((F.col("event_type") == "view").cast("int")).alias("views_7d"),
        F.sum(((F.col("event_type") == "view") & within_days(F.col("ts"), as_of, 1)).cast("int")).alias("views_1d"),
        F.sum((F.col("event_type") == "fav").cast("int")).alias("favs_7d"),
        F.sum((F.col("event_type") == "chat").cast("int")).alias("chats_7d"),
        F.countDistinct("user_id").alias("viewers_7d"),
    )
    sellers = items_now.groupBy("seller_id").agg(
        F.sum(within_days(F.col("listed_at"), as_of, 28).cast("int")).alias("seller_listings_28d"),
        F.sum((F.col("status") == "sold").cast("int")).alias("seller_sold_total"),
        F.sum((F.col("status") == "on_sale").cast("int")).alias("seller_on_sale"),
    )
    hours = lambda c: (F.unix_timestamp(F.lit(as_of)) - F.unix_timestamp(c)) / 3600.0  # noqa: E731
    return (on_sale.join(popularity, "item_id", "left").join(sellers, "seller_id", "left")
            .select("item_id", "seller_id", "category_id", "title", "price", "listing_price",
                    F.when(F.col("listing_price") > 0, (F.col("listing_price") - F.col("price")) / F.col("listing_price"))
                    .otherwise(F.lit(0.0)).alias("price_drop_pct"),
                    hours("listed_at").alias("hours_since_listed"),
                    hours("last_drop_at").alias("hours_since_drop"),
                    *[F.coalesce(F.col(c), F.lit(0)).cast("int").alias(c)
                      for c in ("views_1d", "views_7d", "favs_7d", "chats_7d", "viewers_7d")],
                    *[F.coalesce(F.col(c), F.lit(0)).cast("int").alias(c)
                      for c in ("seller_listings_28d", "seller_sold_total", "seller_on_sale")]))


def material_rates(push_log: DataFrame, items: DataFrame, as_of: datetime, prior: float = PRIOR_SENDS) -> DataFrame:
    """Open and click rates of past pushes by scene, scene x category and scene x category x material,
    each smoothed toward its parent (Bayesian, `prior` pseudo-sends): level = scene | category | material."""
    seen = push_log.where(F.col("sent_at") < F.lit(as_of))
    opened = (F.col("opened_at").isNotNull() & (F.col("opened_at") < F.lit(as_of))).cast("double")
    shown = (seen.select("scene_id", F.explode("item_ids").alias("item_id"), opened.alias("open"),
                         "clicked_item_id")
             .withColumn("click", (F.col("clicked_item_id") == F.col("item_id")).cast("double"))
             .na.fill({"click": 0.0})
             .join(items.select("item_id", "category_id"), "item_id", "left")
             .na.fill({"category_id": -1}))
    counts = lambda df, keys: df.groupBy(*keys).agg(  # noqa: E731
        F.count("*").cast("double").alias("sends"), F.sum("open").alias("opens"), F.sum("click").alias("clicks"))
    total = counts(shown.withColumn("_all", F.lit(1)), ["_all"]).select(
        (F.col("opens") / F.col("sends")).alias("p_open0"), (F.col("clicks") / F.col("sends")).alias("p_click0"))

    def smooth(df, parent_open, parent_click):
        return (df.withColumn("open_rate", (F.col("opens") + prior * parent_open) / (F.col("sends") + prior))
                .withColumn("click_rate", (F.col("clicks") + prior * parent_click) / (F.col("sends") + prior)))

    scene = smooth(counts(shown, ["scene_id"]).crossJoin(total), F.col("p_open0"), F.col("p_click0")) \
        .select("scene_id", "sends", "opens", "clicks", "open_rate", "click_rate")
    cat = (counts(shown, ["scene_id", "category_id"])
           .join(scene.select("scene_id", F.col("open_rate").alias("po"), F.col("click_rate").alias("pc")), "scene_id"))
    cat = smooth(cat, F.col("po"), F.col("pc")).select("scene_id", "category_id", "sends", "opens", "clicks",
                                                       "open_rate", "click_rate")
    mat = (counts(shown, ["scene_id", "category_id", "item_id"])
           .join(cat.select("scene_id", "category_id", F.col("open_rate").alias("po"),
                            F.col("click_rate").alias("pc")), ["scene_id", "category_id"]))
    mat = smooth(mat, F.col("po"), F.col("pc")).select("scene_id", "category_id", "item_id", "sends", "opens",
                                                       "clicks", "open_rate", "click_rate")
    null_long = F.lit(None).cast("long")
    null_int = F.lit(None).cast("int")
    cols = ["level", "scene_id", "category_id", "item_id", "sends", "opens", "clicks", "open_rate", "click_rate"]
    return (scene.select(F.lit("scene").alias("level"), "scene_id", null_int.alias("category_id"),
                         null_long.alias("item_id"), *cols[4:])
            .unionByName(cat.select(F.lit("category").alias("level"), "scene_id",
                                    F.col("category_id").cast("int"), null_long.alias("item_id"), *cols[4:]))
            .unionByName(mat.select(F.lit("material").alias("level"), "scene_id",
                                    F.col("category_id").cast("int"), "item_id", *cols[4:]))
            .withColumn("sends", F.col("sends").cast("long"))
            .withColumn("opens", F.col("opens").cast("long"))
            .withColumn("clicks", F.col("clicks").cast("long")))
