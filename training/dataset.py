"""The CTR training set: one row per pushed material, labelled opened or not, with pair features as of
the push's send day (features.pairs), and a time-based train/holdout split.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Callable

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.pairs import FEATURES, LOOKBACK, day_num, pair_features, scene_codes
from features.rollups import activity_of


@dataclass
class TrainingSet:
    train: pd.DataFrame
    holdout: pd.DataFrame
    scene_codes: dict[str, int]
    first_day: str
    split_day: str
    last_day: str
    sample_rate: float = 1.0            # share of users whose pushes are in the set (training.max_examples)
    examples_before_sample: int | None = None
    open_window_hours: float | None = None   # pushes sent this close to as_of are left out (OpenWindow)
    immature_pushes: int = 0                 # how many
    open_window_reason: str = ""

    def summary(self) -> dict:
        return {"train_rows": len(self.train), "holdout_rows": len(self.holdout),
                "sample_rate": self.sample_rate, "examples_before_sample": self.examples_before_sample,
                "train_open_rate": float(self.train["label"].mean()) if len(self.train) else None,
                "holdout_open_rate": float(self.holdout["label"].mean()) if len(self.holdout) else None,
                "first_day": self.first_day, "split_day": self.split_day, "last_day": self.last_day,
                "open_window_hours": self.open_window_hours, "immature_pushes": self.immature_pushes,
                "open_window": self.open_window_reason,
                "scenes": self.scene_codes}


# A push's label is final once the time its opens take has passed: the window is this quantile of the delays
# (opened_at - sent_at) the history shows, within [MIN_, MAX_OPEN_WINDOW_H]; the longest delay while it shows fewer
# than MIN_DELAYS opens.
OPEN_DELAY_QUANTILE = 0.99
MIN_OPEN_WINDOW_H, MAX_OPEN_WINDOW_H = 1.0, 48.0
MIN_DELAYS = 100


@dataclass(frozen=True)
class OpenWindow:
    """How long after its send a push's label is final, measured on the history's own opens.

    A push sent at 23:30 and labelled at midnight has had half an hour to be opened: counted "not opened", it would
    teach the model (and the recalibration, fitted on the newest days) that late sends and the newest plans open less
    than they do. Such pushes are left out of the training set until their window has passed. The window is the
    99th percentile of the delays of the opens seen (minutes on an app whose users open pushes at once, a day on one
    whose users open them the next morning), clamped to [1 h, 48 h] (the holdout keeps days of mature pushes)."""
    hours: float
    delays_seen: int
    reason: str

    def mature_before(self, as_of) -> datetime:
        return as_of - timedelta(hours=self.hours)


def open_window(push_log: DataFrame, first_day: str, as_of) -> OpenWindow:
    """The OpenWindow of the pushes sent from first_day on, from their opens seen by as_of."""
    seen = push_log.where((F.to_date("sent_at") >= first_day) & F.col("opened_at").isNotNull()
                          & (F.col("opened_at") < F.lit(as_of)) & (F.col("opened_at") >= F.col("sent_at")))
    delay = (F.unix_timestamp("opened_at") - F.unix_timestamp("sent_at")) / 3600.0
    row = seen.agg(F.count(F.lit(1)).alias("n"), F.max(delay).alias("longest"),
                   F.percentile_approx(delay, OPEN_DELAY_QUANTILE, 10_000).alias("q")).first()
    n = int(row["n"] or 0)
    if n < MIN_DELAYS:
        q, what = float(row["longest"] or 0.0), f"the longest of {n} open delays (fewer than {MIN_DELAYS})"
    else:
        q, what = float(row["q"]), f"the {100 * OPEN_DELAY_QUANTILE:g}th percentile of {n:,} open delays"
    hours = min(max(q, MIN_OPEN_WINDOW_H), MAX_OPEN_WINDOW_H)
    return OpenWindow(hours, n, f"{what}: {q:.2f} h" + ("" if hours == q else f", clamped to {hours:g} h"))


def _sent_between(first_day: str, last_day: str) -> F.Column:
    return (F.to_date("sent_at") >= first_day) & (F.to_date("sent_at") <= last_day)


def push_keys(push_log: DataFrame, users: DataFrame, first_day: str, last_day: str, as_of,
              mature_before=None) -> DataFrame:
    """Pushes sent in [first_day, last_day] (and, with `mature_before`, before it: see OpenWindow), one row per shown
    material, labelled with opens seen by as_of."""
    sent = _sent_between(first_day, last_day)
    if mature_before is not None:
        sent = sent & (F.col("sent_at") < F.lit(mature_before))
    return (push_log.where(sent)
            .join(users.select("user_id", "tz"), "user_id")
            .select("push_id", "user_id", "scene_id", "sent_at", "policy", F.explode("item_ids").alias("item_id"),
                    day_num("sent_at").alias("day"),
                    F.hour(F.from_utc_timestamp("sent_at", F.col("tz"))).alias("local_hour"),
                    (F.col("opened_at").isNotNull() & (F.col("opened_at") < F.lit(as_of))).cast("int").alias("label")))


SAMPLE_BUCKETS = 1_000_000


def in_user_sample(user_id: F.Column, rate: float) -> F.Column:
    """A deterministic sample of whole users (hash of user_id): the same users every time for the same rate,
    each with all their pushes, in the train and the holdout part alike."""
    return F.pmod(F.xxhash64(user_id), F.lit(SAMPLE_BUCKETS)) < F.lit(int(round(rate * SAMPLE_BUCKETS)))


def build_training_set(spark_tables: dict[str, DataFrame], ds: str, as_of, train_days: int, holdout_days: int,
                       known_scenes, materialise: Callable[[DataFrame], pd.DataFrame] | None = None,
                       max_examples: int | None = None) -> TrainingSet:
    """spark_tables: users, events, push_log, item_changes, items (raw contract, windows covering
    train_days + LOOKBACK days before ds; events may be their daily rollups, features.rollups.Activity).
    materialise: how the examples reach pandas — by default `toPandas()` (through the driver: fine for tests);
    the nightly writes them to the warehouse and reads the Parquet back (jobs/train.py), since a 1M-user
    training set (5.7M rows unsampled) breaks spark.driver.maxResultSize.
    max_examples: above this many examples, a hash sample of whole users keeps about that many (the fit and
    the point-in-time features then cost the sample's share; item-level features still see every user)."""
    last = date.fromisoformat(ds)
    first = last - timedelta(days=train_days - 1)
    split = last - timedelta(days=holdout_days - 1)
    t = spark_tables
    codes = scene_codes(list(known_scenes) + [r[0] for r in t["push_log"].select("scene_id").distinct().collect()])
    window = open_window(t["push_log"], first.isoformat(), as_of)
    mature = window.mature_before(as_of)
    immature = t["push_log"].where(_sent_between(first.isoformat(), last.isoformat())
                                   & (F.col("sent_at") >= F.lit(mature))).count()
    keys = push_keys(t["push_log"], t["users"], first.isoformat(), last.isoformat(), as_of, mature_before=mature)
    rate, total = 1.0, None
    events, pushes, item_events = activity_of(t["events"], t["push_log"]), t["push_log"], None
    if max_examples is not None:
        total = keys.count()
        if total > max_examples:
            rate = max_examples / total
            sampled = in_user_sample(F.col("user_id"), rate)
            # the users' own history is aggregated for the sample only (a hash filter before any shuffle);
            # item popularity and the population's hour profile still see every user
            keys, events, pushes, item_events = keys.where(sampled), events.for_users(sampled), pushes.where(sampled), events
    feats = pair_features(keys, t["users"], events, pushes, t["item_changes"], t["items"], codes,
                          item_events=item_events)
    examples = feats.select("push_id", "user_id", "item_id", "scene_id", "sent_at", "policy", "day", "label", "interest",
                            *FEATURES)
    pdf = materialise(examples) if materialise else examples.toPandas()
    pdf = pdf.sort_values(["sent_at", "push_id"], kind="stable").reset_index(drop=True)
    split_day = (split - date(1970, 1, 1)).days
    is_holdout = pdf["day"] >= split_day
    return TrainingSet(train=pdf[~is_holdout].reset_index(drop=True), holdout=pdf[is_holdout].reset_index(drop=True),
                       scene_codes=codes, first_day=first.isoformat(), split_day=split.isoformat(),
                       last_day=last.isoformat(), sample_rate=rate, examples_before_sample=total,
                       open_window_hours=window.hours, immature_pushes=int(immature),
                       open_window_reason=window.reason)


def earliest_input_day(ds: str, train_days: int) -> str:
    return (date.fromisoformat(ds) - timedelta(days=train_days + LOOKBACK)).isoformat()


def feature_matrix(df: pd.DataFrame) -> np.ndarray:
    return df[list(FEATURES)].to_numpy(dtype=np.float64)
