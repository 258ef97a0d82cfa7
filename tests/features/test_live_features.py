"""The streaming engine's pandas pair features (features/live_features.py) are the nightly's: on the session's world,
the sides written as the score job writes them and read back as the engine reads them give exactly Spark's
one_day_features for the same pairs; a live price moves only the price features, as the next nightly will see it."""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from features.pairs import FEATURES


def test_live_features_are_the_nightly_pair_features(spark, world, tmp_path):
    import pyarrow.dataset as pads

    from core.warehouse import Warehouse
    from features.live_features import Sides, live_features, live_interest
    from features.pairs import one_day_features, one_day_sides

    wh = Warehouse(world["warehouse"])
    day = (date.fromisoformat(world["spec"].last_ds) - date(1970, 1, 1)).days
    users, items = wh.read_raw(spark, "users"), wh.read_raw(spark, "items")
    # nine items, three of them the ones favourited last by the users below (some pairs are of the user's interest)
    first_users = users.select("user_id").orderBy("user_id").limit(300)
    liked = (wh.read_raw(spark, "events").where("event_type IN ('fav', 'cart')").join(first_users, "user_id")
             .orderBy("ts", ascending=False).select("item_id").distinct().limit(3))
    some = items.orderBy("item_id").limit(6).select("item_id").unionByName(liked).distinct()
    sides = one_day_sides(users, wh.read_raw(spark, "events"), wh.read_raw(spark, "push_log"),
                          wh.read_raw(spark, "item_changes"), items, day, some)
    codes = {"guess_you_like": 0, "price_drop_fav": 1}
    keys = (first_users.crossJoin(some)
            .selectExpr("user_id", "item_id", "IF(item_id % 2 = 0, 'guess_you_like', 'price_drop_fav') AS scene_id",
                        f"{day} AS day", "CAST(user_id % 24 AS INT) AS local_hour"))
    spark_side = one_day_features(keys, sides, codes).toPandas().sort_values(["user_id", "item_id"]).reset_index(drop=True)
    # the sides through Parquet, as jobs/score.py writes them and jobs/stream.py reads them
    paths = {}
    for name, df in (("u", sides.user_side), ("i", sides.item_side), ("h", sides.population)):
        df.write.parquet(str(tmp_path / name))
        paths[name] = pads.dataset(str(tmp_path / name), format="parquet").to_table()
    live = Sides.from_arrow("x", paths["u"], paths["i"], paths["h"])
    pairs = spark_side[["user_id", "item_id", "scene_id", "local_hour"]]
    mine = live_features(pairs, live, codes)
    assert len(mine) == 300 * some.count() and mine["u_opens_7d"].sum() > 0 and mine["aff_share"].gt(0).sum() > 50
    assert mine["hour_share_log"].nunique() > 20
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), spark_side[list(FEATURES)], check_exact=False, rtol=1e-9)
    # and the pair's interest (the recalibration's e reads it) is the nightly's
    wanted = live_interest(pairs, live)
    assert 0 < wanted.sum() < len(wanted)
    assert (wanted == spark_side["interest"].to_numpy()).all()
    # what the trigger itself says (a fav since the nightly) is interest too
    told = live_interest(pairs.assign(interest=1), live)
    assert (told == 1).all()

    # a fresh price drop: i_drop_pct and i_price_rel from the new price; nothing else moves
    item = live.items.dropna(subset=["listing_price", "cat_median"]).index[0]
    one = pd.DataFrame({"user_id": [int(pairs["user_id"].iloc[0])] * 2, "item_id": [item, item],
                        "scene_id": ["price_drop_fav"] * 2, "local_hour": [20, 20],
                        "price_now": [np.nan, 0.5 * live.items.at[item, "listing_price"]]})
    before, after = live_features(one, live, codes).to_numpy()
    moved = {FEATURES[k] for k in np.flatnonzero(~np.isclose(before, after))}
    assert moved == {"i_drop_pct", "i_price_rel"}
    assert after[FEATURES.index("i_drop_pct")] == 0.5
