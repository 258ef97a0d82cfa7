"""Audience rules compile to Spark filters with SQL's null semantics; every scene gets its own users."""
from __future__ import annotations

import pytest

from features.audiences import audiences


@pytest.fixture
def feats(spark):
    return spark.createDataFrame(
        [(1, "ios", True, 10, 3, None), (2, "android_huawei", True, 400, 0, 12), (3, "android_xiaomi", False, 5, 9, 2)],
        "user_id long, platform string, opt_in boolean, tenure_days int, n_view_7d int, days_since_last_open int")


def members(df, scene):
    return sorted(r.user_id for r in df.where(df.scene_id == scene).collect())


def test_each_scene_gets_the_users_its_rule_selects(feats):
    out = audiences(feats, {
        "a": "n_view_7d >= 3 and platform in ('ios', 'android_xiaomi')",
        "b": "days_since_last_open between 7 and 28",
        "c": "not opt_in or tenure_days > 365",
        "d": "days_since_last_open is null",
    })
    assert members(out, "a") == [1, 3]
    assert members(out, "b") == [2]
    assert members(out, "c") == [2, 3]
    assert members(out, "d") == [1]
    assert out.count() == 6


def test_a_rule_on_a_null_feature_excludes_the_user_rather_than_failing(feats):
    out = audiences(feats, {"x": "days_since_last_open < 5", "y": "not (days_since_last_open < 5)"})
    # user 1 has no last open: unknown is neither in x nor in not-x.
    assert members(out, "x") == [3] and members(out, "y") == [2]


def test_no_scenes_is_an_error(feats):
    with pytest.raises(ValueError, match="no scenes"):
        audiences(feats, {})


@pytest.mark.parametrize("rule,expected", [("true", [1, 2, 3]), ("false", []), ("opt_in", [1, 2]),
                                           ("not opt_in", [3]), ("opt_in and n_view_7d > 1", [1])])
def test_a_bare_condition_runs_the_same_in_spark_and_in_pandas(feats, rule, expected):
    """What `config validate` accepts must run: `true`, a boolean feature, and its negation, in the nightly's Spark
    audiences and in the pandas evaluation the trigger rules and the Configuration Center's preview use."""
    from features.triggers import matches

    assert members(audiences(feats, {"s": rule}), "s") == expected
    pdf = feats.toPandas()
    assert sorted(pdf.loc[matches(rule, pdf), "user_id"]) == expected
