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
