"""`hermes judge` on a crafted world whose answer is known: one user is pushed the wrong category at the right hour,
the other the right (best) item at the wrong hour."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.contract import RAW_SCHEMAS
from core.warehouse import Warehouse

DS, SEND_DAY = "2026-10-10", "2026-10-11"
H = 3_600_000_000


def _us(day: str, hour: int) -> int:
    d = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    return int(d.timestamp()) * 1_000_000 + hour * H


def _crafted(root) -> tuple[Warehouse, object]:
    from lab.simulator.ground_truth import GroundTruth, ResponseParams

    wh = Warehouse(root)
    prof = np.full((2, 24), 0.002, dtype=np.float32)
    prof[0, 10] = prof[1, 18] = 1.0
    prof /= prof.sum(axis=1, keepdims=True)
    far = np.iinfo(np.int64).max
    listed = _us("2026-10-01", 0)
    gt = GroundTruth(
        user_tz=np.zeros(2, np.int8), user_hour_profile=prof,
        user_pref_cats=np.array([[1, 5, 6], [1, 5, 6]], np.int32),
        user_pref_weights=np.array([[1, 0, 0], [1, 0, 0]], np.float32), user_push_bias=np.zeros(2, np.float32),
        item_category=np.array([1, 1, 2], np.int32), item_quality=np.array([2.0, 0.0, 0.0], np.float32),
        item_value=np.zeros(3, np.float32), item_listed_at=np.full(3, listed, np.int64),
        item_end_at=np.full(3, far, np.int64), params=ResponseParams(), timezones=("UTC",))
    gt.save(wh.ground_truth, {"crafted": True})
    ts = pa.array([_us("2026-10-0%d" % d, 10) for d in range(2, 9)] * 2, pa.int64()).cast(RAW_SCHEMAS["events"].field("ts").type)
    events = pa.table({"ts": ts, "user_id": pa.array([1] * 7 + [2] * 7, pa.int64()),
                       "event_type": pa.array(["app_open"] * 14), "item_id": pa.nulls(14, pa.int64()),
                       "seller_id": pa.nulls(14, pa.int64()), "category_id": pa.nulls(14, pa.int32())},
                      schema=RAW_SCHEMAS["events"])
    for table, data, part in (("events", events, "2026-10-05"), ("push_log", RAW_SCHEMAS["push_log"].empty_table(), DS),
                              ("item_changes", RAW_SCHEMAS["item_changes"].empty_table(), DS)):
        folder = wh.raw_partition(table, part)
        folder.mkdir(parents=True)
        pq.write_table(data, folder / "part-0.parquet")
    wh.raw("items").mkdir(parents=True)
    pq.write_table(pa.table({"item_id": pa.array([1, 2, 3], pa.int64()), "seller_id": pa.array([9, 9, 9], pa.int64())}),
                   wh.raw("items") / "part-0.parquet")
    ts_t = pa.timestamp("us", tz="UTC")
    plan = pa.table({
        "user_id": pa.array([1, 2, 1, 2], pa.int64()),
        "policy": pa.array(["hermes", "hermes", "baseline", "baseline"]),
        "scene_id": pa.array(["guess_you_like"] * 4),
        "item_ids": pa.array([[3], [1], [2], [2]], pa.list_(pa.int64())),
        # user 1: the wrong category at its best hour; user 2: the best item at noon, not at its 18:00
        "send_at": pa.array([_us(SEND_DAY, 10), _us(SEND_DAY, 12), _us(SEND_DAY, 20), _us(SEND_DAY, 20)],
                            pa.int64()).cast(ts_t),
        "slot": pa.array([10, 12, 20, 20], pa.int16()),
        "p_open": pa.array([0.05, 0.05, 0.01, 0.01]), "explored": pa.array([False] * 4),
    })
    wh.write_arrow(plan, "plan/windows", DS, "cfg-test")
    return wh, gt


def _replace_plan(wh: Warehouse, change) -> None:
    """Rewrite the crafted plan/windows partition through `change` (a pyarrow Table -> Table)."""
    plan = wh.read_arrow("plan/windows", DS)
    plan = plan.drop_columns([c for c in plan.column_names if c in ("ds", "config_version")])     # write_arrow adds
    wh.write_arrow(change(plan), "plan/windows", DS, "cfg-test")


def test_the_judge_finds_the_timing_and_the_matching_gap_where_they_were_put(tmp_path):
    from lab.evaluation.judge import judge

    wh, gt = _crafted(tmp_path)
    r = judge(wh, DS, quiet_hours=(22, 8))

    def p(users, items, hours):
        return gt.open_probability(np.array(users), np.array(["guess_you_like"] * len(users)),
                                   np.arange(len(users) + 1), np.array(items),
                                   np.array([_us(SEND_DAY, h) for h in hours]), pushes_24h=np.zeros(len(users)),
                                   pushes_7d=np.zeros(len(users)))

    plan = p([1, 2], [3, 1], [10, 12])
    best_hour = p([1, 2], [3, 1], [10, 18])
    best_cat = p([1, 2], [1, 1], [10, 12])
    oracle = p([1, 2], [1, 1], [10, 18])
    push1 = p([1, 2], [2, 2], [20, 20])
    o = r["open_rate"]
    assert r["users_judged"] == 2
    assert np.isclose(o["plan"], plan.mean()) and np.isclose(o["push_1_0"], push1.mean())
    g = r["gap_to_oracle"]
    # timing: only user 2 was sent at the wrong hour; matching: only user 1 got the wrong category
    assert np.isclose(g["timing"], (best_hour - plan).mean()) and (best_hour - plan)[0] == 0 < g["timing"]
    assert np.isclose(g["matching"], (best_cat - plan).mean()) and (best_cat - plan)[1] == 0 < g["matching"]
    assert np.isclose(g["item_quality"], 0.0)          # each shown item is already its category's best
    assert np.isclose(o["oracle"], oracle.mean())
    assert np.isclose(r["oracle_lift_share"], (plan.mean() - push1.mean()) / (oracle.mean() - push1.mean()))
    # activity at the chosen hours over the best: user 1 at its peak, user 2 far from it
    act = gt.user_hour_profile
    assert np.isclose(r["timing"]["activity_ratio_chosen_vs_best"], (act[0, 10] + act[1, 12]) / (act[0, 10] + act[1, 18]))
    assert r["matching"]["share_top_category_shown"] == 0.5
    assert np.isclose(r["calibration"]["expected_over_true"], 0.10 / plan.sum())
    # per scene: one-item feeds, so the lead item alone is the push itself
    sc = r["calibration"]["by_scene"]
    assert set(sc) == {"guess_you_like"} and sc["guess_you_like"]["pushes"] == 2
    assert np.isclose(sc["guess_you_like"]["expected"], 0.05) and np.isclose(sc["guess_you_like"]["true"], plan.mean())
    assert np.isclose(sc["guess_you_like"]["lead_item_alone"], plan.mean())
    assert sc["guess_you_like"]["lead_on_sale"] == 1.0      # nothing in the crafted world sells


def test_the_judge_says_how_much_of_the_best_hour_the_plans_slots_hold(tmp_path):
    """User 2's best hour is 18:00 UTC but their window in plan/eligible ends at 17:00 (the end of their local plan
    day): no hour model could have sent there, and the judge says how much of the best hour the plan could reach at
    all; user 1's 10:00 is inside theirs. Without plan/eligible the figure is absent, not made up."""
    from lab.evaluation.judge import judge, lines

    wh, gt = _crafted(tmp_path)
    assert judge(wh, DS, quiet_hours=(22, 8))["timing"]["activity_ratio_best_plannable_vs_best"] is None
    ts_t = pa.timestamp("us", tz="UTC")
    wh.write_arrow(pa.table({
        "user_id": pa.array([1, 2], pa.int64()), "scene_id": pa.array(["guess_you_like"] * 2),
        "earliest_send_at": pa.array([_us(SEND_DAY, 0)] * 2, pa.int64()).cast(ts_t),
        "plan_day_end": pa.array([_us(SEND_DAY, 24), _us(SEND_DAY, 17)], pa.int64()).cast(ts_t)}),
        "plan/eligible", DS, "cfg-test")
    r = judge(wh, DS, quiet_hours=(22, 8))
    act = gt.user_hour_profile
    t = r["timing"]
    assert np.isclose(t["activity_ratio_best_plannable_vs_best"], (act[0, 10] + act[1, 16]) / (act[0, 10] + act[1, 18]))
    assert t["activity_ratio_chosen_vs_best"] <= t["activity_ratio_best_plannable_vs_best"] < 0.6
    assert any("the best hour the plan's slots and the users' windows hold = 0.50" in line for line in lines(r))


