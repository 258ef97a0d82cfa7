"""The chance an item is still on sale at the send: its training rows are point-in-time, the fit learns who sells,
and a feed is worth its first item still on sale."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from features.availability import MIN_CLASS, Survival, fit, training_rows
from features.rollups import whole_day
from features.selection import feeds, select_scene
from tests.features.test_user_features import frame

AS_OF = datetime(2026, 10, 31, tzinfo=timezone.utc)     # the cut: the end of ds 2026-10-30
CUT = whole_day(AS_OF)


def t(days_before: float) -> datetime:
    return AS_OF - timedelta(days=days_before)


def item_day(spark, rows):
    return spark.createDataFrame(rows, "item_id long, day int, n_view long, n_fav long, n_chat long")


def test_rows_are_the_items_on_sale_at_each_nights_end_labelled_by_the_next_24_hours(spark):
    items = frame(spark, "items", [
        (1, 100, 7, 80.0, t(5), "sold", "Camera #1"),     # sells 2.5 days before the cut
        (2, 100, 7, 50.0, t(9), "on_sale", "Lens #2"),     # never sells
        (3, 101, 9, 10.0, t(0.5), "on_sale", "Book #3"),   # listed during ds: on sale at no night's end it can label
        (4, 102, 9, 30.0, t(4), "sold", "Comic #4"),       # sells after the cut: unknown to the run
    ])
    changes = frame(spark, "item_changes", [
        (1, t(5), "listed", 100.0), (1, t(4.2), "price_drop", 80.0), (1, t(2.5), "sold", 80.0),
        (2, t(9), "listed", 50.0), (3, t(0.5), "listed", 10.0),
        (4, t(4), "listed", 30.0), (4, AS_OF + timedelta(hours=3), "sold", 30.0),
    ])
    act = item_day(spark, [(1, CUT - 4, 5, 1, 0), (1, CUT - 4, 2, 0, 1),      # a late partition's row adds up
                           (1, CUT - 3, 7, 0, 0), (2, CUT - 10, 100, 0, 0), (2, CUT - 3, 1, 0, 0)])
    rows = {(r.item_id, CUT - r.night): r for r in training_rows(items, changes, act, AS_OF, days=5, max_items=None)
            .collect()}
    # nights CUT-6 .. CUT-2 (the last one's next 24 h ends a day before the cut): "age" k = CUT - night
    assert {k for _, k in rows} == {2, 3, 4, 5, 6}
    # listed 5 days back, sold 2.5 days back: on sale at the ends of k=5 (4 days back) and k=4 (3 days back)
    assert sorted(k for i, k in rows if i == 1) == [4, 5]
    assert rows[(1, 4)].ended == 1 and rows[(1, 5)].ended == 0  # within 24 h of the k=4 end; 1.5 days after k=5's
    assert rows[(1, 4)].views_1d == 7 and rows[(1, 4)].favs_7d == 1 and rows[(1, 4)].chats_7d == 1
    assert rows[(1, 5)].views_1d == 0 and rows[(1, 5)].views_7d == 0
    assert rows[(1, 4)].price_drop_pct == 1.0 and rows[(1, 4)].hours_since_listed == pytest.approx(48.0)
    assert all(rows[(2, k)].ended == 0 for k in (2, 3, 4, 5, 6)) and rows[(2, 6)].views_7d == 100
    assert rows[(2, 2)].views_7d == 1                           # day CUT-10 has left the week by then
    assert not any(i == 3 for i, _ in rows)
    assert rows[(4, 2)].ended == 0                              # its sale is after the cut: not known


def test_the_fit_learns_that_popular_items_sell_and_falls_back_without_data(spark):
    rng = np.random.default_rng(3)
    n = 4000
    views = rng.poisson(3, n)
    ended = (rng.random(n) < 1 / (1 + np.exp(-(-3 + 0.8 * np.log1p(views))))).astype(int)
    rows = spark.createDataFrame(
        [(int(i), 0, int(v), int(v) * 3, 0, 0, 100.0, 0.0, int(e)) for i, (v, e) in enumerate(zip(views, ended))],
        "item_id long, night int, views_1d int, views_7d int, favs_7d int, chats_7d int, hours_since_listed double, "
        "price_drop_pct double, ended int")
    s = fit(rows)
    assert s.kind == "fitted" and s.rows == n and s.ended == int(ended.sum())
    assert s.coef["views_1d"] + s.coef["views_7d"] > 0.3        # the popular ones go
    assert s.auc is not None and s.auc > 0.55
    feats = spark.createDataFrame([(1, 0, 0, 0, 0, 5.0, 0.0), (2, 30, 90, 0, 0, 5.0, 0.0)],
                                  "item_id long, views_1d int, views_7d int, favs_7d int, chats_7d int, "
                                  "hours_since_listed double, price_drop_pct double")
    a = {r.item_id: r.a for r in feats.select("item_id", s.column().alias("a")).collect()}
    assert 0 < a[2] < a[1] < 1
    few = rows.where(f"ended = 0 or item_id < {n // 20}")          # fewer than MIN_CLASS endings
    assert few.where("ended = 1").count() < MIN_CLASS
    pooled = fit(few)
    rate = few.where("ended = 1").count() / few.count()
    assert pooled.kind == "pooled"
    assert feats.select(pooled.column().alias("a")).first().a == pytest.approx(1 - rate)
    none = fit(rows.limit(0))
    assert none.kind == "none" and feats.select(none.column().alias("a")).first().a == pytest.approx(1.0)
    assert Survival("none").summary()["kind"] == "none"


@pytest.fixture
def items(spark):
    # item, seller, category, P(on sale at the send)
    return spark.createDataFrame([(1, 10, 7, 0.2), (2, 11, 7, 1.0), (3, 12, 8, 0.5), (4, 13, 9, 0.9)],
                                 "item_id long, seller_id long, category_id int, p_on_sale_1d double")


def scored(spark, rows):
    return spark.createDataFrame([(u, s, i, p, "7") for u, s, i, p in rows],
                                 "user_id long, scene_id string, item_id long, p_open double, model_version string")


def test_a_feed_is_worth_its_first_item_still_on_sale(spark, items):
    scenes = spark.createDataFrame([("a", 2, 50), ("b", 1, 50)], "scene_id string, feed_size int, priority int")
    rows = [(1, "a", 1, 0.5), (1, "a", 2, 0.3), (1, "a", 3, 0.2),     # feed [1, 2], reserve 3
            (1, "b", 4, 0.25)]
    feed = {r.scene_id: r for r in feeds(scored(spark, rows), items, scenes, max_per_category=2, reserves=1).collect()}
    a = feed["a"]
    assert a.item_ids == [1, 2] and a.reserve_ids == [3]
    assert a.lead_open == pytest.approx(0.5) and a.lead_on_sale == pytest.approx(0.2)
    # 1 leads if on sale (0.2); else 2 (always on sale): 0.5 * 0.2 + 0.8 * 0.3; the reserve never gets its turn
    assert a.expected_open == pytest.approx(0.5 * 0.2 + 0.8 * 1.0 * 0.3)
    assert feed["b"].expected_open == pytest.approx(0.25 * 0.9)
    # the user's best lead item is likely gone by the send: a's feed is worth 0.34, b's 0.225, a still wins
    assert select_scene(feeds(scored(spark, rows), items, scenes, 2, 1)).first().scene_id == "a"
    # without scene a's second item, a is worth 0.1 + 0.8 * 0.5 * 0.2 (the reserve 3): b's steadier feed wins
    only = [r for r in rows if r[2] != 2]
    feed = {r.scene_id: r for r in feeds(scored(spark, only), items, scenes, 2, reserves=1).collect()}
    assert feed["a"].expected_open == pytest.approx(0.1 + 0.8 * 0.5 * 0.2)
    assert select_scene(feeds(scored(spark, only), items, scenes, 2, 1)).first().scene_id == "b"


def test_without_availability_a_feed_is_worth_its_best_item(spark, items):
    scenes = spark.createDataFrame([("a", 2, 50)], "scene_id string, feed_size int, priority int")
    rows = [(1, "a", 1, 0.5), (1, "a", 2, 0.3), (1, "a", 3, 0.2)]
    feed = feeds(scored(spark, rows), items.drop("p_on_sale_1d"), scenes, 2, reserves=1).first()
    assert feed.expected_open == pytest.approx(0.5) and feed.lead_on_sale == pytest.approx(1.0)
