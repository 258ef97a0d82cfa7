"""The preview's numbers are what the nightly does for that scene on the same features."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from configcenter.preview import preview
from core.config.loader import load_config
from core.warehouse import Warehouse
from jobs import audiences, fatigue, rollups, user_features

pytestmark = pytest.mark.slow


def test_preview_audience_and_eligible_equal_the_nightly_stages(world, settings, spark):
    ds = world["spec"].last_ds
    loaded = load_config()
    for stage in (rollups, user_features, audiences, fatigue):
        stage.run(spark, settings, ds, loaded)
    wh = Warehouse(settings.warehouse)
    aud = pq.read_table(wh.partition("plan/audiences", ds)).to_pandas()
    eligible = pq.read_table(wh.partition("plan/eligible", ds)).to_pandas()
    suppressed = pq.read_table(wh.partition("plan/suppressed", ds)).to_pandas()
    checked = 0
    for scene in loaded.config.enabled_scenes:
        if scene.trigger == "real_time":
            continue
        pv = preview(wh, scene.id, scene.audience, loaded.config.platform.holdout_share)
        assert pv["features_ds"] == ds
        assert pv["audience"] == int((aud["scene_id"] == scene.id).sum()), scene.id
        assert pv["eligible"] == int((eligible["scene_id"] == scene.id).sum()), scene.id
        # the breakdown is the nightly's, reason by reason, and adds up (issue 22.7)
        nightly = suppressed.loc[suppressed["scene_id"] == scene.id, "reason"].value_counts().to_dict()
        assert {k: v for k, v in pv["suppressed"].items() if v} == nightly, scene.id
        assert sum(pv["suppressed"].values()) + pv["eligible"] == pv["audience"], scene.id
        checked += pv["audience"] > 0
    assert checked >= 5