def _with_behaviour(wh: Warehouse, views: dict[int, int], chats: dict[int, int]) -> None:
    """Add views and chats of user 1 on items (item -> count) on 2026-10-06: what behaviour shows of their quality
    (chats, unlike favs and carts, make no item relevant to the user's pushes)."""
    rows = [(item, "view") for item, n in views.items() for _ in range(n)]
    rows += [(item, "chat") for item, n in chats.items() for _ in range(n)]
    ts = pa.array([_us("2026-10-06", 11) + k for k in range(len(rows))], pa.int64()).cast(RAW_SCHEMAS["events"].field("ts").type)
    cats = {1: 1, 2: 1, 3: 2}
    events = pa.table({"ts": ts, "user_id": pa.array([1] * len(rows), pa.int64()),
                       "event_type": pa.array([e for _, e in rows]), "item_id": pa.array([i for i, _ in rows], pa.int64()),
                       "seller_id": pa.array([9] * len(rows), pa.int64()),
                       "category_id": pa.array([cats[i] for i, _ in rows], pa.int32())}, schema=RAW_SCHEMAS["events"])
    folder = wh.raw_partition("events", "2026-10-06")
    folder.mkdir(parents=True)
    pq.write_table(events, folder / "part-0.parquet")



def test_the_views_a_push_led_to_say_nothing_of_an_items_quality(tmp_path):
    """Item 1's 30 views without engagement came right after user 1 opened a push carrying it: the push's clicks
    (the simulator's organic laws never follow them with a fav or a chat), so item 1 reads as a listing nobody has
    looked at yet, not as one 30 looks passed over; item 2's views, which no push led to, still count."""
    from lab.evaluation.judge import visible_appeal

    wh, gt = _crafted(tmp_path)
    _with_behaviour(wh, views={1: 30, 2: 30}, chats={2: 20})
    before = _us(SEND_DAY, 0)
    looked = visible_appeal(wh, gt, before)
    opened = _us("2026-10-06", 11)
    at = lambda us: pa.array([us], pa.int64()).cast(RAW_SCHEMAS["push_log"].field("sent_at").type)  # noqa: E731
    folder = wh.raw_partition("push_log", "2026-10-06")
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"push_id": ["p1"], "user_id": pa.array([1], pa.int64()), "scene_id": ["guess_you_like"],
                             "item_ids": pa.array([[1]], pa.list_(pa.int64())), "sent_at": at(opened - 60_000_000),
                             "opened_at": at(opened), "clicked_item_id": pa.array([1], pa.int64()),
                             "policy": ["baseline"], "propensity": [1.0]}, schema=RAW_SCHEMAS["push_log"]),
                   folder / "part-0.parquet")
    pushed = visible_appeal(wh, gt, before)
    assert looked[0] < pushed[0] and np.isclose(pushed[0], pushed[2])     # as never viewed, like item 3
    assert np.isclose(pushed[1], looked[1]) and pushed[1] > 0

