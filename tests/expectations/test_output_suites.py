"""Output suites catch what they are for (checked on small pandas frames, as the DAG runs them)."""
from __future__ import annotations

import pandas as pd
import pytest

from expectations.gate import validate
from expectations.suites import output_suite


def windows_frame() -> pd.DataFrame:
    t = pd.Timestamp("2026-10-31 12:00", tz="UTC")
    return pd.DataFrame({
        "user_id": [1, 2, 1], "policy": ["hermes", "hermes", "baseline"], "scene_id": ["a", "b", "a"],
        "slot": [12, -1, 12], "local_hour": [20, -1, 20], "p_open": [0.2, 0.0, 0.1],
        "p_open_model": [0.15, float("nan"), 0.1], "hour_propensity": [0.95, 0.0, 1.0],
        "scene_propensity": [1.0, 1.0, 0.0125],
        "reason": [None, "no_capacity", None], "send_at": [t, pd.NaT, t], "config_version": ["cfg-x"] * 3})


def failed_rules(frame) -> set[str]:
    report = validate(frame, "plan/windows", output_suite("plan/windows", "cfg-x", ["a", "b"]))
    # failures read "<column>: rule=<rule>[ where ...] ...": keep "<column>:<rule>"
    return {f.split(":")[0].removeprefix("plan/windows.") + ":" + f.split("rule=")[1].split()[0] for f in report.failures}


def test_a_clean_windows_table_passes():
    assert failed_rules(windows_frame()) == set()


@pytest.mark.parametrize("column,row,value,rule", [
    ("send_at", 0, pd.NaT, "send_at:expect_column_values_to_not_be_null"),          # no slot and no reason
    ("send_at", 1, pd.Timestamp("2026-10-31 09:00", tz="UTC"), "send_at:expect_column_values_to_be_null"),
    ("slot", 0, 36, "slot:expect_column_values_to_be_between"),                     # a plan has slots 0-35
    ("hour_propensity", 0, 1.5, "hour_propensity:expect_column_values_to_be_between"),
    ("scene_propensity", 2, -0.1, "scene_propensity:expect_column_values_to_be_between"),
    ("reason", 1, "because", "reason:expect_column_values_to_be_in_set"),
    ("p_open_model", 0, float("nan"), "p_open_model:expect_column_values_to_not_be_null"),  # what recalibration learns
    ("p_open", 0, 0.0, "p_open:expect_column_values_to_be_between"),              # a sent push worth nothing
])
def test_broken_windows_rows_are_caught(column, row, value, rule):
    frame = windows_frame()
    frame.loc[row, column] = value
    assert rule in failed_rules(frame)


def baseline_failures(frame) -> list[str]:
    return validate(frame, "plan/baseline", output_suite("plan/baseline", "cfg-x", ["a", "b", "c"])).failures


def test_baseline_may_explore_other_scenes_but_its_main_scene_is_one():
    ok = pd.DataFrame({"user_id": [1, 2, 3, 4], "scene_id": ["a", "a", "b", "c"], "policy": ["baseline"] * 4,
                       "scene_propensity": [0.9667, 0.9667, 0.0333, 0.025], "config_version": ["cfg-x"] * 4})
    assert baseline_failures(ok) == []
    two_main = ok.assign(scene_propensity=[0.9667, 0.9667, 0.9667, 0.025])      # b is not explored: two scenes
    assert any("scene_id" in f and "unique_value_count" in f for f in baseline_failures(two_main))
    assert any("scene_propensity" in f for f in baseline_failures(ok.assign(scene_propensity=[1.2, 1, 1, 1])))


def test_an_output_table_is_validated_on_the_columns_its_suite_reads():
    """jobs/validate_output.py loads only the columns the expectations read (plan/scored at 1M users: 6 of 10): a
    column named only in a row condition is one of them, and the verdict on those columns is the whole table's."""
    from expectations.gate import referenced_columns

    base = output_suite("plan/baseline", "cfg-x", ["a", "b"])
    names = ["user_id", "scene_id", "item_ids", "p_open", "policy", "scene_propensity", "config_version"]
    # scene_propensity is also read by the unique-count rule's condition "scene_propensity > 0.5"
    assert referenced_columns(base, names) == ["user_id", "scene_id", "policy", "scene_propensity", "config_version"]
    windows = output_suite("plan/windows", "cfg-x", ["a", "b"])
    frame = windows_frame().assign(item_ids=[[1], [2], [3]], unread=[0, 1, 2])
    read = referenced_columns(windows, list(frame.columns))
    assert "item_ids" not in read and "unread" not in read and {"send_at", "reason", "slot"} <= set(read)
    broken = frame.copy()
    broken.loc[1, "send_at"] = pd.Timestamp("2026-10-31 09:00", tz="UTC")
    for f in (frame, broken):
        whole = validate(f.drop(columns=["item_ids"]), "plan/windows", windows).failures
        assert validate(f[read], "plan/windows", windows).failures == whole
    assert validate(broken[read], "plan/windows", windows).failures        # the broken row is still caught
