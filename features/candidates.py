"""Candidate generation (recall): for each eligible user x scene, the materials its source proposes.

One function per materials source of the Configuration Center; each returns (user_id, scene_id, item_id)
for items on sale at the plan's as-of time, at most `max_candidates` per user and scene, most popular first.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from features.user_features import within_days

OWN_LISTINGS = "own_listing_stats"   # the source whose materials are the user's own listings (seller_stats)


def _recent(events: DataFrame, as_of: datetime, days: int, *types: str) -> DataFrame:
    return events.where(within_days(F.col("ts"), as_of, days) & F.col("event_type").isin(*types))


# What each source's recall reads of the events: event type -> days before as_of (recall() and ranked_recall()).
def _event_needs(source: str, lookback_days: int) -> dict[str, int]:
    return {"favourited_price_drop": {"fav": 28, "cart": 28}, "followed_seller_new": {"follow_seller": 28},
            "viewed_selling_out": {"view": lookback_days},
            "similar_to_bought": {"buy": max(lookback_days, 28)}}.get(source, {})


def recall_events(events: DataFrame, scenes: list, as_of: datetime) -> DataFrame:
    """Only the events the scenes' recall reads (per event type, its longest lookback): the same candidates
    from a small fraction of the events — at 1M users a week of views and a month of favs, carts, follows
    and buys instead of all 28 days of everything, worth keeping (persist) when recall runs more than once."""
    need: dict[str, int] = {}
    for s in scenes:
        for et, days in _event_needs(s.materials.source, s.materials.lookback_days).items():
            need[et] = max(need.get(et, 0), days)
    keep = F.lit(False)
    for et, days in sorted(need.items()):
        keep = keep | ((F.col("event_type") == et) & within_days(F.col("ts"), as_of, days))
    return events.where(keep).select("ts", "user_id", "event_type", "item_id", "seller_id", "category_id")


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
    if source == OWN_LISTINGS:
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


# Sources whose candidates are the most popular items of a few keys per user (categories) or of everyone: ranked
# per user from small per-key lists, without a shuffle (see ranked_recall). Above MAX_RANKED_ITEMS listed items
# (a catalogue with very many keys) they take the general path: the lists travel inside the query plan.
RANKED_SOURCES = ("top_category_new", "popular_in_category", "similar_to_bought", "hot_items")
MAX_RANKED_ITEMS = 200_000
POSITION_MASK = (1 << 21) - 1    # a candidate is rank << 21 | position (positions < MAX_RANKED_ITEMS < 2**21)


@dataclass(frozen=True)
class Shortlist:
    """Score only each (user, scene, category)'s `per_category` best candidates by `item_scores` ((scene_id,
    item_id) -> the model's item-level estimate; candidates without one rank first, so they are always kept,
    then item_id breaks ties), plus each (user, scene)'s Push 1.0 draw (features.selection.baseline_draw with
    `draw_salt`, its `preferred` = the item is in the user's first top category).

    A feed takes at most `feed.max_per_category` items of a category, and within one (user, scene, category)
    everything the model sees but the item is the same, so the items that lead a feed are, nearly always, among
    the category's best few by the scene's estimate averaged over users."""
    item_scores: dict
    per_category: int
    draw_salt: str


def _ranked_lists(items: DataFrame, key: str | None, n: int) -> tuple[dict, list] | None:
    """Each key's `n` most popular items as positions in one candidate order (views_7d desc nulls last, item_id)
    over all listed items, and the listed rows (item_id, category_id) by position; None when there are too many to
    carry in the plan."""
    top = items.select(F.lit(0).alias("_key"), "item_id", "category_id", "views_7d").orderBy(
        F.col("views_7d").desc(), F.col("item_id")).limit(n) if key is None else (
        _top_per(items, key, n).select(F.col(key).alias("_key"), "item_id", "category_id", "views_7d"))
    rows = top.limit(MAX_RANKED_ITEMS + 1).collect()
    if len(rows) > MAX_RANKED_ITEMS:
        return None
    rows.sort(key=lambda r: (r["views_7d"] is None, -(r["views_7d"] or 0), r["item_id"]))
    lists: dict = {}
    for pos, r in enumerate(rows):
        lists.setdefault(r["_key"], []).append(pos)
    return lists, rows


def _literal(values: list, dtype: str) -> F.Column:
    return F.array(*[F.lit(v) for v in values]).cast(f"array<{dtype}>")


def ranked_recall(source: str, lookback_days: int, *, users: DataFrame, events: DataFrame, on_sale: DataFrame,
                  as_of: datetime, limit: int, scene_id: str = "", shortlist: Shortlist | None = None
                  ) -> DataFrame | None:
    """(user_id, item_id, rank) of a RANKED_SOURCES source: the first `limit` in candidate order, exactly what
    recall() + the popularity rank of candidates() give, without the items in the user row's `_recent` array
    (the re-eligibility gap) and, with a shortlist, only its rows — what candidates()' general path gives.

    An item has one category, so a user's top `limit` over their categories is the first `limit` of the merged
    per-category lists (each trimmed to `limit`, _top_per). Each user's row looks its keys up in a literal map
    (key -> positions in one global order), sorts the positions and keeps the first `limit`; with a shortlist
    the lists are worked out once per set of keys users share (_shortlisted). No join or window over the
    candidates, no shuffle: the rows are born in the user's partition. None when the lists are too large to
    carry in the plan (the caller takes the general path)."""
    items = on_sale.select("item_id", "category_id", "hours_since_listed", "views_7d")
    if source == "top_category_new":
        items, keys = items.where(F.col("hours_since_listed") <= 24.0 * lookback_days), users
    elif source == "popular_in_category":
        items, keys = items.where(F.col("views_7d") > 0), users
    elif source == "similar_to_bought":
        bought = (_recent(events, as_of, max(lookback_days, 28), "buy").groupBy("user_id")
                  .agg(F.collect_set("category_id").alias("_keys")))
        keys = users.drop("top_categories").join(bought.withColumnRenamed("_keys", "top_categories"), "user_id")
    elif source == "hot_items":
        keys = users.withColumn("top_categories", F.array(F.lit(0)))
    else:
        raise ValueError(f"{source!r} is not a ranked source")
    ranked = _ranked_lists(items, None if source == "hot_items" else "category_id",
                           min(50, limit) if source == "hot_items" else limit)
    if ranked is None:
        return None
    lists, rows = ranked
    if not lists:
        return users.select("user_id", F.lit(None).cast("long").alias("item_id"), F.lit(1).alias("rank")).where(
            F.lit(False))
    if shortlist is not None:
        return _shortlisted(keys, lists, rows, limit, scene_id, shortlist)
    empty = F.array().cast("array<int>")
    ids = _literal([r["item_id"] for r in rows], "bigint")
    item_of = lambda p: F.element_at(ids, p + 1)   # noqa: E731  (positions are 0-based)
    by_key = F.create_map(*[x for k, pos in lists.items() for x in (F.lit(k), _literal(pos, "int"))])
    # Each step is its own column, read by name: Spark evaluates higher-order functions without common
    # subexpression elimination, so an array used twice must not be an expression. A candidate travels as one
    # int, rank << 21 | position, and sorts as one long: sorting structs is an interpreted comparison per pair.
    merged = F.slice(F.sort_array(F.flatten(F.transform(
        F.array_distinct(F.coalesce("top_categories", empty)),
        lambda k: F.coalesce(F.try_element_at(by_key, k), empty)))), 1, limit)
    pos_of = lambda c: (F.col(c) if isinstance(c, str) else c).bitwiseAND(POSITION_MASK).cast("int")  # noqa: E731
    # what may be sent: the popularity rank counts the excluded items too
    x = keys.select("user_id", "_top_categories", F.filter(
        F.transform(merged, lambda p, i: F.shiftleft(i + 1, 21).bitwiseOR(p)),
        lambda c: ~F.coalesce(F.array_contains(F.col("_recent"), item_of(pos_of(c))), F.lit(False))).alias("_c"))
    return (x.select("user_id", F.explode("_c").alias("_c"))
            .select("user_id", item_of(pos_of("_c")).alias("item_id"), F.shiftright("_c", 21).alias("rank")))


def _item_score_frame(spark, shortlist: Shortlist) -> DataFrame:
    return spark.createDataFrame([(s, i, v) for (s, i), v in shortlist.item_scores.items()],
                                 "scene_id string, item_id long, item_score double")


def candidates(eligible: DataFrame, scenes: list, users: DataFrame, events: DataFrame, on_sale: DataFrame,
               as_of: datetime, recent: DataFrame | None = None, shortlist: Shortlist | None = None) -> DataFrame:
    """(user_id, scene_id, item_id, rank) for every eligible pair: capped per pair at the scene's max_candidates
    (rank 1 = the most popular: views_7d, then item_id), without the (user_id, item_id) pairs in `recent` (the
    re-eligibility gap; ranks still count them), and with a `shortlist` only its rows (see Shortlist)."""
    from features.selection import baseline_draw, mark_preferred

    if recent is not None:
        users = users.join(recent.groupBy("user_id").agg(F.collect_set("item_id").alias("_recent")), "user_id", "left")
    else:
        users = users.withColumn("_recent", F.array().cast("array<bigint>"))
    users = users.withColumn("_top_categories", F.col("top_categories"))
    general, ranked = [], []
    for s in scenes:
        m = s.materials
        pairs = eligible.where(F.col("scene_id") == s.id).select("user_id")
        scene_users, scene_events = users.join(pairs, "user_id"), events.join(pairs, "user_id")
        if m.source in RANKED_SOURCES:
            r = ranked_recall(m.source, m.lookback_days, users=scene_users, events=scene_events, on_sale=on_sale,
                              as_of=as_of, limit=m.max_candidates, scene_id=s.id, shortlist=shortlist)
            if r is not None:
                ranked.append(r.withColumn("scene_id", F.lit(s.id)))
                continue
        proposed = (recall(m.source, m.lookback_days, m.min_drop_pct, users=scene_users.drop("_recent"),
                           events=scene_events, on_sale=on_sale, as_of=as_of, limit=m.max_candidates)
                    .join(pairs, "user_id").distinct()
                    .withColumn("scene_id", F.lit(s.id)))
        general.append(proposed.withColumn("_limit", F.lit(m.max_candidates)))
    if not general and not ranked:
        raise ValueError("no scenes to generate candidates for")
    parts = [p.select("user_id", "scene_id", "item_id", "rank") for p in ranked]
    if general:
        allc = general[0]
        for p in general[1:]:
            allc = allc.unionByName(p)
        pop = on_sale.select("item_id", "views_7d")
        w = Window.partitionBy("user_id", "scene_id").orderBy(F.col("views_7d").desc(), F.col("item_id"))
        capped = (allc.join(pop, "item_id").withColumn("rank", F.row_number().over(w))
                  .where(F.col("rank") <= F.col("_limit")).select("user_id", "scene_id", "item_id", "rank"))
        if recent is not None:
            capped = capped.join(F.broadcast(recent.select("user_id", "item_id").distinct()), ["user_id", "item_id"],
                                 "left_anti")
        if shortlist is not None:
            marked = mark_preferred(capped, on_sale, users)
            drawn = F.row_number().over(baseline_draw(marked, shortlist.draw_salt)) == 1
            capped = (shortlist_rows(marked.withColumn("_drawn", drawn), _item_score_frame(on_sale.sparkSession,
                                                                                           shortlist),
                                     shortlist.per_category, F.col("_drawn"))
                      .select("user_id", "scene_id", "item_id", "rank"))
        parts.append(capped)
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.select("user_id", "scene_id", "item_id", "rank")


def shortlist_rows(pool: DataFrame, item_scores: DataFrame, per_category: int, keep: F.Column) -> DataFrame:
    """The Shortlist as a window: each (user, scene, category)'s `per_category` best candidates by item_scores
    (scene_id, item_id, item_score; unknown first, then item_id), plus the rows where `keep` holds.
    pool: user_id, scene_id, item_id, category_id, ..."""
    w = Window.partitionBy("user_id", "scene_id", "category_id").orderBy(F.col("item_score").desc_nulls_first(),
                                                                         F.col("item_id"))
    return (pool.join(F.broadcast(item_scores.select("scene_id", "item_id", "item_score")), ["scene_id", "item_id"],
                      "left")
            .withColumn("_k", F.row_number().over(w)).where((F.col("_k") <= per_category) | keep)
            .drop("_k", "item_score"))


MAX_KEY_SETS = 100_000    # distinct key sets (sets of top categories) above which the shortlist takes the general path


def _key_set(keys: F.Column) -> F.Column:
    """A user's keys as one string: the sorted distinct set, all the merged pool depends on."""
    return F.array_join(F.array_sort(F.array_distinct(F.coalesce(keys, F.array().cast("array<int>"))))
                        .cast("array<string>"), ",")


