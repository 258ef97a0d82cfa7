"""Candidate generation on the session's world: each scene's cap holds, and trimming popular items per category
or seller before the user join (what keeps recall cheap at scale) proposes exactly the untrimmed candidates."""
from __future__ import annotations

import pytest

import features.candidates as fc
from jobs import audiences, fatigue, material_features, user_features
from jobs.config.loader import load_config
from jobs.entry import as_of_end
from jobs.warehouse import Warehouse

pytestmark = pytest.mark.slow


def test_trimmed_recall_equals_untrimmed_and_caps_hold(world, settings, spark, monkeypatch):
    ds = world["spec"].last_ds
    loaded = load_config()
    # small caps so the per-category / per-seller trimming binds
    scenes = [s.model_copy(update={"materials": s.materials.model_copy(update={"max_candidates": 3})})
              for s in loaded.config.enabled_scenes if s.trigger != "real_time"]
    for stage in (user_features, material_features, audiences, fatigue):
        stage.run(spark, settings, ds, loaded)
    wh = Warehouse(settings.warehouse)
    args = (wh.read_partition(spark, "plan/eligible", ds), scenes, wh.read_partition(spark, "features/user_features", ds),
            wh.read_raw(spark, "events"), wh.read_partition(spark, "features/material_features", ds), as_of_end(ds))
    trimmed = {tuple(r) for r in fc.candidates(*args).collect()}
    monkeypatch.setattr(fc, "_top_per", lambda items, key, n: items)
    untrimmed = {tuple(r) for r in fc.candidates(*args).collect()}
    assert trimmed == untrimmed
    per_pair: dict = {}
    for user, scene, _item, rank in trimmed:
        per_pair[(user, scene)] = max(per_pair.get((user, scene), 0), rank)
    assert max(per_pair.values()) == 3 and len({s for _, s in per_pair}) >= 4
