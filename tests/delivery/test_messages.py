"""The nightly batches' messages, rendered from the plan's windows (delivery.messages.nightly_messages): no servers."""
from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from core.config.loader import load_config
from delivery.batches import idempotency_key
from delivery.messages import nightly_messages
from tests.conftest import REPO

DAY = "2026-10-31"
AT = datetime(2026, 10, 31, 18, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def loaded():
    return load_config(REPO / "conf")


def windows(rows: list[tuple]) -> pa.Table:
    """rows: (user_id, scene_id, item_ids, reserve_ids, slot, scene_propensity, hour_propensity)."""
    n = len(rows)
    return pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.int64()), "policy": ["hermes"] * n,
        "scene_id": [r[1] for r in rows], "item_ids": pa.array([r[2] for r in rows], pa.list_(pa.int64())),
        "reserve_ids": pa.array([r[3] for r in rows], pa.list_(pa.int64())),
        "model_version": ["4"] * n, "slot": pa.array([r[4] for r in rows], pa.int16()),
        "send_at": pa.array([AT] * n, pa.timestamp("us", tz="UTC")), "local_hour": pa.array([20] * n, pa.int16()),
        "p_open": [0.2] * n, "explored": [False] * n, "hour_propensity": [r[6] for r in rows],
        "scene_propensity": [r[5] for r in rows], "platform": ["ios"] * n, "tz": ["Asia/Tokyo"] * n,
    })


USERS = pa.table({"user_id": pa.array([1, 2, 3], pa.int64()), "device_token": ["tok-1", "tok-2", "tok-3"]})
ITEMS = pa.table({"item_id": pa.array([10, 11, 12, 13], pa.int64()), "seller_id": pa.array([5, 6, 7, 8], pa.int64()),
                  "category_id": pa.array([3, 3, 4, 4], pa.int32()), "title": ["lamp", "chair", "desk", "bike"],
                  "price": [1000.0, 2500.0, 800.0, 12000.0], "listing_price": [1200.0, 2500.0, 1000.0, 15000.0],
                  "price_drop_pct": [1 / 6, 0.0, 0.2, 0.2]})


def test_each_window_becomes_one_message_with_its_feed_its_listed_reserves_and_its_rendered_text(loaded):
    plan = windows([(1, "guess_you_like", [10, 99, 11], [12, 98, 13], 9, 1.0, 0.95),   # 99, 98: no longer listed
                    (2, "price_drop_fav", [12], [], 30, 0.5, 0.8),
                    (3, "guess_you_like", [97], [10], 0, 1.0, 1.0)])               # its only item is not listed
    m = nightly_messages(plan, USERS, ITEMS, loaded.config, DAY, "cfg-t").to_pylist()
    assert [r["user_id"] for r in m] == [1, 2, 3] and [r["device_token"] for r in m] == ["tok-1", "tok-2", "tok-3"]
    assert [r["idempotency_key"] for r in m] == [idempotency_key(u, s, DAY, "nightly")
                                                 for u, s in ((1, "guess_you_like"), (2, "price_drop_fav"),
                                                              (3, "guess_you_like"))]
    # the feed: its items still listed, in order, then its reserves still listed; the sent item_ids are the plan's
    assert [[f["item_id"] for f in r["feed"]] for r in m] == [[10, 11, 12, 13], [12], [10]]
    assert [r["reserve_ids"] for r in m] == [[12, 13], [], [10]] and m[0]["item_ids"] == [10, 99, 11]
    assert m[0]["feed"][1] == {"item_id": 11, "title": "chair", "price": 2500.0, "listing_price": 2500.0,
                               "price_drop_pct": 0.0, "category_id": 3, "seller_id": 6}
    # the first item's fields in the scene's templates; a first item no longer listed renders the neutral fields
    assert m[0]["title"] == "Fresh in category 3" and m[0]["body"] == "lamp for ¥1,000 and 2 more picked for you."
    assert m[1]["body"] == "Now ¥800 (was ¥1,000, -20%). 1 of your favourites got cheaper."
    assert m[2]["body"] == "an item for  and 0 more picked for you."
    assert [r["hour"] for r in m] == [9, 30, 0] and [r["propensity"] for r in m] == pytest.approx([0.95, 0.4, 1.0])
    assert {r["window"] for r in m} == {"nightly"} and {r["config_version"] for r in m} == {"cfg-t"}
    assert m[0]["title_template"] == "Fresh in {category}" and m[0]["send_at"] == AT


def test_a_planned_user_without_a_token_fails_the_batch_and_no_plan_makes_no_messages(loaded):
    users = pa.table({"user_id": pa.array([1, 2], pa.int64()), "device_token": ["tok-1", ""]})
    plan = windows([(1, "guess_you_like", [10], [], 9, 1.0, 1.0), (2, "guess_you_like", [11], [], 9, 1.0, 1.0),
                    (4, "guess_you_like", [12], [], 9, 1.0, 1.0)])       # 2: an empty token; 4: no row at all
    with pytest.raises(ValueError, match="raw/users: 2 planned users have no device_token"):
        nightly_messages(plan, users, ITEMS, loaded.config, DAY, "cfg-t")
    none = nightly_messages(windows([]), USERS, ITEMS, loaded.config, DAY, "cfg-t")
    assert none.num_rows == 0 and "feed" in none.column_names
