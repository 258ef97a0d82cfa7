"""Nightly job: the daily rollups of the events (features/rollups.py) that the night's features read.

For ds it makes sure every raw events partition in [earliest_input_day(ds, training.train_days), ds] — the
longest lookback of any stage: the training set's — has a fresh rollup, and rolls up only those that do not:
never rolled up, raw files changed since (a re-delivered or corrected day), or rolled up under another
ROLLUP_VERSION. A steady night rolls up one partition, the new day; the first night (or a new world) all of
them. Rollups of raw partitions that no longer exist are removed.

Writes rollups/<name> for each Activity field (user_day, user_category_day, open_slots, item_day, seller_day,
interest_day), partition ds = the raw events partition it comes from, and rollups/_sources/ds=<p>.json — the raw
partition's fingerprint (file names, sizes, modification times, and those of push_log ds=<p> and the day before,
whose receipts mark its push-driven events: features/rollups.push_driven), the version, the rows per rollup and the
events found push-driven — written last: a partition without one is rolled up again. Readers (`read_activity`)
refuse a range with a missing or stale rollup, naming it, rather than compute features from old counts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from datetime import date, timedelta
from pathlib import Path

from core.progress import Progress
from core.settings import Settings
from core.warehouse import Warehouse, file_stats
from jobs.entry import spark_job_main

log = logging.getLogger(__name__)
ROOT = "rollups"
SOURCES = "rollups/_sources"


def table_name(field: str) -> str:
    return f"{ROOT}/{field}"


def _raw_partitions(wh: Warehouse, first: str, last: str) -> list[str]:
    return [d for d in wh.raw_days("events") if first <= d <= last]


def _day_before(ds: str) -> str:
    return (date.fromisoformat(ds) - timedelta(days=1)).isoformat()


def fingerprint(wh: Warehouse, ds: str) -> str:
    """The raw events partition's files (name, size, mtime), those of the receipts that mark its push-driven
    events (push_log ds and the day before: a push opened after midnight) and the rollups' version, hashed."""
    from features.rollups import ROLLUP_VERSION

    receipts = [file_stats(wh.raw_partition("push_log", d)) for d in (_day_before(ds), ds)]
    return hashlib.sha256(json.dumps([ROLLUP_VERSION, file_stats(wh.raw_partition("events", ds)), receipts])
                          .encode()).hexdigest()


def _source_file(wh: Warehouse, ds: str) -> Path:
    return wh.table(SOURCES) / f"ds={ds}.json"


def _rolled_up(wh: Warehouse) -> list[str]:
    folder = wh.table(SOURCES)
    return sorted(f.stem.removeprefix("ds=") for f in folder.glob("ds=*.json")) if folder.exists() else []


def stale_partitions(wh: Warehouse, first: str, last: str) -> tuple[list[str], list[str]]:
    """(raw partitions in [first, last] without a fresh rollup, rollups in it whose raw partition is gone)."""
    raw = _raw_partitions(wh, first, last)
    stale = []
    for ds in raw:
        f = _source_file(wh, ds)
        if not f.exists() or json.loads(f.read_text()).get("fingerprint") != fingerprint(wh, ds):
            stale.append(ds)
    orphans = [ds for ds in _rolled_up(wh) if first <= ds <= last and ds not in set(raw)]
    return stale, orphans


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from features.rollups import ROLLUP_VERSION, Activity, push_driven, roll_up
    from training.dataset import earliest_input_day

    wh = Warehouse(settings.warehouse)
    first = earliest_input_day(ds, loaded.config.platform.training.train_days)
    stale, orphans = stale_partitions(wh, first, ds)
    for p in orphans:
        _drop(wh, p)
    if stale:
        # the files as read: if one changes while it is rolled up, the next run sees it stale again
        prints = {p: fingerprint(wh, p) for p in stale}
        for p in stale:     # no source file while a partition is rewritten: a crash leaves it stale, not wrong;
            _drop(wh, p)    # and no rows of its old rollup survive where the new one has none (no chats that day)
        events = wh.read_raw(spark, "events").where(F.col("ds").isin(stale))
        receipts = wh.read_raw(spark, "push_log", _day_before(min(stale)), max(stale))
        rows: dict[str, dict[str, int]] = {p: {} for p in stale}
        # the split into organic and push-driven events (two joins of the events with the receipts' opens) is made
        # once and kept on local disk, not once per rollup: at 1M users, 5 days rolled up in 107 s against 123 s (README, "Scale")
        marked = push_driven(events, receipts).persist(StorageLevel.DISK_ONLY)
        try:
            frames = roll_up(marked, by=("ds",), premarked=True).frames()
            progress = Progress(f"rollups ds={ds} ({len(stale)} partitions)", len(frames), log)
            for field, df in frames.items():
                (df.write.mode("overwrite").partitionBy("ds").option("partitionOverwriteMode", "dynamic")
                 .parquet(str(wh.table(table_name(field)))))
                written = spark.read.parquet(str(wh.table(table_name(field)))).where(F.col("ds").isin(stale))
                for r in written.groupBy("ds").count().collect():
                    rows[r["ds"]][field] = r["count"]
                progress.done(field, rows=sum(rows[p].get(field, 0) for p in stale))
        finally:
            marked.unpersist()
        driven = _check_counts(spark, wh, stale)
        for p in stale:
            counts = {field: rows[p].get(field, 0) for field in Activity.names()}
            f = _source_file(wh, p)
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps({"ds": p, "version": ROLLUP_VERSION, "fingerprint": prints[p],
                                     "rows": counts, "push_driven_events": driven.get(p, 0)}, indent=2))
    kept = _raw_partitions(wh, first, ds)
    log.info("rollups for ds=%s over [%s, %s]: %d partitions rolled up (%s; push-driven events, left out of the "
             "habit and popularity rollups: %d), %d kept, %d orphans removed", ds, first, ds, len(stale),
             ", ".join(stale) or "none", sum(driven.values()) if stale else 0, len(kept) - len(stale), len(orphans))
    return {"ds": ds, "config_version": loaded.version, "first": first, "rolled_up": stale,
            "kept": len(kept) - len(stale), "removed": orphans,
            "push_driven_events": sum(driven.values()) if stale else 0,
            "rows": sum(sum(json.loads(_source_file(wh, p).read_text())["rows"].values()) for p in stale)}


