"""Where every table lives under the warehouse root: raw contract, features, reports.

One place for the layout, so jobs, tests and the run summary agree on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs.contract import RAW_SCHEMAS, RAW_TABLES

# Derived tables the nightly writes, each partitioned by ds.
DERIVED_TABLES = ("features/user_features",)


@dataclass(frozen=True)
class Warehouse:
    root: Path

    def raw(self, table: str) -> Path:
        if table not in RAW_SCHEMAS:
            raise KeyError(f"unknown raw table {table!r}; the raw contract has {', '.join(RAW_TABLES)}")
        return Path(self.root) / "raw" / table

    def raw_partition(self, table: str, ds: str) -> Path:
        return self.raw(table) / f"ds={ds}"

    @property
    def ground_truth(self) -> Path:
        return Path(self.root) / "raw" / "_ground_truth"

    def table(self, name: str) -> Path:
        """A derived table such as 'features/user_features' (partitioned by ds)."""
        return Path(self.root) / name

    def partition(self, name: str, ds: str) -> Path:
        return self.table(name) / f"ds={ds}"

    def report(self, kind: str, ds: str, name: str) -> Path:
        return Path(self.root) / "reports" / kind / f"ds={ds}" / f"{name}.json"

    # ---- Spark access (pyspark imported by the caller's session, not here) -------------------
    def read_raw(self, spark, table: str, first_ds: str | None = None, last_ds: str | None = None):
        """A raw table; for fact tables only the partitions in [first_ds, last_ds] are read."""
        from pyspark.sql import functions as F

        df = spark.read.parquet(str(self.raw(table)))
        if first_ds is not None:
            df = df.where(F.col("ds") >= first_ds)
        if last_ds is not None:
            df = df.where(F.col("ds") <= last_ds)
        return df

    def write_partition(self, df, name: str, ds: str) -> Path:
        """Overwrite exactly one ds partition of a derived table (re-runs replace, never append)."""
        from pyspark.sql import functions as F

        (df.withColumn("ds", F.lit(ds)).write.mode("overwrite").partitionBy("ds")
         .option("partitionOverwriteMode", "dynamic").parquet(str(self.table(name))))
        return self.partition(name, ds)