def test_visible_quality_rises_with_engagement_per_view_and_falls_with_time_unsold(tmp_path):
    """visible_appeal: the same views, more chats -> a better estimate; no views -> the prior, lowered by every day the
    item has gone unsold (good and cheap items sell fast); price attractiveness counts as it is."""
    from lab.evaluation.judge import visible_appeal

    wh, gt = _crafted(tmp_path)
    _with_behaviour(wh, views={1: 30, 2: 30}, chats={2: 20})
    before = _us(SEND_DAY, 0)
    vis = visible_appeal(wh, gt, before)
    assert vis[1] > 0 > vis[0]                         # item 2: 20 chats in 30 views, item 1: none
    assert vis[0] < vis[2] < 0                         # item 3: never viewed, unsold for 10 days
    gt.item_listed_at[2] = before - H
    hour_old = visible_appeal(wh, gt, before)[2]
    assert abs(hour_old) < 0.01 < hour_old - vis[2]                # an hour old: the prior, 0
    gt.item_value[2] = 1.0                                          # cheap for its category
    assert np.isclose(visible_appeal(wh, gt, before)[2] - hour_old, gt.params.value, atol=0.01)


def test_the_visible_oracle_picks_what_behaviour_shows_even_where_the_latent_truth_differs(tmp_path):
    """Item 1 is the latent best of category 1 (quality 2), but behaviour shows item 2 as the better one: the visible
    rows swap user 2's item 1 for item 2 (a loss), and the visible oracle takes the better of that and the plan's own
    feed at the best hour."""
    from lab.evaluation.judge import judge, lines

    wh, gt = _crafted(tmp_path)
    _with_behaviour(wh, views={1: 30, 2: 30}, chats={2: 20})
    r = judge(wh, DS, quiet_hours=(22, 8))

    def p(items, hours):
        return gt.open_probability(np.array([1, 2]), np.array(["guess_you_like"] * 2), np.arange(3), np.array(items),
                                   np.array([_us(SEND_DAY, h) for h in hours]), pushes_24h=np.zeros(2),
                                   pushes_7d=np.zeros(2))

    o, g = r["open_rate"], r["gap_to_oracle"]
    plan = p([3, 1], [10, 12])
    assert np.isclose(o["best_quality_visible"], p([3, 2], [10, 12]).mean())     # item 3 is alone in category 2
    assert g["item_quality_visible"] < 0 == g["item_quality"]
    assert np.isclose(o["best_category_visible"], p([2, 2], [10, 12]).mean())
    visible = np.maximum(p([2, 2], [10, 18]), p([3, 1], [10, 18]))
    assert np.isclose(o["oracle_visible"], visible.mean()) and o["oracle_visible"] < o["oracle"]
    push1 = o["push_1_0"]
    assert np.isclose(r["visible_oracle_lift_share"], (plan.mean() - push1) / (visible.mean() - push1))
    assert any(line.startswith("  of what behaviour shows of item quality: share of that oracle's lift "
                               f"{100 * r['visible_oracle_lift_share']:.1f} %") for line in lines(r))


