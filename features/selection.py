"""Feed and scene selection, and the Push 1.0 baseline kept beside them.

Feed: per user and scene, the top-k scored materials (k = the scene's feed size) with diversity — at most
one item per seller and `max_per_category` per category — and the feed's expected open probability
max_i p_i. A push is opened once, whatever its feed: P(open) is driven by the feed's most attractive item
(the model scores each item as the push's lead), so the best item's probability is the feed's estimate.
Treating items as independent chances (1 - prod(1 - p_i)) would count one open several times and favour
scenes with long feeds. What a longer feed does add over its lead item is learnt from Hermes' own pushes, not
assumed: the model version's recalibration (features.windows.Recalibration, its term c log(items)), 0 until those
pushes show feeds of several lengths. Scene: per user, the feed with the highest expected opens, that term
included; ties go to priority.

Interest: a pair's `interest` (the user favourited or carted the item or follows its seller: features/pairs.py) is
not something the model can value (its history was not chosen by it); the recalibration's term e, learnt from
Hermes' own pushes, is. With e != 0 the items of a feed are ranked by logit(p_open) + e * interest, so a feed of
something the user wants leads with it, and the scene choice adds e to a feed holding such an item. Every feed logs
its items' `item_interest` (0/1 each), which the plan's estimate (jobs/windows.py) and the next fit read.

Support: a scene the push history barely shows (or never showed: a config's new scene, a history of other
scene ids) is one whose scene code the model extrapolates. Its feeds keep only w = sends / (sends +
`support_sends`) of the model's scene effect (the lead item's log-odds with its scene code minus with the neutral
code, `shrink_to_support`): with no history of the scene it has none, with plenty it keeps the model's; what the
features say about the match (interest, item quality, the hour) is the model's either way.
Exploration: a deterministic `explore_share` of users (a hash of
user and day) get a uniformly drawn scene of theirs instead of the best, its feed cut to a uniformly drawn length
(the first items, the lead item kept); every row logs its scene_propensity, P(scene and feed | policy) =
(1 - e)[best, whole feed] + e / (the user's scenes) / (the feed's length), so the history these pushes become can be
re-weighted, unseen scenes get data and feeds of every length are seen.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def recent_pairs(push_log: DataFrame, since) -> DataFrame:
    """(user_id, item_id) pushed at or after `since` by any path (nightly or trigger)."""
    return (push_log.where(F.col("sent_at") >= F.lit(since))
            .select("user_id", F.explode("item_ids").alias("item_id")).distinct())


def feeds(scored: DataFrame, items: DataFrame, scenes: DataFrame, max_per_category: int, reserves: int = 0,
          interest_weight: float = 0.0, own_listing_scenes: tuple[str, ...] = ()) -> DataFrame:
    """scored: user_id, scene_id, item_id, p_open, model_version (and interest: 0/1). items: item_id, seller_id,
    category_id. scenes: scene_id, feed_size, priority.

    A feed never offers users their own listings (seller_id = user_id: a seller's new listing is in their own top
    category, the popular ones in their own feed), except in a scene about them (`own_listing_scenes`, those of the
    materials source `own_listing_stats`: "your listing got 12 views").

    interest_weight: the recalibration's e; with it the feed's items are ranked by logit(p_open) + e * interest
    (see the module doc), else by p_open. The feed's expected_open stays its best item's p_open, the model's.

    reserves: each feed also carries the scene's next this many candidates (best first, one per seller, none of the
    feed's sellers) as `reserve_ids`: second-hand items are unique, and one that sells between the night's plan and
    the send is replaced at the send by the first reserve still on sale that keeps the feed within
    `max_per_category` (delivery/availability.py) instead of leaving the feed short, or a one-item push empty. The
    category cap is the sent feed's, so a reserve may be a category's next item past the cap: it can only stand in
    for a sold item of its own category, or of another where the cap leaves room. (Reserves held to the cap among
    themselves were empty for most feeds: a user of three categories fills a feed of six with two of each.) They
    are not part of the feed's estimate."""
    # Hash-partitioned by user once: every window below (user, scene, seller / category / -), the feed's group-by
    # and select_scene's window are clustered within it, so none of them shuffles the pairs again.
    own = F.coalesce(F.col("seller_id") == F.col("user_id"), F.lit(False))
    x = (scored.join(items.select("item_id", "seller_id", "category_id"), "item_id")
         .where(~own | F.col("scene_id").isin(*own_listing_scenes)).repartition("user_id"))
    has_interest = "interest" in scored.columns
    if has_interest and interest_weight:
        q = F.least(F.greatest(F.col("p_open"), F.lit(1e-6)), F.lit(1 - 1e-6))
        x = x.withColumn("_merit", F.log(q / (1 - q)) + F.lit(float(interest_weight)) * F.col("interest"))
    else:
        x = x.withColumn("_merit", F.col("p_open"))
    by = lambda *cols: Window.partitionBy("user_id", "scene_id", *cols).orderBy(  # noqa: E731
        F.col("_merit").desc(), F.col("item_id"))
    x = x.withColumn("_seller_rank", F.row_number().over(by("seller_id"))).where("_seller_rank = 1")
    x = x.withColumn("_capped", (F.row_number().over(by("category_id")) <= max_per_category).cast("int"))
    # one pass of one window: the feed is the first feed_size rows within the category cap; every other row's place
    # among the rows outside the feed (its row number minus the feed rows before it) makes the first `reserves` of
    # them the reserves
    running = by().rowsBetween(Window.unboundedPreceding, Window.currentRow)
    x = (x.join(F.broadcast(scenes), "scene_id")
         .withColumn("_pos", F.row_number().over(by()))
         .withColumn("_capped_so_far", F.sum("_capped").over(running)))
    in_feed = (F.col("_capped") == 1) & (F.col("_capped_so_far") <= F.col("feed_size"))
    x = x.withColumn("position", F.when(in_feed, F.col("_capped_so_far")).otherwise(
        F.col("feed_size") + F.col("_pos") - F.least(F.col("_capped_so_far"), F.col("feed_size"))))
    x = x.where(F.col("position") <= F.col("feed_size") + F.lit(int(reserves)))
    in_feed = F.col("position") <= F.col("feed_size")

    def ordered(col, rows):
        return F.transform(F.sort_array(F.collect_list(F.when(rows, F.struct("position", col)))), lambda s: s[col])

    return x.groupBy("user_id", "scene_id", "priority", "model_version").agg(
        ordered("item_id", in_feed).alias("item_ids"),
        ordered("p_open", in_feed).alias("item_p_open"),
        *([ordered("interest", in_feed).alias("item_interest")] if has_interest else []),
        F.max(F.when(in_feed, F.col("p_open"))).alias("expected_open"),
        *([F.max_by(F.when(in_feed, F.col("p_neutral")), F.when(in_feed, F.col("p_open"))).alias("expected_open_neutral")]
          if "p_neutral" in scored.columns else []),
        ordered("item_id", ~in_feed).alias("reserve_ids"),
    )


