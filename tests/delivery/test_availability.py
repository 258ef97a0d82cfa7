"""Items sold or removed between the plan and the send leave their feeds and their reserves take their place: a feed
with nothing left on sale is withdrawn, a changed one is re-rendered from its first item, and the counts still add up
(delivery/availability.py)."""
from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.contract import RAW_SCHEMAS
from core.settings import Settings
from core.warehouse import Warehouse
from delivery.availability import gone_items, prune
from delivery.batches import idempotency_key, write_day
from delivery.ledger import Ledger
from delivery.stream import EventStream
from jobs import deliver

DAY = "2026-10-31"
T0 = datetime(2026, 10, 31, 9, tzinfo=timezone.utc).timestamp()      # the 09:00 UTC run's clock
TITLE, BODY = "New in {category}", "{item_title} for {item_price} and {n_more} more picked for you."


def feed_item(i: int) -> dict:
    return {"item_id": i, "title": f"lamp {i}", "price": 10.0 * i, "listing_price": 10.0 * i, "price_drop_pct": 0.0,
            "category_id": 3, "seller_id": 90 + i}


def message(user: int, items: list[int], reserves: list[int] | None = None) -> dict:
    return {"idempotency_key": idempotency_key(user, "guess_you_like", DAY, "nightly"), "user_id": user,
            "item_ids": items, "title": "New in category 3", "body": f"lamp {items[0]} and {len(items) - 1} more",
            "title_template": TITLE, "body_template": BODY, "reserve_ids": reserves or [],
            "feed": [feed_item(i) for i in [*items, *(reserves or [])]]}


def write_changes(wh: Warehouse, day: str, rows: list[tuple[int, float, str]]) -> None:
    folder = wh.raw_partition("item_changes", day)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item_id": pa.array([r[0] for r in rows], pa.int64()),
                             "ts": pa.array([datetime.fromtimestamp(r[1], tz=timezone.utc) for r in rows],
                                            pa.timestamp("us", tz="UTC")),
                             "change": [r[2] for r in rows], "price": [1.0] * len(rows)},
                            schema=RAW_SCHEMAS["item_changes"]), folder / "part-00000.parquet")


def test_prune_withdraws_empty_feeds_and_rerenders_a_feed_whose_lead_went():
    a, b, c = message(1, [11, 12, 13]), message(2, [21]), message(3, [31, 32])
    keep, withdrawn, revised = prune([a, b, c], gone={11, 21, 99})
    assert [m["user_id"] for m in keep] == [1, 3] and [m["user_id"] for m in withdrawn] == [2]
    assert withdrawn[0]["withdrawn_reason"] == "items_gone: all 1 item(s) of the feed were sold or removed before the send"
    assert revised == [a] and a["item_ids"] == [12, 13]
    assert a["title"] == "New in category 3" and a["body"] == "lamp 12 for ¥120 and 1 more picked for you."
    assert c["item_ids"] == [31, 32] and c["body"] == "lamp 31 and 1 more"        # untouched
    # a message without its templates (a batch from before they were carried) keeps its text, loses the items
    old = message(4, [41, 42])
    del old["title_template"], old["feed"]
    keep, withdrawn, revised = prune([old], gone={41})
    assert keep == revised == [old] and old["item_ids"] == [42] and old["body"] == "lamp 41 and 1 more"