def _lead_sold_at_nine(root, **columns):
    """The crafted world with item 3 (user 1's lead, sent at 10:00) sold at 09:00, and these plan/windows columns."""
    wh, gt = _crafted(root)
    gt.item_end_at[2] = _us(SEND_DAY, 9)
    gt.save(wh.ground_truth, {"crafted": True})
    w = wh.read_arrow("plan/windows", DS).to_pandas().drop(columns=["config_version", "ds"], errors="ignore")
    for name, values in columns.items():
        w[name] = values
    wh.write_arrow(pa.Table.from_pandas(w, preserve_index=False), "plan/windows", DS, "cfg-test")
    return wh, gt


def _one_item_truth(gt, items: list[int]) -> np.ndarray:
    """The true open probability of users 1 and 2 pushed one item each, at 10:00 and 12:00, without fatigue."""
    return gt.open_probability(np.array([1, 2]), np.array(["guess_you_like"] * 2), np.arange(3), np.array(items),
                               np.array([_us(SEND_DAY, 10), _us(SEND_DAY, 12)]), pushes_24h=np.zeros(2),
                               pushes_7d=np.zeros(2))


def test_the_lead_item_alone_is_the_first_item_of_each_feed(tmp_path):
    """A two-item feed whose second item is the best: the truth of the feed is above its lead item's alone. Its lead
    item sold an hour before the send: half the scene's leads were on sale."""
    from lab.evaluation.judge import judge, lines

    # item 3, user 1's lead, sold at 09:00; the push goes at 10:00
    wh, gt = _lead_sold_at_nine(tmp_path, item_ids=[[3, 1], [1], [2], [2]])
    r = judge(wh, DS, quiet_hours=(22, 8))
    lead = _one_item_truth(gt, [3, 1])
    sc = r["calibration"]["by_scene"]["guess_you_like"]
    assert sc["items_per_feed"] == 1.5
    assert np.isclose(sc["lead_item_alone"], lead.mean()) and sc["true"] > sc["lead_item_alone"]
    assert sc["lead_on_sale"] == 0.5 and r["calibration"]["lead_on_sale_at_send"] == 0.5
    # the plan's expected opens against the truth of what they estimate (the lead items) and of the feeds
    c = r["calibration"]
    assert np.isclose(c["expected_over_lead_item_truth"], c["expected_opens"] / lead.sum())
    assert c["expected_over_lead_item_truth"] > c["expected_over_true"]
    assert any(f"x{c['expected_over_lead_item_truth']:.2f} against the truth of the lead items alone" in line
               for line in lines(r))
    assert any("lead item alone" in line and "lead on sale" in line for line in lines(r))
    assert any(line.startswith("  guess_you_like") and line.endswith("50%") for line in lines(r))


