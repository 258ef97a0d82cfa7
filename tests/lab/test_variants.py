"""The world family (lab/simulator/variants.py): each named variant is the marketplace it says it is, and `random`
draws a different, reproducible world per seed — its true response included."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest

from core.warehouse import Warehouse
from lab.simulator.ground_truth import GroundTruth, ResponseParams
from lab.simulator.market import WorldSpec, simulate
from lab.simulator.variants import DST_ZONES, RESPONSE_RANGES, UNKNOWN_SCENES, VARIANTS, Variant, randomised, variant

TINY = WorldSpec(users=300, items=600, days=3, seed=5)


def _push_log(warehouse):
    return pads.dataset(Warehouse(warehouse).raw("push_log"), format="parquet", partitioning="hive").to_table()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_named_variants_keep_the_documented_response_but_for_their_item_terms(name):
    v = variant(name)
    assert ResponseParams(**v.response()) == ResponseParams(quality=v.quality_coef, value=v.value_coef,
                                                            weekend_hour_shift=v.weekend_hour_shift)


def test_random_worlds_are_reproducible_per_seed_and_differ_between_seeds_response_included():
    a, b, c = randomised(202), randomised(202), randomised(203)
    assert a == b and a != c
    for knob, (lo, hi) in RESPONSE_RANGES.items():
        values = [getattr(randomised(s), knob) for s in range(200, 220)]
        assert all(lo <= x <= hi for x in values), knob
        assert len(set(values)) == 20, f"{knob} is not drawn per seed"
    assert dict(a.scene_effect_shift).keys() == ResponseParams().scene_effect.keys()
    assert dict(a.scene_effect_shift) != dict(c.scene_effect_shift)
    # the response is drawn from its own stream: a seed's structure is the one reported before it was drawn
    assert (a.categories, round(a.quality_coef, 3), a.timezones) == (39, 0.757, DST_ZONES)


def test_an_unknown_variant_is_refused_with_the_names_there_are():
    with pytest.raises(ValueError, match=r"unknown world variant 'moon'.*'global_dst'.*'random'"):
        variant("moon")


def test_a_random_world_writes_the_response_it_drew_into_its_ground_truth(tmp_path):
    spec = replace(TINY, variant="random", seed=204)
    simulate(spec, tmp_path)
    truth = GroundTruth.load(Warehouse(tmp_path).ground_truth)
    assert truth.params == ResponseParams(**randomised(204).response())
    assert truth.params.feed_breadth != ResponseParams().feed_breadth
    assert GroundTruth.world(Warehouse(tmp_path).ground_truth)["variant"]["name"] == "random"


def test_global_dst_lives_in_dst_zones_and_its_history_is_sent_at_03_utc_under_unknown_scene_ids(tmp_path):
    simulate(replace(TINY, variant="global_dst"), tmp_path)
    truth = GroundTruth.load(Warehouse(tmp_path).ground_truth)
    assert tuple(truth.timezones) == DST_ZONES
    assert set(np.asarray(truth.timezones)[truth.user_tz]) == set(DST_ZONES)     # every zone has users
    log = _push_log(tmp_path)
    assert log.num_rows > 0
    assert set(log["scene_id"].to_pylist()) <= set(UNKNOWN_SCENES)
    assert set(pc.hour(log["sent_at"]).to_pylist()) == {3}


def test_base_history_is_push_1_0_at_12_utc_and_night_owls_history_at_random_local_hours(tmp_path):
    simulate(TINY, tmp_path / "base")
    base = _push_log(tmp_path / "base")
    assert set(pc.hour(base["sent_at"]).to_pylist()) == {12}
    assert set(base["scene_id"].to_pylist()) <= set(Variant().history_scenes)
    simulate(replace(TINY, variant="night_owls"), tmp_path / "owls")
    owls = _push_log(tmp_path / "owls")
    assert len(set(pc.hour(owls["sent_at"]).to_pylist())) >= 12
