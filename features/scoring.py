"""Bulk scoring of user x material pairs through Arrow: a scalar Arrow UDF (`arrow_udf`, Spark 4.1) hands
the model whole `pyarrow.Array` batches of the feature columns — no pandas conversion, no per-row Python —
and only the probability travels back to the JVM. The model is unpickled once per Python worker (cached by the
digest of its pickled bytes), never per batch or row. A logistic model (the regression pipeline of
training.model.make_estimator, the prior's plain regression) is scored as its own log-odds, a dot product
(`LinearForm`): scikit-learn's pipeline, with its sparse one-hot block, takes 5-10x as long per pair in process for
the same numbers, and the plan's call (p_open and p_neutral, Arrow transfer included) ran 1.42x faster
(bench/score.py --kind logreg).
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

_MODELS: dict[str, tuple] = {}


@dataclass(frozen=True)
class Payload:
    """The estimator as the scoring UDF gets it: a broadcast of its pickled bytes, and their digest, the Python
    workers' cache key. Not the model version: a version number is unique only within one registry, and one Spark
    session can score for several (the closed loop's two arms, each with its own registry, both have a version 2 from
    the second night; the benchmark's worlds; the tests), while the workers, reused across jobs, keep their cache."""
    data: object            # Broadcast[bytes]
    key: str


MAX_CACHED_MODELS = 4     # a long session scores for many worlds or nights: the oldest models leave the cache


def _model(payload: Payload) -> tuple[object, "LinearForm | None"]:
    """(the estimator, its LinearForm or None) of a payload, unpickled and compiled once per worker."""
    cached = _MODELS.get(payload.key)
    if cached is None:
        while len(_MODELS) >= MAX_CACHED_MODELS:
            _MODELS.pop(next(iter(_MODELS)))
        est = pickle.loads(payload.data.value)
        cached = _MODELS[payload.key] = (est, linear_form(est))
    return cached


NEUTRAL_SCENE = -1.0      # the scene code of "no scene the model knows": what the history's own pushes carry when
SCENE = FEATURES.index("scene_code")   # their ids are not in the config, and what unseen codes fall back to


@dataclass(frozen=True)
class LinearForm:
    """A binary logistic model as its log-odds over the FEATURES columns: intercept + X @ weights + the scene code's
    effect (a table of the codes the model's one-hot encoder knows, 0 for any other; or, for a regression that reads
    the code as a number, scene_slope x code). The neutral-scene estimate is then the same log-odds with the scene's
    effect swapped for NEUTRAL_SCENE's: no second pass over the features."""
    intercept: float
    weights: np.ndarray              # one per FEATURES column, 0 at the scene code's
    codes: np.ndarray                # sorted scene codes with an effect of their own (one-hot); empty: none
    effects: np.ndarray              # their effects
    scene_slope: float = 0.0

    def scene_effect(self, code: np.ndarray) -> np.ndarray:
        code = np.asarray(code, dtype=np.float64)
        out = self.scene_slope * code
        if len(self.codes):
            at = np.clip(np.searchsorted(self.codes, code), 0, len(self.codes) - 1)
            out = out + np.where(self.codes[at] == code, self.effects[at], 0.0)
        return out

    def logit(self, X: np.ndarray) -> np.ndarray:
        return X @ self.weights + self.intercept + self.scene_effect(X[:, SCENE])


LINEAR_CHECK_TOLERANCE = 1e-9     # the compiled form must give the estimator's own probabilities on a probe


def linear_form(est) -> LinearForm | None:
    """The LinearForm of a binary logistic regression — training.model's pipeline (one-hot scene codes, unknown ones
    ignored, the other columns standardised) or a plain LogisticRegression over FEATURES (training.prior) — or None
    for any other estimator (the boosted trees), which is scored through predict_proba. The form is checked against
    predict_proba on a probe of known, unknown and neutral scene codes: a structure it does not read exactly (a
    changed pipeline, another scikit-learn) falls back to predict_proba rather than score differently."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    k = len(FEATURES)
    numeric = [i for i in range(k) if i != SCENE]
    try:
        if isinstance(est, LogisticRegression):
            clf, w, b = est, est.coef_, est.intercept_
            if w.shape != (1, k) or list(clf.classes_) != [0, 1]:
                return None
            weights = w[0].astype(np.float64).copy()
            slope, weights[SCENE] = float(weights[SCENE]), 0.0
            form = LinearForm(float(b[0]), weights, np.array([]), np.array([]), slope)
        elif isinstance(est, Pipeline) and [n for n, _ in est.steps] == ["prep", "clf"]:
            prep, clf = est.named_steps["prep"], est.named_steps["clf"]
            if not (isinstance(prep, ColumnTransformer) and isinstance(clf, LogisticRegression)
                    and prep.remainder == "drop" and list(clf.classes_) == [0, 1]):
                return None
            (n1, enc, c1), (n2, scaler, c2) = prep.transformers_[:2]
            if (len(prep.transformers_) != 2 or not isinstance(enc, OneHotEncoder) or list(c1) != [SCENE]
                    or enc.drop is not None or enc.handle_unknown != "ignore" or not isinstance(scaler, StandardScaler)
                    or list(c2) != numeric):
                return None
            codes = np.asarray(enc.categories_[0], dtype=np.float64)
            w = clf.coef_[0].astype(np.float64)
            if len(w) != len(codes) + len(numeric):
                return None
            mean = scaler.mean_ if scaler.with_mean else np.zeros(len(numeric))
            scale = scaler.scale_ if scaler.with_std else np.ones(len(numeric))
            wn = w[len(codes):] / scale
            weights = np.zeros(k)
            weights[numeric] = wn
            form = LinearForm(float(clf.intercept_[0] - mean @ wn), weights, codes, w[:len(codes)].copy())
        else:
            return None
    except (AttributeError, TypeError, ValueError):
        return None
    probe = np.random.default_rng(0).normal(size=(64, k))
    known = form.codes if len(form.codes) else np.arange(3.0)
    probe[:, SCENE] = np.concatenate([known, [NEUTRAL_SCENE, max(known) + 1.0]])[np.arange(64) % (len(known) + 2)]
    with np.errstate(over="ignore"):
        ok = np.abs(_sigmoid(form.logit(probe)) - est.predict_proba(probe)[:, 1]).max() <= LINEAR_CHECK_TOLERANCE
    return form if ok else None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z)


def probability_udf(payload: Payload, neutral: bool = False):
    """A Spark column function: feature columns (in FEATURES order) -> P(open) from the estimator. neutral: a
    struct of p_open and p_neutral, the same pair's P(open) with the scene code set to NEUTRAL_SCENE, from the same
    batch in the same pass: the model's own scene effect is their difference (features/selection.py shrinks it)."""
    from pyspark.sql.functions import arrow_udf

    def matrix(cols):
        return np.column_stack([c.to_numpy(zero_copy_only=False) for c in cols]).astype(np.float64, copy=False)

    def compiled(form, X):
        """The LinearForm for a batch it can score; None for one with a missing or infinite value, which goes through
        predict_proba and fails there as before (scikit-learn names the bad input; a dot product would return NaN)."""
        return form if form is not None and np.isfinite(X).all() else None

    def predict(cols):
        est, form = _model(payload)
        X = matrix(cols)
        form = compiled(form, X)
        return _sigmoid(form.logit(X)) if form is not None else est.predict_proba(X)[:, 1]

    if not neutral:
        @arrow_udf("double")
        def p_open(*cols: pa.Array) -> pa.Array:
            return pa.array(predict(cols), pa.float64())

        return p_open

    @arrow_udf("struct<p_open:double,p_neutral:double>")
    def p_both(*cols: pa.Array) -> pa.Array:
        est, form = _model(payload)
        X = matrix(cols)
        form = compiled(form, X)
        if form is not None:
            z = form.logit(X)
            p, pn = _sigmoid(z), _sigmoid(z - form.scene_effect(X[:, SCENE]) + form.scene_effect(NEUTRAL_SCENE))
        else:
            p = est.predict_proba(X)[:, 1]
            X[:, SCENE] = NEUTRAL_SCENE
            pn = est.predict_proba(X)[:, 1]
        return pa.StructArray.from_arrays([pa.array(p, pa.float64()), pa.array(pn, pa.float64())],
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