def shrink_to_support(feed: DataFrame, scene_rates: DataFrame, support_sends: float,
                      scenes: list[str] | None = None) -> tuple[DataFrame, dict]:
    """expected_open with each scene's advantage shrunk by the history's support for it (see the module doc).
    scene_rates: features/material_rates. Returns the feed and {scene: weight of the model}; with no push history
    at all the feed is left as the model scored it (the prior policy plans; nothing to weigh).

    scenes: the scene ids the feed can hold (the job's nightly scenes). With the neutral score they are all the
    weights need, and the feed stays a plan to be computed once, by its writer: without them they are collected from
    the feed, which computes it (at 1M users the feeds' windows over 55.6M scored pairs, ~70 s) only to compute it
    again when it is written.

    With `expected_open_neutral` (the lead item scored with the neutral scene code, jobs/score.py) the shrunk part
    is exactly the model's own scene effect: logit(p') = logit(p_neutral) + w_s (logit(p) - logit(p_neutral)),
    w_s = sends_s / (sends_s + support_sends). Everything the features say about the match (the user's interest in
    the items, their quality, the hour) stays; only the scene code's extrapolation is weighed by its support.
    Without it (a plan scored before p_neutral existed), the scene's mean contrast over all feeds stands in:

    On the logit scale, scene s's feeds sit on average m_s above or below the mean of all feeds, m. The shrunk
    estimate keeps every feed's own level (its user, items, hour) and only w_s of that scene contrast:
    logit(p') = logit(p) - (1 - w_s)(m_s - m), w_s = sends_s / (sends_s + support_sends). A scene the history never
    showed gets no advantage it cannot support, and the plan's level stays the model's (not the history's pooled
    rate, which was measured at the history's hours and scenes, not the plan's)."""
    rows = (scene_rates.where(F.col("level") == "scene").select("scene_id", "sends", "opens").collect())
    sends = sum(float(r["sends"]) for r in rows)
    if sends <= 0:
        return feed, {}
    support = {r["scene_id"]: float(r["sends"]) for r in rows}
    eps = 1e-6

    def logit_of(col):
        p = F.least(F.greatest(F.col(col), F.lit(eps)), F.lit(1 - eps))
        return F.log(p / (1 - p))

    logit = logit_of("expected_open")
    if "expected_open_neutral" in feed.columns:
        # the model's own scene effect on this feed: its lead item scored with and without the scene's code
        if scenes is None:
            scenes = [r["scene_id"] for r in feed.select("scene_id").distinct().collect()]
        weight = {sc: support.get(sc, 0.0) / (support.get(sc, 0.0) + support_sends) if support_sends > 0 else 1.0
                  for sc in scenes}
        if not weight:
            return feed, {}
        w = F.create_map(*[x for sc, v in sorted(weight.items()) for x in (F.lit(sc), F.lit(v))])
        neutral = logit_of("expected_open_neutral")
        return (feed.withColumn("expected_open", 1 / (1 + F.exp(-(neutral + w[F.col("scene_id")] * (logit - neutral)))))
                .drop("expected_open_neutral"), weight)
    means = {r["scene_id"]: (float(r["m"]), int(r["n"])) for r in
             feed.groupBy("scene_id").agg(F.avg(logit).alias("m"), F.count("*").alias("n")).collect()}
    if not means:                                      # an empty feed
        return feed, {}
    total = sum(n for _, n in means.values())
    overall = sum(m * n for m, n in means.values()) / total
    weight = {sc: support.get(sc, 0.0) / (support.get(sc, 0.0) + support_sends) if support_sends > 0 else 1.0
              for sc in means}
    shift = {sc: (1 - weight[sc]) * (means[sc][0] - overall) for sc in means}
    d = F.create_map(*[x for sc, v in sorted(shift.items()) for x in (F.lit(sc), F.lit(v))])
    return feed.withColumn("expected_open", 1 / (1 + F.exp(-(logit - d[F.col("scene_id")])))), weight