def test_a_reserve_stands_in_only_where_the_category_cap_leaves_room():
    """Feeds hold at most max_per_category items of a category; a reserve may be a category's next item past the cap
    (features/selection.py), so it can replace a sold item of its own category, not one of another."""
    def of(items, reserves, cats):
        m = message(1, items, reserves)
        for f in m["feed"]:
            f["category_id"] = cats[f["item_id"]]
        return m

    cats = {11: 7, 12: 7, 13: 9, 14: 7, 15: 9, 16: 5}
    # 13 (category 9) sold: 14 would be category 7's third, so 15 (category 9) stands in
    a = of([11, 12, 13], [14, 15], cats)
    prune([a], gone={13}, max_per_category=2)
    assert a["item_ids"] == [11, 12, 15] and a["refilled"] == 1
    # 11 (category 7) sold: 14, the best reserve, is category 7's second again
    b = of([11, 12, 13], [14, 15], cats)
    prune([b], gone={11}, max_per_category=2)
    assert b["item_ids"] == [12, 13, 14]
    # both category 9 items out of reach: a new category fills, and nothing breaks the cap (one slot stays empty)
    c = of([11, 12, 13], [14, 16], cats)
    prune([c], gone={13}, max_per_category=1)
    assert c["item_ids"] == [11, 12, 16] and c["refilled"] == 1
    d = of([11, 12, 13], [14], cats)
    prune([d], gone={13}, max_per_category=2)
    assert d["item_ids"] == [11, 12] and d["refilled"] == 0
    # without the cap (a caller that does not pass it), the first reserve on sale, as before
    e = of([11, 12, 13], [14, 15], cats)
    prune([e], gone={13})
    assert e["item_ids"] == [11, 12, 14]


def test_prune_replaces_sold_items_with_the_first_reserves_still_on_sale():
    a = message(1, [11, 12, 13], reserves=[14, 15, 16])
    b = message(2, [21], reserves=[22, 23])
    c = message(3, [31], reserves=[32])
    d = message(4, [41, 42], reserves=[43])
    keep, withdrawn, revised = prune([a, b, c, d], gone={11, 13, 14, 21, 22, 31, 32, 41})
    # a lost its lead and its third item: 12 moves up, then 15 and 16 (14 sold too); re-rendered from 12
    assert a["item_ids"] == [12, 15, 16] and a["refilled"] == 2
    assert a["body"] == "lamp 12 for ¥120 and 2 more picked for you."
    # b's only item sold: its second reserve goes out in its place, named in the title
    assert b["item_ids"] == [23] and b["refilled"] == 1 and b["body"] == "lamp 23 for ¥230 and 0 more picked for you."
    # c: the item and its reserve sold: withdrawn, and the reason says the reserves went too
    assert [m["user_id"] for m in withdrawn] == [3]
    assert c["withdrawn_reason"] == ("items_gone: all 1 item(s) of the feed and its 1 reserve(s) were sold or removed "
                                     "before the send")
    # d: never longer than planned, never an item twice
    assert d["item_ids"] == [42, 43] and d["refilled"] == 1
    assert [m["user_id"] for m in keep] == [1, 2, 4] and revised == [a, b, d]


