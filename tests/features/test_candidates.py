"""Candidate generation on the session's world: each scene's cap holds, trimming popular items per category
or seller before the user join (what keeps recall cheap at scale) proposes exactly the untrimmed candidates, and
the ranked sources' per-user lists give exactly the general path's candidates and ranks."""
from __future__ import annotations

import pytest

import features.candidates as fc
from core.config.loader import load_config
from core.warehouse import Warehouse
from jobs import audiences, fatigue, material_features, rollups, user_features
from jobs.entry import as_of_end

pytestmark = pytest.mark.slow


def test_trimmed_recall_equals_untrimmed_and_caps_hold(world, settings, spark, monkeypatch):
    ds = world["spec"].last_ds
    loaded = load_config()
    # small caps so the per-category / per-seller trimming binds
    scenes = [s.model_copy(update={"materials": s.materials.model_copy(update={"max_candidates": 3})})
              for s in loaded.config.enabled_scenes if s.trigger != "real_time"]
    for stage in (rollups, user_features, material_features, audiences, fatigue):
        stage.run(spark, settings, ds, loaded)
    wh = Warehouse(settings.warehouse)
    args = (wh.read_partition(spark, "plan/eligible", ds), scenes, wh.read_partition(spark, "features/user_features", ds),
            wh.read_raw(spark, "events"), wh.read_partition(spark, "features/material_features", ds), as_of_end(ds))
    trimmed = {tuple(r) for r in fc.candidates(*args).collect()}
    defaults = [s for s in loaded.config.enabled_scenes if s.trigger != "real_time"]
    ranked_default = {tuple(r) for r in fc.candidates(args[0], defaults, *args[2:]).collect()}
    # only the events recall reads give the same candidates, from fewer events
    needed = fc.recall_events(args[3], defaults, args[5])
    assert 0 < needed.count() < args[3].count()
    assert {tuple(r) for r in fc.candidates(args[0], defaults, args[2], needed, *args[4:]).collect()} == ranked_default
    with monkeypatch.context() as m:
        m.setattr(fc, "RANKED_SOURCES", ())       # every source through recall() + the popularity window
        assert {tuple(r) for r in fc.candidates(*args).collect()} == trimmed
        general_default = {tuple(r) for r in fc.candidates(args[0], defaults, *args[2:]).collect()}
        assert general_default == ranked_default
    # the gap and the shortlist inside each user's row equal the general path's joins and windows
    from datetime import timedelta

    from features.selection import recent_pairs
    recent = recent_pairs(wh.read_raw(spark, "push_log"), as_of_end(ds) - timedelta(hours=72))
    full = fc.candidates(args[0], defaults, *args[2:], recent)
    scores = {(r.scene_id, r.item_id): float(r.item_id % 97) / 97 for r in full.select("scene_id", "item_id")
              .distinct().collect() if r.item_id % 5}              # a fifth of the items without an estimate
    short = fc.Shortlist(scores, 2, "salt-x")
    ranked_short = {tuple(r) for r in fc.candidates(args[0], defaults, *args[2:], recent, short).collect()}
    with monkeypatch.context() as m:
        m.setattr(fc, "RANKED_SOURCES", ())
        assert {tuple(r) for r in fc.candidates(args[0], defaults, *args[2:], recent).collect()} == {
            tuple(r) for r in full.collect()}
        assert {tuple(r) for r in fc.candidates(args[0], defaults, *args[2:], recent, short).collect()} == ranked_short
    with monkeypatch.context() as m:    # more key sets than the shortlist works out per set: the general path
        m.setattr(fc, "MAX_KEY_SETS", 0)
        assert {tuple(r) for r in fc.candidates(args[0], defaults, *args[2:], recent, short).collect()} == ranked_short
    assert recent.count() > 0 and len(ranked_short) < 0.8 * full.count()
    assert {tuple(r) for r in full.collect()} < ranked_default      # the gap removed some
    by_scene = {s for _, s, _, _ in ranked_default}
    assert {"guess_you_like", "hot_items", "similar_to_bought", "reactivation"} <= by_scene
    assert max(r for *_, r in ranked_default) > 3
    monkeypatch.setattr(fc, "_top_per", lambda items, key, n: items)
    monkeypatch.setattr(fc, "RANKED_SOURCES", ())
    untrimmed = {tuple(r) for r in fc.candidates(*args).collect()}
    assert trimmed == untrimmed
    per_pair: dict = {}
    for user, scene, _item, rank in trimmed:
        per_pair[(user, scene)] = max(per_pair.get((user, scene), 0), rank)
    assert max(per_pair.values()) == 3 and len({s for _, s in per_pair}) >= 4
