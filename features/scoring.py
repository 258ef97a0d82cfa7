"""Bulk scoring of user x material pairs through Arrow: a scalar Arrow UDF (`arrow_udf`, Spark 4.1) hands
the model whole `pyarrow.Array` batches of the feature columns — no pandas conversion, no per-row Python —
and only the probability travels back to the JVM. The model is unpickled once per Python worker (cached by
version), never per batch or row.
"""
from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.pairs import FEATURES

_MODELS: dict[str, object] = {}


def _model(version: str, payload) -> object:
    est = _MODELS.get(version)
    if est is None:
        est = _MODELS[version] = pickle.loads(payload.value)
    return est


def probability_udf(payload, version: str):
    """A Spark column function: feature columns (in FEATURES order) -> P(open) from the estimator."""
    from pyspark.sql.functions import arrow_udf

    @arrow_udf("double")
    def p_open(*cols: pa.Array) -> pa.Array:
        est = _model(version, payload)
        X = np.column_stack([c.to_numpy(zero_copy_only=False) for c in cols]).astype(np.float64, copy=False)
        return pa.array(est.predict_proba(X)[:, 1], pa.float64())

    return p_open


def score_pairs(pairs: DataFrame, payload, version: str, keep: list[str]) -> DataFrame:
    """pairs: `keep` columns + FEATURES. payload: a broadcast of the pickled estimator.
    Returns `keep` + p_open (double) + model_version (string)."""
    udf = probability_udf(payload, version)
    return pairs.select(*keep, udf(*[F.col(c).cast("double") for c in FEATURES]).alias("p_open"),
                        F.lit(version).alias("model_version"))


def model_payload(spark, estimator):
    return spark.sparkContext.broadcast(pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL))
