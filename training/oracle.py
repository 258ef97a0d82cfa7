"""The simulator's ground truth as a yardstick for the CTR model: the oracle AUC and the attainable one.

The oracle scores every holdout push with its true open probability, which includes two latent traits that no
log shows: the user's personal propensity to open pushes (`user_push_bias`) and the item's quality. A model can
only learn the first from the user's own past pushes (a handful per user) and the second through weak proxies,
so the *attainable* oracle replaces the bias by what the data can reveal: its posterior mean given the user's
own training-window pushes. Every other term of the truth, item quality included, stays exact, so it is still an
upper bound on any model trained on these logs. The gap model → attainable oracle is what better modelling could
still win; the gap attainable → oracle is what no model trained on these logs can.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# The posterior of a user's bias is evaluated on this grid (in units of the population's standard deviation).
_GRID = np.linspace(-4.0, 4.0, 49)


def _true_logits(frame: pd.DataFrame, truth) -> np.ndarray:
    sent_us = frame["sent_at"].dt.as_unit("us").astype("int64").to_numpy()
    return truth.open_logit(frame["user_id"].to_numpy(), frame["scene_id"].to_numpy(), np.arange(len(frame) + 1),
                            frame["item_id"].to_numpy(), sent_us, pushes_24h=frame["u_pushes_1d"].to_numpy(),
                            pushes_7d=frame["u_pushes_7d"].to_numpy())


def true_probabilities(holdout: pd.DataFrame, truth) -> np.ndarray | None:
    """The simulator's true open probability of every holdout push (None without a ground truth)."""
    if truth is None or holdout.empty:
        return None
    return 1.0 / (1.0 + np.exp(-_true_logits(holdout, truth)))


def bias_posterior_mean(train: pd.DataFrame, truth, user_ids: np.ndarray) -> np.ndarray:
    """E[user_push_bias | the user's training pushes and their opens], per user in `user_ids`, under the
    population's own normal prior, with every other term of the true logit known."""
    sd = float(np.std(truth.user_push_bias)) or 1e-6
    grid = _GRID * sd
    log_prior = -0.5 * _GRID ** 2
    users, inv = np.unique(np.concatenate([train["user_id"].to_numpy(), user_ids]), return_inverse=True)
    row_user, want = inv[:len(train)], inv[len(train):]
    if len(train):
        rest = _true_logits(train, truth) - truth.user_push_bias[truth.user_index(train["user_id"].to_numpy())]
        y = train["label"].to_numpy().astype(bool)
    else:
        rest, y = np.zeros(0), np.zeros(0, dtype=bool)
    loglik = np.empty((len(users), len(grid)))
    for j, g in enumerate(grid):
        z = rest + g
        # log sigmoid(z) for opens, log sigmoid(-z) for the others, written to stay finite for large |z|
        ll = -np.logaddexp(0.0, np.where(y, -z, z))
        loglik[:, j] = np.bincount(row_user, weights=ll, minlength=len(users))
    post = loglik + log_prior
    post = np.exp(post - post.max(axis=1, keepdims=True))
    return ((post * grid).sum(axis=1) / post.sum(axis=1))[want]


def attainable_probabilities(train: pd.DataFrame, holdout: pd.DataFrame, truth) -> np.ndarray | None:
    """True open probabilities of the holdout with the user's latent bias replaced by its posterior mean from the
    training window (everything else exact)."""
    if truth is None or holdout.empty:
        return None
    u = truth.user_index(holdout["user_id"].to_numpy())
    z = (_true_logits(holdout, truth) - truth.user_push_bias[u]
         + bias_posterior_mean(train, truth, holdout["user_id"].to_numpy()))
    return 1.0 / (1.0 + np.exp(-z))