def test_as_delivered_a_sold_lead_is_replaced_by_its_reserve_or_the_push_withdrawn(tmp_path):
    """User 1's one-item feed is item 3, sold at 09:00 for a 10:00 send, with item 1 in reserve: delivered with
    reserves, it goes out as [1]; without, it is withdrawn and opens nothing. Push 1.0's item never sells."""
    from lab.evaluation.judge import judge, lines

    wh, gt = _lead_sold_at_nine(tmp_path, reserve_ids=[[1], [], [], []])
    r = judge(wh, DS, quiet_hours=(22, 8))
    p = _one_item_truth(gt, [1, 1])
    d = r["as_delivered"]
    assert np.isclose(d["plan"]["open_rate"], p.mean()) and d["plan"]["withdrawn_share"] == 0
    assert d["plan"]["reserve_items_sent"] == 1
    assert np.isclose(d["plan_without_reserves"]["open_rate"], p[1] / 2)
    assert d["plan_without_reserves"]["withdrawn_share"] == 0.5 and d["plan_without_reserves"]["reserve_items_sent"] == 0
    assert d["push_1_0"]["withdrawn_share"] == 0 and np.isclose(d["push_1_0"]["open_rate"], r["open_rate"]["push_1_0"])
    assert any(line.startswith("  as delivered") and "50.0 % withdrawn" in line for line in lines(r))
    # calibration against what the plan opens as delivered: the reserve's truth in the sold lead's place
    c = r["calibration"]
    assert np.isclose(c["true_opens_as_delivered"], p.sum())
    assert np.isclose(c["expected_over_true_as_delivered"], c["expected_opens"] / p.sum())
    assert c["true_opens_as_delivered"] > c["true_opens"]


def test_a_world_without_any_push_history_has_no_fatigue_to_count(tmp_path):
    """Cold start (`hermes evaluate --cold-start`): no push_log folder at all is an empty history, not an error."""
    from lab.evaluation.outcomes import _recent_pushes

    users, at = _recent_pushes(Warehouse(tmp_path), SEND_DAY)
    assert users.dtype == np.int64 and len(users) == len(at) == 0