def _unit_hash(col, salt: str):
    """A uniform number in [0, 1) from a column and a salt (Spark's xxhash64: stable across runs and machines)."""
    return F.pmod(F.xxhash64(col, F.lit(salt)), F.lit(1 << 31).cast("bigint")).cast("double") / F.lit(float(1 << 31))


def select_scene(feed: DataFrame, explore_share: float = 0.0, salt: str = "", breadth: float = 0.0,
                 scene_offsets: dict | None = None, interest: float = 0.0) -> DataFrame:
    """One row per user: the feed with the highest expected opens (then priority, then scene id), or for an
    explore_share of users (by a salted hash) a uniformly drawn one of their scenes; scene_propensity logs
    P(this scene | the policy). breadth: the model version's feed-length term c, scene_offsets its scenes' own
    offsets d[scene] (features.windows.Recalibration: log-odds per unit of log(items), and per scene, learnt from
    Hermes' own pushes; none until they show it): feeds are compared on logit(expected_open) + c log(items) +
    d[scene] + e [the feed holds an item of the user's interest] (interest: e; item_interest says which items).
    The recalibration's a and b move every feed alike (b > 0), so they do not change the order;
    expected_open itself stays the model's (jobs/windows.py recalibrates it once)."""
    wanted = bool(interest) and "item_interest" in feed.columns
    if breadth or scene_offsets or wanted:
        p = F.least(F.greatest(F.col("expected_open"), F.lit(1e-6)), F.lit(1 - 1e-6))
        merit = F.log(p / (1 - p))
        if breadth:
            merit = merit + F.lit(float(breadth)) * F.log(F.greatest(F.size("item_ids"), F.lit(1)))
        if scene_offsets:
            d = F.create_map(*[x for sc, v in sorted(scene_offsets.items()) for x in (F.lit(sc), F.lit(float(v)))])
            merit = merit + F.coalesce(d[F.col("scene_id")], F.lit(0.0))
        if wanted:
            merit = merit + F.lit(float(interest)) * F.coalesce(F.exists("item_interest", lambda v: v > 0),
                                                                F.lit(False)).cast("double")
    else:
        merit = F.col("expected_open")
    w = Window.partitionBy("user_id").orderBy(merit.desc(), F.col("priority").desc(), F.col("scene_id"))
    e = float(explore_share)
    ranked = (feed.withColumn("_rank", F.row_number().over(w))
              .withColumn("_n", F.count(F.lit(1)).over(Window.partitionBy("user_id"))))
    explorer = _unit_hash(F.col("user_id"), f"{salt}-explore") < F.lit(e)
    drawn = (F.floor(_unit_hash(F.col("user_id"), f"{salt}-scene") * F.col("_n")) + 1).cast("int")
    target = F.when(explorer, drawn).otherwise(F.lit(1))
    # explorers also get a uniformly drawn length 1..k of their feed (its first items: the lead item stays, so
    # expected_open is unchanged): feeds of every length, whatever the scene, are what tells the recalibration what a
    # longer feed adds (its term c) apart from what a scene adds
    k = F.greatest(F.size("item_ids"), F.lit(1))
    length = F.when(explorer, (F.floor(_unit_hash(F.col("user_id"), f"{salt}-length") * k) + 1).cast("int")).otherwise(k)
    out = (ranked.where(F.col("_rank") == target)
           .withColumn("_k", k).withColumn("_len", length)        # before item_ids is cut (k reads its size)
           .withColumn("policy", F.lit("hermes"))
           # P(this scene and this feed | the policy): the best scene's whole feed, or a drawn scene and length
           .withColumn("scene_propensity", F.lit(1 - e) * ((F.col("_rank") == 1) & (F.col("_len") == F.col("_k")))
                       .cast("double") + F.lit(e) / F.col("_n") / F.col("_k")))
    if "reserve_ids" in feed.columns:
        # an explorer's items past its drawn length are its first reserves (delivery refills up to that length)
        out = out.withColumn("reserve_ids", F.concat(F.slice("item_ids", F.col("_len") + 1, F.col("_k")), "reserve_ids"))
    return (out.withColumn("item_ids", F.slice("item_ids", 1, F.col("_len")))
               .withColumn("item_p_open", F.slice("item_p_open", 1, F.col("_len")))
               .transform(lambda df: df.withColumn("item_interest", F.slice("item_interest", 1, F.col("_len")))
                          if "item_interest" in df.columns else df)
               .drop("_rank", "_n", "_k", "_len"))


