"""The dry-run plan report renders in headless Chromium and shows what the plan says."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from jobs.plan_report import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def report(capacity: int = 900) -> dict:
    load_h = [0] * 24
    load_b = [0] * 24
    load_h[11], load_h[12], load_h[13] = 700, 900, 400
    load_b[12] = 1950
    pol = lambda load, pushes, opens, scenes, explored: {  # noqa: E731
        "planned": 2000, "pushes": pushes, "expected_opens": opens, "expected_open_rate": opens / pushes,
        "explored": explored, "not_sent": {"no_window": 50} if pushes < 2000 else {}, "scenes": scenes,
        "load": load, "capacity": [capacity] * 24, "peak_load": max(load), "loss_vs_unconstrained": 0.031,
        "gap_to_upper_bound": 0.0004}
    return {"ds": "2026-10-30", "send_day": "2026-10-31", "config_version": "cfg-abc", "model_version": "4",
            "active_policy": "hermes", "timing_elasticity": 0.67,
            "recalibration": {"a": -1.17, "b": 0.606, "c": 0.417, "scene": {"price_drop_fav": 0.83},
                              "pushes": 1742, "opens": 223, "nights": 1,
                              "reason": "fitted on 1742 pushes (223 opens) of the last 1 night(s)"},
            "funnel": {"audience_pairs": 5000, "eligible_pairs": 4200, "suppressed_pairs": 800, "planned_users": 2000,
                       "pushes": 2000},
            "suppressed_by_reason": {"opted_out": 700, "no_device_token": 100},
            "scenes": {"price_drop_fav": {"pushes": 1200, "expected_opens": 300.0, "expected_open_rate": 0.25},
                       "guess_you_like": {"pushes": 800, "expected_opens": 120.0, "expected_open_rate": 0.15,
                                          "items_per_feed": 3.8}},
            "policies": {"hermes": pol(load_h, 2000, 420.0, 2, 100), "baseline": pol(load_b, 1950, 160.0, 1, 0)},
            "same_users": {"users": 1950, "hermes_expected_opens": 410.0, "baseline_expected_opens": 160.0,
                           "ratio": 410 / 160}}


def chromium(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    assert CHROMIUM, "Debian chromium is required for this test (.ci/run installs it)"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium_with_its_figures_and_chart(tmp_path):
    page = tmp_path / "plan.html"
    page.write_text(render_html(report()))
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert "Hermes plan for 2026-10-31" in text
    assert "2.56×" in text                                           # Hermes vs baseline on the same users
    assert re.search(r"<td>price_drop_fav</td><td>1,200</td>", text)  # volume per scene
    assert re.search(r"<td>guess_you_like</td><td>800</td>.*?<td>3\.8000</td>", text)   # its feeds' length
    assert "+ 0.417 log(items) + d[scene] (price_drop_fav +0.83) (fitted on 1742 pushes" in text   # the windows' one
    assert "<td>opted_out</td><td>700</td>" in text                  # suppression by reason
    assert text.count("<rect") == 48                                  # 24 hours x 2 policies
    assert "stroke-dasharray" in text                                 # capacity on the chart's scale
    shot = tmp_path / "plan.png"
    out = chromium(["--window-size=1000,900", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert out.returncode == 0 and shot.stat().st_size > 20_000      # a real page, not a blank one


def test_a_capacity_far_above_the_load_is_noted_instead_of_flattening_the_bars():
    html = render_html(report(capacity=100_000))
    assert "capacity 100,000/h is above this axis" in html and "stroke-dasharray" not in html


def test_the_expected_opens_of_longer_feeds_are_called_a_floor_until_a_length_term_is_learnt():
    import numpy as np

    from jobs.plan_report import feed_estimate

    items = np.array([1, 4, 6, 1])
    night_one = feed_estimate(items, {"a": 0.0, "b": 1.0, "c": 0.0, "reason": "no pushes of Hermes' own plans"})
    assert night_one["expected_is_floor"] and night_one["multi_item_share"] == 0.5
    assert night_one["note"].startswith("50% of Hermes' pushes show several items") and "floor" in night_one["note"]
    assert feed_estimate(items, None)["expected_is_floor"]                     # no recalibration at all: the same
    learnt = feed_estimate(items, {"a": -0.2, "b": 0.9, "c": 0.417})
    assert not learnt["expected_is_floor"] and "c = 0.417" in learnt["note"]
    single = feed_estimate(np.array([1, 1]), None)
    assert not single["expected_is_floor"] and single["multi_item_share"] == 0.0
    r = report()
    r["feed_estimate"] = night_one
    assert "so the expected opens are a floor" in render_html(r)


def test_the_most_pushed_listings_are_counted_and_named():
    import numpy as np

    from jobs.plan_report import lead_concentration

    leads = np.array([7] * 6 + [3] * 2 + [9, 4])
    c = lead_concentration(leads, top=2)
    assert c["pushes"] == 10 and c["distinct_leads"] == 4 and c["top_share"] == 0.6
    assert c["top"] == [[7, 6], [3, 2]]                        # most pushed first; ties by item id
    assert c["note"] == "4 listings lead the night's 10 pushes; the most pushed, item 7, leads 6 (60%), the top 2 together 80%"
    assert lead_concentration(np.array([9, 4]))["top"] == [[4, 1], [9, 1]]
    assert lead_concentration(np.array([], dtype=np.int64))["distinct_leads"] == 0
    r = report()
    r["lead_listings"] = c
    assert "the most pushed, item 7, leads 6 (60%)" in render_html(r)


def test_the_planned_scenes_the_models_history_never_showed_are_named_with_their_share():
    from jobs.plan_report import scene_estimate

    scenes = {"guess_you_like": {"pushes": 60}, "price_drop_fav": {"pushes": 30}, "hot_items": {"pushes": 10},
              "seller_stats": {"pushes": 0}}
    r = scene_estimate(scenes, {"guess_you_like": 900, "hot_items": 50, "daily_picks": 4000}, "trained")
    assert r["unseen_scenes"] == ["price_drop_fav"] and r["unseen_share"] == 0.3     # seller_stats planned no push
    assert r["note"].startswith("30% of Hermes' pushes are of scenes the model's history never showed: price_drop_fav.")
    assert scene_estimate(scenes, {"guess_you_like": 1, "price_drop_fav": 1, "hot_items": 1}, "trained") == {
        "unseen_scenes": [], "unseen_share": 0.0, "note": "every planned scene was in the model's history"}
    many = {f"s{i}": 1 for i in range(40)}
    assert "(of its 40 most pushed)" in scene_estimate(scenes, many, "trained")["note"]
    assert scene_estimate(scenes, None, "trained")["unseen_scenes"] is None           # a version without the tag
    assert "no scene an effect" in scene_estimate(scenes, many, "prior")["note"]
    rep = report()
    rep["scene_estimate"] = r
    assert "price_drop_fav. They are estimated at the history&#x27;s average scene level" in render_html(rep)


def test_report_text_is_escaped():
    r = report()
    r["scenes"] = {"<script>alert(1)</script>": r["scenes"]["guess_you_like"]}
    assert "<script>" not in render_html(r)


def test_the_report_shows_what_raw_validation_quarantined_per_table_and_rule():
    r = report()
    r["inputs"] = {"events": {"rows_in": 16120, "rows_kept": 16118, "rows_quarantined": 2,
                              "quarantined_by_rule": {"event_type: expect_column_values_to_be_in_set": 1,
                                                      "user_id: expect_column_values_to_not_be_null": 1},
                              "examples": {"event_type: expect_column_values_to_be_in_set": ["teleport"],
                                           "user_id: expect_column_values_to_not_be_null": ["null"]},
                              "warnings": ["raw/events: partition ds=2027-12-25 is dated after this run's ds"]}}
    html = render_html(r)
    assert "<td>events</td><td>16,120</td><td>16,118</td><td>2</td>" in html
    assert "<td>events</td><td>event_type: expect_column_values_to_be_in_set</td><td>1</td><td>teleport</td>" in html
    assert "<td>user_id: expect_column_values_to_not_be_null</td><td>1</td><td>null</td>" in html
    assert "partition ds=2027-12-25 is dated after" in html
    assert "dry run" not in html          # the same report precedes delivered plans: it does not call itself a dry run
