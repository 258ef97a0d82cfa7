"""Material state is rebuilt point-in-time from item_changes; rates shrink toward their parents."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from features.materials import items_as_of, material_features, material_rates
from tests.features.test_user_features import frame

AS_OF = datetime(2026, 10, 31, tzinfo=timezone.utc)


def t(days_before: float) -> datetime:
    return AS_OF - timedelta(days=days_before)


@pytest.fixture
def items(spark):
    # The snapshot already knows item 2 sold later and item 3 was listed after as_of.
    return frame(spark, "items", [
        (1, 100, 7, 80.0, t(5), "on_sale", "Camera #1"),
        (2, 100, 7, 50.0, t(9), "sold", "Lens #2"),
        (3, 101, 9, 10.0, AS_OF + timedelta(hours=2), "on_sale", "Book #3"),
        (4, 102, 9, 30.0, t(3), "on_sale", "Comic #4"),
    ])


@pytest.fixture
def changes(spark):
    return frame(spark, "item_changes", [
        (1, t(5), "listed", 100.0), (1, t(1), "price_drop", 80.0),
        (2, t(9), "listed", 50.0), (2, AS_OF + timedelta(hours=1), "sold", 50.0),
        (3, AS_OF + timedelta(hours=2), "listed", 10.0),
        (4, t(3), "listed", 30.0), (4, t(2), "removed", 30.0),
    ])


def test_state_is_rebuilt_as_of_not_taken_from_the_snapshot(items, changes):
    rows = {r.item_id: r for r in items_as_of(items, changes, AS_OF).collect()}
    assert sorted(rows) == [1, 2, 4]
    assert rows[1].price == 80.0 and rows[1].listing_price == 100.0 and rows[1].status == "on_sale"
    assert rows[2].status == "on_sale", "sold only after as_of"
    assert rows[4].status == "removed"


def test_material_features_cover_items_on_sale(spark, items, changes):
    events = frame(spark, "events", [
        (t(0.5), 9, "view", 1, 100, 7), (t(2), 8, "view", 1, 100, 7), (t(2), 8, "fav", 1, 100, 7),
        (t(10), 8, "view", 1, 100, 7),
    ])
    rows = {r.item_id: r for r in material_features(items_as_of(items, changes, AS_OF), events, AS_OF).collect()}
    assert sorted(rows) == [1, 2]
    one = rows[1]
    assert one.price_drop_pct == pytest.approx(0.2)
    assert (one.views_1d, one.views_7d, one.favs_7d, one.viewers_7d) == (1, 2, 1, 2)
    assert one.hours_since_listed == pytest.approx(120) and one.hours_since_drop == pytest.approx(24)
    assert one.seller_on_sale == 2


def test_rates_are_smoothed_toward_the_parent_level(spark, items):
    pushes = [(f"p{i}", i, "s", [1], t(3), t(3) if i < 2 else None, 1 if i == 0 else None, "baseline", 0.9)
              for i in range(10)]
    pushes += [(f"q{i}", i, "s", [4], t(3), None, None, "baseline", 0.9) for i in range(90)]
    rates = {(r.level, r.category_id, r.item_id): r
             for r in material_rates(frame(spark, "push_log", pushes), items, AS_OF, prior=10).collect()}
    scene = rates[("scene", None, None)]
    assert scene.sends == 100 and scene.opens == 2
    assert scene.open_rate == pytest.approx(0.02)             # (2 + 10 * 0.02) / 110
    item1 = rates[("material", 7, 1)]
    cat7 = rates[("category", 7, None)]
    assert item1.sends == 10 and item1.opens == 2 and item1.clicks == 1
    # raw 0.2 pulled toward its category, which is pulled toward the scene
    assert cat7.open_rate == pytest.approx((2 + 10 * 0.02) / 20)
    assert item1.open_rate == pytest.approx((2 + 10 * cat7.open_rate) / 20)
    assert scene.open_rate < item1.open_rate < 0.2


def test_popularity_leaves_out_the_views_a_push_led_to(spark, items, changes):
    """Views of a pushed item by its recipient within half an hour of the open are the push's, not the item's draw;
    the same views without a receipt, or later, or of an item the push did not carry, are popularity."""
    opened = t(0.5)
    pushes = frame(spark, "push_log", [
        ("p1", 9, "guess_you_like", [1, 2], t(0.52), opened, 1, "hermes", 0.9),
        ("p2", 7, "guess_you_like", [1], t(0.52), None, None, "hermes", 0.9),      # never opened
    ])
    events = frame(spark, "events", [
        (opened + timedelta(seconds=5), 9, "view", 1, 100, 7),       # the push's click
        (opened + timedelta(minutes=20), 9, "view", 2, 100, 7),      # another of its items, still in the session
        (opened + timedelta(minutes=40), 9, "view", 1, 100, 7),      # back later on their own
        (opened + timedelta(seconds=5), 7, "view", 1, 100, 7),       # a user whose push was not opened
        (opened + timedelta(seconds=30), 9, "fav", 1, 100, 7),       # a fav is interest, whatever brought them
    ])
    on_sale = items_as_of(items, changes, AS_OF)
    plain = {r.item_id: r for r in material_features(on_sale, events, AS_OF).collect()}
    organic = {r.item_id: r for r in material_features(on_sale, events, AS_OF, pushes).collect()}
    assert (plain[1].views_7d, plain[1].viewers_7d, plain[2].views_7d) == (3, 2, 1)
    assert (organic[1].views_1d, organic[1].views_7d, organic[1].viewers_7d, organic[1].favs_7d) == (2, 2, 2, 1)
    assert organic[2].views_7d == 0