def baseline_scene(scene_rates: DataFrame, allowed: list[str], min_sends: int = 100,
                   reach: dict[str, int] | None = None) -> str:
    """Push 1.0's scene: the best global historical open rate among `allowed` scenes with enough sends;
    the highest-volume allowed scene when none has enough history; the scene that reaches the most users when
    none has any (a fresh deployment, or a history of scene ids this config does not know). reach: users each
    scene can push tonight; a scene that reaches nobody is never Push 1.0's scene while another reaches someone."""
    if reach is not None and any(reach.get(s, 0) > 0 for s in allowed):
        allowed = [s for s in allowed if reach.get(s, 0) > 0]
    rows = (scene_rates.where((F.col("level") == "scene") & F.col("scene_id").isin(*allowed))
            .select("scene_id", "sends", "open_rate").collect())
    enough = [r for r in rows if r["sends"] >= min_sends]
    if enough:
        return max(enough, key=lambda r: (r["open_rate"], r["scene_id"]))["scene_id"]
    if rows:
        return max(rows, key=lambda r: (r["sends"], r["scene_id"]))["scene_id"]
    return max(sorted(allowed), key=lambda s: (reach or {}).get(s, 0))


def baseline_salt(ds: str) -> str:
    return f"hermes-baseline-{ds}"


