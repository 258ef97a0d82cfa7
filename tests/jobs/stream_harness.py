"""The streaming engine as its own process on a crafted nightly context (users 1..N in one time zone, items 1000..,
a stand-in model: p(open) = 0.02 + the item's price drop), for the kill -9 trials of tests/jobs/test_stream_kill.py.

    python tests/jobs/stream_harness.py N TZ          (HERMES_HOME, HERMES_GATEWAY_URL/TOKEN from the environment)

Everything else is the real engine: the stream, trigger log and ledger tables, the gateway over HTTP, checkpoints.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.config.loader import load_config  # noqa: E402
from core.settings import Settings  # noqa: E402
from features.live_features import ITEM_COLUMNS, USER_SUMS, Sides  # noqa: E402
from features.pairs import FEATURES  # noqa: E402
from jobs.stream import Context, Engine, Model  # noqa: E402

N_ITEMS = 50


class DropModel:
    def predict_proba(self, X):
        p = 0.02 + np.asarray(X)[:, FEATURES.index("i_drop_pct")]
        return np.column_stack([1 - p, p])


def context(n: int, tz: str) -> Context:
    ids = list(range(1, n + 1))
    users = pd.DataFrame({"user_id": ids, "tz": tz, "platform": "ios", "opt_in": True,
                          "device_token": [f"device-token-{i:08d}" for i in ids]}).set_index("user_id")
    su = pd.DataFrame({"user_id": ids, **{c: 1.0 for c in USER_SUMS}}).set_index("user_id")
    su["_w_by_category"] = [{} for _ in ids]
    su["_h_by_hour"] = [{} for _ in ids]
    items = list(range(1000, 1000 + N_ITEMS))
    si = pd.DataFrame({"item_id": items, "category_id": 1, "i_price_rel": 0.0, "i_drop_pct": 0.0, "i_age_log": 1.0,
                       "iv_7d": 0.0, "if__7d": 0.0, "listing_price": 100.0, "cat_median": 100.0}).set_index("item_id")
    # the seller is none of the users: a seller is never pushed about their own listing (features/stream_rules.py)
    catalogue = pd.DataFrame({"item_id": items, "seller_id": n + 1, "category_id": 1, "title": "lamp",
                              "price": 100.0}).set_index("item_id")
    return Context("2026-11-01", users, pd.DataFrame({"n_app_open_28d": 5}, index=ids),
                   Sides("2026-11-01", su, si[list(ITEM_COLUMNS)], np.full(24, 1 / 24)),
                   Model("1", DropModel(), {"price_drop_fav": 3}), plan_mean_p=0.10, dead=set(), items=catalogue)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    n, tz = int(sys.argv[1]), sys.argv[2]
    settings = Settings.from_env()

    async def go():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        engine = Engine(settings, load_config(settings.conf_dir), context=context(n, tz))
        await engine.run(stop, report_every=0.5)

    asyncio.run(go())


if __name__ == "__main__":
    main()
