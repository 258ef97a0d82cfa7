"""The attainable oracle: a user's latent push bias is learnt from their own pushes, and only from them."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from lab.simulator.ground_truth import GroundTruth
from training.oracle import attainable_probabilities, bias_posterior_mean, true_probabilities


def _truth(bias: np.ndarray) -> GroundTruth:
    n, m = len(bias), 4
    return GroundTruth(user_tz=np.zeros(n, np.int8), user_hour_profile=np.full((n, 24), 1 / 24, np.float32),
                       user_pref_cats=np.tile(np.array([1, 2, 3], np.int32), (n, 1)),
                       user_pref_weights=np.tile(np.array([0.6, 0.3, 0.1], np.float32), (n, 1)),
                       user_push_bias=bias.astype(np.float32), item_category=np.array([1, 2, 3, 4], np.int32),
                       item_quality=np.zeros(m, np.float32), item_value=np.zeros(m, np.float32),
                       item_listed_at=np.zeros(m, np.int64), item_end_at=np.full(m, np.iinfo(np.int64).max))


def _pushes(truth: GroundTruth, users: np.ndarray, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user_id": users + 1, "scene_id": "hot_items", "item_id": rng.integers(1, 5, len(users)),
                       "sent_at": pd.Timestamp("2026-10-01 12:00"), "u_pushes_1d": 0.0, "u_pushes_7d": 0.0})
    df["label"] = (rng.random(len(df)) < true_probabilities(df, truth)).astype(int)
    return df


def test_bias_is_learnt_from_the_users_own_pushes_and_shrinks_to_the_prior_without_them():
    bias = np.array([-1.0, 1.0] * 200 + [0.8])          # the last user has no training pushes
    truth = _truth(bias)
    train = _pushes(truth, np.repeat(np.arange(400), 200), seed=1)
    post = bias_posterior_mean(train, truth, np.arange(1, 402))
    assert np.corrcoef(post[:400], bias[:400])[0, 1] > 0.8     # 200 pushes each: the sign is clear
    assert abs(post[-1]) < 1e-9                                 # no pushes: the prior mean
    assert abs(post[:400].mean() - bias[:400].mean()) < 0.15


def test_attainable_oracle_lies_between_a_blind_model_and_the_oracle():
    rng = np.random.default_rng(0)
    bias = rng.normal(0, 1.0, 600)
    truth = _truth(bias)
    train = _pushes(truth, np.repeat(np.arange(600), 6), seed=2)        # a handful of pushes per user
    holdout = _pushes(truth, np.repeat(np.arange(600), 6), seed=3)
    y = holdout["label"].to_numpy()
    oracle = roc_auc_score(y, true_probabilities(holdout, truth))
    attainable = roc_auc_score(y, attainable_probabilities(train, holdout, truth))
    blind = roc_auc_score(y, holdout["item_id"].map({1: 4, 2: 3, 3: 2, 4: 1}))   # knows the category affinity only
    assert blind < attainable < oracle