def mark_preferred(pairs: DataFrame, items: DataFrame, user_features: DataFrame) -> DataFrame:
    """pairs + category_id (left, from items) + `preferred`: the item is in the user's most engaged category —
    where Push 1.0 drew its item from when it could."""
    top = user_features.select("user_id", F.try_element_at("top_categories", F.lit(1)).alias("_top_category"))
    x = pairs if "category_id" in pairs.columns else pairs.join(items.select("item_id", "category_id"), "item_id",
                                                                     "left")
    return (x.join(top, "user_id", "left")
            .withColumn("preferred", F.coalesce(F.col("category_id") == F.col("_top_category"), F.lit(False)))
            .drop("_top_category"))


def baseline_draw(candidates: DataFrame, salt: str) -> Window:
    """Push 1.0's draw of one material per (user, scene): row 1 of this window, a hash of user, item and salt,
    `preferred` candidates first when the column is there. The drawn row is the minimum of a fixed order, so it
    is also the draw of any subset of the candidates that contains it (how jobs/score.py keeps it in the
    shortlist)."""
    order = [F.col("preferred").desc()] if "preferred" in candidates.columns else []
    return Window.partitionBy("user_id", "scene_id").orderBy(*order, F.xxhash64("user_id", "item_id",
                                                                                 F.lit(f"{salt}:item")))


def baseline(candidates: DataFrame, eligible: DataFrame, scene_id: str, explore_share: float = 0.0,
             salt: str = "") -> DataFrame:
    """Push 1.0: everyone eligible for the one global scene gets one material of that scene's pool, drawn per
    user (a hash of user, item and `salt`) among the candidates marked `preferred` when the user has any (the
    caller marks those in the user's most engaged category) — what Push 1.0's own log shows: a random live item
    of the user's top category. Not the single most popular candidate: that one would go to thousands of users
    at once and, once it sells, leave them all a dead push (2.9 % open rate against Push 1.0's logged 7.4 % on
    the default world).

    With `explore_share` > 0, that share of the audience (a hash of user and `salt`, e.g. the day) instead gets a
    scene drawn uniformly from the scenes it is eligible for and has a material in (the global one included),
    and every row logs `scene_propensity` = P(this scene | user) = (1 - e)[scene is the global one] + e / k."""
    first = candidates.withColumn("_draw", F.row_number().over(baseline_draw(candidates, salt))).where(
        F.col("_draw") == 1)
    cols = ["user_id", "scene_id", "item_id"] + [c for c in ("p_open", "model_version", "interest") if c in first.columns]
    opts = eligible.select("user_id", "scene_id").join(first.select(*cols), ["user_id", "scene_id"])
    audience = opts.where(F.col("scene_id") == scene_id).select("user_id")
    opts = opts.join(audience, "user_id", "left_semi")
    by_user = Window.partitionBy("user_id")
    opts = (opts.withColumn("_i", F.row_number().over(by_user.orderBy("scene_id")) - 1)
            .withColumn("_k", F.count("*").over(by_user)))
    eps = float(explore_share)
    explored = (F.pmod(F.xxhash64("user_id", F.lit(f"{salt}:explore")), F.lit(1_000_000)) < int(eps * 1_000_000))
    pick = F.pmod(F.xxhash64("user_id", F.lit(f"{salt}:scene")), F.col("_k"))
    is_best = F.col("scene_id") == scene_id
    x = (opts.where(F.when(explored, F.col("_i") == pick).otherwise(is_best))
         .withColumn("scene_propensity", (1 - eps) * is_best.cast("double") + eps / F.col("_k")))
    scored = ([F.array("p_open").alias("item_p_open"), F.col("p_open").alias("expected_open"), "model_version"]
              if "p_open" in cols else []) + ([F.array("interest").alias("item_interest")] if "interest" in cols else [])
    # Push 1.0 as it was: one item, nothing held in reserve
    return x.select("user_id", "scene_id", F.array("item_id").alias("item_ids"), *scored,
                    F.lit("baseline").alias("policy"), "scene_propensity",
                    F.array().cast("array<bigint>").alias("reserve_ids"))
