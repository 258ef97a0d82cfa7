"""The persistent holdout group: users who never get a marketing push from any path (nightly or trigger).

Membership is a pure function of user_id and a fixed salt, so it stays the same every night, across config
changes of anything but `holdout_share`, and in every process that needs it (Spark fatigue, the trigger run,
the evaluation). Growing the share only adds users; nobody leaves the holdout while the share is unchanged.
"""
from __future__ import annotations

import numpy as np

from features.windows import user_hash

SALT = "hermes-holdout-v1"
BUCKETS = 1_000_000


def in_holdout(user_ids, share: float) -> np.ndarray:
    """Boolean mask: which of `user_ids` belong to the holdout at `share` (0 <= share <= 0.5)."""
    ids = np.asarray(user_ids, dtype=np.int64)
    if share <= 0:
        return np.zeros(len(ids), dtype=bool)
    return (user_hash(ids, SALT) % np.uint64(BUCKETS)).astype(np.int64) < int(round(share * BUCKETS))
