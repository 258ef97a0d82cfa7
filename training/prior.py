"""The prior policy: what Hermes plans with before its push history can train a model (a fresh deployment, or a
marketplace whose history is too thin).

It is a logistic scorer over the same pair features as the trained model, with coefficients written down here
rather than fitted: what interaction logs show about a push without any push history.

| feature | coefficient | why |
|---|---|---|
| `aff_share` (the user's share of interest in the item's category) | +2.0 | a push about what the user browses |
| `hour_share_log` (log 24 x the user's share of app opens in the hour) | +0.5 | sent when the user is usually in the app |
| `i_fav_rate` (favourites per view of the item, smoothed) | +4.0 | quality as behaviour shows it |
| `i_views_7d_log` | +0.10 | popularity |
| `i_age_log` (log hours since listing) | -0.15 | freshness |
| `i_drop_pct` | +1.0 | a price drop is news |
| `u_opens_7d` | +0.02 | active users open more |
| `u_push_open_rate` (smoothed) | +4.0 | the user's own record, once there is one |
| `u_pushes_1d`, `u_pushes_7d` | -0.4, -0.1 | fatigue |
| everything else (scene, price level, views, favourites) | 0 | no evidence without push history |

The intercept puts a typical pair (TYPICAL) at `prior_open_rate`; when there is some push history (too little to
train on), it is re-fitted so that the prior's mean prediction on that history equals its observed open rate.
The estimator is a plain scikit-learn LogisticRegression with these coefficients set, so it is logged, registered,
loaded, scored and gated exactly like a trained one.
"""
from __future__ import annotations

import math

import numpy as np

from features.pairs import FEATURES

COEFFICIENTS = {"aff_share": 2.0, "hour_share_log": 0.5, "i_fav_rate": 4.0, "i_views_7d_log": 0.10,
                "i_age_log": -0.15, "i_drop_pct": 1.0, "u_opens_7d": 0.02, "u_push_open_rate": 4.0,
                "u_pushes_1d": -0.4, "u_pushes_7d": -0.1}
# a typical pair's features: the intercept puts it at the prior open rate
TYPICAL = {"aff_share": 0.3, "hour_share_log": 0.5, "i_fav_rate": 0.1, "i_views_7d_log": 1.5, "i_age_log": 4.0,
           "i_drop_pct": 0.05, "u_opens_7d": 7.0, "u_push_open_rate": 0.05, "u_pushes_1d": 0.3, "u_pushes_7d": 1.5}
POLICY_TAG = "policy"            # registered versions: "prior" or "trained"
PRIOR, TRAINED = "prior", "trained"


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def prior_estimator(open_rate: float, X: np.ndarray | None = None, y: np.ndarray | None = None):
    """The prior as a fitted-looking LogisticRegression. X, y: push history (feature_matrix, labels) to calibrate
    the intercept on, if any; else the intercept puts TYPICAL at `open_rate`."""
    from sklearn.linear_model import LogisticRegression

    if set(COEFFICIENTS) - set(FEATURES):
        raise ValueError(f"prior coefficients name unknown features: {sorted(set(COEFFICIENTS) - set(FEATURES))}")
    coef = np.array([COEFFICIENTS.get(f, 0.0) for f in FEATURES])
    intercept = _logit(open_rate) - sum(COEFFICIENTS[f] * TYPICAL[f] for f in COEFFICIENTS)
    if X is not None and y is not None and len(y) and 0 < y.mean() < 1:
        intercept = _calibrated_intercept(X @ coef, float(y.mean()), intercept)
    est = LogisticRegression()
    est.classes_ = np.array([0, 1])
    est.coef_ = coef[None, :]
    est.intercept_ = np.array([intercept])
    est.n_features_in_ = len(FEATURES)
    est.n_iter_ = np.array([0])
    return est


def _calibrated_intercept(z: np.ndarray, rate: float, start: float) -> float:
    """The intercept b with mean(sigmoid(z + b)) = rate (Newton's method; the mean is monotone in b)."""
    b = start
    for _ in range(50):
        p = 1 / (1 + np.exp(-(z + b)))
        gap = p.mean() - rate
        slope = (p * (1 - p)).mean()
        if abs(gap) < 1e-7 or slope <= 0:
            break
        b -= gap / slope
    return float(b)
