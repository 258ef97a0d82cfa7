"""Bulk scoring of user x material pairs through Arrow: a scalar Arrow UDF (`arrow_udf`, Spark 4.1) hands
the model whole `pyarrow.Array` batches of the feature columns — no pandas conversion, no per-row Python —
and only the probability travels back to the JVM. The model is unpickled once per Python worker (cached by the
digest of its pickled bytes), never per batch or row.
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.pairs import FEATURES

_MODELS: dict[str, object] = {}


@dataclass(frozen=True)
class Payload:
    """The estimator as the scoring UDF gets it: a broadcast of its pickled bytes, and their digest, the Python
    workers' cache key. Not the model version: a version number is unique only within one registry, and one Spark
    session can score for several (the closed loop's two arms, each with its own registry, both have a version 2 from
    the second night; the benchmark's worlds; the tests), while the workers, reused across jobs, keep their cache."""
    data: object            # Broadcast[bytes]
    key: str


MAX_CACHED_MODELS = 4     # a long session scores for many worlds or nights: the oldest models leave the cache


def _model(payload: Payload) -> object:
    est = _MODELS.get(payload.key)
    if est is None:
        while len(_MODELS) >= MAX_CACHED_MODELS:
            _MODELS.pop(next(iter(_MODELS)))
        est = _MODELS[payload.key] = pickle.loads(payload.data.value)
    return est


NEUTRAL_SCENE = -1.0      # the scene code of "no scene the model knows": what the history's own pushes carry when
SCENE = FEATURES.index("scene_code")   # their ids are not in the config, and what unseen codes fall back to


def probability_udf(payload: Payload, neutral: bool = False):
    """A Spark column function: feature columns (in FEATURES order) -> P(open) from the estimator. neutral: a
    struct of p_open and p_neutral, the same pair's P(open) with the scene code set to NEUTRAL_SCENE, from the same
    batch in the same pass: the model's own scene effect is their difference (features/selection.py shrinks it)."""
    from pyspark.sql.functions import arrow_udf

    def predict(cols):
        est = _model(payload)
        X = np.column_stack([c.to_numpy(zero_copy_only=False) for c in cols]).astype(np.float64, copy=False)
        return est, X, est.predict_proba(X)[:, 1]

    if not neutral:
        @arrow_udf("double")
        def p_open(*cols: pa.Array) -> pa.Array:
            return pa.array(predict(cols)[2], pa.float64())

        return p_open

    @arrow_udf("struct<p_open:double,p_neutral:double>")
    def p_both(*cols: pa.Array) -> pa.Array:
        est, X, p = predict(cols)
        X[:, SCENE] = NEUTRAL_SCENE
        return pa.StructArray.from_arrays([pa.array(p, pa.float64()), pa.array(est.predict_proba(X)[:, 1], pa.float64())],
                                          names=["p_open", "p_neutral"])

    return p_both


def score_pairs(pairs: DataFrame, payload: Payload, version: str, keep: list[str], neutral: bool = False) -> DataFrame:
    """pairs: `keep` columns + FEATURES. payload: model_payload(spark, the estimator); version: its model version.
    Returns `keep` + p_open (double) [+ p_neutral, with `neutral`] + model_version (string)."""
    udf = probability_udf(payload, neutral)
    features = [F.col(c).cast("double") for c in FEATURES]
    if not neutral:
        return pairs.select(*keep, udf(*features).alias("p_open"), F.lit(version).alias("model_version"))
    return (pairs.select(*keep, udf(*features).alias("_p"), F.lit(version).alias("model_version"))
            .select(*keep, "_p.p_open", "_p.p_neutral", "model_version"))


def model_payload(spark, estimator) -> Payload:
    data = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
    return Payload(spark.sparkContext.broadcast(data), hashlib.sha256(data).hexdigest())
