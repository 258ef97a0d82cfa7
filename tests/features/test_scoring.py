"""Bulk scoring through the Arrow UDF: the same probabilities as the estimator in process, and the neutral-scene
probability from the same pass."""
from __future__ import annotations

import numpy as np
import pytest

from features.pairs import FEATURES


def test_scoring_gives_the_estimators_probabilities_with_and_without_the_scene_code(spark):
    from sklearn.linear_model import LogisticRegression

    from features.scoring import NEUTRAL_SCENE, model_payload, score_pairs

    rng = np.random.default_rng(2)
    X = rng.random((3000, len(FEATURES)))
    scene = FEATURES.index("scene_code")
    X[:, scene] = rng.integers(-1, 3, len(X))
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-(X[:, 0] + 0.8 * X[:, scene])))).astype(int)
    est = LogisticRegression(max_iter=500).fit(X, y)
    rows = [(i, *map(float, X[i])) for i in range(200)]
    df = spark.createDataFrame(rows, "id long, " + ", ".join(f"{f} double" for f in FEATURES))
    out = score_pairs(df, model_payload(spark, est), "3", ["id"], neutral=True).toPandas().sort_values("id")
    assert list(out.columns) == ["id", "p_open", "p_neutral", "model_version"] and (out.model_version == "3").all()
    np.testing.assert_allclose(out.p_open, est.predict_proba(X[:200])[:, 1], rtol=1e-12)
    Xn = X[:200].copy()
    Xn[:, scene] = NEUTRAL_SCENE
    np.testing.assert_allclose(out.p_neutral, est.predict_proba(Xn)[:, 1], rtol=1e-12)
    assert (np.abs(out.p_open - out.p_neutral) > 1e-3).mean() > 0.5       # the scene code moves most pairs
    plain = score_pairs(df, model_payload(spark, est), "3", ["id"]).toPandas().sort_values("id")
    assert list(plain.columns) == ["id", "p_open", "model_version"]
    np.testing.assert_allclose(plain.p_open, out.p_open, rtol=1e-12)


def test_two_models_with_the_same_version_number_in_one_session_each_score_with_their_own(spark):
    """A version number is unique only within one registry, and one Spark session can score for several: the closed
    loop's two arms (each with its own registry: both have a version 2 from the second night), the benchmark's worlds,
    the tests. The Python workers' model cache must not hand the second its predecessor's model."""
    from sklearn.linear_model import LogisticRegression

    from features.scoring import model_payload, score_pairs

    rng = np.random.default_rng(5)
    X = rng.random((2000, len(FEATURES)))
    first = LogisticRegression(max_iter=500).fit(X, (X[:, 0] > 0.5).astype(int))
    second = LogisticRegression(max_iter=500).fit(X, (X[:, 1] > 0.3).astype(int))
    rows = [(i, *map(float, X[i])) for i in range(2000)]
    df = spark.createDataFrame(rows, "id long, " + ", ".join(f"{f} double" for f in FEATURES)).repartition(2).cache()
    assert df.count() == 2000          # materialised: each scoring pass below is a job of Python UDF tasks alone
    try:
        for est in (first, second, first):
            for neutral in (False, True):
                out = score_pairs(df, model_payload(spark, est), "2", ["id"], neutral).toPandas().sort_values("id")
                np.testing.assert_allclose(out.p_open, est.predict_proba(X[out.id.to_numpy()])[:, 1], rtol=1e-12)
                assert (out.model_version == "2").all()
    finally:
        df.unpersist()


def test_a_logistic_model_is_scored_as_its_own_log_odds_with_the_estimators_numbers():
    """The compiled form (features.scoring.LinearForm) of the regression pipeline (scene effects centred, as
    training keeps them) and of the prior's plain regression gives predict_proba's probabilities, with and without
    the scene code, for known, unknown and neutral codes; the boosted trees have none (scored by predict_proba)."""
    from features.scoring import NEUTRAL_SCENE, SCENE, _sigmoid, linear_form
    from training.model import centre_scene_effects, make_estimator
    from training.prior import prior_estimator

    rng = np.random.default_rng(4)
    X = rng.normal(size=(4000, len(FEATURES)))
    X[:, SCENE] = rng.integers(-1, 6, len(X))
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-(X[:, 0] - 2 + 0.5 * X[:, SCENE])))).astype(int)
    pipeline = make_estimator("logreg").fit(X, y)
    assert centre_scene_effects(pipeline, X) != 0.0
    T = rng.normal(size=(5000, len(FEATURES)))
    T[:, SCENE] = rng.integers(-2, 9, len(T))             # -2, 6, 7, 8: codes the model never saw
    for est in (pipeline, prior_estimator(0.05)):
        form = linear_form(est)
        assert form is not None
        z = form.logit(T)
        np.testing.assert_allclose(_sigmoid(z), est.predict_proba(T)[:, 1], rtol=1e-12)
        N = T.copy()
        N[:, SCENE] = NEUTRAL_SCENE
        neutral = _sigmoid(z - form.scene_effect(T[:, SCENE]) + form.scene_effect(NEUTRAL_SCENE))
        np.testing.assert_allclose(neutral, est.predict_proba(N)[:, 1], rtol=1e-12)
        if est is pipeline:                       # its scene code does move the estimate (the prior has no scene term)
            assert np.abs(neutral - _sigmoid(z)).max() > 1e-3
    assert linear_form(make_estimator("hgb").fit(X, y)) is None


def test_a_compiled_form_that_disagrees_with_its_estimator_is_not_used():
    """A structure the compiled form misreads must fall back to predict_proba, not score differently."""
    from sklearn.linear_model import LogisticRegression

    from features.scoring import linear_form

    rng = np.random.default_rng(6)
    X = rng.normal(size=(500, len(FEATURES)))
    est = LogisticRegression().fit(X, (X[:, 1] > 0).astype(int))

    class Shifted(LogisticRegression):           # the same coefficients, probabilities it does not derive from them
        def predict_proba(self, A):
            p = super().predict_proba(A)
            return np.column_stack([p[:, 0] * 0.9, 1 - p[:, 0] * 0.9])

    odd = Shifted()
    odd.__dict__.update(est.__dict__)
    assert linear_form(est) is not None and linear_form(odd) is None


def test_a_batch_with_a_missing_value_fails_in_scoring_as_it_did_through_predict_proba(spark):
    """The compiled form would turn a missing feature into a NaN probability that only a later check would catch;
    such a batch goes through predict_proba instead, whose error names the input."""
    from features.scoring import SCENE, linear_form, model_payload, score_pairs
    from training.model import make_estimator

    rng = np.random.default_rng(8)
    X = rng.normal(size=(500, len(FEATURES)))
    X[:, SCENE] = rng.integers(0, 3, len(X))
    est = make_estimator("logreg").fit(X, (X[:, 0] > 0).astype(int))
    assert linear_form(est) is not None
    rows = [(i, *[None if (i == 3 and j == 0) else float(v) for j, v in enumerate(X[i])]) for i in range(20)]
    df = spark.createDataFrame(rows, "id long, " + ", ".join(f"{f} double" for f in FEATURES))
    with pytest.raises(Exception, match="NaN"):
        score_pairs(df, model_payload(spark, est), "1", ["id"], neutral=True).collect()
    ok = score_pairs(df.where("id != 3"), model_payload(spark, est), "1", ["id"]).toPandas().sort_values("id")
    np.testing.assert_allclose(ok.p_open, est.predict_proba(X[ok.id.to_numpy()])[:, 1], rtol=1e-12)
