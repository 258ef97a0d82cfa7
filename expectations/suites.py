"""Great Expectations suites for the tables Hermes reads and writes, built per run date.

Suites are data (a list of expectations per table) so tests and docs can list them; `expectations.gate`
runs them. Imports Great Expectations: call from tasks, never from DAG top level.
"""
from __future__ import annotations

import sys
from datetime import date, datetime, timedelta, timezone
from zoneinfo import available_timezones

import great_expectations.expectations as gxe

from core.contract import EVENT_TYPES, ITEM_CHANGES, ITEM_STATUSES, PLATFORMS

# A price must be a finite positive number: +inf passes "> 0", not "<= the largest double".
MAX_PRICE = sys.float_info.max
# Event types that are about one item and so must name it.
ITEM_EVENTS = ("view", "fav", "cart", "chat", "buy")


def _day_bounds(ds: str) -> tuple[datetime, datetime]:
    start = datetime.combine(date.fromisoformat(ds), datetime.min.time(), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def raw_suite(table: str, ds: str, horizon_ds: str | None = None) -> list:
    """Expectations for one raw-contract table as delivered for run date `ds`.

    Fact tables are validated one partition (`ds`) at a time: every timestamp must fall in that UTC day
    (a timestamp after the day's end is "in the future" for this run). Dimensions are snapshots taken when
    they were delivered, so a backfill of an old ds legitimately sees later rows: their timestamps may not
    pass the end of `horizon_ds`, the newest day of data delivered (default: `ds`)."""
    start, end = _day_bounds(ds)
    # Pandas compares tz-aware timestamps; the last allowed instant is 1 us before the next day.
    last = end - timedelta(microseconds=1)
    horizon = _day_bounds(max(ds, horizon_ds or ds))[1] - timedelta(microseconds=1)
    not_null = lambda *cols: [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in cols]  # noqa: E731
    if table == "users":
        return [
            *not_null("user_id", "tz", "platform", "opt_in", "registered_at"),
            gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            gxe.ExpectColumnValuesToBeInSet(column="platform", value_set=list(PLATFORMS)),
            gxe.ExpectColumnValuesToBeInSet(column="tz", value_set=sorted(available_timezones())),
            gxe.ExpectColumnValuesToBeBetween(column="registered_at", max_value=horizon),
        ]
    if table == "items":
        return [
            *not_null("item_id", "seller_id", "category_id", "price", "listed_at", "status"),
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True, max_value=MAX_PRICE),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(ITEM_STATUSES)),
            gxe.ExpectColumnValuesToBeBetween(column="listed_at", max_value=horizon),
        ]
    if table == "item_changes":
        return [
            *not_null("item_id", "ts", "change", "price"),
            gxe.ExpectColumnValuesToBeInSet(column="change", value_set=list(ITEM_CHANGES)),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True, max_value=MAX_PRICE),
            gxe.ExpectColumnValuesToBeBetween(column="ts", min_value=start, max_value=last),
        ]
    if table == "events":
        return [
            *not_null("ts", "user_id", "event_type"),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
            gxe.ExpectColumnValuesToBeBetween(column="ts", min_value=start, max_value=last),
            gxe.ExpectColumnValuesToNotBeNull(
                column="item_id", row_condition=f"event_type.isin({list(ITEM_EVENTS)!r})",
                condition_parser="pandas"),
            gxe.ExpectColumnValuesToNotBeNull(
                column="seller_id", row_condition="event_type == 'follow_seller'", condition_parser="pandas"),
        ]
    if table == "push_log":
        return [
            *not_null("push_id", "user_id", "scene_id", "item_ids", "sent_at", "policy"),
            gxe.ExpectColumnValuesToBeUnique(column="push_id"),
            gxe.ExpectColumnValuesToBeBetween(column="sent_at", min_value=start, max_value=last),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="opened_at", column_B="sent_at", or_equal=True,
                                                        ignore_row_if="either_value_is_missing"),
            gxe.ExpectColumnValuesToBeBetween(column="propensity", min_value=0, max_value=1, strict_min=True),
        ]
    raise KeyError(f"no raw suite for table {table!r}")