def _shortlisted(keys: DataFrame, lists: dict, rows: list, limit: int, scene_id: str, shortlist: Shortlist
                 ) -> DataFrame | None:
    """ranked_recall's rows with a shortlist: each (user, category)'s `per_category` best by the estimate among
    the user's first `limit` (without `_recent`), plus Push 1.0's draw from all of them.

    Everything but the gap and the draw's hash depends only on the user's set of keys, and a catalogue's users
    share few sets (at most C(40, 3) + C(40, 2) + 40 for three of 40 categories). So the driver computes, per
    set, the pool (the first `limit` item ids in candidate order) and its items grouped by category in estimate
    order, once; each user's row joins its set's lists (a broadcast) and takes, per category, the first
    `per_category` of the group's first `per_category + len(_recent)` items without `_recent` (array_except keeps
    the order; no per-element lambda). Push 1.0's draw hashes only the user's first top category's group (the
    `preferred` items come first), or the whole pool when none of that group is left. None above MAX_KEY_SETS."""
    spark = keys.sparkSession
    x = keys.select("user_id", "_top_categories", F.coalesce("_recent", F.array().cast("array<bigint>"))
                    .alias("_r"), _key_set(F.col("top_categories")).alias("_k"))
    sets = [r["_k"] for r in x.select("_k").distinct().limit(MAX_KEY_SETS + 1).collect()]
    if len(sets) > MAX_KEY_SETS:
        return None
    score = {r["item_id"]: shortlist.item_scores.get((scene_id, r["item_id"])) for r in rows}
    table = []
    for key_set in sets:
        ks = [int(v) for v in key_set.split(",")] if key_set else []
        pool = sorted(p for k in ks for p in lists.get(k, []))[:limit]
        groups: dict = {}
        for p in pool:
            groups.setdefault(rows[p]["category_id"], []).append(rows[p]["item_id"])
        for items in groups.values():      # estimate order: items without an estimate first, then item_id
            items.sort(key=lambda i: (score[i] is not None, -(score[i] or 0.0), i))
        table.append((key_set, [rows[p]["item_id"] for p in pool], list(groups), list(groups.values())))
    # in slices of about 512 KB: one task per 1M-user world's 10,701 sets of three of 40 categories (68 MB of ids
    # for top_picks' 400) would be far above Spark's recommended task size
    size = sum(16 * len(pool) + 64 for _, pool, _, _ in table)
    sets_df = spark.createDataFrame(spark.sparkContext.parallelize(table, max(1, -(-size // (512 * 1024)))),
                                    "_k string, _pool array<bigint>, _cats array<int>, _groups array<array<bigint>>")
    k, r = shortlist.per_category, F.col("_r")
    x = x.join(F.broadcast(sets_df), "_k")
    best = F.flatten(F.transform("_groups", lambda g: F.slice(F.array_except(F.slice(g, 1, F.size(r) + k), r), 1, k)))
    first = F.coalesce(F.array_position("_cats", F.try_element_at("_top_categories", F.lit(1))), F.lit(0))
    preferred = F.array_except(F.coalesce(F.when(first > 0, F.element_at("_groups", first.cast("int"))),
                                          F.array().cast("array<bigint>")), r)
    x = x.select("user_id", "_pool", best.alias("_best"), F.when(F.size(preferred) > 0, preferred)
                 .otherwise(F.array_except("_pool", r)).alias("_d"))
    x = x.select("*", F.transform("_d", lambda i: F.xxhash64("user_id", i, F.lit(f"{shortlist.draw_salt}:item")))
                 .alias("_h"))
    draw = F.element_at("_d", F.array_position("_h", F.array_min("_h")).cast("int"))
    x = x.select("user_id", "_pool", F.when(draw.isNull(), F.col("_best"))
                 .otherwise(F.array_union("_best", F.array(draw))).alias("_i"))
    return (x.select("user_id", "_pool", F.explode("_i").alias("item_id"))
            .select("user_id", "item_id", F.array_position("_pool", F.col("item_id")).cast("int").alias("rank")))
