"""How likely a listing is still on sale a day after the nightly's cut: second-hand items are unique and sell.

The plan is made at night and sent through the next day. A feed whose lead item sells in between goes out with
its next item on sale in the lead (delivery/availability.py), so what the plan can expect of a feed is not its best
item's p(open) but the first *available* item's: sum_k p_k a_k prod_{j<k} (1 - a_j), items in the plan's order
(features.selection.feeds), a_k = P(item k still on sale at the send). The items that most users would like best
are the ones most likely to be gone: on a held-out closed loop (holdout_mix seed 7, 2026-12-06) one listing, the
most viewed of its category, led 55 % of night 1's pushes and sold an hour after the cut.

a is learnt from the marketplace's own last `days` nights, not assumed: every item on sale at the end of a night
is a row, with what the events showed of it that night and the week before (views, favourites, chats: the
columns of features/material_features, from the daily rollups), its age and whether its price was cut; the label
is whether it sold or was removed within the next 24 hours (raw/item_changes, as known at the cut). A logistic
regression on those (log1p of the counts and of the age) gives p_on_sale_1d = 1 - P(ended within 24 h). With too
few endings or survivals to fit (`MIN_CLASS`, a new marketplace), the pooled rate of the rows stands in; with no
rows at all, every item is taken to stay on sale (a = 1: the plan is what it was before).

24 hours is the horizon of a typical send (01:00 UTC to 12:00 UTC the day after, most of them in the users' local
daytime): the estimate is not moved to each push's own hour.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.rollups import whole_day

# the rows' columns, as material_features names them (counts over the night and the week before it)
COUNTS = ("views_1d", "views_7d", "favs_7d", "chats_7d")
FEATURES = (*COUNTS, "hours_since_listed", "price_cut")
MIN_CLASS = 50                 # endings and survivals each, to fit the regression
MAX_ITEMS = 50_000             # items whose nights the fit reads (a hash sample of the listings beyond it)
US_PER_HOUR = 3_600_000_000


@dataclass(frozen=True)
class Survival:
    """P(on sale 24 h after the cut) = 1 - sigmoid(intercept + coef . x(features)); `kind` fitted | pooled | none."""
    kind: str
    intercept: float = -math.inf
    coef: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    ended: int = 0
    auc: float | None = None     # on a fifth of the items held out of the fit

    def column(self) -> Column:
        """p_on_sale_1d for material_features rows (FEATURES derived from their columns)."""
        z = F.lit(float(self.intercept) if math.isfinite(self.intercept) else -1e9)
        for name, c in self.coef.items():
            z = z + F.lit(float(c)) * _x(name)
        return (F.lit(1.0) - F.lit(1.0) / (F.lit(1.0) + F.exp(-z))).cast("double")

    def summary(self) -> dict:
        return {"kind": self.kind, "rows": self.rows, "ended_within_1d": self.ended,
                "ended_share": round(self.ended / self.rows, 4) if self.rows else None,
                "holdout_auc": None if self.auc is None else round(self.auc, 4),
                "intercept": None if not math.isfinite(self.intercept) else round(self.intercept, 4),
                "coef": {k: round(v, 4) for k, v in self.coef.items()}}


def _x(name: str) -> Column:
    """A feature as the regression reads it, from material_features' columns (or the training rows')."""
    if name == "price_cut":
        return (F.coalesce(F.col("price_drop_pct"), F.lit(0.0)) > 0).cast("double")
    return F.log1p(F.greatest(F.coalesce(F.col(name).cast("double"), F.lit(0.0)), F.lit(0.0)))


def _sampled(df: DataFrame, fraction: float) -> DataFrame:
    if fraction >= 1.0:
        return df
    return df.where(F.pmod(F.xxhash64("item_id", F.lit("survival-sample")), F.lit(10_000)) < F.lit(
        max(1, int(round(fraction * 10_000)))))


def training_rows(items: DataFrame, item_changes: DataFrame, item_day: DataFrame, as_of: datetime,
                  days: int, max_items: int | None = MAX_ITEMS) -> DataFrame:
    """One row per (item, night) for the `days` nights before the cut `as_of` whose next 24 hours it knows (the
    last of them ends a day before the cut): the item on sale at that night's end, FEATURES as of then, `ended` =
    sold or removed within the next 24 h. Beyond `max_items` listings, a hash sample of them.

    items: raw items (item_id, listed_at); item_changes: raw (item_id, ts, change, price); item_day: the rollups
    (item_id, day, n_view, n_fav, n_chat; several rows per day when late events came in other partitions)."""
    cut = whole_day(as_of)
    first, last = cut - days - 1, cut - 2          # night n ends at the start of day n + 1; its next day by the cut
    listed = items.where(F.col("listed_at") < F.lit(as_of)).select("item_id", "listed_at")
    fraction = 1.0
    if max_items is not None:
        n_items = listed.count()
        fraction = min(1.0, max_items / n_items) if n_items else 1.0
    listed = _sampled(listed, fraction)
    nights = F.explode(F.sequence(F.lit(first), F.lit(last))).alias("night")   # night: its day number
    changes = _sampled(item_changes.where(F.col("ts") < F.lit(as_of)), fraction)
    ended = changes.where(F.col("change").isin("sold", "removed")).groupBy("item_id").agg(F.min("ts").alias("ended_at"))
    cuts = changes.where(F.col("change") == "price_drop").groupBy("item_id").agg(F.min("ts").alias("cut_at"))
    end_of = lambda night: F.timestamp_seconds((night.cast("long") + 1) * F.lit(86_400))  # noqa: E731
    base = listed.join(ended, "item_id", "left").join(cuts, "item_id", "left").select("*", nights)
    at = end_of(F.col("night"))
    live = base.where((F.col("listed_at") < at) & (F.col("ended_at").isNull() | (F.col("ended_at") >= at)))
    daily = (_sampled(item_day, fraction).where((F.col("day") >= first - 6) & (F.col("day") <= last))
             .groupBy("item_id", "day").agg(*[F.sum(c).alias(c) for c in ("n_view", "n_fav", "n_chat")]))
    week = (daily.select("*", F.explode(F.sequence(F.col("day"), F.col("day") + 6)).alias("night"))
            .where((F.col("night") >= first) & (F.col("night") <= last))
            .groupBy("item_id", "night").agg(
                F.sum(F.when(F.col("day") == F.col("night"), F.col("n_view")).otherwise(0)).alias("views_1d"),
                F.sum("n_view").alias("views_7d"), F.sum("n_fav").alias("favs_7d"), F.sum("n_chat").alias("chats_7d")))
    return (live.join(week, ["item_id", "night"], "left").na.fill(0, list(COUNTS))
            .select("item_id", "night", *COUNTS,
                    ((F.unix_micros(at) - F.unix_micros("listed_at")) / F.lit(US_PER_HOUR)).alias("hours_since_listed"),
                    # only whether the price was cut by then (what FEATURES' price_cut reads of price_drop_pct)
                    F.when(F.col("cut_at") < at, F.lit(1.0)).otherwise(F.lit(0.0)).alias("price_drop_pct"),
                    (F.col("ended_at").isNotNull() & (F.col("ended_at") < at + F.expr("INTERVAL 24 HOURS")))
                    .cast("int").alias("ended")))


def fit(rows: DataFrame) -> Survival:
    """The regression on the training rows, its AUC on a fifth of the items held out of it; `pooled` below
    MIN_CLASS of either outcome; `none` without rows."""
    counts = rows.agg(F.count("*").alias("n"), F.sum("ended").alias("e")).collect()[0]
    n, e = int(counts["n"]), int(counts["e"] or 0)
    if n == 0:
        return Survival("none")
    if min(e, n - e) < MIN_CLASS:
        rate = min(max(e / n, 1e-6), 1 - 1e-6)
        return Survival("pooled", intercept=math.log(rate / (1 - rate)), rows=n, ended=e)
    bucket = F.pmod(F.xxhash64("item_id", F.lit("survival-holdout")), F.lit(5))
    pdf = rows.select((bucket == 0).alias("held_out"), *[_x(c).alias(c) for c in FEATURES], "ended").toPandas()
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    fit_rows, test = pdf[~pdf.held_out], pdf[pdf.held_out]
    X = fit_rows[list(FEATURES)].to_numpy(float)
    y = fit_rows["ended"].to_numpy(int)
    if min(y.sum(), len(y) - y.sum()) < MIN_CLASS:
        rate = min(max(e / n, 1e-6), 1 - 1e-6)
        return Survival("pooled", intercept=math.log(rate / (1 - rate)), rows=n, ended=e)
    model = LogisticRegression(C=1.0, max_iter=500).fit(X, y)
    auc = None
    if len(test) and 0 < test["ended"].sum() < len(test):
        auc = float(roc_auc_score(test["ended"], model.decision_function(test[list(FEATURES)].to_numpy(float))))
    return Survival("fitted", intercept=float(model.intercept_[0]),
                    coef={c: float(v) for c, v in zip(FEATURES, np.ravel(model.coef_))}, rows=n, ended=e, auc=auc)
