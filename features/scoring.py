"""Bulk scoring of user x material pairs through Arrow: `mapInArrow` calls the scikit-learn model directly
on each Arrow batch; the model is unpickled once per Python worker (cached by version), never per row.
"""
from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

from features.pairs import FEATURES

_MODELS: dict[str, object] = {}


def _model(version: str, payload) -> object:
    est = _MODELS.get(version)
    if est is None:
        est = _MODELS[version] = pickle.loads(payload.value)
    return est


def score_pairs(pairs: DataFrame, payload, version: str, keep: list[str]) -> DataFrame:
    """pairs: `keep` columns + FEATURES. payload: a broadcast of the pickled estimator.
    Returns `keep` + p_open (double) + model_version (string)."""
    out_schema = pairs.select(*keep).schema.add("p_open", "double").add("model_version", "string")
    cols = list(FEATURES)

    def predict(batches):
        est = _model(version, payload)
        for b in batches:
            if b.num_rows == 0:
                continue
            X = np.column_stack([b.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in cols])
            p = est.predict_proba(X)[:, 1]
            arrays = [b.column(c) for c in keep] + [pa.array(p, pa.float64()),
                                                     pa.array(np.full(b.num_rows, version), pa.string())]
            yield pa.RecordBatch.from_arrays(arrays, names=keep + ["p_open", "model_version"])

    return pairs.select(*keep, *cols).mapInArrow(predict, out_schema)


def model_payload(spark, estimator):
    return spark.sparkContext.broadcast(pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL))