# ---------------------------------------------------------------------------------------------
# Tables the pipeline writes
# ---------------------------------------------------------------------------------------------
def output_suite(table: str, config_version: str, scene_ids: list[str]) -> list:
    """Expectations for a derived table's ds partition. Every row carries the run's config version."""
    from features.fatigue import REASONS

    stamped = gxe.ExpectColumnValuesToBeInSet(column="config_version", value_set=[config_version])
    rate = lambda c: gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)  # noqa: E731
    nonneg = lambda c: gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0)  # noqa: E731
    suites = {
        "features/user_features": [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"), gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            nonneg("n_app_open_28d"), nonneg("n_view_28d"), nonneg("pushes_sent_28d"),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="pushes_sent_28d", column_B="pushes_opened_28d",
                                                        or_equal=True),
            gxe.ExpectColumnValuesToBeBetween(column="days_since_last_open", min_value=0, max_value=28),
            gxe.ExpectColumnValuesToBeBetween(column="peak_local_hour", min_value=0, max_value=23),
        ],
        "features/user_scene_history": [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"), gxe.ExpectColumnValuesToNotBeNull(column="scene_id"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "scene_id"]),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="sent_28d", column_B="sent_7d", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="sent_28d", column_B="opened_28d", or_equal=True),
        ],
        "features/material_features": [
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"), gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True),
            gxe.ExpectColumnValuesToBeBetween(column="price_drop_pct", min_value=0, max_value=1),
            nonneg("hours_since_listed"), nonneg("views_7d"),
        ],
        "features/material_rates": [
            gxe.ExpectColumnValuesToBeInSet(column="level", value_set=["scene", "category", "material"]),
            gxe.ExpectColumnValuesToNotBeNull(column="scene_id"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["level", "scene_id", "category_id", "item_id"]),
            rate("open_rate"), rate("click_rate"), nonneg("sends"),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="sends", column_B="opens", or_equal=True),
        ],
        "plan/audiences": [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToBeInSet(column="scene_id", value_set=scene_ids),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "scene_id"]),
        ],
        "plan/eligible": [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToBeInSet(column="scene_id", value_set=scene_ids),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "scene_id"]),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="plan_day_end", column_B="earliest_send_at"),
        ],
        "plan/suppressed": [
            gxe.ExpectColumnValuesToBeInSet(column="reason", value_set=list(REASONS)),
            gxe.ExpectColumnValuesToNotBeNull(column="reason"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "scene_id"]),
        ],
        "plan/scored": [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"), gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="model_version"),
            gxe.ExpectColumnValuesToNotBeNull(column="p_open"), rate("p_open"),
            gxe.ExpectColumnValuesToBeInSet(column="scene_id", value_set=scene_ids),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "scene_id", "item_id"]),
        ],
        "plan/selected": [
            gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            gxe.ExpectColumnValuesToBeInSet(column="scene_id", value_set=scene_ids),
            gxe.ExpectColumnValuesToNotBeNull(column="model_version"),
            rate("expected_open"), gxe.ExpectColumnValuesToBeInSet(column="policy", value_set=["hermes"]),
        ],
        "plan/baseline": [
            gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            gxe.ExpectColumnDistinctValuesToBeInSet(column="scene_id", value_set=scene_ids),
            # one global scene for everyone but the explored share (propensity < 1/2 marks those)
            gxe.ExpectColumnUniqueValueCountToBeBetween(column="scene_id", min_value=1, max_value=1,
                                                        row_condition="scene_propensity > 0.5",
                                                        condition_parser="pandas"),
            rate("scene_propensity"), gxe.ExpectColumnValuesToNotBeNull(column="scene_propensity"),
            gxe.ExpectColumnValuesToBeInSet(column="policy", value_set=["baseline"]),
        ],
        "plan/windows": [
            gxe.ExpectColumnValuesToBeInSet(column="policy", value_set=["hermes", "baseline"]),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["policy", "user_id"]),
            gxe.ExpectColumnValuesToBeInSet(column="scene_id", value_set=scene_ids),
            gxe.ExpectColumnValuesToBeBetween(column="slot", min_value=-1, max_value=35),
            gxe.ExpectColumnValuesToBeBetween(column="local_hour", min_value=-1, max_value=23),
            rate("p_open"), rate("hour_propensity"), rate("scene_propensity"),
            # a push the plan sends is worth something: an estimate of exactly 0 is a broken recalibration (its
            # intercept once ran off to -3.5e12 and the whole night's plan was timed on zeros)
            gxe.ExpectColumnValuesToBeBetween(column="p_open", min_value=0, max_value=1, strict_min=True,
                                              row_condition='reason.isnull()', condition_parser="pandas"),
            # the model's own estimate at the slot, before recalibration: what the next recalibration is fitted on
            gxe.ExpectColumnValuesToBeBetween(column="p_open_model", min_value=0, max_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="p_open_model", row_condition='reason.isnull()',
                                              condition_parser="pandas"),
            gxe.ExpectColumnValuesToBeInSet(column="reason", value_set=["no_window", "no_capacity"]),
            # a slot or a reason, never both, never neither
            gxe.ExpectColumnValuesToNotBeNull(column="send_at", row_condition='reason.isnull()',
                                              condition_parser="pandas"),
            gxe.ExpectColumnValuesToBeNull(column="send_at", row_condition='reason.notnull()',
                                           condition_parser="pandas"),
        ],
    }
    if table not in suites:
        raise KeyError(f"no output suite for {table!r}")
    return [stamped, *suites[table]]