def _check_counts(spark, wh: Warehouse, partitions: list[str]) -> dict[str, int]:
    """Nothing lost, nothing counted twice: per partition, the user-days' counts add up to the raw rows (so the
    split into organic and push-driven events lost none and doubled none). Returns the push-driven events per
    partition."""
    import pyarrow.dataset as pads
    from pyspark.sql import functions as F

    from core.contract import EVENT_TYPES

    stored = (spark.read.parquet(str(wh.table(table_name("user_day")))).where(F.col("ds").isin(partitions))
              .groupBy("ds").agg(F.sum(sum(F.col(f"n_{et}") for et in EVENT_TYPES)).alias("n"),
                                 F.sum("n_via_push").alias("via_push")))
    collected = stored.collect()
    got = {r["ds"]: r["n"] for r in collected}
    driven = {r["ds"]: r["via_push"] for r in collected}
    for p in partitions:
        raw = pads.dataset(str(wh.raw_partition("events", p)), format="parquet", exclude_invalid_files=True).count_rows()
        if got.get(p, 0) != raw:
            raise RuntimeError(f"{table_name('user_day')} ds={p}: rule=counts_add_up: its event counts sum to "
                               f"{got.get(p, 0)}, raw/events ds={p} has {raw} rows; {_uncountable(wh, p)}")
    return driven


def _uncountable(wh: Warehouse, p: str) -> str:
    """Why raw rows of a partition did not count: event types outside the contract, rows without a user."""
    from collections import Counter

    import pyarrow.dataset as pads

    from core.contract import EVENT_TYPES

    t = pads.dataset(str(wh.raw_partition("events", p)), format="parquet", exclude_invalid_files=True).to_table(
        columns=["user_id", "event_type"])
    types = Counter(e for e in t["event_type"].to_pylist() if e not in EVENT_TYPES)
    no_user = t["user_id"].null_count
    why = [f"{n} rows of event_type {'null' if e is None else repr(e)} (not in the contract)" for e, n in types.items()]
    why += [f"{no_user} rows without a user_id"] if no_user else []
    return ("uncounted: " + ", ".join(why) if why else "no row breaks the contract: the rollup is stale or was "
            "written by another version") + f". Validate the partition: hermes validate-raw --ds {p} --table events"


def _drop(wh: Warehouse, ds: str) -> None:
    from features.rollups import Activity

    _source_file(wh, ds).unlink(missing_ok=True)
    for field in Activity.names():
        shutil.rmtree(wh.partition(table_name(field), ds), ignore_errors=True)


def read_activity(spark, wh: Warehouse, first: str, last: str):
    """The rollups of raw events partitions [first, last] as an Activity; raises, naming the partitions, when
    one is missing or stale (run the `rollups` stage for the night first)."""
    from pyspark.sql import functions as F

    from features.rollups import Activity, roll_up

    stale, orphans = stale_partitions(wh, first, last)
    if stale or orphans:
        what = "; ".join(part for part in (
            f"raw/events partitions without a fresh rollup: ds={', '.join(stale)}" if stale else "",
            f"rollups of raw partitions that are gone: ds={', '.join(orphans)}" if orphans else "") if part)
        raise RuntimeError(f"{ROOT}/* over [{first}, {last}] is not up to date ({what}): run the rollups stage "
                           f"for {last} first (`hermes stage rollups --ds {last}`)")
    # a rollup with no rows anywhere yet (no chats ever, no events in the range) has no folder: empty, same schema
    empty = roll_up(wh.read_raw(spark, "events", first, last).limit(0))
    frames = {field: (spark.read.parquet(str(wh.table(table_name(field))))
                      .where((F.col("ds") >= first) & (F.col("ds") <= last)).drop("ds")
                      if wh.table(table_name(field)).exists() else getattr(empty, field))
              for field in Activity.names()}
    return Activity(**frames)


def main(argv=None) -> None:
    spark_job_main(run, "rollups", __doc__, argv)


if __name__ == "__main__":
    main()