def test_the_closed_loops_nightly_table_shows_calibration_against_the_feeds_and_their_lead_items():
    """The per-night table of `hermes evaluate`: expected / true opens, then (in brackets) over the lead items' truth,
    then over what the plan opens as delivered; a night judged before those figures existed shows the first alone."""
    from lab.evaluation.report import _judged_nights

    judge = {"model_policy": "trained", "open_rate": {"plan": 0.2, "push_1_0": 0.05, "oracle": 0.3},
             "oracle_lift_share": 0.6, "visible_oracle_lift_share": 0.7, "timing": {"activity_ratio_chosen_vs_best": 0.85},
             "calibration": {"expected_over_true": 0.61, "expected_over_lead_item_truth": 1.04,
                             "expected_over_true_as_delivered": 0.57}}
    old = {k: v for k, v in judge.items() if k != "visible_oracle_lift_share"} | {"calibration": {"expected_over_true": 0.7}}
    rows = _judged_nights([{"send_day": "2026-10-31", "opened": 20, "sent": 100, "judge": judge},
                           {"send_day": "2026-11-01", "opened": 10, "sent": 100, "judge": old},
                           {"send_day": "2026-11-02", "opened": 0, "sent": 0}])
    assert rows[1].endswith("expected / true opens (/ their lead items' truth) | expected / opens as delivered |")
    assert "| share of oracle lift (of the visible oracle's) |" in rows[1]
    assert rows[3].startswith("| 2026-10-31 | trained | 20.00 % |") and rows[3].endswith("| 0.61 (1.04) | 0.57 |")
    assert "| 60 % (70 %) | 0.85 |" in rows[3]
    assert rows[4].endswith("| 0.70 | - |") and "| 60 % | 0.85 |" in rows[4] and len(rows) == 7
    # neither night says where its Push 1.0 came from: both were the policy re-planned on Hermes' own history
    assert rows[6].startswith("Judged Push 1.0: the plan the Push 1.0 arm sends") and \
        "except on 2026-10-31, 2026-11-01: Push 1.0's policy re-planned on Hermes' history" in rows[6]
    armed = _judged_nights([{"send_day": "2026-10-31", "opened": 20, "sent": 100,
                             "judge": judge | {"push_1_0_from": "/eval/baseline/warehouse"}}])
    assert armed[-1] == "Judged Push 1.0: the plan the Push 1.0 arm sends, under its own push history."


def test_the_judge_takes_push_1_0_from_the_other_arms_plan_under_that_arms_push_history(tmp_path):
    """The closed loop judges the Hermes arm's plan against the plan the Push 1.0 arm sends, with that arm's fatigue:
    Hermes' rows are unchanged, Push 1.0's are the other warehouse's pushes under the other warehouse's history."""
    import pyarrow.compute as pc

    from lab.evaluation.judge import judge

    wh, gt = _crafted(tmp_path / "hermes")
    other, _ = _crafted(tmp_path / "push1")

    def best_item_at_best_hour(plan):
        """the Push 1.0 arm pushes both users the best item at their own best hour"""
        is_base = pc.equal(plan["policy"], "baseline")
        send = pa.array([_us(SEND_DAY, h) for h in (10, 12, 10, 18)], pa.int64()).cast(plan.schema.field("send_at").type)
        plan = plan.set_column(plan.schema.get_field_index("item_ids"), "item_ids",
                               pc.if_else(is_base, pa.array([[1]] * 4, pa.list_(pa.int64())), plan["item_ids"]))
        return plan.set_column(plan.schema.get_field_index("send_at"), "send_at", send)

    _replace_plan(other, best_item_at_best_hour)
    # ... and pushed user 2 the evening before
    pq.write_table(pa.table({"push_id": ["p1"], "user_id": pa.array([2], pa.int64()), "scene_id": ["hot_items"],
                             "item_ids": pa.array([[2]], pa.list_(pa.int64())),
                             "sent_at": pa.array([_us(DS, 20)], pa.int64()).cast(RAW_SCHEMAS["push_log"].field("sent_at").type),
                             "opened_at": pa.nulls(1, RAW_SCHEMAS["push_log"].field("opened_at").type),
                             "clicked_item_id": pa.nulls(1, pa.int64()), "policy": ["baseline"],
                             "propensity": [1.0]}, schema=RAW_SCHEMAS["push_log"]),
                   other.raw_partition("push_log", DS) / "part-0.parquet")       # in place of the empty day

    own, armed = judge(wh, DS, quiet_hours=(22, 8)), judge(wh, DS, quiet_hours=(22, 8), baseline_wh=other)
    expected = gt.open_probability(np.array([1, 2]), np.array(["guess_you_like"] * 2), np.arange(3), np.array([1, 1]),
                                   np.array([_us(SEND_DAY, 10), _us(SEND_DAY, 18)]), pushes_24h=np.array([0, 1]),
                                   pushes_7d=np.array([0, 1]))
    assert armed["open_rate"]["push_1_0"] == pytest.approx(expected.mean(), rel=1e-9)
    assert armed["open_rate"]["push_1_0"] > 2 * own["open_rate"]["push_1_0"]
    assert armed["open_rate"]["plan"] == own["open_rate"]["plan"]
    assert armed["open_rate"]["oracle"] == own["open_rate"]["oracle"]
    assert own["push_1_0_from"] == "this warehouse's plan" and armed["push_1_0_from"] == str(other.root)


