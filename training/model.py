"""The CTR model: candidate scikit-learn estimators, fitted and compared on the same time-based holdout.

Logistic regression on standardised pair features (scene one-hot) against histogram gradient boosting
(scene as a native categorical); the regression is kept unless the trees are clearly better on the holdout
(choose_kind). Both give calibrated
probabilities on this data (expected calibration error is logged to prove it).
"""
from __future__ import annotations

import logging
import time

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core.progress import Progress
from features.pairs import FEATURES

log = logging.getLogger(__name__)

SCENE = FEATURES.index("scene_code")
NUMERIC = [i for i in range(len(FEATURES)) if i != SCENE]


def make_estimator(kind: str, seed: int = 0):
    if kind == "logreg":
        prep = ColumnTransformer([("scene", OneHotEncoder(handle_unknown="ignore"), [SCENE]),
                                  ("num", StandardScaler(), NUMERIC)])
        return Pipeline([("prep", prep), ("clf", LogisticRegression(C=1.0, max_iter=1000))])
    if kind == "hgb":
        return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.06, max_leaf_nodes=31,
                                              l2_regularization=1.0, categorical_features=[SCENE],
                                              early_stopping=True, validation_fraction=0.15, random_state=seed)
    raise ValueError(f"unknown model kind {kind!r}; use 'logreg' or 'hgb'")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed - predicted| over equal-count probability bins."""
    order = np.argsort(p)
    err = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            err += len(chunk) * abs(y[chunk].mean() - p[chunk].mean())
    return float(err / len(y))


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return {"auc": float(roc_auc_score(y, p)), "log_loss": float(log_loss(y, p)),
            "brier": float(brier_score_loss(y, p)), "calibration_error": expected_calibration_error(y, p),
            "mean_predicted": float(p.mean()), "observed_rate": float(y.mean())}


# The plan asks the model about pushes its history never held (personal hours, feeds, other items): the logistic
# regression extrapolates along its coefficients, the boosted trees flat beyond their last split. So the trees are
# kept only when they are clearly better on the holdout — their per-push log loss lower than the regression's by more
# than CHOICE_Z paired standard errors — not on a difference inside the holdout's noise, which would flip the kind
# (and the plan) from night to night. Seen on the simulated world `base` with an experimental feature set: the trees
# won by 0.00003 log loss (0.24380 against 0.24383; AUC 0.7116 against 0.7128) and their plan took 60 % of the
# oracle's lift, the regression's 61 % (bench/generalization.py). On the shipped features the regression wins there
# outright (0.24341 against 0.24382).
SIMPLEST = "logreg"
CHOICE_Z = 2.0
EPS = 1e-12


def choose_kind(y: np.ndarray, predictions: dict[str, np.ndarray], simplest: str = SIMPLEST,
                z: float = CHOICE_Z) -> tuple[str, str]:
    """The candidate to keep, and why: `simplest` unless another's holdout log loss is lower by more than z paired
    standard errors (then the lowest of those). predictions: kind -> holdout probabilities."""
    def losses(p):
        p = np.clip(p, EPS, 1 - EPS)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    if simplest not in predictions:
        best = min(predictions, key=lambda k: losses(predictions[k]).mean())
        return best, f"lowest holdout log loss ({simplest} not fitted)"

    base = losses(predictions[simplest])
    better = {}
    for kind, p in predictions.items():
        if kind == simplest:
            continue
        d = losses(p) - base
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.inf
        if d.mean() + z * se < 0:
            better[kind] = d.mean()
    if not better:
        others = ", ".join(f"{k} {np.mean(losses(p) - base):+.5f}" for k, p in predictions.items() if k != simplest)
        return simplest, (f"{simplest}: no other candidate's holdout log loss is lower by {z:g} paired standard "
                          f"errors ({others or 'no other candidate'})")
    best = min(better, key=better.get)
    return best, f"{best}: holdout log loss {better[best]:+.5f} per push against {simplest}, beyond {z:g} paired standard errors"


def centre_scene_effects(est, X: np.ndarray) -> float:
    """Move the push-weighted mean of a fitted regression's scene effects into its intercept; returns that mean.

    Every training row has exactly one scene, so the fit only pins down the scene effects *relative to the intercept*:
    shifting them all by d and the intercept by -d fits the same. Where they settle is the solver's accident (the L2
    penalty's pull on a nearly flat direction): on the ten benchmark worlds all the history's scenes came out between
    -0.2 and -1.4 (push-weighted mean -0.34 to -0.52). A scene the history never showed is one-hot encoded as none of
    them (effect 0), so its estimates sat 0.34 to 0.52 logits above the average push the history held, an optimism
    that came from nowhere. Centred, a scene never seen is estimated as the history's average push: the seen scenes'
    estimates are unchanged, and its own effect is learnt from Hermes' pushes (explored ones too) from the next night."""
    if not isinstance(est, Pipeline):
        return 0.0
    cats = est.named_steps["prep"].named_transformers_["scene"].categories_[0]
    clf = est.named_steps["clf"]
    weights = np.array([(X[:, SCENE] == c).sum() for c in cats], dtype=np.float64)
    if weights.sum() == 0:
        return 0.0
    k = len(cats)                                   # the scene block leads the transformed columns
    shift = float(clf.coef_[0, :k] @ weights / weights.sum())
    clf.coef_[0, :k] -= shift
    clf.intercept_[0] += shift
    est.scene_effects_centred_by_ = shift
    return shift


def fit_candidates(X: np.ndarray, y: np.ndarray, Xh: np.ndarray, yh: np.ndarray, kinds=("logreg", "hgb")):
    """Fit each kind; return {kind: (estimator, holdout metrics, fit seconds)}."""
    if len(np.unique(y)) < 2 or len(np.unique(yh)) < 2:
        raise ValueError(f"training needs opens and non-opens in train and holdout: train {len(y)} rows "
                         f"({int(y.sum())} opens), holdout {len(yh)} rows ({int(yh.sum())} opens)")
    out = {}
    progress = Progress(f"train: fitting {len(kinds)} candidate(s) on {len(y):,} examples", len(kinds), log)
    for kind in kinds:
        t0 = time.monotonic()
        est = make_estimator(kind).fit(X, y)
        centre_scene_effects(est, X)
        seconds = time.monotonic() - t0
        out[kind] = (est, evaluate(yh, est.predict_proba(Xh)[:, 1]), seconds)
        progress.done(kind, holdout_auc=round(out[kind][1]["auc"], 4))
    return out