def test_gone_items_reads_the_flushed_days_and_the_live_stream_up_to_now(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    write_changes(wh, "2026-10-29", [(1, T0 - 2 * 86400, "sold")])                 # before the plan's night
    write_changes(wh, "2026-10-30", [(2, T0 - 86400, "sold"), (3, T0 - 86400, "price_drop"),
                                     (4, T0 - 3600, "removed")])
    write_changes(wh, DAY, [(5, T0 - 60, "sold"), (6, T0 + 60, "sold")])            # 6: after the run's clock
    url = f"sqlite:///{tmp_path}/state.sqlite"
    assert gone_items(wh, url, [1, 2, 3, 4, 5, 6, 7, 8], "2026-10-30", T0) == {2, 4, 5}   # no stream yet
    stream = EventStream(url)
    out = stream.publish("item_changes", [
        {"item_id": 7, "ts": T0 - 30, "change": "sold", "price": 1.0},
        {"item_id": 8, "ts": T0 + 30, "change": "removed", "price": 1.0},
        {"item_id": 9, "ts": T0 - 30, "change": "sold", "price": 1.0}], now=T0 + 60)
    assert out["accepted"] == 3
    stream.dispose()
    assert gone_items(wh, url, [1, 2, 3, 4, 5, 6, 7, 8], "2026-10-30", T0) == {2, 4, 5, 7}
    assert gone_items(wh, url, [6, 8], "2026-10-30", T0 + 120) == {6, 8}
    assert gone_items(wh, url, [], "2026-10-30", T0) == set()


@pytest.mark.slow
def test_delivery_sends_the_remaining_items_withdraws_empty_feeds_and_never_sends_twice(s3_server, tmp_path):
    from tests.conftest import start_gateway, stop_gateway
    from tests.delivery.test_delivery import gateway_counts, loaded_with

    hour = 9
    rows = [message(1, [11, 12]), message(2, [21], reserves=[25]), message(3, [31]), message(4, [41], reserves=[44]),
            message(5, [51, 52, 53], reserves=[54])]
    rows[4]["feed"][2]["category_id"] = 4          # user 5: 51, 52 and the reserve 54 in category 3, 53 in category 4
    n = len(rows)
    table = pa.table({
        "idempotency_key": [r["idempotency_key"] for r in rows], "user_id": pa.array([1, 2, 3, 4, 5], pa.int64()),
        "device_token": [f"device-token-{u:08d}" for u in (1, 2, 3, 4, 5)], "platform": ["ios"] * n,
        "tz": ["Asia/Shanghai"] * n, "scene_id": ["guess_you_like"] * n, "title": [r["title"] for r in rows],
        "body": [r["body"] for r in rows], "item_ids": pa.array([r["item_ids"] for r in rows], pa.list_(pa.int64())),
        "hour": pa.array([hour] * n, pa.int8()), "policy": ["hermes"] * n, "propensity": [0.95] * n,
        "window": ["nightly"] * n, "title_template": [TITLE] * n, "body_template": [BODY] * n,
        "reserve_ids": pa.array([r["reserve_ids"] for r in rows], pa.list_(pa.int64())), "feed": [r["feed"] for r in rows]})
    gw = start_gateway(tmp_path / "gw")
    try:
        settings = Settings.from_env({**s3_server, **gw, "HERMES_HOME": str(tmp_path / "home"),
                                      "HERMES_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.sqlite"})
        wh = Warehouse(settings.warehouse)
        # 11 (user 1's lead) and 21 (user 2's only item) sold before 09:00, and user 2's reserve 25 too; user 4's
        # 41 sold, its reserve 44 did not; 31 sells at 09:30, after the run's start; user 5's 53 sold, and its reserve
        # would be category 3's third: the configured feed.max_per_category (2) keeps it out
        write_changes(wh, DAY, [(11, T0 - 600, "sold"), (21, T0 - 300, "removed"), (25, T0 - 200, "sold"),
                                (41, T0 - 100, "sold"), (31, T0 + 1800, "sold"), (53, T0 - 50, "sold")])
        write_day(settings, DAY, table, {"plan_ds": "2026-10-30", "policy": "hermes"})
        out = deliver.run(settings, DAY, hour, loaded_with(concurrency=4), ramp=False, now=T0)
        assert out["states"] == {"acked": 4, "dead_letter": 1}, out
        assert out["withdrawn_items_gone"] == 1 and out["trimmed_items_gone"] == 3 and out["sent_this_run"] == 4
        assert out["reserve_items_sent"] == 1
        ledger = Ledger(settings.ledger_url)
        dead = ledger.rows(DAY, hour, "dead_letter")
        assert [r["user_id"] for r in dead] == [2] and dead[0]["reason"].startswith("items_gone: all 1 item(s)")
        receipts = pq.read_table(wh.raw("push_log")).to_pandas().set_index("user_id")
        assert sorted(receipts.index) == [1, 3, 4, 5]
        assert list(receipts.loc[5, "item_ids"]) == [51, 52]                 # no third item of category 3
        assert list(receipts.loc[1, "item_ids"]) == [12] and list(receipts.loc[3, "item_ids"]) == [31]
        assert list(receipts.loc[4, "item_ids"]) == [44]                     # the reserve went out in 41's place
        # a re-run after the 09:30 sale sends nothing again and changes nothing already settled
        again = deliver.run(settings, DAY, hour, loaded_with(concurrency=4), ramp=False, now=T0 + 3600)
        assert again["sent_this_run"] == 0 and again["states"] == {"acked": 4, "dead_letter": 1}
        counts = gateway_counts(gw["db"])
        assert sorted(counts["deliveries"]) == sorted([rows[i]["idempotency_key"] for i in (0, 2, 3, 4)])
        assert set(counts["deliveries"].values()) == {1}
        ledger.dispose()
    finally:
        stop_gateway(gw)