def test_the_closed_loops_report_says_when_it_started_from_no_push_history():
    """`hermes evaluate --cold-start` simulates the history days without any push: the title must not claim them."""
    from lab.evaluation.arms import EvalSpec
    from lab.evaluation.report import title

    assert title(EvalSpec(users=3000, days=4, seed=101, history_days=28)).endswith(
        "(28 days of Push 1.0 history), holdout 10%")
    cold = title(EvalSpec(users=3000, days=4, seed=101, history_days=28, cold_start=True))
    assert "Push 1.0 history" not in cold and "28 days of organic events and no push history: a cold start" in cold


def test_hermes_judge_takes_the_baseline_warehouse_and_names_a_missing_one(tmp_path):
    """`hermes judge --baseline-warehouse PATH` prints where its Push 1.0 came from; a path without the night's plan
    is one line naming the option and what is missing."""
    import os
    import subprocess
    import sys

    from core.settings import REPO_ROOT

    wh, _ = _crafted(tmp_path / "hermes")
    other, _ = _crafted(tmp_path / "push1")
    env = {k: v for k, v in os.environ.items() if k != "HERMES_DEBUG"} | {
        "HERMES_HOME": str(tmp_path / "home"), "HERMES_WAREHOUSE": str(wh.root)}

    def hermes(*args):
        return subprocess.run([sys.executable, "-m", "jobs.cli", "judge", "--ds", DS, *args], capture_output=True,
                              text=True, env=env, cwd=REPO_ROOT, timeout=120)

    own, armed = hermes(), hermes("--baseline-warehouse", str(other.root))
    assert own.returncode == 0 and "Push 1.0: this warehouse's plan" in own.stdout, own.stderr
    assert armed.returncode == 0, armed.stderr
    assert f"Push 1.0: the plan in {other.root}, under that warehouse's push history" in armed.stdout
    missing = hermes("--baseline-warehouse", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"--baseline-warehouse {tmp_path / 'nowhere'}: no plan/windows ds={DS} there" in missing.stderr


def test_a_baseline_plan_that_pushes_none_of_hermes_users_is_a_clear_error(tmp_path):
    from lab.evaluation.judge import judge

    wh, _ = _crafted(tmp_path / "hermes")
    other, _ = _crafted(tmp_path / "push1")
    # Push 1.0 pushes users 3 and 4 only
    _replace_plan(other, lambda plan: plan.set_column(0, "user_id", pa.array([1, 2, 3, 4], pa.int64()))
                  .filter(pa.array([False, False, True, True])))
    with pytest.raises(ValueError, match=r"no user is pushed by both Hermes \(2 pushes\) and Push 1.0 \(2\)"):
        judge(wh, DS, quiet_hours=(22, 8), baseline_wh=other)
