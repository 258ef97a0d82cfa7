"""Where every table lives under the warehouse root: raw contract, features, reports.

One place for the layout, so jobs, tests and the run summary agree on it.
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.contract import RAW_SCHEMAS, RAW_TABLES, TIME_COLUMN

# Derived tables the nightly writes, each partitioned by ds and stamped with the config version.
FEATURE_TABLES = ("features/user_features", "features/user_scene_history", "features/material_features",
                  "features/material_rates")
PLAN_TABLES = ("plan/audiences", "plan/eligible", "plan/suppressed")
SELECTION_TABLES = ("plan/scored", "plan/selected", "plan/baseline")
WINDOW_TABLES = ("plan/windows",)
DERIVED_TABLES = FEATURE_TABLES + PLAN_TABLES + SELECTION_TABLES + WINDOW_TABLES


def _days(folder: Path) -> list[str]:
    return sorted(p.name[3:] for p in folder.glob("ds=*") if p.is_dir()) if folder.exists() else []


@dataclass(frozen=True)
class Warehouse:
    root: Path

    def raw(self, table: str) -> Path:
        if table not in RAW_SCHEMAS:
            raise KeyError(f"unknown raw table {table!r}; the raw contract has {', '.join(RAW_TABLES)}")
        return Path(self.root) / "raw" / table

    def raw_partition(self, table: str, ds: str) -> Path:
        return self.raw(table) / f"ds={ds}"

    def raw_days(self, table: str) -> list[str]:
        """The ds of every partition a raw table has, oldest first."""
        return _days(self.raw(table))

    @property
    def ground_truth(self) -> Path:
        return Path(self.root) / "raw" / "_ground_truth"

    def table(self, name: str) -> Path:
        """A derived table such as 'features/user_features' (partitioned by ds)."""
        return Path(self.root) / name

    def partition(self, name: str, ds: str) -> Path:
        return self.table(name) / f"ds={ds}"

    def days(self, name: str) -> list[str]:
        """The ds of every partition a derived table has, oldest first."""
        return _days(self.table(name))

    def config_snapshot(self, ds: str) -> Path:
        """The validated configuration a run for `ds` works from (JSON, with its version)."""
        return Path(self.root) / "config" / f"ds={ds}" / "config.json"

    @property
    def dead_tokens(self) -> Path:
        """Device tokens the gateway reported UNREGISTERED (written by delivery, read by planning)."""
        return Path(self.root) / "state" / "dead_tokens"

    def report(self, kind: str, ds: str, name: str) -> Path:
        return Path(self.root) / "reports" / kind / f"ds={ds}" / f"{name}.json"

    # ---- Spark access (pyspark imported by the caller's session, not here) -------------------
    def write_tables(self, spark, frames: dict, ds: str, config_version: str) -> dict:
        """write_partition each {name: DataFrame}; returns {name: {path, rows}} as read back."""
        out = {}
        for name, df in frames.items():
            path = self.write_partition(df, name, ds, config_version)
            out[name] = {"path": str(path), "rows": spark.read.parquet(str(path)).count()}
        return out

    def read_partition(self, spark, name: str, ds: str):
        path = self.partition(name, ds)
        if not path.exists():
            raise FileNotFoundError(f"{name} has no partition ds={ds} at {path}: the stage that writes it has not run for this "
                                    f"ds, or failed (see its task log)")
        return spark.read.parquet(str(path))

    def read_raw(self, spark, table: str, first_ds: str | None = None, last_ds: str | None = None):
        """A raw table; for fact tables only the partitions in [first_ds, last_ds] are read."""
        from pyspark.sql import functions as F

        path = self.raw(table)
        if not any(path.rglob("*.parquet")) if path.exists() else True:
            # no history yet (a fresh deployment's push_log) or no day delivered: an empty table of the contract's
            # columns, not Spark's UNABLE_TO_INFER_SCHEMA
            return spark.createDataFrame([], spark_schema(table))
        df = spark.read.parquet(str(path))
        if first_ds is not None:
            df = df.where(F.col("ds") >= first_ds)
        if last_ds is not None:
            df = df.where(F.col("ds") <= last_ds)
        return df

    def write_partition(self, df, name: str, ds: str, config_version: str) -> Path:
        """Overwrite exactly one ds partition of a derived table (re-runs replace, never append),
        stamping every row with the configuration version it was computed under. An empty result is a
        partition with zero rows (one empty Parquet file with the columns), never a missing folder."""
        from pyspark.sql import functions as F

        stamped = df.withColumn("config_version", F.lit(config_version))
        final = self.partition(name, ds)
        # Spark writes nothing for zero rows under partitionBy, and so would leave a re-run's old rows in place
        shutil.rmtree(final, ignore_errors=True)
        (stamped.withColumn("ds", F.lit(ds)).write.mode("overwrite").partitionBy("ds")
         .option("partitionOverwriteMode", "dynamic").parquet(str(self.table(name))))
        if not any(final.glob("*.parquet")):
            from pyspark.sql.pandas.types import to_arrow_schema

            swap_in(to_arrow_schema(stamped.schema).empty_table(), final)
        return final

    # ---- Arrow access, for the single-process stages (send windows, batches, reports) -------------
    def _derived(self, name: str, ds: str):
        import pyarrow.dataset as pads

        path = self.partition(name, ds)
        if not path.exists():
            raise FileNotFoundError(f"{name} has no partition ds={ds} at {path}: the stage that writes it has not run for this "
                                    f"ds, or failed (see its task log)")
        return pads.dataset(str(path), format="parquet", exclude_invalid_files=True)

    def read_arrow(self, name: str, ds: str, columns: list[str] | None = None):
        """One ds partition of a derived table as a pyarrow Table (Spark's part files, any number)."""
        return self._derived(name, ds).to_table(columns=columns)

    def schema(self, name: str, ds: str):
        """The pyarrow schema of one ds partition of a derived table (its columns, without reading rows)."""
        return self._derived(name, ds).schema

    def read_raw_between(self, table: str, time_column: str, first_us: int, end_us: int, columns: list[str],
                         user_ids: list[int] | None = None, where=None):
        """Rows of a raw fact table with first_us <= time_column < end_us (microseconds since the epoch), read
        with pyarrow from only the ds partitions that can hold them, optionally only these users' rows and only
        rows matching `where` (a pyarrow.dataset expression, pushed into the scan); pandas, the time column as
        int64 microseconds. No partition: an empty frame with the contract's types."""
        from datetime import datetime, timedelta, timezone

        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        day = datetime.fromtimestamp(first_us // 1_000_000, tz=timezone.utc).date()
        last = datetime.fromtimestamp((end_us - 1) // 1_000_000, tz=timezone.utc).date()
        files = []
        while day <= last:
            files += [str(f) for f in sorted(self.raw_partition(table, day.isoformat()).glob("*.parquet"))]
            day += timedelta(days=1)
        if files:
            t = pads.dataset(files, format="parquet").to_table(columns=columns, filter=where)
        else:
            t = pa.schema([RAW_SCHEMAS[table].field(c) for c in columns]).empty_table()
        t = t.set_column(t.schema.get_field_index(time_column), time_column,
                         pc.cast(t[time_column], pa.timestamp("us", tz="UTC")).cast(pa.int64()))
        keep = pc.and_(pc.greater_equal(t[time_column], first_us), pc.less(t[time_column], end_us))
        if user_ids is not None:
            keep = pc.and_(keep, pc.is_in(t["user_id"], pa.array(user_ids, pa.int64())))
        return t.filter(keep).to_pandas()

    def latest_day(self, name: str, on_or_before: str) -> str | None:
        """The newest ds partition of a derived table on or before a day (None if it has none)."""
        days = [d for d in self.days(name) if d <= on_or_before]
        return days[-1] if days else None

    def write_arrow(self, table, name: str, ds: str, config_version: str) -> Path:
        """Replace one ds partition with `table` (+ config_version): written beside it, then swapped in by
        rename, so a reader sees the old partition or the new one, never half of either."""
        import pyarrow as pa

        table = table.append_column("config_version", pa.array([config_version] * table.num_rows, pa.string()))
        return swap_in(table, self.partition(name, ds))

    def replace_raw(self, table: str, ds: str | None, data) -> Path:
        """Replace a raw partition (or a dimension's snapshot when ds is None) by `data`, atomically: what raw
        validation does once it has moved a table's bad rows to the quarantine."""
        return swap_in(data, self.raw_partition(table, ds) if ds is not None else self.raw(table))

    def quarantine(self, table: str, ds: str | None) -> Path:
        """Where raw validation keeps a table's bad rows, each with its reason, and its counts: quarantine/<table>/
        ds=<ds>/ for a fact partition, quarantine/<table>/snapshot/ for a dimension."""
        return Path(self.root) / "quarantine" / table / (f"ds={ds}" if ds is not None else "snapshot")


def spark_schema(table: str):
    """The raw contract's columns of a table as a Spark schema (fact tables with their ds partition column)."""
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import StringType, StructField

    schema = from_arrow_schema(RAW_SCHEMAS[table])
    return schema.add(StructField("ds", StringType())) if table in TIME_COLUMN else schema


def file_stats(folder: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of a folder's data files: what changes when a partition is delivered again."""
    if not folder.exists():
        return []
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()
                  if f.is_file() and not f.name.startswith((".", "_")))


def swap_in(table, final: Path) -> Path:
    """Write `table` as the only Parquet file of folder `final`: beside it, then swapped in by rename."""
    import pyarrow.parquet as pq

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    pq.write_table(table, tmp / "part-00000.parquet", compression="zstd")
    old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
