"""The simulator writes the raw contract exactly, deterministically, and with behaviour that follows
its own latent profiles (so personalisation can matter)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from core.contract import PARTITIONED, RAW_SCHEMAS, RAW_TABLES
from core.warehouse import Warehouse
from lab.simulator.ground_truth import GroundTruth
from lab.simulator.market import HISTORY_SCENES, WorldSpec, build_world, simulate


def read(warehouse, table):
    path = Warehouse(warehouse).raw(table)
    return pads.dataset(path, format="parquet", partitioning="hive" if table in PARTITIONED else None).to_table()


@pytest.mark.parametrize("table", RAW_TABLES)
def test_every_file_matches_the_raw_contract_exactly(world, table):
    files = sorted(Warehouse(world["warehouse"]).raw(table).rglob("*.parquet"))
    assert files, f"no files for raw/{table}"
    for f in files:
        assert pq.read_schema(f).remove_metadata() == RAW_SCHEMAS[table], f


def test_fact_tables_are_partitioned_by_the_utc_day_of_their_time(world):
    ev = Warehouse(world["warehouse"]).raw("events")
    days = sorted(p.name for p in ev.iterdir())
    assert len(days) == world["spec"].days
    for part in days[:3]:
        t = pq.read_table(ev / part)
        ds = part.split("=")[1]
        stamped = set(t["ts"].to_pandas().dt.strftime("%Y-%m-%d"))
        assert stamped == {ds}


def test_same_seed_same_data_other_seed_other_data(tmp_path, world):
    small = replace(world["spec"], users=120, items=240, days=3)
    simulate(small, tmp_path / "a")
    simulate(small, tmp_path / "b")
    simulate(replace(small, seed=small.seed + 1), tmp_path / "c")
    for table in RAW_TABLES:
        a, b, c = (read(tmp_path / x, table) for x in "abc")
        assert a.num_rows > 0
        assert a.equals(b), f"raw/{table} differs between two runs with the same seed"
    assert not read(tmp_path / "a", "events").equals(read(tmp_path / "c", "events"))


def test_rerun_replaces_the_world_instead_of_appending(tmp_path, world):
    small = replace(world["spec"], users=50, items=100, days=2)
    first = simulate(small, tmp_path)
    second = simulate(small, tmp_path)
    assert read(tmp_path, "events").num_rows == first["events"] == second["events"]


def test_app_opens_concentrate_in_each_users_active_hours(world):
    truth = GroundTruth.load(Warehouse(world["warehouse"]).ground_truth)
    ev = read(world["warehouse"], "events").to_pandas()
    opens = ev[ev.event_type == "app_open"]
    uidx = opens.user_id.to_numpy() - 1
    ts_us = opens.ts.dt.as_unit("us").astype("int64").to_numpy()
    local = truth.local_hour(uidx, ts_us)
    # The user's own 6 most likely hours hold 25% of the day uniformly; behaviour must be far above that.
    top6 = np.argsort(-truth.user_hour_profile, axis=1)[:, :6]
    in_top = (top6[uidx] == local[:, None]).any(axis=1)
    assert len(opens) > 1000
    assert in_top.mean() > 0.5


def test_views_follow_each_users_preferred_categories(world):
    truth = GroundTruth.load(Warehouse(world["warehouse"]).ground_truth)
    ev = read(world["warehouse"], "events").to_pandas()
    views = ev[ev.event_type == "view"]
    u = views.user_id.to_numpy() - 1
    preferred = (truth.user_pref_cats[u] == views.category_id.to_numpy()[:, None]).any(axis=1)
    # 3 of 40 categories is 7.5% by chance; the simulator draws ~80% from preferences.
    assert preferred.mean() > 0.6


def test_price_drops_only_while_the_item_is_on_sale(world):
    ch = read(world["warehouse"], "item_changes").to_pandas()
    listed = ch[ch.change == "listed"].set_index("item_id").ts
    ended = ch[ch.change.isin(["sold", "removed"])].set_index("item_id").ts
    drops = ch[ch.change == "price_drop"]
    assert len(drops) > 10
    assert (drops.ts.to_numpy() > listed.loc[drops.item_id].to_numpy()).all()
    end = ended.reindex(drops.item_id)
    has_end = end.notna().to_numpy()
    assert (drops.ts.to_numpy()[has_end] < end.to_numpy()[has_end]).all()
    # A drop lowers the price below the listing price.
    listed_price = ch[ch.change == "listed"].set_index("item_id").price
    assert (drops.price.to_numpy() < listed_price.loc[drops.item_id].to_numpy()).all()


def test_unique_inventory_sells_once_to_one_buyer(world):
    ev = read(world["warehouse"], "events").to_pandas()
    ch = read(world["warehouse"], "item_changes").to_pandas()
    buys = ev[ev.event_type == "buy"]
    sold = ch[(ch.change == "sold") & (ch.ts >= buys.ts.min())]
    assert len(buys) > 10
    assert buys.item_id.is_unique
    assert set(buys.item_id) == set(sold.item_id)
    items = read(world["warehouse"], "items").to_pandas().set_index("item_id")
    assert (items.loc[buys.item_id, "status"] == "sold").all()
    assert (items.loc[buys.item_id, "seller_id"].to_numpy() != buys.user_id.to_numpy()).all()


def test_history_is_push_1_0_one_scene_one_item_one_hour_with_logged_propensity(world):
    pl = read(world["warehouse"], "push_log").to_pandas()
    assert len(pl) > 100
    assert (pl.item_ids.map(len) == 1).all()
    assert set(pl.sent_at.dt.hour) == {12}
    assert set(pl.scene_id) <= set(HISTORY_SCENES)
    assert set(pl.policy) == {"baseline"}
    assert pl.propensity.between(0, 1, inclusive="right").all()
    # Per day one dominant scene (the global best), the rest is epsilon exploration.
    share = pl.groupby(pl.sent_at.dt.date).scene_id.agg(lambda s: s.value_counts(normalize=True).iloc[0])
    assert (share > 0.8).all()
    opened = pl.opened_at.notna()
    assert 0.01 < opened.mean() < 0.3
    assert (pl.opened_at[opened] >= pl.sent_at[opened]).all()
    assert pl.clicked_item_id.notna().sum() <= opened.sum()


def test_ground_truth_responds_to_affinity_hour_and_fatigue(world):
    truth = GroundTruth.load(Warehouse(world["warehouse"]).ground_truth)
    spec = world["spec"]
    day = spec.start_us + 5 * 86_400_000_000
    # Items on sale for the whole [day - 1, day + 2]: moving the send hour cannot change what is live.
    live = np.flatnonzero((truth.item_listed_at <= day - 86_400_000_000)
                          & (truth.item_end_at > day + 2 * 86_400_000_000))
    live_cat = truth.item_category[live]
    # Users whose favourite category has a live item today: that item vs one from a category they ignore.
    idx = np.array([i for i in range(300) if (live_cat == truth.user_pref_cats[i, 0]).any()])
    assert len(idx) > 100
    u = idx + 1
    at = np.full(len(u), day)
    liked = np.array([live[live_cat == truth.user_pref_cats[i, 0]][0] for i in idx]) + 1
    other = np.array([live[~np.isin(live_cat, truth.user_pref_cats[i])][0] for i in idx]) + 1
    off = np.arange(len(u) + 1)
    p_liked = truth.open_probability(u, ["guess_you_like"] * len(u), off, liked, at)
    p_other = truth.open_probability(u, ["guess_you_like"] * len(u), off, other, at)
    assert (p_liked > p_other).mean() > 0.9
    assert ((0 < p_liked) & (p_liked < 1)).all()
    tired = truth.open_probability(u, ["guess_you_like"] * len(u), off, liked, at, pushes_24h=np.ones(len(u)),
                                   pushes_7d=np.full(len(u), 5))
    assert (tired < p_liked).all()
    # Best vs worst local hour of each user, same push: timing matters.
    best_h = truth.user_hour_profile.argmax(axis=1)[idx]
    worst_h = truth.user_hour_profile.argmin(axis=1)[idx]

    def at_local(hours):
        base = day + hours * 3_600_000_000
        shift = truth.local_hour(idx, base) - hours
        return base - shift * 3_600_000_000

    p_best = truth.open_probability(u, ["guess_you_like"] * len(u), off, liked, at_local(best_h))
    p_worst = truth.open_probability(u, ["guess_you_like"] * len(u), off, liked, at_local(worst_h))
    assert (p_best > p_worst).mean() > 0.95


def test_world_spec_rejects_empty_worlds():
    with pytest.raises(ValueError, match="positive"):
        build_world(WorldSpec(users=0))


def test_relevant_fresh_items_make_a_push_more_attractive_in_the_ground_truth(world):
    """The response model's relevance/timeliness terms: read from the world's own raw tables."""
    import numpy as np
    import pyarrow.dataset as pads

    from lab.simulator.ground_truth import US_PER_HOUR, GroundTruth, push_context

    wh = world["warehouse"]
    truth = GroundTruth.load(wh / "raw" / "_ground_truth")
    ev = pads.dataset(str(wh / "raw" / "events"), format="parquet").to_table(
        columns=["ts", "user_id", "event_type", "item_id"]).to_pandas()
    fav = ev[ev["event_type"] == "fav"].iloc[0]
    at = int(fav["ts"].value // 1000) + US_PER_HOUR
    other = int(ev.loc[~ev["user_id"].isin(ev.loc[ev["item_id"] == fav["item_id"], "user_id"]), "user_id"].iloc[0])
    users = np.array([fav["user_id"], other], dtype=np.int64)
    offsets, items = np.array([0, 1, 2]), np.array([fav["item_id"]] * 2, dtype=np.int64)
    relevant, age_h = push_context(wh, users, offsets, items, np.array([at, at]))
    assert relevant.tolist() == [True, False] and age_h[0] == age_h[1] and age_h[0] > 0
    args = (users, np.array(["price_drop_fav"] * 2), offsets, items, np.array([at, at]))
    plain = truth.open_probability(*args)
    with_ctx = truth.open_probability(*args, context=(relevant, age_h))
    assert with_ctx[0] > plain[0] and with_ctx[1] == plain[1]                 # only the relevant push gains
    fresher = truth.open_probability(*args, context=(relevant, np.zeros(2)))
    assert fresher[0] > with_ctx[0]                                           # and more when the news is fresh


def test_the_worlds_clocks_change_at_the_local_hour_and_weekends_follow_the_users_own_calendar():
    """A user in Chicago lives on Chicago's clock: summer time ends at 02:00 local on 2026-11-01, not at a UTC
    midnight, and their Saturday evening (already Sunday in UTC) is still their Saturday. The judge's truth and the
    history's app opens read the same clock."""
    from datetime import datetime, timezone

    from lab.simulator.ground_truth import local_minutes
    from lab.simulator.market import _local_weekend, _utc_from_local

    us = lambda iso: int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp() * 1_000_000)  # noqa: E731
    at = np.array([us("2026-11-01T02:00"), us("2026-11-01T06:30"), us("2026-11-01T07:30"), us("2026-10-31T12:00")])
    local = local_minutes(("America/Chicago",), np.zeros(4, dtype=np.int64), at)
    as_text = [datetime.fromtimestamp(m * 60, tz=timezone.utc).strftime("%a %d %H:%M") for m in local]
    assert as_text == ["Sat 31 21:00", "Sun 01 01:30", "Sun 01 01:30", "Sat 31 07:00"]

    class Clock:              # what _utc_from_local and _local_weekend read of a GroundTruth
        timezones = ("America/Chicago", "Asia/Shanghai")
        user_tz = np.array([0, 1], dtype=np.int8)

    # 20:00 local, asked on UTC day 2026-11-01: Chicago's is 01:00 UTC (still summer time), Shanghai's 12:00 UTC
    placed = _utc_from_local(Clock, np.array([0, 1]), us("2026-11-01T00:00"), np.array([20 * 60, 20 * 60]))
    assert placed.tolist() == [us("2026-11-01T01:00"), us("2026-11-01T12:00")]
    # that Chicago evening is a Saturday; Friday evening (Saturday in UTC) is not a weekend there, it is in Shanghai
    assert _local_weekend(Clock, np.array([0, 0, 1]), np.array(
        [us("2026-11-01T01:00"), us("2026-10-31T01:00"), us("2026-10-31T01:00")])).tolist() == [True, False, True]
